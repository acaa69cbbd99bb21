//! COM1 (the 16550 UART at I/O port 0x3f8), used as the hypervisor console.

use hypervisor::console::ConsoleSink;
use spin::Mutex;
use uart_16550::backend::{Backend, PioBackend};
use uart_16550::spec::registers::LSR;
use uart_16550::{BaudRate, Config, Uart16550};

/// The I/O port base of COM1.
pub const COM1: u16 = 0x3f8;

/// A 16550 UART driven through port I/O.
#[derive(Debug)]
pub struct Serial {
    base: u16,
    uart: Mutex<Uart16550<PioBackend>>,
}

impl Serial {
    /// Initialises the UART at `base` (115200 8N1, FIFO on, interrupts off); `None` if no UART
    /// answers there.
    ///
    /// # Safety
    /// `base..base + 8` must be the ports of a 16550 that nothing else drives.
    pub unsafe fn new(base: u16) -> Option<Self> {
        // SAFETY: forwarded from the caller.
        let mut uart = unsafe { Uart16550::new_port(base) }.ok()?;
        let config = Config {
            baud_rate: BaudRate::Baud115200,
            ..Config::DEFAULT
        };
        uart.init(config).ok()?;
        Some(Self {
            base,
            uart: Mutex::new(uart),
        })
    }
}

impl ConsoleSink for Serial {
    fn write_bytes(&self, bytes: &[u8]) {
        // The console serialises lines; the lock here only guards the driver state. On the
        // emergency path a CPU that died holding it must not silence the report: after a
        // bounded wait, write through a fresh handle (the UART is initialised already).
        for _ in 0..1_000_000 {
            if let Some(mut uart) = self.uart.try_lock() {
                uart.send_bytes_exact(bytes);
                drain(&mut uart);
                return;
            }
            core::hint::spin_loop();
        }
        // SAFETY: the same ports `new` was given (its contract); only the transmit path is used.
        if let Ok(mut uart) = unsafe { Uart16550::new_port(self.base) } {
            uart.send_bytes_exact(bytes);
            drain(&mut uart);
        }
    }
}

/// Waits (boundedly) until the transmitter has sent every byte, so a line printed just before
/// power-off reaches the wire.
fn drain<B: Backend>(uart: &mut Uart16550<B>) {
    for _ in 0..1_000_000 {
        if uart.lsr().contains(LSR::TRANSMITTER_EMPTY) {
            return;
        }
        core::hint::spin_loop();
    }
}
