//! 4-level page-table builder for x86_64 (48-bit addresses, 4 KiB pages, 2 MiB and 1 GiB
//! pages where alignment allows).
//!
//! Pure code: tables live behind the [`TableMemory`] trait, so the builder runs against a host
//! buffer in tests and against heap frames at boot. The entry format is a parameter
//! ([`EntryFormat`]): the hypervisor's own long-mode tables ([`HostPaging`]) now, the
//! partitions' extended page tables ([`Ept`]) with the same builder next.

use core::fmt;
use core::marker::PhantomData;

/// Entries in one table.
pub const ENTRIES: usize = 512;
/// Bytes mapped by one entry at levels 0 (PML4) ..= 3 (page table).
pub const LEVEL_SIZE: [u64; 4] = [1 << 39, 1 << 30, 1 << 21, 1 << 12];
/// Highest input address + 1 (48-bit, identity maps use the lower half only).
pub const INPUT_LIMIT: u64 = 1 << 47;
/// Bits 51:12 of an entry: the output address.
pub const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Page size bit (a 2 MiB or 1 GiB leaf at levels 1 and 2), the same in both formats.
const LARGE_PAGE: u64 = 1 << 7;

/// Storage for page tables.
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
    /// Write-back cacheable memory.
    Normal {
        /// Writable.
        write: bool,
        /// Executable.
        execute: bool,
    },
    /// Uncacheable memory-mapped I/O, never executable.
    Device,
}

/// An entry format: how tables and leaves are encoded.
pub trait EntryFormat {
    /// A non-leaf entry pointing at the table at `address`.
    fn table_entry(address: u64) -> u64;
    /// A leaf entry for `address` with `memory` attributes at `level` (1: 1 GiB, 2: 2 MiB,
    /// 3: 4 KiB).
    fn leaf_entry(address: u64, memory: Memory, level: usize) -> u64;
    /// Whether the entry maps or points at anything.
    fn is_present(entry: u64) -> bool;
    /// Decodes the attributes of a leaf entry (inverse of `leaf_entry`).
    fn memory_of(entry: u64) -> Option<Memory>;
    /// Whether a level may hold leaves other than 4 KiB pages.
    fn large_pages_at(level: usize) -> bool;
}

/// The hypervisor's own long-mode tables (CR3). Write-back through PAT entry 0, device memory
/// uncacheable through PCD|PWT (PAT entry 3 after reset). Needs EFER.NXE for the NX bit and
/// CR0.WP so read-only pages hold in ring 0.
#[derive(Debug)]
pub enum HostPaging {}

impl HostPaging {
    const PRESENT: u64 = 1 << 0;
    const WRITABLE: u64 = 1 << 1;
    const WRITE_THROUGH: u64 = 1 << 3;
    const CACHE_DISABLE: u64 = 1 << 4;
    const ACCESSED: u64 = 1 << 5;
    const DIRTY: u64 = 1 << 6;
    const NO_EXECUTE: u64 = 1 << 63;
}

impl EntryFormat for HostPaging {
    fn table_entry(address: u64) -> u64 {
        (address & ADDRESS_MASK) | Self::PRESENT | Self::WRITABLE
    }

    fn leaf_entry(address: u64, memory: Memory, level: usize) -> u64 {
        let size = if level < 3 { LARGE_PAGE } else { 0 };
        let attributes = match memory {
            Memory::Normal { write, execute } => {
                (if write {
                    Self::WRITABLE | Self::DIRTY
                } else {
                    0
                }) | if execute { 0 } else { Self::NO_EXECUTE }
            }
            Memory::Device => {
                Self::WRITABLE
                    | Self::DIRTY
                    | Self::WRITE_THROUGH
                    | Self::CACHE_DISABLE
                    | Self::NO_EXECUTE
            }
        };
        (address & ADDRESS_MASK) | Self::PRESENT | Self::ACCESSED | size | attributes
    }

    fn is_present(entry: u64) -> bool {
        entry & Self::PRESENT != 0
    }

