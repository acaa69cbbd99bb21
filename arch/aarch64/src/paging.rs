//! Translation-table builder for the 4 KiB granule (4 levels, 48-bit input addresses).
//!
//! Pure code: tables live behind the [`TableMemory`] trait, so the builder runs against a
//! memory buffer in host tests and against real frames at boot. The descriptor format is a
//! parameter ([`DescriptorFormat`]): the hypervisor's own EL2 stage-1 tables now, the
//! partitions' stage-2 tables with the same builder later. Uses 1 GiB and 2 MiB blocks where
//! alignment allows, 4 KiB pages otherwise.

use core::fmt;

/// Entries in one table.
pub const ENTRIES: usize = 512;
/// Bytes mapped by one entry at levels 0..=3.
pub const LEVEL_SIZE: [u64; 4] = [1 << 39, 1 << 30, 1 << 21, 1 << 12];
/// Highest input address + 1 (48-bit).
pub const INPUT_LIMIT: u64 = 1 << 48;
/// Bits 47:12 of a descriptor: the output address.
pub const ADDRESS_MASK: u64 = 0x0000_ffff_ffff_f000;

const VALID: u64 = 1 << 0;
const TABLE_OR_PAGE: u64 = 1 << 1;

/// Storage for translation tables.
pub trait TableMemory {
    /// Allocates a zeroed 4 KiB table and returns its physical address (4 KiB-aligned).
    fn allocate_table(&mut self) -> Option<u64>;
    /// Reads entry `index` (< 512) of the table at `table`.
    fn read_entry(&self, table: u64, index: usize) -> u64;
    /// Writes entry `index` (< 512) of the table at `table`.
    fn write_entry(&mut self, table: u64, index: usize, value: u64);
}

/// What a mapping allows and what memory type it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Memory {
    /// Normal write-back cacheable memory.
    Normal {
        /// Writable.
        write: bool,
        /// Executable.
        execute: bool,
    },
    /// Device-nGnRE memory (MMIO), never executable.
    Device,
}

/// A descriptor format: how [`Memory`] attributes are encoded in block and page entries.
pub trait DescriptorFormat {
    /// The lower and upper attribute bits of a leaf entry for `memory`.
    fn leaf_attributes(memory: Memory) -> u64;
    /// Decodes the attributes of a leaf entry (inverse of `leaf_attributes`).
    fn memory_of(entry: u64) -> Option<Memory>;
    /// Whether a level can hold block entries (level 1 and 2 for 4 KiB granule).
    fn block_allowed(level: usize) -> bool {
        level == 1 || level == 2
    }
}

/// The EL2 stage-1 format (non-VHE, one VA range). MAIR_EL2 index 0 = Normal WB,
/// index 1 = Device-nGnRE ([`El2Stage1::MAIR`]).
#[derive(Debug)]
pub enum El2Stage1 {}

impl El2Stage1 {
    /// The MAIR_EL2 value matching the attribute indices this format uses.
    pub const MAIR: u64 = 0xff | (0x04 << 8);
    const ATTR_INDEX_NORMAL: u64 = 0 << 2;
    const ATTR_INDEX_DEVICE: u64 = 1 << 2;
    /// AP[2:1] at bits 7:6; AP[1] is RES1 at EL2.
    const AP_READ_WRITE: u64 = 0b01 << 6;
    const AP_READ_ONLY: u64 = 0b11 << 6;
    const INNER_SHAREABLE: u64 = 0b11 << 8;
    const ACCESS_FLAG: u64 = 1 << 10;
    const EXECUTE_NEVER: u64 = 1 << 54;
}

impl DescriptorFormat for El2Stage1 {
    fn leaf_attributes(memory: Memory) -> u64 {
        match memory {
            Memory::Normal { write, execute } => {
                let access = if write {
                    Self::AP_READ_WRITE
                } else {
                    Self::AP_READ_ONLY
                };
                let execute_never = if execute { 0 } else { Self::EXECUTE_NEVER };
                Self::ATTR_INDEX_NORMAL
                    | access
                    | Self::INNER_SHAREABLE
                    | Self::ACCESS_FLAG
                    | execute_never
            }
            Memory::Device => {
                Self::ATTR_INDEX_DEVICE
                    | Self::AP_READ_WRITE
                    | Self::ACCESS_FLAG
                    | Self::EXECUTE_NEVER
            }
        }
    }

