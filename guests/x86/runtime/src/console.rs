//! The console: COM1 (I/O port 0x3f8), polled. [`println!`](crate::println!) writes a line.

use core::fmt;

use crate::port;

const COM1: u16 = 0x3f8;
const LINE_STATUS: u16 = COM1 + 5;
const TRANSMITTER_EMPTY: u8 = 1 << 5;

/// Sends one byte once the transmitter is ready.
pub fn write_byte(byte: u8) {
    // SAFETY: the line status register of the partition's own UART; reading it changes
    // nothing.
    while unsafe { port::in8(LINE_STATUS) } & TRANSMITTER_EMPTY == 0 {
        core::hint::spin_loop();
    }
    // SAFETY: the UART's transmit register; the byte goes to the console.
    unsafe { port::out8(COM1, byte) };
}

/// The console as a `fmt::Write`.
#[derive(Debug)]
pub struct Console;

impl fmt::Write for Console {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for byte in text.bytes() {
            if byte == b'\n' {
                write_byte(b'\r');
            }
            write_byte(byte);
        }
        Ok(())
    }
}

/// Writes formatted text.
pub fn print(args: fmt::Arguments<'_>) {
    let _ = fmt::Write::write_fmt(&mut Console, args);
}

/// Prints a line on the console.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::console::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}
