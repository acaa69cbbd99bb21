//! `restart-smp-x86`: a fault on a secondary vCPU restarts the whole partition. vCPU 0 reads
//! how often the partition was restarted (boot information); below twice, it starts vCPU 1
//! with CPU_ON, and vCPU 1 reads past the partition's RAM (stopping it, or with `fault-policy
//! restart` restarting it) while vCPU 0 spins waiting. Only a restart that reloads vCPU 0 too
//! gets it past that wait: the third run prints PASS.

#![no_std]
#![no_main]

use core::arch::global_asm;
use core::sync::atomic::AtomicU64;

use bulkhead_guest_x86::exit::cpu_on;
use bulkhead_guest_x86::{boot_info, exit_fail_with, interrupts, println, system_off};

bulkhead_guest_x86::entry!(main);

/// Runs that fault before the one that passes.
const FAULTING_RUNS: u64 = 2;

/// vCPU 1's stack (interior-mutable, so it lands in writable memory).
#[repr(C, align(16))]
struct Stack([AtomicU64; 1024]);
static STACK: Stack = Stack([const { AtomicU64::new(0) }; 1024]);

global_asm!(
    ".global restart_secondary_entry",
    "restart_secondary_entry:",
    "    and rsp, -16",
    "    call {secondary}",
    "    ud2",
    secondary = sym secondary,
);

unsafe extern "C" {
    fn restart_secondary_entry();
}

extern "C" fn secondary(_context: u64) -> ! {
    // vCPU 0 read the boot information; its address is shared with this vCPU.
    let ram_end = boot_info::ram_size().unwrap_or(0);
    println!("restart-smp: vcpu 1 reads {ram_end:#x}, past the partition's RAM");
    // SAFETY: not memory-safe by intent: the address is past the partition's RAM; the read
    // leaves the guest with an EPT violation and never completes.
    let value = unsafe { core::ptr::read_volatile(ram_end as *const u64) };
    exit_fail_with(format_args!("the read past RAM returned {value:#x}"))
}

fn main() -> ! {
    let Some(restarts) = boot_info::restarts() else {
        exit_fail_with(format_args!("no boot information"));
    };
    println!(
        "restart-smp: run {} (restarts so far {restarts})",
        restarts + 1
    );
    if restarts >= FAULTING_RUNS {
        println!("restart-smp: restarted {restarts} times by vcpu 1's faults; PASS");
        system_off()
    }
    // The context becomes vCPU 1's RSP (and RDI): its stack's top.
    let top = STACK.0.as_ptr_range().end as u64;
    let status = cpu_on(1, restart_secondary_entry as *const () as u64, top);
    if status != 0 {
        exit_fail_with(format_args!("CPU_ON returned {status}"));
    }
    // Spin until the restart takes this vCPU away; it never returns here. Interrupts on: Bochs
    // turns the host's kick into a VM exit only while the guest's RFLAGS.IF is set (the SDM
    // says external-interrupt exiting ignores it; on hardware either works).
    interrupts::install();
    interrupts::enable();
    loop {
        core::hint::spin_loop();
    }
}
