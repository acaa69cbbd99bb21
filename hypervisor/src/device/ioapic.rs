//! A partition's virtual I/O APIC (`vdev ioapic`, x86_64): the 82093AA register interface
//! (IOREGSEL, IOWIN, EOI), 24 pins with their redirection entries, edge and level semantics
//! (remote IRR: a level pin delivers once, then again only after the guest's EOI if the line
//! is still asserted). Pure logic: what it delivers leaves as [`Delivery`] values the partition's
//! [`crate::device::apic::ApicBus`] posts to the vCPUs' local APICs.

use crate::exit::AccessWidth;

/// Pins (redirection entries).
pub const PINS: u8 = 24;
/// Bytes of the register frame.
pub const FRAME_SIZE: u64 = 0x1000;
/// Register select (u32, read-write).
const IOREGSEL: u64 = 0x00;
/// Register window (u32): the register IOREGSEL names.
const IOWIN: u64 = 0x10;
/// EOI register (version 0x20): a write ends the level interrupt with that vector.
const EOI: u64 = 0x40;
/// Indirect registers.
const REGISTER_ID: u32 = 0x00;
const REGISTER_VERSION: u32 = 0x01;
const REGISTER_ARBITRATION: u32 = 0x02;
const FIRST_REDIRECTION: u32 = 0x10;
/// Version 0x20, highest redirection entry 23.
const VERSION_VALUE: u32 = 0x20 | ((PINS as u32 - 1) << 16);

/// Redirection entry bits.
const VECTOR: u64 = 0xff;
const DELIVERY_MODE_SHIFT: u64 = 8;
const LOGICAL: u64 = 1 << 11;
const DELIVERY_STATUS: u64 = 1 << 12;
const ACTIVE_LOW: u64 = 1 << 13;
const REMOTE_IRR: u64 = 1 << 14;
const LEVEL: u64 = 1 << 15;
const MASKED: u64 = 1 << 16;
/// Bits the guest may write: vector, delivery mode, destination mode, polarity, trigger
/// mode, mask, destination (delivery status and remote IRR are read-only).
const WRITABLE: u64 = 0xff00_0000_0001_afff;

/// An interrupt message the I/O APIC sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The vector.
    pub vector: u8,
    /// Physical destination: an APIC ID (0xff: every vCPU). Logical: a bitmask of vCPUs.
    pub destination: u8,
    /// Logical destination mode.
    pub logical: bool,
}

/// Messages produced by one operation (at most one per pin).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Deliveries {
    items: [Option<Delivery>; PINS as usize],
    len: usize,
}

impl Deliveries {
    fn push(&mut self, delivery: Delivery) {
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = Some(delivery);
            self.len += 1;
        }
    }

    /// The messages, in order.
    pub fn iter(&self) -> impl Iterator<Item = Delivery> + '_ {
        self.items.iter().take(self.len).filter_map(|d| *d)
    }
}

/// The I/O APIC's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ioapic {
    id: u8,
    select: u32,
    entries: [u64; PINS as usize],
    /// Input line levels as the devices drive them (true = asserted, before polarity).
    lines: u32,
}

impl Default for Ioapic {
    fn default() -> Self {
        Self::new()
    }
}

impl Ioapic {
    /// At reset: every pin masked, ID 0.
    pub fn new() -> Ioapic {
        Ioapic {
            id: 0,
            select: 0,
            entries: [MASKED; PINS as usize],
            lines: 0,
        }
    }

    /// Back to the reset state (a partition restart); line levels are kept (devices drive
    /// them).
    pub fn reset(&mut self) {
        let lines = self.lines;
        *self = Ioapic::new();
        self.lines = lines;
    }

    /// The redirection entry of `pin` (for tests and reports).
    pub fn entry(&self, pin: u8) -> Option<u64> {
        self.entries.get(usize::from(pin)).copied()
    }

