//! The QEMU `ivshmem` personality: PCI 1af4:1110 with a 256-byte register block in BAR0
//! (IntrMask, IntrStatus, IVPosition, Doorbell), the MSI-X table in BAR1 (`ivshmem-doorbell`)
//! and the shared memory in BAR2 (64-bit prefetchable).
//!
//! Interrupts: INTx (IntrMask bit 0 enables; a doorbell sets IntrStatus, which asserts the
//! level line until read) or MSI-X (vector `v` sends its message to the GIC, which raises an
//! edge-triggered SPI). [`Ivshmem::use_intx`] / [`Ivshmem::use_msix`] set either up with a
//! handler that counts doorbells into a [`DoorbellEvents`].

use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use bulkhead_guest::gic::{self, GicError, Trigger};
use bulkhead_guest::platform::{self, GicLayout};
use bulkhead_guest::{cpu, irq, mmio};

use crate::memory::{self, SharedMemory};
use crate::pci::{COMMAND_INTX_DISABLE, Ecam, MsiX, PciDevice, PciError};

/// PCI vendor ID (Red Hat / Qumranet).
pub const VENDOR_ID: u16 = 0x1af4;
/// PCI device ID of ivshmem.
pub const DEVICE_ID: u16 = 0x1110;

const INTR_MASK: usize = 0x00;
const INTR_STATUS: usize = 0x04;
const IV_POSITION: usize = 0x08;
const DOORBELL: usize = 0x0c;
/// Bytes of the register block.
const REGISTERS_SIZE: u64 = 0x100;

/// GICv2m frame when the device tree names none (QEMU virt, Bulkhead).
pub const DEFAULT_GICV2M_FRAME: u64 = 0x0802_0000;
/// Offset of the SETSPI register in a GICv3 distributor and in a GICv2m frame.
const SETSPI: u64 = 0x40;

/// Why an ivshmem device could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IvshmemError {
    /// No such device on bus 0.
    NotFound,
    /// A PCI problem (BARs, MSI-X, pin).
    Pci(PciError),
    /// The register block (BAR0) is not where the identity map has Device memory.
    RegistersUnreachable(u64),
    /// The shared memory (BAR2) is not where the identity map has Normal memory.
    MemoryUnreachable(u64),
    /// The GIC refused the INTID.
    Gic(GicError),
}

impl fmt::Display for IvshmemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IvshmemError::NotFound => f.write_str("no ivshmem device (PCI 1af4:1110)"),
            IvshmemError::Pci(error) => write!(f, "{error}"),
            IvshmemError::RegistersUnreachable(address) => {
                write!(
                    f,
                    "BAR0 at {address:#x} is not in the device part of the map"
                )
            }
            IvshmemError::MemoryUnreachable(address) => {
                write!(f, "BAR2 at {address:#x} is not in a shared-memory window")
            }
            IvshmemError::Gic(error) => write!(f, "GIC: {error:?}"),
        }
    }
}

impl From<PciError> for IvshmemError {
    fn from(error: PciError) -> Self {
        IvshmemError::Pci(error)
    }
}

impl From<GicError> for IvshmemError {
    fn from(error: GicError) -> Self {
        IvshmemError::Gic(error)
    }
}

/// One ivshmem device with memory decoding on.
#[derive(Clone, Copy, Debug)]
pub struct Ivshmem {
    device: PciDevice,
    registers: usize,
    memory: SharedMemory,
}

impl Ivshmem {
    /// The `nth` ivshmem device on bus 0: reads BAR0 and BAR2 (sizing BAR2), then turns
    /// memory decoding on.
    pub fn find(ecam: &Ecam, nth: usize) -> Result<Self, IvshmemError> {
        let device = ecam
            .find(VENDOR_ID, DEVICE_ID, nth)
            .ok_or(IvshmemError::NotFound)?;
        Self::from_pci(device)
    }

    /// The ivshmem device `device`.
    pub fn from_pci(device: PciDevice) -> Result<Self, IvshmemError> {
        let registers = device.assigned_bar(0)?.address;
        if registers.saturating_add(REGISTERS_SIZE) > 0x4000_0000 {
            return Err(IvshmemError::RegistersUnreachable(registers));
        }
        let shared = device.assigned_bar(2)?.address;
        let size = device.bar_size(2)?;
        let in_window = |(start, end): (u64, u64)| {
            shared >= start && shared.checked_add(size).is_some_and(|stop| stop <= end)
        };
        if ![
            (0x4000_0000, 0x1_0000_0000),
            (0x60_0000_0000, 0x100_0000_0000),
        ]
        .into_iter()
        .any(in_window)
        {
            return Err(IvshmemError::MemoryUnreachable(shared));
        }
        device.enable_memory();
        Ok(Self {
            device,
            registers: registers as usize,
            // SAFETY: BAR2 is the shared memory, inside a window the identity map has as
            // Normal memory (checked), decoded from now on; no Rust object lives there.
            memory: unsafe { SharedMemory::new(shared as usize, size as usize) },
        })
    }

    /// The PCI device.
    pub fn pci(&self) -> PciDevice {
        self.device
    }

    /// Guest-physical address of the register block (BAR0).
    pub fn registers_address(&self) -> u64 {
        self.registers as u64
    }

    fn read(&self, offset: usize) -> u32 {
        // SAFETY: a register of BAR0 (Device memory, checked in `from_pci`); reads of
        // IntrStatus clear it, which callers intend.
        unsafe { mmio::read32(self.registers + offset) }
    }

    fn write(&self, offset: usize, value: u32) {
        // SAFETY: a register of BAR0; writes configure or ring, never touch RAM.
        unsafe { mmio::write32(self.registers + offset, value) }
    }

