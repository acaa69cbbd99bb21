//! Waiting for an interrupt until a condition holds, with a deadline on the platform's timer
//! (aarch64 the virtual timer, x86_64 the x2APIC timer counting TSC ticks): if it passes, the
//! run ends with `FAIL: <what>: timed out after N ms`.
//!
//! The condition is checked with interrupts masked right before each sleep (WFI, or
//! `sti; hlt`; an interrupt that becomes pending in between still ends it), then the handlers
//! run: no wake-up is lost. [`until`] wakes only for interrupts (the devices' or the
//! deadline); [`polling`] also wakes every period, for conditions no interrupt announces.

use crate::arch::{self, InterruptError};

/// Installs the timer's handler and enables its interrupt on this vCPU. Call once, after the
/// interrupt controller is set up, before any wait ([`init_interrupts`](crate::init_interrupts)
/// does both).
pub fn init() -> Result<(), InterruptError> {
    arch::install_timer(on_timer)
}

/// The timer only wakes the waiting vCPU: the wait loop itself notices a passed deadline.
fn on_timer(_key: u32) {
    arch::stop_timer();
}

/// Waits until `done()` holds; fails the run as `what` after `timeout_ms`. Wakes only for
/// interrupts, so `done` must become true through one (a handler's effect).
pub fn until(what: &'static str, timeout_ms: u64, done: impl FnMut() -> bool) {
    wait(what, timeout_ms, None, done);
}

/// As [`until`], but also wakes every `period_ms` to check `done()` (for conditions that only
/// show in shared memory).
pub fn polling(what: &'static str, timeout_ms: u64, period_ms: u64, done: impl FnMut() -> bool) {
    wait(what, timeout_ms, Some(period_ms.max(1)), done);
}

/// Sleeps `ms` milliseconds (other interrupts are handled meanwhile).
pub fn sleep_ms(ms: u64) {
    let end = arch::counter().saturating_add(arch::ticks_from_ms(ms));
    wait("sleep", ms.saturating_add(1_000), Some(ms.max(1)), || {
        arch::counter() >= end
    });
}

fn wait(
    what: &'static str,
    timeout_ms: u64,
    period_ms: Option<u64>,
    mut done: impl FnMut() -> bool,
) {
    let saved = arch::disable_interrupts();
    let start = arch::counter();
    let deadline = start.saturating_add(arch::ticks_from_ms(timeout_ms));
    loop {
        if done() {
            break;
        }
        let now = arch::counter();
        if now >= deadline {
            arch::exit_fail_with(format_args!("{what}: timed out after {timeout_ms} ms"));
        }
        let wake = period_ms.map_or(deadline, |period| {
            deadline.min(now.saturating_add(arch::ticks_from_ms(period)))
        });
        arch::arm_timer(wake - now);
        arch::idle();
    }
    arch::stop_timer();
    arch::restore_interrupts(saved);
}
