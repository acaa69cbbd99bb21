//! Interrupt handlers: a fixed table indexed by INTID (no allocation) and the dispatcher the
//! IRQ vector calls.
//!
//! Handlers run with IRQs masked, on the stack of the interrupted vCPU, between the GIC
//! acknowledge and the end of interrupt. An interrupt without a handler ends the run with
//! `FAIL` (test guests want to know).

use crate::gic;
use crate::sync::SpinLock;

/// INTIDs below this can have a handler: SGIs, PPIs and the first 224 SPIs.
pub const MAX_INTID: usize = 256;

/// An interrupt handler; gets the INTID it was registered for.
pub type Handler = fn(intid: u32);

static HANDLERS: SpinLock<[Option<Handler>; MAX_INTID]> = SpinLock::new([None; MAX_INTID]);

/// Interrupts handled per IRQ exception before returning to the interrupted code.
const MAX_PER_EXCEPTION: usize = 16;

/// Why [`register`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntidTooLarge(pub u32);

/// Installs `handler` for `intid` (replacing any earlier one). Does not enable it: see
/// [`gic::enable`].
pub fn register(intid: u32, handler: Handler) -> Result<(), IntidTooLarge> {
    let mut handlers = HANDLERS.lock();
    let slot = handlers
        .get_mut(intid as usize)
        .ok_or(IntidTooLarge(intid))?;
    *slot = Some(handler);
    Ok(())
}

/// Removes the handler of `intid`.
pub fn unregister(intid: u32) {
    if let Some(slot) = HANDLERS.lock().get_mut(intid as usize) {
        *slot = None;
    }
}

/// Called by the IRQ vector with the interrupted state saved.
#[unsafe(no_mangle)]
extern "C" fn bulkhead_guest_irq() {
    for _ in 0..MAX_PER_EXCEPTION {
        let Some(interrupt) = gic::acknowledge() else {
            return;
        };
        let intid = interrupt.intid();
        let handler = HANDLERS.lock().get(intid as usize).copied().flatten();
        match handler {
            Some(handler) => handler(intid),
            None => crate::exit::exit_fail_with(format_args!("unexpected interrupt {intid}")),
        }
        gic::end_of_interrupt(interrupt);
    }
}
