//! The partition's local APIC in x2APIC mode (MSRs 0x800..0x8ff): enable, timer, IPIs, EOI.

use core::arch::asm;

/// IA32_APIC_BASE.
pub const APIC_BASE: u32 = 0x1b;
/// x2APIC ID.
pub const ID: u32 = 0x802;
/// Version.
pub const VERSION: u32 = 0x803;
/// Task priority.
pub const TPR: u32 = 0x808;
/// End of interrupt.
pub const EOI: u32 = 0x80b;
/// Spurious-interrupt vector (bit 8: software enable).
pub const SVR: u32 = 0x80f;
/// Interrupt command.
pub const ICR: u32 = 0x830;
/// LVT timer.
pub const LVT_TIMER: u32 = 0x832;
/// Timer initial count.
pub const TMICT: u32 = 0x838;
/// Timer current count.
pub const TMCCT: u32 = 0x839;
/// Timer divide configuration.
pub const TDCR: u32 = 0x83e;

/// RDMSR.
pub fn read(msr: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: reads an MSR the hypervisor emulates (the x2APIC and IA32_APIC_BASE); no memory
    // is touched.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high, options(nomem, nostack));
    }
    (u64::from(high) << 32) | u64::from(low)
}

/// WRMSR.
pub fn write(msr: u32, value: u64) {
    // SAFETY: as in `read`: the hypervisor emulates the write.
    unsafe {
        asm!(
            "wrmsr",
            in("ecx") msr,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
            options(nomem, nostack)
        );
    }
}

/// CPUID.1:ECX.x2APIC.
pub fn supported() -> bool {
    crate::cpu::cpuid(1).ecx & (1 << 21) != 0
}

/// IA32_APIC_BASE says enabled, x2APIC mode.
pub fn enabled() -> bool {
    read(APIC_BASE) & (3 << 10) == 3 << 10
}

/// This vCPU's x2APIC ID.
pub fn id() -> u32 {
    read(ID) as u32
}

/// Software-enables the APIC with spurious vector 0xff, priority 0.
pub fn enable() {
    write(TPR, 0);
    write(SVR, 0x1ff);
}

/// Starts the timer: `vector`, periodic or one-shot, `count` ticks of the TSC (divide by 1).
pub fn start_timer(vector: u8, periodic: bool, count: u32) {
    configure_timer(vector, periodic);
    set_timer_count(count);
}

/// Sets the timer up without starting it: `vector`, periodic or one-shot, counting TSC ticks
/// (divide by 1). [`set_timer_count`] then starts and stops it with one write each.
pub fn configure_timer(vector: u8, periodic: bool) {
    write(TDCR, 0xb);
    write(
        LVT_TIMER,
        u64::from(vector) | if periodic { 1 << 17 } else { 0 },
    );
}

/// (Re)starts the configured timer with `count` ticks; 0 stops it.
pub fn set_timer_count(count: u32) {
    write(TMICT, u64::from(count));
}

/// Stops the timer and masks it.
pub fn stop_timer() {
    write(TMICT, 0);
    write(LVT_TIMER, 1 << 16);
}

/// Sends fixed IPI `vector` to x2APIC ID `destination` (physical mode).
pub fn send_ipi(destination: u32, vector: u8) {
    write(ICR, (u64::from(destination) << 32) | u64::from(vector));
}

/// Signals the end of the interrupt in service.
pub fn eoi() {
    write(EOI, 0);
}