    fn memory_of(entry: u64) -> Option<Memory> {
        if !Self::is_present(entry) {
            return None;
        }
        if entry & Self::CACHE_DISABLE != 0 {
            return Some(Memory::Device);
        }
        Some(Memory::Normal {
            write: entry & Self::WRITABLE != 0,
            execute: entry & Self::NO_EXECUTE == 0,
        })
    }

    fn large_pages_at(level: usize) -> bool {
        // 1 GiB pages need CPUID.80000001H:EDX.Page1GB; 2 MiB pages are always there.
        level == 2
    }
}

/// Extended page tables (guest-physical → host-physical) for partitions. Memory type in bits
/// 5:3 (6 = write-back, 0 = uncacheable), read/write/execute in bits 2:0.
#[derive(Debug)]
pub enum Ept {}

impl Ept {
    const READ: u64 = 1 << 0;
    const WRITE: u64 = 1 << 1;
    const EXECUTE: u64 = 1 << 2;
    const TYPE_WRITE_BACK: u64 = 6 << 3;
    const TYPE_UNCACHEABLE: u64 = 0;
    const TYPE_MASK: u64 = 7 << 3;
    /// The EPT pointer for a 4-level walk of the tables at `root`, write-back walks.
    pub fn pointer(root: u64) -> u64 {
        const WALK_LENGTH_4: u64 = 3 << 3;
        (root & ADDRESS_MASK) | WALK_LENGTH_4 | 6
    }
}

impl EntryFormat for Ept {
    fn table_entry(address: u64) -> u64 {
        (address & ADDRESS_MASK) | Self::READ | Self::WRITE | Self::EXECUTE
    }

    fn leaf_entry(address: u64, memory: Memory, level: usize) -> u64 {
        let size = if level < 3 { LARGE_PAGE } else { 0 };
        let attributes = match memory {
            Memory::Normal { write, execute } => {
                Self::TYPE_WRITE_BACK
                    | Self::READ
                    | if write { Self::WRITE } else { 0 }
                    | if execute { Self::EXECUTE } else { 0 }
            }
            Memory::Device => Self::TYPE_UNCACHEABLE | Self::READ | Self::WRITE,
        };
        (address & ADDRESS_MASK) | size | attributes
    }

    fn is_present(entry: u64) -> bool {
        entry & (Self::READ | Self::WRITE | Self::EXECUTE) != 0
    }

    fn memory_of(entry: u64) -> Option<Memory> {
        if !Self::is_present(entry) {
            return None;
        }
        match entry & Self::TYPE_MASK {
            Self::TYPE_UNCACHEABLE => Some(Memory::Device),
            Self::TYPE_WRITE_BACK => Some(Memory::Normal {
                write: entry & Self::WRITE != 0,
                execute: entry & Self::EXECUTE != 0,
            }),
            _ => None,
        }
    }

    fn large_pages_at(level: usize) -> bool {
        level == 1 || level == 2
    }
}

/// Why a mapping could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// Addresses or size are not 4 KiB-aligned, or the size is zero.
    Unaligned,
    /// The input or output range passes the address limit.
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
            MapError::OutOfRange => write!(f, "range passes the 47-bit address limit"),
            MapError::AlreadyMapped { address } => write!(f, "{address:#x} is already mapped"),
            MapError::OutOfTables => write!(f, "out of memory for page tables"),
        }
    }
}

/// A 4-level page-table tree rooted at a PML4.
pub struct PageTable<M: TableMemory, F: EntryFormat> {
    root: u64,
    memory: M,
    format: PhantomData<F>,
}

fn index_at(address: u64, level: usize) -> usize {
    let shift = 39 - 9 * level as u32;
    ((address >> shift) & 0x1ff) as usize
}

fn level_size(level: usize) -> u64 {
    LEVEL_SIZE.get(level).copied().unwrap_or(1 << 12)
}

impl<M: TableMemory, F: EntryFormat> PageTable<M, F> {
    /// Creates an empty tree (one zeroed PML4).
    pub fn new(mut memory: M) -> Result<Self, MapError> {
        let root = memory.allocate_table().ok_or(MapError::OutOfTables)?;
        Ok(Self {
            root,
            memory,
            format: PhantomData,
        })
    }

