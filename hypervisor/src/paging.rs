//! The 4-level translation-table builder both architectures use (4 KiB granule, 512 entries
//! per table, 1 GiB and 2 MiB leaves where alignment allows, 4 KiB pages otherwise).
//!
//! Pure code: tables live behind [`TableMemory`] (a host buffer in tests, heap frames at
//! boot); how entries are encoded is an [`EntryFormat`] each arch crate provides (aarch64 EL2
//! stage 1 and stage 2; x86_64 long-mode tables and EPT). The same builder serves the
//! hypervisor's own map and every partition's second-stage map.

use core::fmt;
use core::marker::PhantomData;

/// Entries in one table.
pub const ENTRIES: usize = 512;
/// Bytes mapped by one entry at levels 0..=3.
pub const LEVEL_SIZE: [u64; 4] = [1 << 39, 1 << 30, 1 << 21, 1 << 12];

/// Storage for translation tables.
pub trait TableMemory {
    /// Allocates a zeroed 4 KiB table and returns its physical address (4 KiB-aligned).
    fn allocate_table(&mut self) -> Option<u64>;
    /// Reads entry `index` (< 512) of the table at `table`.
    fn read_entry(&self, table: u64, index: usize) -> u64;
    /// Writes entry `index` (< 512) of the table at `table`.
    fn write_entry(&mut self, table: u64, index: usize, value: u64);
    /// Allocates `count` (a power of two) zeroed tables in one block aligned to its size and
    /// returns the first one's address: concatenated tables at a walk's first level. `None`
    /// where the storage cannot.
    fn allocate_contiguous(&mut self, _count: usize) -> Option<u64> {
        None
    }
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
    /// Device memory (MMIO: Device-nGnRE on aarch64, uncacheable on x86), never executable.
    Device,
}

/// How one architecture's tables encode entries.
pub trait EntryFormat {
    /// Highest input address + 1.
    const INPUT_LIMIT: u64;
    /// The output-address bits of an entry.
    const ADDRESS_MASK: u64;
    /// A non-leaf entry pointing at the table at `address`.
    fn table_entry(address: u64) -> u64;
    /// A leaf entry for `address` with `memory` attributes at `level` (1: 1 GiB, 2: 2 MiB,
    /// 3: 4 KiB).
    fn leaf_entry(address: u64, memory: Memory, level: usize) -> u64;
    /// Whether the entry maps or points at anything.
    fn is_present(entry: u64) -> bool;
    /// Whether a present entry at `level` is a leaf rather than a pointer to a table.
    fn is_leaf(entry: u64, level: usize) -> bool;
    /// Decodes the attributes of a leaf entry (inverse of `leaf_entry`).
    fn memory_of(entry: u64) -> Option<Memory>;
    /// Whether a level may hold leaves other than 4 KiB pages.
    fn large_pages_at(level: usize) -> bool {
        level == 1 || level == 2
    }
}

/// Why a mapping could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// Addresses or size are not 4 KiB-aligned, or the size is zero (for `unmap`: the range
    /// would split a leaf).
    Unaligned,
    /// The input or output range passes the format's address limit.
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
            MapError::OutOfRange => write!(f, "range passes the address limit"),
            MapError::AlreadyMapped { address } => write!(f, "{address:#x} is already mapped"),
            MapError::OutOfTables => write!(f, "out of memory for translation tables"),
        }
    }
}

/// A 4-level translation table tree rooted at a level-0 table (PML4 on x86).
pub struct PageTable<M: TableMemory, F: EntryFormat> {
    root: u64,
    memory: M,
    format: PhantomData<F>,
}

impl<M: TableMemory, F: EntryFormat> fmt::Debug for PageTable<M, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageTable")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

fn index_at(address: u64, level: usize) -> usize {
    let shift = 39 - 9 * level as u32;
    ((address >> shift) & 0x1ff) as usize
}

fn level_size(level: usize) -> u64 {
    LEVEL_SIZE.get(level).copied().unwrap_or(1 << 12)
}

const PAGE: u64 = 1 << 12;

impl<M: TableMemory, F: EntryFormat> PageTable<M, F> {
    /// Creates an empty tree (one zeroed level-0 table).
    pub fn new(mut memory: M) -> Result<Self, MapError> {
        let root = memory.allocate_table().ok_or(MapError::OutOfTables)?;
        Ok(Self {
            root,
            memory,
            format: PhantomData,
        })
    }