    fn memory_of(entry: u64) -> Option<Memory> {
        match entry & (0b111 << 2) {
            Self::ATTR_INDEX_DEVICE => Some(Memory::Device),
            Self::ATTR_INDEX_NORMAL => Some(Memory::Normal {
                write: entry & Self::AP_READ_ONLY == Self::AP_READ_WRITE,
                execute: entry & Self::EXECUTE_NEVER == 0,
            }),
            _ => None,
        }
    }
}

/// The stage-2 format (guest-physical → host-physical) for partitions. MemAttr encodes the
/// memory type directly (no MAIR): Normal write-back, or Device-nGnRE.
#[derive(Debug)]
pub enum Stage2 {}

impl Stage2 {
    const MEMORY_NORMAL_WRITE_BACK: u64 = 0b1111 << 2;
    const MEMORY_DEVICE_NGNRE: u64 = 0b0001 << 2;
    const ACCESS_READ_ONLY: u64 = 0b01 << 6;
    const ACCESS_READ_WRITE: u64 = 0b11 << 6;
    const INNER_SHAREABLE: u64 = 0b11 << 8;
    const ACCESS_FLAG: u64 = 1 << 10;
    const EXECUTE_NEVER: u64 = 1 << 54;
}

impl DescriptorFormat for Stage2 {
    fn leaf_attributes(memory: Memory) -> u64 {
        match memory {
            Memory::Normal { write, execute } => {
                let access = if write {
                    Self::ACCESS_READ_WRITE
                } else {
                    Self::ACCESS_READ_ONLY
                };
                let execute_never = if execute { 0 } else { Self::EXECUTE_NEVER };
                Self::MEMORY_NORMAL_WRITE_BACK
                    | access
                    | Self::INNER_SHAREABLE
                    | Self::ACCESS_FLAG
                    | execute_never
            }
            Memory::Device => {
                Self::MEMORY_DEVICE_NGNRE
                    | Self::ACCESS_READ_WRITE
                    | Self::ACCESS_FLAG
                    | Self::EXECUTE_NEVER
            }
        }
    }

    fn memory_of(entry: u64) -> Option<Memory> {
        match entry & (0b1111 << 2) {
            Self::MEMORY_DEVICE_NGNRE => Some(Memory::Device),
            Self::MEMORY_NORMAL_WRITE_BACK => Some(Memory::Normal {
                write: entry & Self::ACCESS_READ_WRITE == Self::ACCESS_READ_WRITE,
                execute: entry & Self::EXECUTE_NEVER == 0,
            }),
            _ => None,
        }
    }
}

/// Why a mapping could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// Addresses or size are not 4 KiB-aligned, or the size is zero.
    Unaligned,
    /// The input or output range passes the 48-bit limit.
    OutOfRange,
    /// Part of the range is mapped already.
    AlreadyMapped {
        /// First input address found mapped.
        address: u64,
    },
    /// No memory for another table.
    OutOfTables,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::Unaligned => write!(f, "range is not 4 KiB-aligned"),
            MapError::OutOfRange => write!(f, "range passes the 48-bit address limit"),
            MapError::AlreadyMapped { address } => write!(f, "{address:#x} is already mapped"),
            MapError::OutOfTables => write!(f, "out of memory for translation tables"),
        }
    }
}

/// A 4-level translation table tree rooted at a level-0 table.
pub struct PageTable<M: TableMemory, F: DescriptorFormat> {
    root: u64,
    memory: M,
    format: core::marker::PhantomData<F>,
}

fn index_at(address: u64, level: usize) -> usize {
    let shift = 39 - 9 * level as u32;
    ((address >> shift) & 0x1ff) as usize
}

fn level_size(level: usize) -> u64 {
    LEVEL_SIZE.get(level).copied().unwrap_or(LEVEL_SIZE[3])
}

impl<M: TableMemory, F: DescriptorFormat> PageTable<M, F> {
    /// Creates an empty tree (one zeroed level-0 table).
    pub fn new(mut memory: M) -> Result<Self, MapError> {
        let root = memory.allocate_table().ok_or(MapError::OutOfTables)?;
        Ok(Self {
            root,
            memory,
            format: core::marker::PhantomData,
        })
    }

    /// Physical address of the level-0 table (for TTBR/VTTBR).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// The table storage.
    pub fn memory(&self) -> &M {
        &self.memory
    }

