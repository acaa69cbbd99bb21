//! The hypervisor's own page tables: turning on what they rely on and switching CR3 to them.

use x86_64::PhysAddr;
use x86_64::registers::control::{Cr0, Cr0Flags, Cr3, Cr3Flags};
use x86_64::registers::model_specific::{Efer, EferFlags};
use x86_64::structures::paging::PhysFrame;

use crate::paging::{EntryFormat, PageTable, TableMemory};

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
