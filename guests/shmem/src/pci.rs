//! PCI configuration space of bus 0 (function 0 of each slot), through the host bridge's ECAM
//! window or, on x86_64, configuration mechanism #1 (ports 0xCF8/0xCFC): finding devices,
//! their BARs, decoding and bus-master enables, the INTx interrupt and the MSI-X table.
//!
//! Every configuration access is an aligned 32-bit one (the form every ECAM emulation
//! accepts). BARs are expected to be assigned already, as firmware (or the hypervisor) leaves
//! them; [`PciDevice::assign_unassigned_bars`] plays firmware where nobody did (plain QEMU).

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::{self, Interrupt, mmio};

#[cfg(target_arch = "aarch64")]
pub use crate::arch::{DEFAULT_ECAM, DEFAULT_MMIO32, DEFAULT_MMIO64, INTX_FIRST_INTID};

/// Slots on bus 0.
pub const SLOTS: u8 = 32;

const VENDOR_ID: usize = 0x00;
const COMMAND: usize = 0x04;
const STATUS_CAPABILITIES: u32 = 1 << (16 + 4);
const CLASS_REVISION: usize = 0x08;
const HEADER_TYPE: usize = 0x0c;
const BAR0: usize = 0x10;
const CAPABILITIES_POINTER: usize = 0x34;
const INTERRUPT: usize = 0x3c;
/// Bytes of one function's configuration space through ECAM (mechanism #1 reaches 0x100).
const CONFIG_SIZE: usize = 0x1000;

/// COMMAND: memory space decoding.
pub const COMMAND_MEMORY: u32 = 1 << 1;
/// COMMAND: bus master (the device may write memory, e.g. MSI messages).
pub const COMMAND_BUS_MASTER: u32 = 1 << 2;
/// COMMAND: INTx disable.
pub const COMMAND_INTX_DISABLE: u32 = 1 << 10;
const COMMAND_IO: u32 = 1 << 0;

/// MSI-X capability ID.
pub const CAPABILITY_MSIX: u8 = 0x11;
const MSIX_ENABLE: u32 = 1 << 15;
const MSIX_FUNCTION_MASK: u32 = 1 << 14;
const MSIX_ENTRY_SIZE: usize = 16;
const MSIX_VECTOR_MASKED: u32 = 1;

/// Why a device could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciError {
    /// BAR `n` is absent, an I/O BAR, or its address is zero.
    NoBar(usize),
    /// BAR `n` lies where the guest's identity map does not reach (above 1 TiB).
    BarUnreachable(usize, u64),
    /// BAR `n` did not report a size (its address bits did not read back as writable).
    BarSize(usize),
    /// The device has no MSI-X capability, or its table is not in a memory BAR.
    NoMsix,
    /// MSI-X vector beyond the table.
    NoVector(u16),
    /// The device uses no interrupt pin.
    NoInterruptPin,
    /// No window left to place a BAR in.
    NoWindow(usize),
}

impl fmt::Display for PciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PciError::NoBar(index) => write!(f, "BAR{index} is not an assigned memory BAR"),
            PciError::BarUnreachable(index, address) => {
                write!(f, "BAR{index} at {address:#x} is outside the identity map")
            }
            PciError::BarSize(index) => write!(f, "BAR{index} reports no size"),
            PciError::NoMsix => write!(f, "no usable MSI-X capability"),
            PciError::NoVector(vector) => write!(f, "no MSI-X vector {vector}"),
            PciError::NoInterruptPin => write!(f, "no INTx pin"),
            PciError::NoWindow(index) => write!(f, "no window room for BAR{index}"),
        }
    }
}

/// How configuration space is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// The ECAM window of bus 0 at this guest-physical address (1 MiB, 4 KiB per function).
    Ecam(usize),
    /// Configuration mechanism #1: a dword address to port 0xCF8, data at 0xCFC (x86_64;
    /// registers 0x00-0xFF). Elsewhere it finds nothing.
    PortIo,
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mechanism::Ecam(base) => write!(f, "ECAM at {base:#x}"),
            Mechanism::PortIo => f.write_str("ports 0xcf8/0xcfc"),
        }
    }
}

/// PCI bus 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bus {
    mechanism: Mechanism,
}

impl Bus {
    /// Bus 0 as the platform reaches it by default: aarch64 the device tree's
    /// `pci-host-ecam-generic` window (else `DEFAULT_ECAM`), x86_64 ports 0xCF8/0xCFC.
    pub fn discover() -> Self {
        Self {
            mechanism: arch::default_mechanism(),
        }
    }

