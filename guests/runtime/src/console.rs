//! The console: a polled PL011 transmitter and whole-line printing ([`println!`]).
//!
//! Each call prints one complete line under a lock that every vCPU shares, so lines from
//! different vCPUs never interleave (the hypervisor prefixes each line with `[vmname] `).
//! A vCPU that prints while it already holds the lock (a panic or fault inside a print)
//! carries on instead of deadlocking.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::{cpu, mmio, platform};

/// PL011 data register.
const DATA: usize = 0x000;
/// PL011 flag register.
const FLAG: usize = 0x018;
/// FR.TXFF: transmit FIFO full.
const FLAG_TRANSMIT_FULL: u32 = 1 << 5;

/// 0 when free, else the index + 1 of the vCPU printing.
static OWNER: AtomicUsize = AtomicUsize::new(0);

/// The PL011 at the platform's console address.
struct Pl011 {
    base: usize,
}

impl Pl011 {
    fn write_byte(&mut self, byte: u8) {
        // SAFETY: `base` is the PL011 from the device tree (or the virt default): FR and DR
        // are its registers, and polling FR then writing DR only transmits.
        unsafe {
            while mmio::read32(self.base + FLAG) & FLAG_TRANSMIT_FULL != 0 {
                cpu::relax();
            }
            mmio::write32(self.base + DATA, u32::from(byte));
        }
    }
}

impl Write for Pl011 {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        text.bytes().for_each(|byte| self.write_byte(byte));
        Ok(())
    }
}

/// Prints `args` and a newline as one line. Use [`println!`](crate::println).
pub fn print_line(args: fmt::Arguments<'_>) {
    let daif = cpu::disable_interrupts();
    let me = cpu::current_index() + 1;
    let reentered = OWNER.load(Ordering::Relaxed) == me;
    if !reentered {
        while OWNER
            .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            cpu::relax();
        }
    }
    let mut uart = Pl011 {
        base: platform::console_base(),
    };
    // Pl011::write_str never fails; a Display impl's error just ends the line early.
    let _ = uart.write_fmt(args);
    uart.write_byte(b'\n');
    if !reentered {
        OWNER.store(0, Ordering::Release);
    }
    cpu::restore_interrupts(daif);
}

/// Prints one whole line on the console (format arguments as for `format!`).
#[macro_export]
macro_rules! println {
    () => {
        $crate::console::print_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::console::print_line(format_args!($($arg)*))
    };
}