    /// Maps `[input, input + size)` to `[output, output + size)` with `memory` attributes,
    /// using the largest blocks alignment allows. Fails without mapping anything new if any
    /// page of the range is mapped already (tables may have been allocated).
    pub fn map(
        &mut self,
        input: u64,
        output: u64,
        size: u64,
        memory: Memory,
    ) -> Result<(), MapError> {
        let page = LEVEL_SIZE[3];
        if size == 0
            || !input.is_multiple_of(page)
            || !output.is_multiple_of(page)
            || !size.is_multiple_of(page)
        {
            return Err(MapError::Unaligned);
        }
        let input_end = input.checked_add(size).ok_or(MapError::OutOfRange)?;
        let output_end = output.checked_add(size).ok_or(MapError::OutOfRange)?;
        if input_end > INPUT_LIMIT || output_end > INPUT_LIMIT {
            return Err(MapError::OutOfRange);
        }
        let mut probe = input;
        while probe < input_end {
            if self.lookup(probe).is_some() {
                return Err(MapError::AlreadyMapped { address: probe });
            }
            probe = probe.saturating_add(self.unmapped_span(probe));
        }
        let attributes = F::leaf_attributes(memory);
        let mut offset = 0;
        while offset < size {
            let (va, pa) = (input + offset, output + offset);
            let remaining = size - offset;
            let level = (1..=3)
                .find(|&level| {
                    let block = level_size(level);
                    (level == 3 || F::block_allowed(level))
                        && va.is_multiple_of(block)
                        && pa.is_multiple_of(block)
                        && remaining >= block
                })
                .unwrap_or(3);
            self.set_leaf(va, pa, level, attributes)?;
            offset += level_size(level);
        }
        Ok(())
    }

    /// Size of the unmapped stretch starting at `address` up to the next boundary of the
    /// level at which the walk stopped (so probing skips empty tables quickly).
    fn unmapped_span(&self, address: u64) -> u64 {
        let mut table = self.root;
        for level in 0..4 {
            let entry = self.memory.read_entry(table, index_at(address, level));
            if entry & VALID == 0 || level == 3 || entry & TABLE_OR_PAGE == 0 {
                let size = level_size(level);
                return size - (address % size);
            }
            table = entry & ADDRESS_MASK;
        }
        LEVEL_SIZE[3]
    }

    fn set_leaf(
        &mut self,
        va: u64,
        pa: u64,
        leaf_level: usize,
        attributes: u64,
    ) -> Result<(), MapError> {
        let mut table = self.root;
        for level in 0..leaf_level {
            let index = index_at(va, level);
            let entry = self.memory.read_entry(table, index);
            table = if entry & VALID == 0 {
                let next = self.memory.allocate_table().ok_or(MapError::OutOfTables)?;
                self.memory
                    .write_entry(table, index, next | VALID | TABLE_OR_PAGE);
                next
            } else if entry & TABLE_OR_PAGE != 0 {
                entry & ADDRESS_MASK
            } else {
                return Err(MapError::AlreadyMapped { address: va });
            };
        }
        let kind = if leaf_level == 3 { TABLE_OR_PAGE } else { 0 };
        self.memory.write_entry(
            table,
            index_at(va, leaf_level),
            (pa & ADDRESS_MASK) | attributes | kind | VALID,
        );
        Ok(())
    }

    /// Removes the mappings of `[input, input + size)`. Every leaf met must lie entirely
    /// inside the range (a block is never split); on error nothing was removed. The caller
    /// invalidates TLBs.
    pub fn unmap(&mut self, input: u64, size: u64) -> Result<(), MapError> {
        let page = LEVEL_SIZE[3];
        if size == 0 || !input.is_multiple_of(page) || !size.is_multiple_of(page) {
            return Err(MapError::Unaligned);
        }
        let end = input.checked_add(size).ok_or(MapError::OutOfRange)?;
        if end > INPUT_LIMIT {
            return Err(MapError::OutOfRange);
        }
        // First pass: check; second pass: clear.
        for clear in [false, true] {
            let mut address = input;
            while address < end {
                match self.leaf_slot(address) {
                    Some((table, index, level)) => {
                        let leaf_size = level_size(level);
                        let leaf_start = address & !(leaf_size - 1);
                        if leaf_start < input || leaf_start + leaf_size > end {
                            return Err(MapError::Unaligned);
                        }
                        if clear {
                            self.memory.write_entry(table, index, 0);
                        }
                        address = leaf_start + leaf_size;
                    }
                    None => address = address.saturating_add(self.unmapped_span(address)),
                }
            }
        }
        Ok(())
    }