    /// Physical address of the PML4 (for CR3 or the EPT pointer).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// The table storage.
    pub fn memory(&self) -> &M {
        &self.memory
    }

    /// Maps `[input, input + size)` to `[output, output + size)` with `memory` attributes,
    /// using the largest pages alignment allows. Fails without mapping anything new if any page
    /// of the range is mapped already (tables may have been allocated).
    pub fn map(
        &mut self,
        input: u64,
        output: u64,
        size: u64,
        memory: Memory,
    ) -> Result<(), MapError> {
        let page = level_size(3);
        if size == 0
            || !input.is_multiple_of(page)
            || !output.is_multiple_of(page)
            || !size.is_multiple_of(page)
        {
            return Err(MapError::Unaligned);
        }
        let input_end = input.checked_add(size).ok_or(MapError::OutOfRange)?;
        let output_end = output.checked_add(size).ok_or(MapError::OutOfRange)?;
        if input_end > INPUT_LIMIT || output_end > ADDRESS_MASK + page {
            return Err(MapError::OutOfRange);
        }
        let mut probe = input;
        while probe < input_end {
            if self.lookup(probe).is_some() {
                return Err(MapError::AlreadyMapped { address: probe });
            }
            probe = probe.saturating_add(self.unmapped_span(probe));
        }
        let mut offset = 0;
        while offset < size {
            let (virtual_address, physical) = (input + offset, output + offset);
            let remaining = size - offset;
            let level = (1..=3)
                .find(|&level| {
                    let block = level_size(level);
                    (level == 3 || F::large_pages_at(level))
                        && virtual_address.is_multiple_of(block)
                        && physical.is_multiple_of(block)
                        && remaining >= block
                })
                .unwrap_or(3);
            self.set_leaf(virtual_address, physical, level, memory)?;
            offset += level_size(level);
        }
        Ok(())
    }

    /// Whether `entry` at `level` is a leaf (a page) rather than a pointer to a table.
    fn is_leaf(entry: u64, level: usize) -> bool {
        level == 3 || (level > 0 && entry & LARGE_PAGE != 0)
    }

    /// Size of the unmapped stretch starting at `address` up to the next boundary of the level
    /// at which the walk stopped (so probing skips empty tables quickly).
    fn unmapped_span(&self, address: u64) -> u64 {
        let mut table = self.root;
        for level in 0..4 {
            let entry = self.memory.read_entry(table, index_at(address, level));
            if !F::is_present(entry) || Self::is_leaf(entry, level) {
                let size = level_size(level);
                return size - (address % size);
            }
            table = entry & ADDRESS_MASK;
        }
        level_size(3)
    }

    fn set_leaf(
        &mut self,
        virtual_address: u64,
        physical: u64,
        leaf_level: usize,
        memory: Memory,
    ) -> Result<(), MapError> {
        let mut table = self.root;
        for level in 0..leaf_level {
            let index = index_at(virtual_address, level);
            let entry = self.memory.read_entry(table, index);
            table = if !F::is_present(entry) {
                let next = self.memory.allocate_table().ok_or(MapError::OutOfTables)?;
                self.memory.write_entry(table, index, F::table_entry(next));
                next
            } else if !Self::is_leaf(entry, level) {
                entry & ADDRESS_MASK
            } else {
                return Err(MapError::AlreadyMapped {
                    address: virtual_address,
                });
            };
        }
        self.memory.write_entry(
            table,
            index_at(virtual_address, leaf_level),
            F::leaf_entry(physical, memory, leaf_level),
        );
        Ok(())
    }