    /// A load from the register frame.
    pub fn read(&self, offset: u64, width: AccessWidth) -> u64 {
        let value = match offset & !3 {
            IOREGSEL => u64::from(self.select),
            IOWIN => u64::from(self.read_register(self.select)),
            _ => 0,
        };
        (value >> ((offset & 3) * 8)) & width.mask()
    }

    /// A store to the register frame; unmasking or EOI may deliver.
    pub fn write(&mut self, offset: u64, width: AccessWidth, value: u64, out: &mut Deliveries) {
        // Registers are 32-bit; narrower stores merge into their bytes.
        let shift = (offset & 3) * 8;
        let mask = (width.mask() << shift) & 0xffff_ffff;
        let merge = |old: u32| ((u64::from(old) & !mask) | ((value << shift) & mask)) as u32;
        match offset & !3 {
            IOREGSEL => self.select = merge(self.select) & 0xff,
            IOWIN => {
                let old = self.read_register(self.select);
                self.write_register(self.select, merge(old), out);
            }
            EOI => self.end_of_interrupt(merge(0) as u8, out),
            _ => {}
        }
    }

    fn read_register(&self, register: u32) -> u32 {
        match register {
            REGISTER_ID => u32::from(self.id) << 24,
            REGISTER_VERSION => VERSION_VALUE,
            REGISTER_ARBITRATION => u32::from(self.id) << 24,
            _ => match redirection(register) {
                Some((pin, high)) => {
                    let entry =
                        self.entries.get(pin).copied().unwrap_or(0) | self.status(pin as u8);
                    if high {
                        (entry >> 32) as u32
                    } else {
                        entry as u32
                    }
                }
                None => 0,
            },
        }
    }

    /// Delivery status: set while a level pin is asserted and waits (masked) to be sent.
    fn status(&self, pin: u8) -> u64 {
        match self.entries.get(usize::from(pin)) {
            Some(&entry) if self.asserted(pin) && entry & MASKED != 0 && entry & LEVEL != 0 => {
                DELIVERY_STATUS
            }
            _ => 0,
        }
    }

    fn write_register(&mut self, register: u32, value: u32, out: &mut Deliveries) {
        match register {
            REGISTER_ID => self.id = ((value >> 24) & 0xf) as u8,
            _ => {
                let Some((pin, high)) = redirection(register) else {
                    return;
                };
                let Some(entry) = self.entries.get_mut(pin) else {
                    return;
                };
                let written = if high {
                    (*entry & 0xffff_ffff) | (u64::from(value) << 32)
                } else {
                    (*entry & !0xffff_ffff) | u64::from(value)
                };
                let mut new = (*entry & !WRITABLE) | (written & WRITABLE);
                if new & LEVEL == 0 {
                    // Remote IRR is defined for level-triggered pins only.
                    new &= !REMOTE_IRR;
                }
                *entry = new;
                // Unmasking an asserted level pin delivers it now.
                self.try_deliver_level(pin as u8, out);
            }
        }
    }

    fn asserted(&self, pin: u8) -> bool {
        let high = self.lines & (1 << pin) != 0;
        let active_low = self
            .entries
            .get(usize::from(pin))
            .is_some_and(|e| e & ACTIVE_LOW != 0);
        high != active_low
    }

    /// A device drives input `pin` (`true`: asserted). Edge pins deliver on assertion; level
    /// pins deliver while asserted, once until EOI. Pins beyond 23 are ignored.
    pub fn set_line(&mut self, pin: u32, level: bool, out: &mut Deliveries) {
        let Ok(pin) = u8::try_from(pin) else {
            return;
        };
        if pin >= PINS {
            return;
        }
        let was = self.asserted(pin);
        if level {
            self.lines |= 1 << pin;
        } else {
            self.lines &= !(1 << pin);
        }
        let Some(&entry) = self.entries.get(usize::from(pin)) else {
            return;
        };
        if entry & LEVEL != 0 {
            self.try_deliver_level(pin, out);
        } else if !was && self.asserted(pin) && entry & MASKED == 0 {
            deliver(entry, out);
        }
    }

