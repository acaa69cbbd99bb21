//! A virtual 16550 UART (the x86 `vdev ser8250`, COM1 at port 0x3f8 by default): the
//! partition's console. Bytes written to the transmit holding register become console effects
//! (the console multiplexer prefixes each line with the partition's name); the receive side is
//! always empty and the transmitter always ready, which is what polling guests (and Linux's
//! `8250` driver without interrupts) need. No interrupts yet: IER is kept but never asserts.

use crate::device::{Effect, Effects, MmioDevice};
use crate::exit::AccessWidth;

/// Eight consecutive I/O ports.
pub const PORTS: u64 = 8;

const DATA: u64 = 0; // RBR / THR, DLL when LCR.DLAB
const INTERRUPT_ENABLE: u64 = 1; // IER, DLM when LCR.DLAB
const INTERRUPT_ID: u64 = 2; // IIR (read) / FCR (write)
const LINE_CONTROL: u64 = 3;
const MODEM_CONTROL: u64 = 4;
const LINE_STATUS: u64 = 5;
const MODEM_STATUS: u64 = 6;
const SCRATCH: u64 = 7;

/// LCR bit 7: divisor latch access.
const DLAB: u8 = 1 << 7;
/// LSR: transmit holding register empty | transmitter empty.
const TRANSMITTER_IDLE: u64 = (1 << 5) | (1 << 6);
/// IIR: no interrupt pending.
const NO_INTERRUPT: u64 = 1;
/// IIR bits 7:6 when FCR enabled the FIFOs.
const FIFOS_ENABLED: u64 = 0xc0;
/// MSR: clear to send, data set ready, carrier detect (a terminal is always there).
const MODEM_READY: u64 = 0xb0;

/// The register state of one virtual 16550.
#[derive(Debug, Default)]
pub struct Virtual16550 {
    interrupt_enable: u8,
    line_control: u8,
    modem_control: u8,
    scratch: u8,
    divisor: u16,
    fifos: bool,
}

impl Virtual16550 {
    /// A UART after reset.
    pub fn new() -> Self {
        Self::default()
    }

    fn dlab(&self) -> bool {
        self.line_control & DLAB != 0
    }
}

impl MmioDevice for Virtual16550 {
    fn name(&self) -> &'static str {
        "16550"
    }

    fn size(&self) -> u64 {
        PORTS
    }

    fn read(&mut self, _vcpu: usize, offset: u64, _width: AccessWidth, _e: &mut Effects) -> u64 {
        let [low, high] = self.divisor.to_le_bytes();
        match offset {
            DATA if self.dlab() => u64::from(low),
            DATA => 0,
            INTERRUPT_ENABLE if self.dlab() => u64::from(high),
            INTERRUPT_ENABLE => u64::from(self.interrupt_enable),
            INTERRUPT_ID if self.fifos => NO_INTERRUPT | FIFOS_ENABLED,
            INTERRUPT_ID => NO_INTERRUPT,
            LINE_CONTROL => u64::from(self.line_control),
            MODEM_CONTROL => u64::from(self.modem_control),
            LINE_STATUS => TRANSMITTER_IDLE,
            MODEM_STATUS => MODEM_READY,
            SCRATCH => u64::from(self.scratch),
            _ => 0,
        }
    }

    fn write(
        &mut self,
        _vcpu: usize,
        offset: u64,
        _width: AccessWidth,
        value: u64,
        effects: &mut Effects,
    ) {
        let byte = value as u8;
        let [low, high] = self.divisor.to_le_bytes();
        match offset {
            DATA if self.dlab() => self.divisor = u16::from_le_bytes([byte, high]),
            DATA => effects.push(Effect::ConsoleByte(byte)),
            INTERRUPT_ENABLE if self.dlab() => self.divisor = u16::from_le_bytes([low, byte]),
            INTERRUPT_ENABLE => self.interrupt_enable = byte & 0x0f,
            INTERRUPT_ID => self.fifos = byte & 1 != 0,
            LINE_CONTROL => self.line_control = byte,
            MODEM_CONTROL => self.modem_control = byte & 0x1f,
            SCRATCH => self.scratch = byte,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn write(uart: &mut Virtual16550, offset: u64, value: u64) -> Vec<Effect> {
        let mut effects = Effects::default();
        uart.write(0, offset, AccessWidth::Byte, value, &mut effects);
        effects.drain().collect()
    }

    fn read(uart: &mut Virtual16550, offset: u64) -> u64 {
        uart.read(0, offset, AccessWidth::Byte, &mut Effects::default())
    }

    #[test]
    fn transmitted_bytes_reach_the_console_and_the_divisor_does_not() {
        let mut uart = Virtual16550::new();
        assert_eq!(
            write(&mut uart, DATA, u64::from(b'h')),
            [Effect::ConsoleByte(b'h')]
        );
        // Programming 115200 baud: DLAB on, divisor 1, DLAB off, 8N1.
        assert!(write(&mut uart, LINE_CONTROL, 0x80).is_empty());
        assert!(write(&mut uart, DATA, 1).is_empty());
        assert!(write(&mut uart, INTERRUPT_ENABLE, 0).is_empty());
        assert_eq!(read(&mut uart, DATA), 1);
        assert!(write(&mut uart, LINE_CONTROL, 0x03).is_empty());
        assert_eq!(read(&mut uart, LINE_CONTROL), 3);
        assert_eq!(
            write(&mut uart, DATA, u64::from(b'i')),
            [Effect::ConsoleByte(b'i')]
        );
    }

    #[test]
    fn always_ready_to_transmit_and_nothing_received() {
        let mut uart = Virtual16550::new();
        assert_eq!(read(&mut uart, LINE_STATUS) & 0x21, 0x20);
        assert_eq!(read(&mut uart, INTERRUPT_ID), 1);
        assert!(write(&mut uart, INTERRUPT_ID, 0xc7).is_empty());
        assert_eq!(read(&mut uart, INTERRUPT_ID), 0xc1);
        assert!(write(&mut uart, SCRATCH, 0x5a).is_empty());
        assert_eq!(read(&mut uart, SCRATCH), 0x5a);
    }
}