    /// An empty tree whose first `count` level-1 tables are allocated together (contiguous,
    /// aligned to their total size) and entered in the level-0 table: a walk may then start
    /// at level 1 with those tables concatenated (an aarch64 stage 2 on a CPU whose physical
    /// range is 40 or 42 bits, where a level-0 start is not allowed). The builder keeps
    /// walking from level 0; [`PageTable::concatenated_root`] is the hardware's root.
    pub fn with_concatenated_level1(mut memory: M, count: usize) -> Result<Self, MapError> {
        let root = memory.allocate_table().ok_or(MapError::OutOfTables)?;
        let first = memory
            .allocate_contiguous(count)
            .ok_or(MapError::OutOfTables)?;
        for index in 0..count.min(ENTRIES) {
            let table = first + PAGE * index as u64;
            memory.write_entry(root, index, F::table_entry(table));
        }
        Ok(Self {
            root,
            memory,
            format: PhantomData,
        })
    }

    /// Physical address of the level-0 table (for TTBR/VTTBR, CR3 or the EPT pointer).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// The first of the concatenated level-1 tables [`PageTable::with_concatenated_level1`]
    /// made (the root for a walk that starts at level 1), from the level-0 table's entry 0.
    pub fn concatenated_root(&self) -> Option<u64> {
        let entry = self.memory.read_entry(self.root, 0);
        (F::is_present(entry) && !F::is_leaf(entry, 0)).then_some(entry & F::ADDRESS_MASK)
    }

    /// The table storage.
    pub fn memory(&self) -> &M {
        &self.memory
    }

    /// Maps `[input, input + size)` to `[output, output + size)` with `memory` attributes,
    /// using the largest leaves alignment allows. Fails without mapping anything new if any
    /// page of the range is mapped already (tables may have been allocated).
    pub fn map(
        &mut self,
        input: u64,
        output: u64,
        size: u64,
        memory: Memory,
    ) -> Result<(), MapError> {
        if size == 0
            || !input.is_multiple_of(PAGE)
            || !output.is_multiple_of(PAGE)
            || !size.is_multiple_of(PAGE)
        {
            return Err(MapError::Unaligned);
        }
        let input_end = input.checked_add(size).ok_or(MapError::OutOfRange)?;
        let output_end = output.checked_add(size).ok_or(MapError::OutOfRange)?;
        if input_end > F::INPUT_LIMIT || output_end > F::ADDRESS_MASK.saturating_add(PAGE) {
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
            let (va, pa) = (input + offset, output + offset);
            let remaining = size - offset;
            let level = (1..=3)
                .find(|&level| {
                    let block = level_size(level);
                    (level == 3 || F::large_pages_at(level))
                        && va.is_multiple_of(block)
                        && pa.is_multiple_of(block)
                        && remaining >= block
                })
                .unwrap_or(3);
            self.set_leaf(va, pa, level, memory)?;
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
            if !F::is_present(entry) || F::is_leaf(entry, level) {
                let size = level_size(level);
                return size - (address % size);
            }
            table = entry & F::ADDRESS_MASK;
        }
        PAGE
    }

    fn set_leaf(
        &mut self,
        va: u64,
        pa: u64,
        leaf_level: usize,
        memory: Memory,
    ) -> Result<(), MapError> {
        let mut table = self.root;
        for level in 0..leaf_level {
            let index = index_at(va, level);
            let entry = self.memory.read_entry(table, index);
            table = if !F::is_present(entry) {
                let next = self.memory.allocate_table().ok_or(MapError::OutOfTables)?;
                self.memory.write_entry(table, index, F::table_entry(next));
                next
            } else if !F::is_leaf(entry, level) {
                entry & F::ADDRESS_MASK
            } else {
                return Err(MapError::AlreadyMapped { address: va });
            };
        }
        self.memory.write_entry(
            table,
            index_at(va, leaf_level),
            F::leaf_entry(pa, memory, leaf_level),
        );
        Ok(())
    }