    /// An edge on `pin` (assert then deassert).
    pub fn pulse(&mut self, pin: u32, out: &mut Deliveries) {
        self.set_line(pin, true, out);
        self.set_line(pin, false, out);
    }

    /// The local APIC ended the interrupt with `vector` (EOI broadcast, or the EOI register):
    /// level pins with that vector clear remote IRR and deliver again if still asserted.
    pub fn end_of_interrupt(&mut self, vector: u8, out: &mut Deliveries) {
        for pin in 0..PINS {
            let Some(entry) = self.entries.get_mut(usize::from(pin)) else {
                continue;
            };
            if *entry & REMOTE_IRR != 0 && (*entry & VECTOR) as u8 == vector {
                *entry &= !REMOTE_IRR;
                self.try_deliver_level(pin, out);
            }
        }
    }

    /// The vectors of every level-triggered redirection entry, masked or not (bit n of word w =
    /// vector 64w + n): the EOIs the I/O APIC may wait for. Masked entries count, since a pin
    /// masked while its interrupt is in service still waits for that EOI.
    pub fn level_vectors(&self) -> [u64; 4] {
        let mut vectors = [0u64; 4];
        for entry in self.entries.iter().filter(|e| *e & LEVEL != 0) {
            let vector = (entry & VECTOR) as u8;
            if let Some(word) = vectors.get_mut(usize::from(vector >> 6)) {
                *word |= 1 << (vector & 63);
            }
        }
        vectors
    }

    /// Whether an EOI of `vector` concerns this I/O APIC (a level pin waits for it).
    pub fn waits_for_eoi(&self, vector: u8) -> bool {
        self.entries
            .iter()
            .any(|e| e & REMOTE_IRR != 0 && (e & VECTOR) as u8 == vector)
    }

    fn try_deliver_level(&mut self, pin: u8, out: &mut Deliveries) {
        let asserted = self.asserted(pin);
        let Some(entry) = self.entries.get_mut(usize::from(pin)) else {
            return;
        };
        if *entry & LEVEL != 0 && asserted && *entry & (MASKED | REMOTE_IRR) == 0 {
            *entry |= REMOTE_IRR;
            deliver(*entry, out);
        }
    }
}

/// The pin and half an indirect register number names.
fn redirection(register: u32) -> Option<(usize, bool)> {
    let index = register.checked_sub(FIRST_REDIRECTION)?;
    let pin = (index / 2) as usize;
    (pin < usize::from(PINS)).then_some((pin, index % 2 == 1))
}

