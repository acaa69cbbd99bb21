//! Cadence UART transmit path (Xilinx Zynq and ZynqMP `ps7_uart`/`psu_uart`), used as the
//! hypervisor console when the device tree chooses it.
//!
//! Written by hand, like the PL011 driver: the console needs three registers, polled, with the
//! baud rate left as firmware set it; no kept crate covers this UART without pulling in a HAL
//! for a whole SoC.

use hypervisor::console::ConsoleSink;

/// Control register.
const CONTROL: usize = 0x00;
/// Channel status register.
const CHANNEL_STATUS: usize = 0x2c;
/// Transmit and receive FIFO.
const FIFO: usize = 0x30;
/// CONTROL: transmitter enable.
const CONTROL_TRANSMIT_ENABLE: u32 = 1 << 4;
/// CONTROL: transmitter disable (wins over enable).
const CONTROL_TRANSMIT_DISABLE: u32 = 1 << 5;
/// CHANNEL_STATUS: the transmit FIFO is full.
const STATUS_TRANSMIT_FULL: u32 = 1 << 4;

/// A Cadence UART whose registers are identity-mapped at `base`.
#[derive(Debug)]
pub struct CadenceUart {
    base: usize,
}

impl CadenceUart {
    /// A driver for the Cadence UART at `base`; turns its transmitter on if it is off (after
    /// reset it is disabled; firmware that used the UART has enabled it), leaving the baud
    /// rate, framing and receiver as they are.
    ///
    /// # Safety
    /// `base` must be the physical (and identity-mapped) address of a Cadence UART register
    /// frame that nothing else drives as a device, and it must stay mapped as device memory.
    pub unsafe fn new(base: usize) -> Self {
        let uart = Self { base };
        let control = uart.read(CONTROL);
        if control & CONTROL_TRANSMIT_DISABLE != 0 || control & CONTROL_TRANSMIT_ENABLE == 0 {
            uart.write(
                CONTROL,
                (control & !CONTROL_TRANSMIT_DISABLE) | CONTROL_TRANSMIT_ENABLE,
            );
        }
        uart
    }

    fn read(&self, register: usize) -> u32 {
        // SAFETY: `new`'s contract: `register` is one of this UART's mapped registers.
        unsafe { core::ptr::read_volatile((self.base + register) as *const u32) }
    }

    fn write(&self, register: usize, value: u32) {
        // SAFETY: `new`'s contract: `register` is one of this UART's mapped registers.
        unsafe { core::ptr::write_volatile((self.base + register) as *mut u32, value) }
    }

    fn write_byte(&self, byte: u8) {
        while self.read(CHANNEL_STATUS) & STATUS_TRANSMIT_FULL != 0 {
            core::hint::spin_loop();
        }
        self.write(FIFO, u32::from(byte));
    }
}

impl ConsoleSink for CadenceUart {
    fn write_bytes(&self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_byte(byte);
        }
    }
}
