//! Translation tables in heap frames, for every table the image builds: the hypervisor's own
//! tables and the partitions' second-stage tables, on both architectures.

use alloc::alloc::{Layout, alloc_zeroed};
use alloc::vec::Vec;

use hypervisor::paging::{ENTRIES, TableMemory};

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
}