    /// Bus 0 through its ECAM window, if the platform describes one (always on aarch64; on
    /// x86_64 the boot information's PCI ECAM entry).
    pub fn discover_ecam() -> Option<Self> {
        arch::ecam().map(Self::ecam)
    }

    /// Bus 0 through the ECAM window at `base`.
    pub fn ecam(base: usize) -> Self {
        Self {
            mechanism: Mechanism::Ecam(base),
        }
    }

    /// How configuration space is reached.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Function 0 of `slot`, if a device answers there.
    pub fn device(&self, slot: u8) -> Option<PciDevice> {
        if slot >= SLOTS {
            return None;
        }
        let device = PciDevice {
            mechanism: self.mechanism,
            slot,
        };
        let vendor = device.vendor_id();
        (vendor != 0xffff && vendor != 0).then_some(device)
    }

    /// The `nth` (from 0) device with these IDs, in slot order.
    pub fn find(&self, vendor: u16, device: u16, nth: usize) -> Option<PciDevice> {
        (0..SLOTS)
            .filter_map(|slot| self.device(slot))
            .filter(|found| found.vendor_id() == vendor && found.device_id() == device)
            .nth(nth)
    }
}

/// End of the guest's identity map (1 TiB).
const IDENTITY_END: u64 = 0x100_0000_0000;

/// A memory BAR as read from configuration space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// BAR number (0-5); a 64-bit BAR also uses the next one.
    pub index: usize,
    /// Guest-physical address (0: unassigned).
    pub address: u64,
    /// A 64-bit BAR.
    pub is_64: bool,
    /// Prefetchable.
    pub prefetchable: bool,
}

/// Function 0 of a device on bus 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciDevice {
    mechanism: Mechanism,
    slot: u8,
}

impl PciDevice {
    /// Slot (device number) on bus 0.
    pub fn slot(&self) -> u8 {
        self.slot
    }

    /// How its configuration space is reached.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Reads the configuration dword holding byte `offset`.
    pub fn read32(&self, offset: usize) -> u32 {
        let offset = (offset & !3) % CONFIG_SIZE;
        match self.mechanism {
            // SAFETY: an aligned dword inside this function's 4 KiB of the ECAM window, which
            // the identity map has as device memory; configuration reads have no side
            // effects on memory.
            Mechanism::Ecam(base) => unsafe {
                mmio::read32(function_base(base, self.slot) + offset)
            },
            Mechanism::PortIo => arch::config_port_read(self.slot, offset),
        }
    }

    /// Writes the configuration dword holding byte `offset`.
    pub fn write32(&self, offset: usize, value: u32) {
        let offset = (offset & !3) % CONFIG_SIZE;
        match self.mechanism {
            // SAFETY: as for `read32`; configuration writes change the device, never guest
            // RAM (BAR placement is the caller's business: see `assign_unassigned_bars`).
            Mechanism::Ecam(base) => unsafe {
                mmio::write32(function_base(base, self.slot) + offset, value)
            },
            Mechanism::PortIo => arch::config_port_write(self.slot, offset, value),
        }
    }

    /// Vendor ID.
    pub fn vendor_id(&self) -> u16 {
        self.read32(VENDOR_ID) as u16
    }

    /// Device ID.
    pub fn device_id(&self) -> u16 {
        (self.read32(VENDOR_ID) >> 16) as u16
    }

    /// Revision ID.
    pub fn revision(&self) -> u8 {
        self.read32(CLASS_REVISION) as u8
    }

    /// Class code (class, subclass, programming interface).
    pub fn class(&self) -> u32 {
        self.read32(CLASS_REVISION) >> 8
    }

    /// Header type (0 for an endpoint), without the multi-function bit.
    pub fn header_type(&self) -> u8 {
        ((self.read32(HEADER_TYPE) >> 16) & 0x7f) as u8
    }

    /// COMMAND register.
    pub fn command(&self) -> u16 {
        self.read32(COMMAND) as u16
    }

    /// Sets `bits` in COMMAND (writing zeros to STATUS, whose bits are write-1-to-clear).
    pub fn set_command(&self, bits: u32) {
        let command = self.read32(COMMAND) & 0xffff;
        self.write32(COMMAND, (command | bits) & 0xffff);
    }

    /// Clears `bits` in COMMAND.
    pub fn clear_command(&self, bits: u32) {
        let command = self.read32(COMMAND) & 0xffff;
        self.write32(COMMAND, command & !bits & 0xffff);
    }

    /// Turns memory decoding on: BARs answer from now.
    pub fn enable_memory(&self) {
        self.set_command(COMMAND_MEMORY);
    }

