//! `prober-x86`: checks fault containment. Reads guest-physical memory just past its RAM
//! (mapped by its own page tables, absent from its EPT): Bulkhead must stop the partition with
//! an EPT-violation report naming the address. If the read returns, it prints FAIL.

#![no_std]
#![no_main]

use bulkhead_guest_x86::{boot_info, exit_fail_with, println};

bulkhead_guest_x86::entry!(main);

fn main() -> ! {
    let name = boot_info::name();
    let Some(ram) = boot_info::ram_size() else {
        exit_fail_with(format_args!("no boot information"));
    };
    println!("{name}: RAM ends at {ram:#x}; reading {ram:#x}, outside its map");
    // SAFETY: not memory-safe by intent: the address is past the partition's RAM, so the read
    // leaves the guest with an EPT violation and never completes.
    let value = unsafe { core::ptr::read_volatile(ram as *const u64) };
    exit_fail_with(format_args!(
        "the read outside the partition returned {value:#x}"
    ))
}
