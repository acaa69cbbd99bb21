//! The console: COM1 (I/O port 0x3f8), polled. [`println!`](crate::println!) writes a line.

use core::arch::asm;
use core::fmt;

const COM1: u16 = 0x3f8;
const LINE_STATUS: u16 = COM1 + 5;
const TRANSMITTER_EMPTY: u8 = 1 << 5;

fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: port I/O on the partition's own UART; no memory is touched.
    unsafe { asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack)) };
    value
}

fn outb(port: u16, value: u8) {
    // SAFETY: as in `inb`.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack)) };
}

/// Sends one byte once the transmitter is ready.
pub fn write_byte(byte: u8) {
    while inb(LINE_STATUS) & TRANSMITTER_EMPTY == 0 {
        core::hint::spin_loop();
    }
    outb(COM1, byte);
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