    /// Lets the device master the bus (needed for MSI-X messages).
    pub fn enable_bus_master(&self) {
        self.set_command(COMMAND_BUS_MASTER);
    }

    /// Interrupt pin (1 = INTA .. 4 = INTD, 0 = none).
    pub fn interrupt_pin(&self) -> u8 {
        (self.read32(INTERRUPT) >> 8) as u8
    }

    /// Interrupt Line (x86_64: the I/O APIC pin of INTx, 0xFF for none).
    pub fn interrupt_line(&self) -> u8 {
        self.read32(INTERRUPT) as u8
    }

    /// The interrupt the device's INTx raises (level-sensitive): aarch64 a GIC INTID, slot
    /// and pin swizzled onto INTIDs 35-38 as the platform's `interrupt-map` says; x86_64 the
    /// I/O APIC pin in Interrupt Line.
    pub fn intx(&self) -> Result<Interrupt, PciError> {
        arch::intx(self)
    }

    /// BAR `index` if it is a memory BAR (the address may be 0: unassigned).
    pub fn bar(&self, index: usize) -> Option<Bar> {
        if index > 5 || self.header_type() != 0 {
            return None;
        }
        let low = self.read32(BAR0 + index * 4);
        if low & 1 != 0 {
            return None;
        }
        let is_64 = (low >> 1) & 3 == 2;
        let high = if is_64 {
            if index == 5 {
                return None;
            }
            self.read32(BAR0 + (index + 1) * 4)
        } else {
            0
        };
        Some(Bar {
            index,
            address: (u64::from(high) << 32) | u64::from(low & !0xf),
            is_64,
            prefetchable: low & (1 << 3) != 0,
        })
    }

    /// BAR `index` with an address the guest can reach, else why not.
    pub fn assigned_bar(&self, index: usize) -> Result<Bar, PciError> {
        let bar = self.bar(index).ok_or(PciError::NoBar(index))?;
        if bar.address == 0 {
            return Err(PciError::NoBar(index));
        }
        if bar.address >= IDENTITY_END {
            return Err(PciError::BarUnreachable(index, bar.address));
        }
        Ok(bar)
    }

    /// Size of BAR `index` in bytes, by the standard probe: decoding off, all-ones written,
    /// the read-back mask taken, the original value put back, decoding restored.
    pub fn bar_size(&self, index: usize) -> Result<u64, PciError> {
        let bar = self.bar(index).ok_or(PciError::NoBar(index))?;
        let command = self.read32(COMMAND) & 0xffff;
        self.write32(COMMAND, command & !(COMMAND_MEMORY | COMMAND_IO));
        let low_offset = BAR0 + index * 4;
        let original_low = self.read32(low_offset);
        self.write32(low_offset, u32::MAX);
        let mask_low = self.read32(low_offset) & !0xf;
        self.write32(low_offset, original_low);
        let mask_high = if bar.is_64 {
            let high_offset = low_offset + 4;
            let original_high = self.read32(high_offset);
            self.write32(high_offset, u32::MAX);
            let mask = self.read32(high_offset);
            self.write32(high_offset, original_high);
            mask
        } else {
            u32::MAX
        };
        self.write32(COMMAND, command);
        let mask = (u64::from(mask_high) << 32) | u64::from(mask_low);
        let size = (!mask).wrapping_add(1);
        let reads_back_nothing = mask_low == 0 && (!bar.is_64 || mask_high == 0);
        if reads_back_nothing || !size.is_power_of_two() {
            return Err(PciError::BarSize(index));
        }
        if !bar.is_64 && size > 1 << 32 {
            return Err(PciError::BarSize(index));
        }
        Ok(size)
    }

    /// Plays firmware for memory BARs that read as 0 (plain QEMU boots without any): places
    /// each in the host bridge's window (64-bit prefetchable BARs in the 64-bit one, the
    /// others in the 32-bit one), aligned to its size. Returns how many it placed; assigned
    /// BARs (Bulkhead's) are left alone.
    pub fn assign_unassigned_bars(&self) -> Result<usize, PciError> {
        let mut placed = 0;
        let mut index = 0;
        while index < 6 {
            let Some(bar) = self.bar(index) else {
                index += 1;
                continue;
            };
            let next = index + if bar.is_64 { 2 } else { 1 };
            if bar.address == 0
                && let Ok(size) = self.bar_size(index)
            {
                let window = if bar.is_64 && bar.prefetchable {
                    &WINDOW64
                } else {
                    &WINDOW32
                };
                let address = window.allocate(size).ok_or(PciError::NoWindow(index))?;
                self.write32(BAR0 + index * 4, address as u32);
                if bar.is_64 {
                    self.write32(BAR0 + index * 4 + 4, (address >> 32) as u32);
                }
                placed += 1;
            }
            index = next;
        }
        Ok(placed)
    }