    /// The table, index and level of the leaf entry mapping `input`, if any.
    fn leaf_slot(&self, input: u64) -> Option<(u64, usize, usize)> {
        let mut table = self.root;
        for level in 0..4 {
            let index = index_at(input, level);
            let entry = self.memory.read_entry(table, index);
            if entry & VALID == 0 {
                return None;
            }
            if level == 3 || entry & TABLE_OR_PAGE == 0 {
                return (level > 0).then_some((table, index, level));
            }
            table = entry & ADDRESS_MASK;
        }
        None
    }

    /// Walks the tables: the output address, attributes and the leaf's size for `input`.
    pub fn lookup(&self, input: u64) -> Option<(u64, Memory, u64)> {
        if input >= INPUT_LIMIT {
            return None;
        }
        let mut table = self.root;
        for level in 0..4 {
            let entry = self.memory.read_entry(table, index_at(input, level));
            if entry & VALID == 0 {
                return None;
            }
            let is_table = level < 3 && entry & TABLE_OR_PAGE != 0;
            if !is_table {
                if level == 0 || (level == 3 && entry & TABLE_OR_PAGE == 0) {
                    return None;
                }
                let size = level_size(level);
                let output = (entry & ADDRESS_MASK & !(size - 1)) | (input & (size - 1));
                return Some((output, F::memory_of(entry)?, size));
            }
            table = entry & ADDRESS_MASK;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    /// Tables in a host buffer; "physical" addresses are 0x1000 * (n + 1).
    #[derive(Default)]
    struct Buffer {
        tables: BTreeMap<u64, Vec<u64>>,
        limit: usize,
    }

    impl TableMemory for Buffer {
        fn allocate_table(&mut self) -> Option<u64> {
            if self.limit != 0 && self.tables.len() >= self.limit {
                return None;
            }
            let address = 0x1000 * (self.tables.len() as u64 + 1);
            self.tables.insert(address, std::vec![0; ENTRIES]);
            Some(address)
        }
        fn read_entry(&self, table: u64, index: usize) -> u64 {
            self.tables[&table][index]
        }
        fn write_entry(&mut self, table: u64, index: usize, value: u64) {
            self.tables.get_mut(&table).unwrap()[index] = value;
        }
    }

    const RW: Memory = Memory::Normal {
        write: true,
        execute: false,
    };
    const RX: Memory = Memory::Normal {
        write: false,
        execute: true,
    };

    fn table() -> PageTable<Buffer, El2Stage1> {
        PageTable::new(Buffer::default()).unwrap()
    }

    #[test]
    fn uses_gigabyte_and_megabyte_blocks_where_aligned() {
        let mut t = table();
        // 1 GiB + 2 MiB + 4 KiB starting on a 1 GiB boundary.
        t.map(0x4000_0000, 0x4000_0000, (1 << 30) + (2 << 20) + 0x1000, RW)
            .unwrap();
        assert_eq!(t.lookup(0x4000_0000), Some((0x4000_0000, RW, 1 << 30)));
        assert_eq!(t.lookup(0x7fff_ffff), Some((0x7fff_ffff, RW, 1 << 30)));
        assert_eq!(t.lookup(0x8000_0010), Some((0x8000_0010, RW, 2 << 20)));
        assert_eq!(t.lookup(0x8020_0fff), Some((0x8020_0fff, RW, 0x1000)));
        assert_eq!(t.lookup(0x8020_1000), None);
        // root + L1 + L2 + L3
        assert_eq!(t.memory().tables.len(), 4);
    }

    #[test]
    fn unaligned_output_falls_back_to_pages() {
        let mut t = table();
        t.map(0x20_0000, 0x1234_5000, 0x20_0000, RX).unwrap();
        assert_eq!(t.lookup(0x20_0000), Some((0x1234_5000, RX, 0x1000)));
        assert_eq!(t.lookup(0x3f_f123), Some((0x1254_4123, RX, 0x1000)));
    }

    #[test]
    fn device_memory_round_trips() {
        let mut t = table();
        t.map(0x0900_0000, 0x0900_0000, 0x1000, Memory::Device)
            .unwrap();
        assert_eq!(
            t.lookup(0x0900_0abc),
            Some((0x0900_0abc, Memory::Device, 0x1000))
        );
    }

    #[test]
    fn rejects_overlaps_bad_alignment_and_range() {
        let mut t = table();
        t.map(0x4000_0000, 0x4000_0000, 2 << 20, RW).unwrap();
        assert_eq!(
            t.map(0x401f_f000, 0, 0x2000, RW),
            Err(MapError::AlreadyMapped {
                address: 0x401f_f000
            })
        );
        assert_eq!(
            t.map(0x3fff_f000, 0, 0x2000, RW),
            Err(MapError::AlreadyMapped {
                address: 0x4000_0000
            })
        );
        assert_eq!(t.map(0x1001, 0, 0x1000, RW), Err(MapError::Unaligned));
        assert_eq!(t.map(0x1000, 0, 0, RW), Err(MapError::Unaligned));
        assert_eq!(
            t.map(INPUT_LIMIT - 0x1000, 0, 0x2000, RW),
            Err(MapError::OutOfRange)
        );
        assert_eq!(t.map(!0xfff, 0, 0x1000, RW), Err(MapError::OutOfRange));
        // The neighbour page is still free.
        t.map(0x3fff_f000, 0x3fff_f000, 0x1000, RW).unwrap();
    }

    #[test]
    fn running_out_of_tables_is_an_error() {
        let mut t = PageTable::<_, El2Stage1>::new(Buffer {
            limit: 2,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            t.map(0x1000, 0x1000, 0x1000, RW),
            Err(MapError::OutOfTables)
        );
    }

    #[test]
    fn unmap_removes_whole_leaves_only() {
        let mut t = table();
        t.map(0x4000_0000, 0x4000_0000, 4 << 20, RW).unwrap();
        t.map(0x8000_0000, 0x9000_0000, 0x3000, RW).unwrap();
        assert_eq!(
            t.unmap(0x4000_0000, 0x1000),
            Err(MapError::Unaligned),
            "part of a block"
        );
        assert!(t.lookup(0x4000_0000).is_some());
        t.unmap(0x4020_0000, 2 << 20).unwrap();
        assert_eq!(t.lookup(0x4020_0000), None);
        assert!(t.lookup(0x401f_f000).is_some());
        t.unmap(0x8000_1000, 0x1000).unwrap();
        assert_eq!(t.lookup(0x8000_1000), None);
        assert!(t.lookup(0x8000_2000).is_some());
        // Unmapped holes inside the range are fine; the range can be mapped again.
        t.unmap(0x8000_0000, 0x3000).unwrap();
        t.map(0x8000_0000, 0xa000_0000, 0x3000, RW).unwrap();
        assert_eq!(t.lookup(0x8000_2010), Some((0xa000_2010, RW, 0x1000)));
    }

    #[test]
    fn stage2_round_trip() {
        let mut t = PageTable::<_, Stage2>::new(Buffer::default()).unwrap();
        let rwx = Memory::Normal {
            write: true,
            execute: true,
        };
        t.map(0x4000_0000, 0x4800_0000, 64 << 20, rwx).unwrap();
        t.map(0x0801_0000, 0x0804_0000, 0x2000, Memory::Device)
            .unwrap();
        assert_eq!(t.lookup(0x4000_1234), Some((0x4800_1234, rwx, 2 << 20)));
        assert_eq!(
            t.lookup(0x0801_1000),
            Some((0x0804_1000, Memory::Device, 0x1000))
        );
        assert_eq!(t.lookup(0x0900_0000), None);
        assert_eq!(Stage2::leaf_attributes(rwx) & (0b11 << 6), 0b11 << 6);
    }

    #[test]
    fn el2_attribute_encoding() {
        let rw = El2Stage1::leaf_attributes(RW);
        assert_eq!(rw & (0b11 << 6), 0b01 << 6, "AP RW with AP[1] RES1");
        assert_ne!(rw & (1 << 54), 0, "XN");
        assert_ne!(rw & (1 << 10), 0, "AF");
        let rx = El2Stage1::leaf_attributes(RX);
        assert_eq!(rx & (1 << 54), 0);
        assert_eq!(rx & (0b11 << 6), 0b11 << 6);
        assert_eq!(
            El2Stage1::leaf_attributes(Memory::Device) & (0b111 << 2),
            1 << 2
        );
    }
}
