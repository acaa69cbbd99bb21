//! The hypervisor's physical console UART: one of the drivers Bulkhead has, chosen at boot
//! (board file `console`, else the device tree's `/chosen/stdout-path`), behind the core's
//! one-method [`ConsoleSink`] trait.

use hypervisor::board::UartKind;
use hypervisor::console::ConsoleSink;

use crate::cadence_uart::CadenceUart;
use crate::pl011::Pl011;

/// The console UART, whichever kind it is.
#[derive(Debug)]
pub enum ConsoleUart {
    /// An Arm PL011.
    Pl011(Pl011),
    /// A Cadence UART (Zynq, ZynqMP).
    Cadence(CadenceUart),
}

impl ConsoleUart {
    /// The driver for a UART of `kind` at `base`.
    ///
    /// # Safety
    /// `base` must be the physical (and identity-mapped) address of a register frame of a
    /// UART of `kind` that nothing else drives, and it must stay mapped as device memory.
    pub unsafe fn new(kind: UartKind, base: usize) -> Self {
        match kind {
            // SAFETY: the caller's contract, passed on.
            UartKind::Pl011 => ConsoleUart::Pl011(unsafe { Pl011::new(base) }),
            // SAFETY: the caller's contract, passed on.
            UartKind::Cadence => ConsoleUart::Cadence(unsafe { CadenceUart::new(base) }),
        }
    }
}

impl ConsoleSink for ConsoleUart {
    fn write_bytes(&self, bytes: &[u8]) {
        match self {
            ConsoleUart::Pl011(uart) => uart.write_bytes(bytes),
            ConsoleUart::Cadence(uart) => uart.write_bytes(bytes),
        }
    }
}