    /// Offset of the first capability with `id`, if the device lists capabilities.
    pub fn capability(&self, id: u8) -> Option<usize> {
        if self.read32(COMMAND) & STATUS_CAPABILITIES == 0 {
            return None;
        }
        let mut offset = (self.read32(CAPABILITIES_POINTER) & 0xfc) as usize;
        for _ in 0..48 {
            if offset < 0x40 {
                return None;
            }
            let header = self.read32(offset);
            if header as u8 == id {
                return Some(offset);
            }
            offset = ((header >> 8) & 0xfc) as usize;
        }
        None
    }

    /// The MSI-X capability and its table (decoding must be on before programming it).
    pub fn msix(&self) -> Result<MsiX, PciError> {
        let capability = self.capability(CAPABILITY_MSIX).ok_or(PciError::NoMsix)?;
        let control = self.read32(capability) >> 16;
        let table = self.read32(capability + 4);
        let bar = self
            .assigned_bar((table & 7) as usize)
            .map_err(|_| PciError::NoMsix)?;
        let table = bar.address + u64::from(table & !7);
        let vectors = (control & 0x7ff) + 1;
        if !arch::is_device_range(table, u64::from(vectors) * MSIX_ENTRY_SIZE as u64) {
            return Err(PciError::NoMsix);
        }
        Ok(MsiX {
            device: *self,
            capability,
            table: table as usize,
            vectors: vectors as u16,
        })
    }
}

/// A device's MSI-X capability and table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiX {
    device: PciDevice,
    capability: usize,
    table: usize,
    vectors: u16,
}

impl MsiX {
    /// Number of table entries.
    pub fn vectors(&self) -> u16 {
        self.vectors
    }

    /// Guest-physical address of the table.
    pub fn table_address(&self) -> u64 {
        self.table as u64
    }

    fn set_control(&self, set: u32, clear: u32) {
        let header = self.device.read32(self.capability);
        let control = ((header >> 16) | set) & !clear;
        self.device
            .write32(self.capability, (header & 0xffff) | (control << 16));
    }

    /// Points `vector` at `address` with `data`, unmasks it and enables MSI-X (all other
    /// vectors keep their mask bits).
    pub fn route(&self, vector: u16, address: u64, data: u32) -> Result<(), PciError> {
        if vector >= self.vectors {
            return Err(PciError::NoVector(vector));
        }
        self.set_control(MSIX_ENABLE | MSIX_FUNCTION_MASK, 0);
        let entry = self.table + usize::from(vector) * MSIX_ENTRY_SIZE;
        // SAFETY: the entry lies in the MSI-X table inside the device's BAR (device memory,
        // checked by `PciDevice::msix`); writing it only programs the message the device
        // sends.
        unsafe {
            mmio::write32(entry + 12, MSIX_VECTOR_MASKED);
            mmio::write32(entry, address as u32);
            mmio::write32(entry + 4, (address >> 32) as u32);
            mmio::write32(entry + 8, data);
            mmio::write32(entry + 12, 0);
        }
        self.set_control(0, MSIX_FUNCTION_MASK);
        Ok(())
    }
}

/// A bump allocator over a host-bridge window, for [`PciDevice::assign_unassigned_bars`].
struct Window {
    next: AtomicU64,
    end: AtomicU64,
    is_64: bool,
}

static WINDOW32: Window = Window::new(false);
static WINDOW64: Window = Window::new(true);

impl Window {
    const fn new(is_64: bool) -> Self {
        Self {
            next: AtomicU64::new(0),
            end: AtomicU64::new(0),
            is_64,
        }
    }

    fn allocate(&self, size: u64) -> Option<u64> {
        if self.end.load(Ordering::Relaxed) == 0 {
            let (base, len) = arch::pci_window(self.is_64)?;
            self.next.store(base, Ordering::Relaxed);
            self.end.store(base.saturating_add(len), Ordering::Relaxed);
        }
        let align = size.max(0x1000);
        let next = self.next.load(Ordering::Relaxed);
        let start = next.checked_add(align - 1)? & !(align - 1);
        let end = start.checked_add(size)?;
        if end > self.end.load(Ordering::Relaxed) {
            return None;
        }
        self.next.store(end, Ordering::Relaxed);
        Some(start)
    }
}

/// The address of `slot`'s function 0 in the ECAM window at `base` (bus 0: 32 KiB per slot).
fn function_base(base: usize, slot: u8) -> usize {
    base + (usize::from(slot) << 15)
}