    /// My peer ID (IVPosition), or `None` while it reads -1 (not attached yet).
    pub fn position(&self) -> Option<u16> {
        let raw = self.read(IV_POSITION);
        u16::try_from(raw).ok()
    }

    /// The shared memory (BAR2).
    pub fn memory(&self) -> SharedMemory {
        self.memory
    }

    /// Rings `vector` of `peer`, after completing this vCPU's earlier writes.
    pub fn ring(&self, peer: u16, vector: u16) {
        memory::complete_writes();
        self.write(DOORBELL, (u32::from(peer) << 16) | u32::from(vector));
    }

    /// Reads (and so clears) IntrStatus: acknowledges an INTx doorbell; non-zero if one
    /// was pending. The [`use_intx`](Self::use_intx) handler does this itself.
    pub fn acknowledge_intx(&self) -> u32 {
        self.read(INTR_STATUS)
    }

    /// Whether the device has an MSI-X capability (`ivshmem-doorbell`).
    pub fn has_msix(&self) -> bool {
        self.device.msix().is_ok()
    }

    /// Takes doorbells through INTx: the handler reads (clears) IntrStatus and counts. Sets
    /// the INTID level-sensitive, enables it on this vCPU, then IntrMask bit 0. Call with
    /// IRQs masked after `gic::init()`. Returns the counters and the INTID.
    pub fn use_intx(&self) -> Result<(&'static DoorbellEvents, u32), IvshmemError> {
        let intid = self.device.intx_intid()?;
        let events = claim(intid, self.registers)?;
        self.device.clear_command(COMMAND_INTX_DISABLE);
        gic::set_trigger(intid, Trigger::Level)?;
        gic::enable(intid)?;
        self.write(INTR_MASK, 1);
        Ok((events, intid))
    }

    /// Takes doorbells on `vector` through MSI-X: programs table entry `vector` with the
    /// GIC's SETSPI address and `intid` as data, sets `intid` edge-triggered and enables it,
    /// turns bus mastering and MSI-X on. Call with IRQs masked after `gic::init()`.
    pub fn use_msix(
        &self,
        vector: u16,
        intid: u32,
    ) -> Result<&'static DoorbellEvents, IvshmemError> {
        let msix: MsiX = self.device.msix()?;
        let events = claim(intid, 0)?;
        gic::set_trigger(intid, Trigger::Edge)?;
        gic::enable(intid)?;
        self.device.enable_bus_master();
        msix.route(vector, msi_address(), intid)?;
        Ok(events)
    }
}

/// Where an MSI writes to raise an SPI: GICv3 GICD_SETSPI_NSR, or the GICv2m frame's
/// MSI_SETSPI_NS (the device tree's `arm,gic-v2m-frame`, else [`DEFAULT_GICV2M_FRAME`]).
pub fn msi_address() -> u64 {
    match platform::gic() {
        GicLayout::V3 { distributor, .. } => distributor as u64 + SETSPI,
        GicLayout::V2 { .. } => {
            let frame = platform::device_tree()
                .and_then(|tree| {
                    let node = tree.find_compatible(&["arm,gic-v2m-frame"])?;
                    Some(node.reg()?.next()?.starting_address as u64)
                })
                .unwrap_or(DEFAULT_GICV2M_FRAME);
            frame + SETSPI
        }
    }
}

/// Doorbells a device's interrupt delivered.
#[derive(Debug)]
pub struct DoorbellEvents {
    intid: AtomicU32,
    /// INTx: the register block whose IntrStatus the handler reads; 0 for MSI-X.
    registers: AtomicUsize,
    doorbells: AtomicU32,
    interrupts: AtomicU32,
}

impl DoorbellEvents {
    const fn new() -> Self {
        Self {
            intid: AtomicU32::new(0),
            registers: AtomicUsize::new(0),
            doorbells: AtomicU32::new(0),
            interrupts: AtomicU32::new(0),
        }
    }

    /// Doorbells seen (INTx: interrupts with IntrStatus set; MSI-X: messages).
    pub fn doorbells(&self) -> u32 {
        self.doorbells.load(Ordering::Acquire)
    }

    /// Interrupts taken (INTx may include ones with IntrStatus already clear).
    pub fn interrupts(&self) -> u32 {
        self.interrupts.load(Ordering::Acquire)
    }
}

static EVENTS: [DoorbellEvents; 4] = [const { DoorbellEvents::new() }; 4];

/// A counter slot for `intid`, with the handler registered.
fn claim(intid: u32, registers: usize) -> Result<&'static DoorbellEvents, IvshmemError> {
    let daif = cpu::disable_interrupts();
    let slot = EVENTS.iter().find(|slot| {
        slot.intid
            .compare_exchange(0, intid, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    });
    let result = match slot {
        Some(slot) => {
            slot.registers.store(registers, Ordering::Relaxed);
            irq::register(intid, on_interrupt)
                .map(|()| slot)
                .map_err(|_| IvshmemError::Gic(GicError::InvalidIntid(intid)))
        }
        None => Err(IvshmemError::Gic(GicError::InvalidIntid(intid))),
    };
    cpu::restore_interrupts(daif);
    result
}

fn on_interrupt(intid: u32) {
    for slot in &EVENTS {
        if slot.intid.load(Ordering::Relaxed) != intid {
            continue;
        }
        slot.interrupts.fetch_add(1, Ordering::AcqRel);
        let registers = slot.registers.load(Ordering::Relaxed);
        let rang = registers == 0 || {
            // SAFETY: IntrStatus of the device this slot was claimed for (BAR0, Device
            // memory); reading clears it and drops the INTx line.
            unsafe { mmio::read32(registers + INTR_STATUS) != 0 }
        };
        if rang {
            slot.doorbells.fetch_add(1, Ordering::AcqRel);
        }
    }
}