/// Sends the message an entry describes; delivery modes other than fixed and lowest
/// priority (SMI, NMI, INIT, ExtINT) and vectors below 16 are not delivered.
fn deliver(entry: u64, out: &mut Deliveries) {
    let mode = (entry >> DELIVERY_MODE_SHIFT) & 7;
    let vector = (entry & VECTOR) as u8;
    if mode > 1 || vector < 16 {
        return;
    }
    out.push(Delivery {
        vector,
        destination: (entry >> 56) as u8,
        logical: entry & LOGICAL != 0,
    });
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn select_write(ioapic: &mut Ioapic, register: u32, value: u32) -> Vec<Delivery> {
        let mut out = Deliveries::default();
        ioapic.write(IOREGSEL, AccessWidth::Word, u64::from(register), &mut out);
        ioapic.write(IOWIN, AccessWidth::Word, u64::from(value), &mut out);
        out.iter().collect()
    }

    fn select_read(ioapic: &Ioapic, register: u32) -> u32 {
        let mut copy = ioapic.clone();
        let mut out = Deliveries::default();
        copy.write(IOREGSEL, AccessWidth::Word, u64::from(register), &mut out);
        copy.read(IOWIN, AccessWidth::Word) as u32
    }

    fn line(ioapic: &mut Ioapic, pin: u32, level: bool) -> Vec<Delivery> {
        let mut out = Deliveries::default();
        ioapic.set_line(pin, level, &mut out);
        out.iter().collect()
    }

    fn eoi(ioapic: &mut Ioapic, vector: u8) -> Vec<Delivery> {
        let mut out = Deliveries::default();
        ioapic.end_of_interrupt(vector, &mut out);
        out.iter().collect()
    }

    const TO_VCPU_1: u32 = 1 << 24;

    #[test]
    fn identification_registers() {
        let mut ioapic = Ioapic::new();
        assert_eq!(select_read(&ioapic, REGISTER_VERSION), 0x0017_0020);
        select_write(&mut ioapic, REGISTER_ID, 0x0500_0000);
        assert_eq!(select_read(&ioapic, REGISTER_ID), 0x0500_0000);
        // Every pin starts masked.
        assert_eq!(select_read(&ioapic, 0x10 + 2 * 23), 1 << 16);
        // Registers past the last pin read 0 and ignore writes.
        assert!(select_write(&mut ioapic, 0x40, 0x30).is_empty());
        assert_eq!(select_read(&ioapic, 0x40), 0);
        // IOREGSEL reads back; byte reads of IOWIN work.
        let mut out = Deliveries::default();
        ioapic.write(IOREGSEL, AccessWidth::Byte, 1, &mut out);
        assert_eq!(ioapic.read(IOREGSEL, AccessWidth::Word), 1);
        assert_eq!(ioapic.read(IOWIN + 2, AccessWidth::Byte), 0x17);
    }

    #[test]
    fn level_pin_delivers_once_until_eoi() {
        let mut ioapic = Ioapic::new();
        select_write(&mut ioapic, 0x11 + 2 * 10, TO_VCPU_1);
        select_write(&mut ioapic, 0x10 + 2 * 10, 0x8000 | 0x41);
        let sent = line(&mut ioapic, 10, true);
        assert_eq!(
            sent,
            [Delivery {
                vector: 0x41,
                destination: 1,
                logical: false
            }]
        );
        // Remote IRR set: no second delivery while asserted.
        assert_ne!(select_read(&ioapic, 0x10 + 2 * 10) & (1 << 14), 0);
        assert!(line(&mut ioapic, 10, true).is_empty());
        assert!(ioapic.waits_for_eoi(0x41));
        // EOI with the line still asserted: delivered again.
        assert_eq!(eoi(&mut ioapic, 0x41).len(), 1);
        // Deasserted, then EOI: nothing more.
        assert!(line(&mut ioapic, 10, false).is_empty());
        assert!(eoi(&mut ioapic, 0x41).is_empty());
        assert!(!ioapic.waits_for_eoi(0x41));
        // Another vector's EOI does not touch it.
        line(&mut ioapic, 10, true);
        assert!(eoi(&mut ioapic, 0x42).is_empty());
        assert!(ioapic.waits_for_eoi(0x41));
    }

    #[test]
    fn masked_level_pin_delivers_when_unmasked() {
        let mut ioapic = Ioapic::new();
        select_write(&mut ioapic, 0x10 + 2 * 3, (1 << 16) | 0x8000 | 0x30);
        assert!(line(&mut ioapic, 3, true).is_empty());
        // Delivery status shows it waiting.
        assert_ne!(select_read(&ioapic, 0x10 + 2 * 3) & (1 << 12), 0);
        let sent = select_write(&mut ioapic, 0x10 + 2 * 3, 0x8000 | 0x30);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].vector, 0x30);
        // The guest cannot write remote IRR or delivery status.
        select_write(&mut ioapic, 0x10 + 2 * 3, 0x8000 | 0x30);
        assert!(eoi(&mut ioapic, 0x30).len() == 1);
    }

    #[test]
    fn edge_pin_delivers_on_each_assertion() {
        let mut ioapic = Ioapic::new();
        select_write(&mut ioapic, 0x10 + 2 * 4, 0x50);
        assert_eq!(line(&mut ioapic, 4, true).len(), 1);
        assert!(line(&mut ioapic, 4, true).is_empty());
        assert!(line(&mut ioapic, 4, false).is_empty());
        let mut out = Deliveries::default();
        ioapic.pulse(4, &mut out);
        assert_eq!(out.iter().count(), 1);
        // No remote IRR on edge pins.
        assert_eq!(select_read(&ioapic, 0x10 + 2 * 4) & (1 << 14), 0);
    }

    #[test]
    fn active_low_pins_invert_the_line() {
        let mut ioapic = Ioapic::new();
        // Line low = asserted for an active-low pin: unmasking with the line low delivers.
        assert_eq!(
            select_write(&mut ioapic, 0x10 + 2 * 5, 0x8000 | (1 << 13) | 0x60).len(),
            1
        );
        assert!(line(&mut ioapic, 5, true).is_empty());
        assert!(eoi(&mut ioapic, 0x60).is_empty());
        assert_eq!(line(&mut ioapic, 5, false).len(), 1);
    }

    #[test]
    fn odd_modes_vectors_and_pins_are_not_delivered() {
        let mut ioapic = Ioapic::new();
        // NMI delivery mode; vector 5.
        select_write(&mut ioapic, 0x10, (4 << 8) | 0x40);
        select_write(&mut ioapic, 0x12, 0x05);
        assert!(line(&mut ioapic, 0, true).is_empty());
        assert!(line(&mut ioapic, 1, true).is_empty());
        assert!(line(&mut ioapic, 24, true).is_empty());
        assert!(line(&mut ioapic, u32::MAX, true).is_empty());
        // The EOI register ends level interrupts like the LAPIC's broadcast.
        select_write(&mut ioapic, 0x10 + 2 * 7, 0x8000 | 0x70);
        assert_eq!(line(&mut ioapic, 7, true).len(), 1);
        let mut out = Deliveries::default();
        ioapic.write(EOI, AccessWidth::Word, 0x70, &mut out);
        assert_eq!(out.iter().count(), 1);
    }

    #[test]
    fn level_vectors_name_level_entries_masked_or_not() {
        let mut ioapic = Ioapic::new();
        assert_eq!(ioapic.level_vectors(), [0; 4]);
        select_write(&mut ioapic, 0x10 + 2 * 3, 0x8031); // level, vector 0x31
        select_write(&mut ioapic, 0x10 + 2 * 4, 0x1_80c2); // level, masked, vector 0xc2
        select_write(&mut ioapic, 0x10 + 2 * 5, 0x0045); // edge
        assert_eq!(ioapic.level_vectors(), [1 << 0x31, 0, 0, 1 << 2]);
        ioapic.reset();
        assert_eq!(ioapic.level_vectors(), [0; 4]);
    }

    #[test]
    fn reset_masks_everything_but_keeps_line_levels() {
        let mut ioapic = Ioapic::new();
        select_write(&mut ioapic, 0x10 + 2 * 9, 0x8000 | 0x33);
        line(&mut ioapic, 9, true);
        ioapic.reset();
        assert_eq!(ioapic.entry(9), Some(1 << 16));
        assert_eq!(
            select_write(&mut ioapic, 0x10 + 2 * 9, 0x8000 | 0x33).len(),
            1
        );
    }

    #[test]
    fn arbitrary_register_traffic_never_panics() {
        let mut ioapic = Ioapic::new();
        let mut seed = 0x1234_5678_u64;
        let mut out = Deliveries::default();
        for _ in 0..20_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let offset = (seed >> 20) % FRAME_SIZE;
            let width = [
                AccessWidth::Byte,
                AccessWidth::Half,
                AccessWidth::Word,
                AccessWidth::Double,
            ][(seed >> 8) as usize % 4];
            match seed % 3 {
                0 => ioapic.write(offset, width, seed >> 13, &mut out),
                1 => ioapic.set_line((seed >> 40) as u32 % 40, seed & 8 != 0, &mut out),
                _ => {
                    let _ = ioapic.read(offset, width);
                }
            }
            out = Deliveries::default();
        }
    }
}
