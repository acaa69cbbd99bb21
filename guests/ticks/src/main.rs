//! `ticks`: takes ten virtual-timer interrupts 10 ms apart through the GIC, sleeping in WFI
//! between them, then `PASS`. The third one is deactivated through ICACTIVER0 (distributor
//! or redistributor) instead of the CPU interface: the timer must go on firing (its
//! physical interrupt is linked to the virtual one).

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};

use bulkhead_guest::timer::{self, VIRTUAL_TIMER_INTID};
use bulkhead_guest::{cpu, exit_fail_with, exit_pass, gic, irq, println};

bulkhead_guest::entry!(main);

/// Interrupts to take.
const INTERRUPTS: u32 = 10;
/// Period of the timer.
const PERIOD_MS: u64 = 10;

/// Timer interrupts taken so far.
static TAKEN: AtomicU32 = AtomicU32::new(0);

/// The interrupt deactivated through ICACTIVER0.
const CLEARED: u32 = 3;

fn on_timer(_intid: u32) {
    let taken = TAKEN.fetch_add(1, Ordering::Relaxed) + 1;
    println!("ticks: interrupt {taken}");
    // The next deadline first: the timer's line drops, so the deactivation below does not
    // make the interrupt pending again at once (a level interrupt still asserted would be).
    if taken < INTERRUPTS {
        timer::arm_virtual_timer(timer::ticks_from_ms(PERIOD_MS));
    } else {
        timer::stop_virtual_timer();
    }
    if taken == CLEARED {
        if let Err(error) = gic::clear_active(VIRTUAL_TIMER_INTID) {
            exit_fail_with(format_args!("ticks: ICACTIVER0 write failed: {error:?}"));
        }
        println!("ticks: interrupt {taken} deactivated through ICACTIVER0");
    }
}

fn main() -> ! {
    println!(
        "ticks: {}, counter {} Hz, {INTERRUPTS} interrupts every {PERIOD_MS} ms",
        gic::version(),
        timer::frequency()
    );
    if let Err(error) = gic::init() {
        exit_fail_with(format_args!("ticks: GIC set-up failed: {error:?}"));
    }
    if let Err(error) = irq::register(VIRTUAL_TIMER_INTID, on_timer) {
        exit_fail_with(format_args!(
            "ticks: cannot register the timer handler: {error:?}"
        ));
    }
    if let Err(error) = gic::enable(VIRTUAL_TIMER_INTID) {
        exit_fail_with(format_args!("ticks: cannot enable INTID 27: {error:?}"));
    }
    let start = timer::counter();
    timer::arm_virtual_timer(timer::ticks_from_ms(PERIOD_MS));
    cpu::enable_interrupts();
    while TAKEN.load(Ordering::Relaxed) < INTERRUPTS {
        cpu::wait_for_interrupt();
    }
    cpu::disable_interrupts();
    let elapsed = timer::ms_between(start, timer::counter());
    let expected = INTERRUPTS as u64 * PERIOD_MS;
    if elapsed < expected {
        exit_fail_with(format_args!(
            "ticks: {INTERRUPTS} interrupts after {elapsed} ms, expected at least {expected} ms"
        ));
    }
    println!("ticks: {INTERRUPTS} interrupts in at least {expected} ms");
    exit_pass()
}
