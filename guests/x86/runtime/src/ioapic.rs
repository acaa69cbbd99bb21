//! The partition's I/O APIC (`vdev ioapic`): IOREGSEL at base + 0x00, IOWIN at base + 0x10;
//! register 0 = ID, 1 = version (bits 23:16 = pins - 1), redirection entry `n` at registers
//! 0x10 + 2n (low dword) and 0x11 + 2n (high dword).
//!
//! The select/window pair is not atomic: program the I/O APIC from one vCPU with interrupts
//! off (set-up code does), never from an interrupt handler.

use core::fmt;

use crate::boot_info::{self, DeviceKind};
use crate::mmio;

const IOREGSEL: usize = 0x00;
const IOWIN: usize = 0x10;
const REGISTER_ID: u32 = 0x00;
const REGISTER_VERSION: u32 = 0x01;
const REGISTER_REDIRECTION: u32 = 0x10;
/// Bytes of the register page.
pub const SIZE: u64 = 0x1000;

/// When a pin's interrupt is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// On each rising (or, active low, falling) edge.
    Edge,
    /// While the line is asserted: again after each EOI if it still is.
    Level,
}

/// Which line level means "asserted".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polarity {
    /// High.
    ActiveHigh,
    /// Low.
    ActiveLow,
}

/// One redirection entry: fixed delivery, physical destination mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Redirection {
    /// IDT vector (32..=255).
    pub vector: u8,
    /// Edge or level.
    pub trigger: Trigger,
    /// Active high or low.
    pub polarity: Polarity,
    /// Destination APIC ID (the vCPU index).
    pub destination: u8,
    /// Masked (nothing is delivered).
    pub masked: bool,
}

impl Redirection {
    /// The entry's 64-bit register value: vector 7:0, delivery mode 10:8 = 0 (fixed),
    /// destination mode 11 = 0 (physical), polarity 13, trigger 15, mask 16, destination 63:56.
    pub fn encode(&self) -> u64 {
        let mut value = u64::from(self.vector);
        if self.polarity == Polarity::ActiveLow {
            value |= 1 << 13;
        }
        if self.trigger == Trigger::Level {
            value |= 1 << 15;
        }
        if self.masked {
            value |= 1 << 16;
        }
        value | (u64::from(self.destination) << 56)
    }
}

/// Why an I/O APIC request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoApicError {
    /// The boot information lists no I/O APIC.
    Absent,
    /// The pin is beyond the I/O APIC's pins.
    NoPin(u32),
    /// Vectors below 32 are exceptions.
    BadVector(u8),
}

impl fmt::Display for IoApicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoApicError::Absent => f.write_str("no I/O APIC in the boot information"),
            IoApicError::NoPin(pin) => write!(f, "the I/O APIC has no pin {pin}"),
            IoApicError::BadVector(vector) => write!(f, "vector {vector:#x} is below 32"),
        }
    }
}

/// An I/O APIC's register page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoApic {
    base: usize,
}

impl IoApic {
    /// The first I/O APIC the boot information lists.
    pub fn from_boot_info() -> Result<Self, IoApicError> {
        let device = boot_info::device(DeviceKind::IoApic, 0).ok_or(IoApicError::Absent)?;
        let base = usize::try_from(device.base).map_err(|_| IoApicError::Absent)?;
        if base == 0 || !base.is_multiple_of(0x1000) {
            return Err(IoApicError::Absent);
        }
        Ok(Self { base })
    }

    /// Guest-physical address of the register page.
    pub fn base(&self) -> u64 {
        self.base as u64
    }

    /// Reads indirect register `register`.
    pub fn read(&self, register: u32) -> u32 {
        // SAFETY: IOREGSEL and IOWIN of the I/O APIC the boot information lists (MMIO in the
        // identity map, trapped by the hypervisor); selecting and reading touch no memory.
        unsafe {
            mmio::write32(self.base + IOREGSEL, register);
            mmio::read32(self.base + IOWIN)
        }
    }

    /// Writes indirect register `register`.
    pub fn write(&self, register: u32, value: u32) {
        // SAFETY: as in `read`; the write programs the I/O APIC, never guest memory.
        unsafe {
            mmio::write32(self.base + IOREGSEL, register);
            mmio::write32(self.base + IOWIN, value);
        }
    }

    /// The ID register's APIC ID (bits 27:24).
    pub fn id(&self) -> u32 {
        (self.read(REGISTER_ID) >> 24) & 0xf
    }

    /// The version register (0x0017_0020 for 24 pins, version 0x20).
    pub fn version(&self) -> u32 {
        self.read(REGISTER_VERSION)
    }

    /// Number of pins (maximum redirection entry + 1).
    pub fn pins(&self) -> u32 {
        ((self.version() >> 16) & 0xff) + 1
    }

    /// Redirection entry `pin` as a 64-bit value.
    pub fn redirection(&self, pin: u32) -> Result<u64, IoApicError> {
        self.check_pin(pin)?;
        let register = REGISTER_REDIRECTION + 2 * pin;
        let low = self.read(register);
        let high = self.read(register + 1);
        Ok((u64::from(high) << 32) | u64::from(low))
    }

    /// Programs redirection entry `pin`. The low dword (with the mask bit) is written last
    /// when unmasking and first when masking, so the pin never fires half-programmed.
    pub fn route(&self, pin: u32, entry: Redirection) -> Result<(), IoApicError> {
        self.check_pin(pin)?;
        if entry.vector < 32 {
            return Err(IoApicError::BadVector(entry.vector));
        }
        let value = entry.encode();
        let register = REGISTER_REDIRECTION + 2 * pin;
        if entry.masked {
            self.write(register, value as u32);
            self.write(register + 1, (value >> 32) as u32);
        } else {
            self.write(register, (value as u32) | (1 << 16));
            self.write(register + 1, (value >> 32) as u32);
            self.write(register, value as u32);
        }
        Ok(())
    }

    /// Masks `pin`.
    pub fn mask(&self, pin: u32) -> Result<(), IoApicError> {
        self.check_pin(pin)?;
        let register = REGISTER_REDIRECTION + 2 * pin;
        let low = self.read(register);
        self.write(register, low | (1 << 16));
        Ok(())
    }

    fn check_pin(&self, pin: u32) -> Result<(), IoApicError> {
        if pin < self.pins() {
            Ok(())
        } else {
            Err(IoApicError::NoPin(pin))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_active_high_unmasked_entry() {
        let entry = Redirection {
            vector: 0x21,
            trigger: Trigger::Level,
            polarity: Polarity::ActiveHigh,
            destination: 1,
            masked: false,
        };
        assert_eq!(entry.encode(), 0x0100_0000_0000_8021);
    }

    #[test]
    fn edge_active_low_masked_entry() {
        let entry = Redirection {
            vector: 0xfe,
            trigger: Trigger::Edge,
            polarity: Polarity::ActiveLow,
            destination: 0,
            masked: true,
        };
        assert_eq!(entry.encode(), 0x0001_20fe);
    }
}