    /// Removes the mappings of `[input, input + size)`. Every leaf met must lie entirely
    /// inside the range (a block is never split); on error nothing was removed. The caller
    /// invalidates TLBs.
    pub fn unmap(&mut self, input: u64, size: u64) -> Result<(), MapError> {
        if size == 0 || !input.is_multiple_of(PAGE) || !size.is_multiple_of(PAGE) {
            return Err(MapError::Unaligned);
        }
        let end = input.checked_add(size).ok_or(MapError::OutOfRange)?;
        if end > F::INPUT_LIMIT {
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
            if !F::is_present(entry) {
                return None;
            }
            if F::is_leaf(entry, level) {
                return (level > 0).then_some((table, index, level));
            }
            table = entry & F::ADDRESS_MASK;
        }
        None
    }

    /// Walks the tables: the output address, attributes and the leaf's size for `input`.
    pub fn lookup(&self, input: u64) -> Option<(u64, Memory, u64)> {
        if input >= F::INPUT_LIMIT {
            return None;
        }
        let mut table = self.root;
        for level in 0..4 {
            let entry = self.memory.read_entry(table, index_at(input, level));
            if !F::is_present(entry) {
                return None;
            }
            if F::is_leaf(entry, level) {
                if level == 0 {
                    return None;
                }
                let size = level_size(level);
                let output = (entry & F::ADDRESS_MASK & !(size - 1)) | (input & (size - 1));
                return Some((output, F::memory_of(entry)?, size));
            }
            table = entry & F::ADDRESS_MASK;
        }
        None
    }
}

/// Table storage in ordinary memory (a map from made-up "physical" addresses to tables), for
/// host tests of the builder and of every arch's formats. Addresses are 0x1000 * (n + 1);
/// `limit` (if non-zero) caps the number of tables.
#[derive(Debug, Default)]
pub struct BufferTables {
    /// The tables by address.
    pub tables: alloc::collections::BTreeMap<u64, alloc::vec::Vec<u64>>,
    /// Most tables to hand out (0: no limit).
    pub limit: usize,
}

impl TableMemory for BufferTables {
    fn allocate_table(&mut self) -> Option<u64> {
        if self.limit != 0 && self.tables.len() >= self.limit {
            return None;
        }
        let address = 0x1000 * (self.tables.len() as u64 + 1);
        self.tables.insert(address, alloc::vec![0; ENTRIES]);
        Some(address)
    }

    fn read_entry(&self, table: u64, index: usize) -> u64 {
        self.tables
            .get(&table)
            .and_then(|t| t.get(index))
            .copied()
            .unwrap_or(0)
    }

    fn write_entry(&mut self, table: u64, index: usize, value: u64) {
        if let Some(slot) = self.tables.get_mut(&table).and_then(|t| t.get_mut(index)) {
            *slot = value;
        }
    }

