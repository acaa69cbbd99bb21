//! Arm PL011 UART transmit path, used as the hypervisor console.

use hypervisor::console::ConsoleSink;

const DATA: usize = 0x00;
const FLAG: usize = 0x18;
const FLAG_TRANSMIT_FULL: u32 = 1 << 5;

/// A PL011 whose registers are identity-mapped at `base` (firmware has configured it).
#[derive(Debug)]
pub struct Pl011 {
    base: usize,
}

impl Pl011 {
    /// A driver for the PL011 at `base`.
    ///
    /// # Safety
    /// `base` must be the physical (and identity-mapped) address of a PL011 register frame
    /// that nothing else drives as a device, and it must stay mapped as device memory.
    pub const unsafe fn new(base: usize) -> Self {
        Self { base }
    }

    fn write_byte(&self, byte: u8) {
        // SAFETY: `new`'s contract: FLAG and DATA are registers of a mapped PL011.
        unsafe {
            while core::ptr::read_volatile((self.base + FLAG) as *const u32) & FLAG_TRANSMIT_FULL
                != 0
            {
                core::hint::spin_loop();
            }
            core::ptr::write_volatile((self.base + DATA) as *mut u32, u32::from(byte));
        }
    }
}

impl ConsoleSink for Pl011 {
    fn write_bytes(&self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_byte(byte);
        }
    }
}
