//! How a test guest ends: `PASS` or `FAIL: reason` as its last line, then PSCI SYSTEM_OFF.
//! The panic handler and the fatal-exception handler end the same way.

use core::fmt;
use core::panic::PanicInfo;

use crate::{println, psci};

/// Prints `PASS` and powers the partition off.
pub fn exit_pass() -> ! {
    println!("PASS");
    psci::system_off()
}

/// Prints `FAIL: message` and powers the partition off.
pub fn exit_fail(message: &str) -> ! {
    exit_fail_with(format_args!("{message}"))
}

/// Prints `FAIL: ` and the formatted message, then powers the partition off.
pub fn exit_fail_with(message: fmt::Arguments<'_>) -> ! {
    println!("FAIL: {message}");
    psci::system_off()
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    match info.location() {
        Some(location) => exit_fail_with(format_args!(
            "panic at {}:{}: {}",
            location.file(),
            location.line(),
            info.message()
        )),
        None => exit_fail_with(format_args!("panic: {}", info.message())),
    }
}

/// What the vector table entry number (0-15) was.
fn exception_kind(kind: u64) -> &'static str {
    match kind {
        0 => "synchronous exception (EL1, SP_EL0)",
        1 => "IRQ (EL1, SP_EL0)",
        2 => "FIQ (EL1, SP_EL0)",
        3 => "SError (EL1, SP_EL0)",
        4 => "synchronous exception",
        6 => "FIQ",
        7 => "SError",
        8..=11 => "exception from EL0 (AArch64)",
        _ => "exception from EL0 (AArch32)",
    }
}

/// The exception class field of an ESR, named.
fn exception_class(esr: u64) -> &'static str {
    match (esr >> 26) & 0x3f {
        0x00 => "unknown",
        0x01 => "WFI/WFE",
        0x07 => "FP/SIMD access",
        0x0e => "illegal execution state",
        0x15 => "SVC",
        0x16 => "HVC",
        0x17 => "SMC",
        0x18 => "system register",
        0x20 | 0x21 => "instruction abort",
        0x22 => "PC alignment",
        0x24 | 0x25 => "data abort",
        0x26 => "SP alignment",
        0x2f => "SError",
        0x3c => "BRK",
        _ => "other",
    }
}

/// Called by every vector but the SP_EL1 IRQ one: reports and fails.
#[unsafe(no_mangle)]
extern "C" fn bulkhead_guest_exception(kind: u64, esr: u64, elr: u64, far: u64, spsr: u64) -> ! {
    exit_fail_with(format_args!(
        "{} ({}): ESR_EL1 {esr:#x} FAR_EL1 {far:#x} ELR_EL1 {elr:#x} SPSR_EL1 {spsr:#x}",
        exception_kind(kind),
        exception_class(esr),
    ))
}