    /// Blocks come from a separate range (from 1 << 40), where single tables never land.
    fn allocate_contiguous(&mut self, count: usize) -> Option<u64> {
        if !count.is_power_of_two() {
            return None;
        }
        let size = 0x1000 * count as u64;
        let above = self
            .tables
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .max(1 << 40);
        let first = above.checked_add(size)? & !(size - 1);
        for index in 0..count {
            self.tables
                .insert(first + 0x1000 * index as u64, alloc::vec![0; ENTRIES]);
        }
        Some(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal format: bit 0 present, bit 1 table (or 4 KiB page), bit 2 device, bit 6
    /// writable, bit 7 executable.
    enum TestFormat {}

    impl EntryFormat for TestFormat {
        const INPUT_LIMIT: u64 = 1 << 48;
        const ADDRESS_MASK: u64 = 0x0000_ffff_ffff_f000;
        fn table_entry(address: u64) -> u64 {
            address | 0b11
        }
        fn leaf_entry(address: u64, memory: Memory, level: usize) -> u64 {
            let kind = if level == 3 { 0b10 } else { 0 };
            let attributes = match memory {
                Memory::Normal { write, execute } => {
                    (u64::from(write) << 6) | (u64::from(execute) << 7)
                }
                Memory::Device => 1 << 2,
            };
            address | kind | attributes | 1
        }
        fn is_present(entry: u64) -> bool {
            entry & 1 != 0
        }
        fn is_leaf(entry: u64, level: usize) -> bool {
            level == 3 || entry & 0b10 == 0
        }
        fn memory_of(entry: u64) -> Option<Memory> {
            Some(if entry & (1 << 2) != 0 {
                Memory::Device
            } else {
                Memory::Normal {
                    write: entry & (1 << 6) != 0,
                    execute: entry & (1 << 7) != 0,
                }
            })
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

    fn table() -> PageTable<BufferTables, TestFormat> {
        PageTable::new(BufferTables::default()).unwrap()
    }

    #[test]
    fn uses_gigabyte_and_megabyte_blocks_where_aligned() {
        let mut t = table();
        t.map(0x4000_0000, 0x4000_0000, (1 << 30) + (2 << 20) + 0x1000, RW)
            .unwrap();
        assert_eq!(t.lookup(0x4000_0000), Some((0x4000_0000, RW, 1 << 30)));
        assert_eq!(t.lookup(0x7fff_ffff), Some((0x7fff_ffff, RW, 1 << 30)));
        assert_eq!(t.lookup(0x8000_0010), Some((0x8000_0010, RW, 2 << 20)));
        assert_eq!(t.lookup(0x8020_0fff), Some((0x8020_0fff, RW, 0x1000)));
        assert_eq!(t.lookup(0x8020_1000), None);
        assert_eq!(t.memory().tables.len(), 4, "root + L1 + L2 + L3");
    }

    #[test]
    fn concatenated_level1_tables_serve_a_walk_from_level_1() {
        let mut t = PageTable::<BufferTables, TestFormat>::with_concatenated_level1(
            BufferTables::default(),
            2,
        )
        .unwrap();
        let first = t.concatenated_root().unwrap();
        assert_eq!(first % 0x2000, 0, "aligned to the two tables");
        // A mapping below 512 GiB lands in the first level-1 table, one above in the second
        // (contiguous with it): a walk starting at level 1 from `first` finds both.
        t.map(0x4000_0000, 0x4000_0000, 1 << 30, RW).unwrap();
        t.map(0x80_4000_0000, 0x8000_0000, 1 << 30, RW).unwrap();
        let memory = t.memory();
        assert_eq!(memory.read_entry(first, 1) & !0xfff, 0x4000_0000);
        assert_eq!(memory.read_entry(first + 0x1000, 1) & !0xfff, 0x8000_0000);
        assert_eq!(t.lookup(0x80_4000_0010), Some((0x8000_0010, RW, 1 << 30)));
        // A storage without blocks refuses.
        struct NoBlocks(BufferTables);
        impl TableMemory for NoBlocks {
            fn allocate_table(&mut self) -> Option<u64> {
                self.0.allocate_table()
            }
            fn read_entry(&self, table: u64, index: usize) -> u64 {
                self.0.read_entry(table, index)
            }
            fn write_entry(&mut self, table: u64, index: usize, value: u64) {
                self.0.write_entry(table, index, value)
            }
        }
        assert!(
            PageTable::<NoBlocks, TestFormat>::with_concatenated_level1(
                NoBlocks(BufferTables::default()),
                2
            )
            .is_err()
        );
        assert_eq!(table().concatenated_root(), None);
    }

    #[test]
    fn unaligned_output_falls_back_to_pages() {
        let mut t = table();
        t.map(0x20_0000, 0x1234_5000, 0x20_0000, RX).unwrap();
        assert_eq!(t.lookup(0x20_0000), Some((0x1234_5000, RX, 0x1000)));
        assert_eq!(t.lookup(0x3f_f123), Some((0x1254_4123, RX, 0x1000)));
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
            t.map((1 << 48) - 0x1000, 0, 0x2000, RW),
            Err(MapError::OutOfRange)
        );
        assert_eq!(t.map(!0xfff, 0, 0x1000, RW), Err(MapError::OutOfRange));
        t.map(0x3fff_f000, 0x3fff_f000, 0x1000, RW).unwrap();
    }

    #[test]
    fn running_out_of_tables_is_an_error() {
        let mut t = PageTable::<_, TestFormat>::new(BufferTables {
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
        t.unmap(0x8000_0000, 0x3000).unwrap();
        t.map(0x8000_0000, 0xa000_0000, 0x3000, RW).unwrap();
        assert_eq!(t.lookup(0x8000_2010), Some((0xa000_2010, RW, 0x1000)));
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
}