    /// Walks the tables: the output address, attributes and the leaf's size for `input`.
    pub fn lookup(&self, input: u64) -> Option<(u64, Memory, u64)> {
        if input >= INPUT_LIMIT {
            return None;
        }
        let mut table = self.root;
        for level in 0..4 {
            let entry = self.memory.read_entry(table, index_at(input, level));
            if !F::is_present(entry) {
                return None;
            }
            if Self::is_leaf(entry, level) {
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

    fn host() -> PageTable<Buffer, HostPaging> {
        PageTable::new(Buffer::default()).unwrap()
    }

    #[test]
    fn host_tables_use_two_megabyte_pages_and_never_gigabyte_pages() {
        let mut t = host();
        t.map(0x4000_0000, 0x4000_0000, (1 << 30) + 0x1000, RW)
            .unwrap();
        assert_eq!(t.lookup(0x4000_0000), Some((0x4000_0000, RW, 2 << 20)));
        assert_eq!(t.lookup(0x7fff_ffff), Some((0x7fff_ffff, RW, 2 << 20)));
        assert_eq!(t.lookup(0x8000_0fff), Some((0x8000_0fff, RW, 0x1000)));
        assert_eq!(t.lookup(0x8000_1000), None);
        // PML4 + PDPT + 2 PDs + 1 PT
        assert_eq!(t.memory().tables.len(), 5);
    }

    #[test]
    fn unaligned_start_falls_back_to_small_pages_then_grows() {
        let mut t = host();
        t.map(0x10_0000, 0x10_0000, 0x30_0000, RX).unwrap();
        assert_eq!(t.lookup(0x10_0123), Some((0x10_0123, RX, 0x1000)));
        assert_eq!(t.lookup(0x1f_f000), Some((0x1f_f000, RX, 0x1000)));
        assert_eq!(t.lookup(0x20_0000), Some((0x20_0000, RX, 2 << 20)));
        assert_eq!(t.lookup(0x40_0000), None);
    }

    #[test]
    fn host_entries_encode_write_execute_and_caching() {
        let rw = HostPaging::leaf_entry(0x20_0000, RW, 3);
        assert_eq!(rw & 0b11, 0b11, "present, writable");
        assert_ne!(rw & (1 << 63), 0, "NX");
        let rx = HostPaging::leaf_entry(0x20_0000, RX, 2);
        assert_eq!(rx & (1 << 1), 0, "read-only");
        assert_eq!(rx & (1 << 63), 0, "executable");
        assert_ne!(rx & (1 << 7), 0, "2 MiB page");
        let device = HostPaging::leaf_entry(0xfee0_0000, Memory::Device, 3);
        assert_eq!(device & 0x18, 0x18, "PCD|PWT");
        assert_eq!(HostPaging::memory_of(device), Some(Memory::Device));
        assert_eq!(
            HostPaging::table_entry(0x1234_5000),
            0x1234_5003,
            "tables never restrict"
        );
    }

    #[test]
    fn rejects_overlaps_bad_alignment_and_range() {
        let mut t = host();
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
        t.map(0x3fff_f000, 0x3fff_f000, 0x1000, RW).unwrap();
    }

    #[test]
    fn running_out_of_tables_is_an_error() {
        let mut t = PageTable::<_, HostPaging>::new(Buffer {
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
    fn ept_uses_gigabyte_pages_and_encodes_types() {
        let mut t = PageTable::<_, Ept>::new(Buffer::default()).unwrap();
        let rwx = Memory::Normal {
            write: true,
            execute: true,
        };
        t.map(0, 0x4000_0000, 1 << 30, rwx).unwrap();
        t.map(0xfec0_0000, 0xfec0_0000, 0x1000, Memory::Device)
            .unwrap();
        assert_eq!(t.lookup(0x1234), Some((0x4000_1234, rwx, 1 << 30)));
        assert_eq!(
            t.lookup(0xfec0_0010),
            Some((0xfec0_0010, Memory::Device, 0x1000))
        );
        assert_eq!(t.lookup(0x4000_0000), None);
        let leaf = Ept::leaf_entry(0x20_0000, rwx, 2);
        assert_eq!(leaf & 0x7f, 0x37, "RWX, write-back");
        assert_ne!(leaf & (1 << 7), 0);
        assert_eq!(Ept::pointer(0x5000), 0x501e);
    }
}
