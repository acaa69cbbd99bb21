//! Waiting in WFI until a condition holds, with a deadline on the virtual timer: if it passes,
//! the run ends with `FAIL: <what>: timed out after N ms`.
//!
//! The condition is checked with IRQs masked right before each WFI (an interrupt that becomes
//! pending in between still ends the WFI), then IRQs are unmasked so the handlers run: no
//! wake-up is lost. [`until`] wakes only for interrupts (the devices' or the deadline);
//! [`polling`] also wakes every period, for conditions no interrupt announces.

use core::sync::atomic::{AtomicU64, Ordering};

use bulkhead_guest::gic::{self, GicError};
use bulkhead_guest::sync::SpinLock;
use bulkhead_guest::{cpu, exit_fail_with, irq, timer};

/// Counter value at which the current wait fails (`u64::MAX`: no wait running).
static DEADLINE: AtomicU64 = AtomicU64::new(u64::MAX);
/// Milliseconds the current wait was given.
static TIMEOUT_MS: AtomicU64 = AtomicU64::new(0);
/// What the current wait is for, for the failure line.
static WHAT: SpinLock<&'static str> = SpinLock::new("");

/// Installs the virtual-timer handler and enables its PPI on this vCPU. Call once, after
/// `gic::init()`, before any wait.
pub fn init() -> Result<(), GicError> {
    irq::register(timer::VIRTUAL_TIMER_INTID, on_timer)
        .map_err(|_| GicError::InvalidIntid(timer::VIRTUAL_TIMER_INTID))?;
    gic::enable(timer::VIRTUAL_TIMER_INTID)
}

fn on_timer(_intid: u32) {
    timer::stop_virtual_timer();
    if timer::counter() >= DEADLINE.load(Ordering::Relaxed) {
        let what = *WHAT.lock();
        exit_fail_with(format_args!(
            "{what}: timed out after {} ms",
            TIMEOUT_MS.load(Ordering::Relaxed)
        ));
    }
}

/// Waits in WFI until `done()` holds; fails the run as `what` after `timeout_ms`. Wakes only
/// for interrupts, so `done` must become true through one (a handler's effect).
pub fn until(what: &'static str, timeout_ms: u64, done: impl FnMut() -> bool) {
    wait(what, timeout_ms, None, done);
}

/// As [`until`], but also wakes every `period_ms` to check `done()` (for conditions that only
/// show in shared memory).
pub fn polling(what: &'static str, timeout_ms: u64, period_ms: u64, done: impl FnMut() -> bool) {
    wait(what, timeout_ms, Some(period_ms.max(1)), done);
}

/// Sleeps `ms` milliseconds in WFI (other interrupts are handled meanwhile).
pub fn sleep_ms(ms: u64) {
    let end = timer::counter().saturating_add(timer::ticks_from_ms(ms));
    wait("sleep", ms.saturating_add(1_000), Some(ms.max(1)), || {
        timer::counter() >= end
    });
}

fn wait(
    what: &'static str,
    timeout_ms: u64,
    period_ms: Option<u64>,
    mut done: impl FnMut() -> bool,
) {
    let daif = cpu::disable_interrupts();
    let start = timer::counter();
    let deadline = start.saturating_add(timer::ticks_from_ms(timeout_ms));
    *WHAT.lock() = what;
    TIMEOUT_MS.store(timeout_ms, Ordering::Relaxed);
    DEADLINE.store(deadline, Ordering::Relaxed);
    loop {
        cpu::disable_interrupts();
        if done() {
            break;
        }
        let now = timer::counter();
        if now >= deadline {
            exit_fail_with(format_args!("{what}: timed out after {timeout_ms} ms"));
        }
        let wake = period_ms.map_or(deadline, |period| {
            deadline.min(now.saturating_add(timer::ticks_from_ms(period)))
        });
        timer::arm_virtual_timer(wake - now);
        cpu::wait_for_interrupt();
        cpu::enable_interrupts();
    }
    timer::stop_virtual_timer();
    DEADLINE.store(u64::MAX, Ordering::Relaxed);
    cpu::restore_interrupts(daif);
}
