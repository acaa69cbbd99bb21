//! Translation tables in heap frames, for every table the image builds: the hypervisor's own
//! tables and the partitions' second-stage tables, on both architectures; and the builder of
//! the hypervisor's own identity map that both architectures start from.

use alloc::alloc::{Layout, alloc_zeroed};
use alloc::vec::Vec;
use core::fmt;

use hypervisor::paging::{ENTRIES, EntryFormat, MapError, Memory, PageTable, TableMemory};

/// Translation tables in 4 KiB heap frames. The heap is identity-mapped, so a frame's address
/// is its physical address.
#[derive(Debug, Default)]
pub struct HeapTables {
    tables: Vec<u64>,
}

impl HeapTables {
    fn entry_pointer(&self, table: u64, index: usize) -> Option<*mut u64> {
        (index < ENTRIES && self.tables.contains(&table))
            .then(|| (table as *mut u64).wrapping_add(index))
    }
}

impl TableMemory for HeapTables {
    fn allocate_table(&mut self) -> Option<u64> {
        let layout = Layout::from_size_align(4096, 4096).ok()?;
        // SAFETY: the layout has non-zero size. The frame is never freed: translation tables
        // live for the whole run.
        let frame = unsafe { alloc_zeroed(layout) };
        if frame.is_null() {
            return None;
        }
        self.tables.push(frame as u64);
        Some(frame as u64)
    }

    fn read_entry(&self, table: u64, index: usize) -> u64 {
        match self.entry_pointer(table, index) {
            // SAFETY: `entry_pointer` only returns pointers inside a frame this value
            // allocated and owns.
            Some(pointer) => unsafe { pointer.read_volatile() },
            None => 0,
        }
    }

    fn write_entry(&mut self, table: u64, index: usize, value: u64) {
        if let Some(pointer) = self.entry_pointer(table, index) {
            // SAFETY: as in `read_entry`. Volatile: the table walker reads these words.
            unsafe { pointer.write_volatile(value) }
        }
    }

    fn allocate_contiguous(&mut self, count: usize) -> Option<u64> {
        let size = 4096usize.checked_mul(count)?;
        let layout = Layout::from_size_align(size, size).ok()?;
        // SAFETY: the layout has non-zero size: it equals the alignment, which `Layout`
        // only accepts as a power of two (a count of 0 gives 0 and is refused above). Never
        // freed, like every table.
        let block = unsafe { alloc_zeroed(layout) };
        if block.is_null() {
            return None;
        }
        for index in 0..count {
            self.tables.push(block as u64 + 4096 * index as u64);
        }
        Some(block as u64)
    }
}

/// Read-execute: the image's code.
pub const CODE: Memory = Memory::Normal {
    write: false,
    execute: true,
};
/// Read-only, never executable: the image's constants.
const READ_ONLY: Memory = Memory::Normal {
    write: false,
    execute: false,
};
/// Read-write, never executable: the image's data and the rest of RAM.
pub const READ_WRITE: Memory = Memory::Normal {
    write: true,
    execute: false,
};

/// The hypervisor's own identity map while boot builds it: every range maps onto itself, and
/// a range that cannot be mapped ends the boot through `fail`, naming the range.
pub struct IdentityMap<F: EntryFormat> {
    table: PageTable<HeapTables, F>,
    fail: fn(fmt::Arguments<'_>) -> !,
}

impl<F: EntryFormat> IdentityMap<F> {
    /// An empty map; `fail` reports a boot failure and does not return.
    pub fn new(fail: fn(fmt::Arguments<'_>) -> !) -> Self {
        let table = PageTable::new(HeapTables::default())
            .unwrap_or_else(|e| fail(format_args!("hypervisor page table: {e}")));
        IdentityMap { table, fail }
    }

    /// Maps `[start, end)` onto itself as `memory`; an empty range maps nothing.
    pub fn map(&mut self, start: u64, end: u64, memory: Memory, what: &str) {
        if end > start
            && let Err(e) = self.table.map(start, start, end - start, memory)
        {
            (self.fail)(format_args!("mapping {what} [{start:#x}, {end:#x}): {e}"));
        }
    }

    /// Maps the image's sections with W^X: `[start, text_end)` read-execute, `[text_end,
    /// rodata_end)` read-only, `[rodata_end, end)` read-write.
    pub fn map_image(&mut self, start: u64, text_end: u64, rodata_end: u64, end: u64) {
        self.map(start, text_end, CODE, "image text");
        self.map(text_end, rodata_end, READ_ONLY, "image rodata");
        self.map(rodata_end, end, READ_WRITE, "image data");
    }

    /// The finished table.
    pub fn into_table(self) -> PageTable<HeapTables, F> {
        self.table
    }
}

/// Maps `size` bytes of host memory at `host` into a partition's second-stage table at
/// `guest` (shared memory a device of the partition attached): normal memory, read-write,
/// never executable. The caller makes the walker see the new entries (a barrier on aarch64).
pub fn map_shared_memory<F: EntryFormat>(
    table: &spin::Mutex<PageTable<HeapTables, F>>,
    guest: u64,
    host: u64,
    size: u64,
) -> Result<(), &'static str> {
    let memory = Memory::Normal {
        write: true,
        execute: false,
    };
    table
        .lock()
        .map(guest, host, size, memory)
        .map_err(|e| match e {
            MapError::AlreadyMapped { .. } => "the range is mapped already",
            MapError::OutOfTables => "out of memory for second-stage tables",
            _ => "the range is not page-aligned or out of range",
        })
}
