//! The hypervisor's own page tables: tables in heap frames, and switching CR3 to them.

use alloc::alloc::{Layout, alloc_zeroed};
use alloc::vec::Vec;

use x86_64::PhysAddr;
use x86_64::registers::control::{Cr0, Cr0Flags, Cr3, Cr3Flags};
use x86_64::registers::model_specific::{Efer, EferFlags};
use x86_64::structures::paging::PhysFrame;

use crate::paging::{ENTRIES, EntryFormat, PageTable, TableMemory};

/// Page tables in 4 KiB heap frames. The heap is identity-mapped, so a frame's address is its
/// physical address.
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
        // SAFETY: the layout has non-zero size. The frame is never freed: page tables live for
        // the whole run.
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
            // SAFETY: as in `read_entry`. Volatile: the page walker reads these words.
            unsafe { pointer.write_volatile(value) }
        }
    }
}

/// Turns on what the hypervisor's tables rely on, on this CPU: no-execute pages (EFER.NXE)
/// and read-only pages that hold in ring 0 (CR0.WP).
pub fn enable_protection() {
    // SAFETY: NXE only makes bit 63 of page-table entries meaningful (the boot tables leave it
    // clear); WP only makes ring-0 writes to read-only pages fault, which is the intent.
    unsafe {
        Efer::update(|flags| flags.insert(EferFlags::NO_EXECUTE_ENABLE));
        Cr0::update(|flags| flags.insert(Cr0Flags::WRITE_PROTECT));
    }
}

/// Switches this CPU to `table` (which also flushes non-global TLB entries).
///
/// # Safety
/// The tables must identity-map the code running now, its stack, and everything it will touch,
/// with the permissions it needs; [`enable_protection`] must have run on this CPU.
pub unsafe fn activate<M: TableMemory, F: EntryFormat>(table: &PageTable<M, F>) {
    let Ok(frame) = PhysFrame::from_start_address(PhysAddr::new(table.root())) else {
        return;
    };
    // SAFETY: the caller guarantees the new map covers everything in use, at the same
    // addresses, so execution continues at the next instruction.
    unsafe { Cr3::write(frame, Cr3Flags::empty()) };
}
