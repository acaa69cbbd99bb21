//! `triple-x86`: loads an empty IDT (limit 0) and executes `int3`. The breakpoint cannot be
//! delivered, nor can the double fault that follows: the vCPU triple-faults, which on bare
//! metal resets the machine. Bulkhead must stop this partition alone and say so.

#![no_std]
#![no_main]

use core::arch::asm;

use bulkhead_guest_x86::{exit_fail_with, println};

bulkhead_guest_x86::entry!(main);

/// An IDT pointer: limit, then base.
#[repr(C, packed)]
struct Pointer {
    limit: u16,
    base: u64,
}

fn main() -> ! {
    println!("triple: loading an empty IDT, then int3");
    let empty = Pointer { limit: 0, base: 0 };
    // SAFETY: not memory-safe by intent: with no IDT the breakpoint escalates to a triple
    // fault, which ends the vCPU; nothing after it runs.
    unsafe {
        asm!("lidt [{pointer}]", "int3", pointer = in(reg) &empty, options(nostack));
    }
    exit_fail_with(format_args!("int3 with an empty IDT returned"))
}
