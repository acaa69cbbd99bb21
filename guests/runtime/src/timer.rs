//! The generic timer from EL1: the virtual counter (CNTVCT_EL0) for delays and the virtual
//! timer (CNTV_*_EL0, PPI 27) for interrupts.

use core::arch::asm;

/// INTID of the EL1 virtual timer (PPI 11).
pub const VIRTUAL_TIMER_INTID: u32 = 27;

/// CNTV_CTL_EL0.ENABLE.
const CONTROL_ENABLE: u64 = 1;

/// Counter frequency in Hz (CNTFRQ_EL0).
pub fn frequency() -> u64 {
    let value: u64;
    // SAFETY: reading CNTFRQ_EL0 has no side effects.
    unsafe { asm!("mrs {}, cntfrq_el0", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// The virtual counter (CNTVCT_EL0), read after an ISB so it is not read early.
pub fn counter() -> u64 {
    let value: u64;
    // SAFETY: reading CNTVCT_EL0 has no side effects.
    unsafe {
        asm!("isb", "mrs {}, cntvct_el0", out(reg) value, options(nomem, nostack, preserves_flags));
    }
    value
}

/// Counter ticks in `ms` milliseconds.
pub fn ticks_from_ms(ms: u64) -> u64 {
    frequency().saturating_mul(ms) / 1000
}

/// Milliseconds between two counter values.
pub fn ms_between(start: u64, end: u64) -> u64 {
    let frequency = frequency().max(1);
    end.wrapping_sub(start).saturating_mul(1000) / frequency
}

/// Busy-waits `ms` milliseconds on the virtual counter.
pub fn delay_ms(ms: u64) {
    let deadline = counter().saturating_add(ticks_from_ms(ms));
    while counter() < deadline {
        crate::cpu::relax();
    }
}

/// Arms the virtual timer to fire `ticks` counter ticks from now (unmasked). Its interrupt
/// (level, [`VIRTUAL_TIMER_INTID`]) stays asserted until re-armed or stopped.
pub fn arm_virtual_timer(ticks: u64) {
    let deadline = counter().saturating_add(ticks);
    // SAFETY: programs this vCPU's own virtual timer; no memory is touched.
    unsafe {
        asm!(
            "msr cntv_cval_el0, {deadline}",
            "msr cntv_ctl_el0, {control}",
            "isb",
            deadline = in(reg) deadline,
            control = in(reg) CONTROL_ENABLE,
            options(nomem, nostack, preserves_flags)
        );
    }
}

/// Stops the virtual timer (and drops its interrupt).
pub fn stop_virtual_timer() {
    // SAFETY: disables this vCPU's own virtual timer.
    unsafe {
        asm!(
            "msr cntv_ctl_el0, xzr",
            "isb",
            options(nomem, nostack, preserves_flags)
        )
    };
}
