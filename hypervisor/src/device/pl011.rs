//! A virtual Arm PL011 UART: the partition's console. Transmitted bytes become console
//! effects (the console multiplexer prefixes each line with the partition's name); the
//! receive side is always empty. Registers and PrimeCell IDs follow the PL011 TRM closely
//! enough for Linux's `amba-pl011` driver and for simple polling guests.

use crate::device::{Effect, Effects, MmioDevice};
use crate::exit::AccessWidth;

const DATA: u64 = 0x000;
const RECEIVE_STATUS: u64 = 0x004;
const FLAG: u64 = 0x018;
const INTEGER_BAUD: u64 = 0x024;
const FRACTIONAL_BAUD: u64 = 0x028;
const LINE_CONTROL: u64 = 0x02c;
const CONTROL: u64 = 0x030;
const FIFO_LEVEL: u64 = 0x034;
const INTERRUPT_MASK: u64 = 0x038;
const RAW_INTERRUPT_STATUS: u64 = 0x03c;
const MASKED_INTERRUPT_STATUS: u64 = 0x040;
const INTERRUPT_CLEAR: u64 = 0x044;
const DMA_CONTROL: u64 = 0x048;
const ID_BASE: u64 = 0xfe0;

/// FR: transmit FIFO empty | receive FIFO empty.
const FLAG_IDLE: u64 = (1 << 7) | (1 << 4);
/// Transmit interrupt (TXRIS) is always raised: the FIFO is always ready.
const TRANSMIT_INTERRUPT: u64 = 1 << 5;
/// PeriphID0-3 then PCellID0-3 (PL011 r1p5, PrimeCell).
const IDS: [u64; 8] = [0x11, 0x10, 0x34, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

/// The register state of one virtual PL011.
#[derive(Debug)]
pub struct VirtualPl011 {
    intid: u32,
    integer_baud: u64,
    fractional_baud: u64,
    line_control: u64,
    control: u64,
    fifo_level: u64,
    interrupt_mask: u64,
    dma_control: u64,
}

impl VirtualPl011 {
    /// A PL011 whose interrupt is INTID `intid`.
    pub fn new(intid: u32) -> Self {
        Self {
            intid,
            integer_baud: 0,
            fractional_baud: 0,
            line_control: 0,
            // UARTEN | TXE | RXE, as firmware leaves it.
            control: 0x301,
            fifo_level: 0x12,
            interrupt_mask: 0,
            dma_control: 0,
        }
    }
}

impl VirtualPl011 {
    fn interrupt_level(&self) -> bool {
        TRANSMIT_INTERRUPT & self.interrupt_mask != 0
    }
}

impl MmioDevice for VirtualPl011 {
    fn name(&self) -> &'static str {
        "pl011"
    }

    fn size(&self) -> u64 {
        0x1000
    }

    fn read(
        &mut self,
        _vcpu: usize,
        offset: u64,
        _width: AccessWidth,
        _effects: &mut Effects,
    ) -> u64 {
        match offset {
            FLAG => FLAG_IDLE,
            INTEGER_BAUD => self.integer_baud,
            FRACTIONAL_BAUD => self.fractional_baud,
            LINE_CONTROL => self.line_control,
            CONTROL => self.control,
            FIFO_LEVEL => self.fifo_level,
            INTERRUPT_MASK => self.interrupt_mask,
            RAW_INTERRUPT_STATUS => TRANSMIT_INTERRUPT,
            MASKED_INTERRUPT_STATUS => TRANSMIT_INTERRUPT & self.interrupt_mask,
            DMA_CONTROL => self.dma_control,
            ID_BASE..=0xffc if offset.is_multiple_of(4) => IDS
                .get(((offset - ID_BASE) / 4) as usize)
                .copied()
                .unwrap_or(0),
            // DATA reads an empty receive FIFO; RECEIVE_STATUS has no errors.
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
        let before = self.interrupt_level();
        match offset {
            DATA => effects.push(Effect::ConsoleByte(value as u8)),
            RECEIVE_STATUS | INTERRUPT_CLEAR => {}
            INTEGER_BAUD => self.integer_baud = value & 0xffff,
            FRACTIONAL_BAUD => self.fractional_baud = value & 0x3f,
            LINE_CONTROL => self.line_control = value & 0xff,
            CONTROL => self.control = value & 0xff87,
            FIFO_LEVEL => self.fifo_level = value & 0x3f,
            INTERRUPT_MASK => self.interrupt_mask = value & 0x7ff,
            DMA_CONTROL => self.dma_control = value & 0x7,
            _ => {}
        }
        let after = self.interrupt_level();
        if before != after {
            effects.push(Effect::SetLevel {
                intid: self.intid,
                level: after,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn transmit_becomes_console_bytes() {
        let mut uart = VirtualPl011::new(33);
        let mut effects = Effects::default();
        for &b in b"hi\n" {
            assert_eq!(
                uart.read(0, FLAG, AccessWidth::Word, &mut effects) & (1 << 5),
                0,
                "TXFF clear"
            );
            uart.write(0, DATA, AccessWidth::Word, u64::from(b), &mut effects);
        }
        let bytes: Vec<_> = effects.drain().collect();
        assert_eq!(
            bytes,
            [
                Effect::ConsoleByte(b'h'),
                Effect::ConsoleByte(b'i'),
                Effect::ConsoleByte(b'\n')
            ]
        );
    }

    #[test]
    fn primecell_ids_and_unknown_registers() {
        let mut uart = VirtualPl011::new(33);
        let mut effects = Effects::default();
        let ids: Vec<u64> = (0..8)
            .map(|i| uart.read(0, 0xfe0 + 4 * i, AccessWidth::Word, &mut effects))
            .collect();
        assert_eq!(ids, IDS);
        assert_eq!(uart.read(0, 0x800, AccessWidth::Word, &mut effects), 0);
        uart.write(0, 0x800, AccessWidth::Word, 5, &mut effects);
        assert_eq!(uart.read(0, 0xfe1, AccessWidth::Byte, &mut effects), 0);
    }

    #[test]
    fn transmit_interrupt_follows_mask() {
        let mut uart = VirtualPl011::new(33);
        let mut effects = Effects::default();
        uart.write(
            0,
            INTERRUPT_MASK,
            AccessWidth::Word,
            TRANSMIT_INTERRUPT,
            &mut effects,
        );
        assert_eq!(
            uart.read(0, MASKED_INTERRUPT_STATUS, AccessWidth::Word, &mut effects),
            TRANSMIT_INTERRUPT
        );
        uart.write(0, INTERRUPT_MASK, AccessWidth::Word, 0, &mut effects);
        assert_eq!(
            effects.drain().collect::<Vec<_>>(),
            [
                Effect::SetLevel {
                    intid: 33,
                    level: true
                },
                Effect::SetLevel {
                    intid: 33,
                    level: false
                }
            ]
        );
    }
}
