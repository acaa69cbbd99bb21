//! The QEMU `ivshmem` personality: PCI 1af4:1110 with a 256-byte register block in BAR0
//! (IntrMask, IntrStatus, IVPosition, Doorbell), the MSI-X table in BAR1 (`ivshmem-doorbell`)
//! and the shared memory in BAR2 (64-bit prefetchable).
//!
//! Interrupts: INTx (IntrMask bit 0 enables; a doorbell sets IntrStatus, which asserts the
//! level line until read) or MSI-X (vector `v` sends its message: aarch64 to the GIC, which
//! raises an edge-triggered SPI; x86_64 to the local APIC, which takes the message's vector).
//! [`Ivshmem::use_intx`] / [`Ivshmem::use_msix`] set either up with a handler that counts
//! doorbells into a [`DoorbellEvents`].

use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use crate::arch::{self, Interrupt, InterruptError, mmio};
use crate::memory::{self, SharedMemory};
use crate::pci::{Bus, COMMAND_INTX_DISABLE, MsiX, PciDevice, PciError};

#[cfg(target_arch = "aarch64")]
pub use crate::arch::DEFAULT_GICV2M_FRAME;
/// The first interrupt number [`Ivshmem::use_msix`] takes: aarch64 INTID 96 (the MSI SPIs
/// 96-127), x86_64 vector 0x28 (vectors 0x28-0x2f).
pub const FIRST_MSI_INTERRUPT: u32 = arch::FIRST_MSI;

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

/// Why an ivshmem device could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IvshmemError {
    /// No such device on bus 0.
    NotFound,
    /// A PCI problem (BARs, MSI-X, pin).
    Pci(PciError),
    /// The register block (BAR0) is not where the identity map has device memory.
    RegistersUnreachable(u64),
    /// The shared memory (BAR2) is not where the identity map has normal memory for it.
    MemoryUnreachable(u64),
    /// The interrupt could not be set up (GIC, I/O APIC, vectors).
    Interrupt(InterruptError),
    /// All doorbell counter slots are taken.
    TooMany,
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
            IvshmemError::Interrupt(error) => write!(f, "{error}"),
            IvshmemError::TooMany => f.write_str("too many doorbell interrupts"),
        }
    }
}

impl From<PciError> for IvshmemError {
    fn from(error: PciError) -> Self {
        IvshmemError::Pci(error)
    }
}

impl From<InterruptError> for IvshmemError {
    fn from(error: InterruptError) -> Self {
        IvshmemError::Interrupt(error)
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
    pub fn find(bus: &Bus, nth: usize) -> Result<Self, IvshmemError> {
        let device = bus
            .find(VENDOR_ID, DEVICE_ID, nth)
            .ok_or(IvshmemError::NotFound)?;
        Self::from_pci(device)
    }

    /// The ivshmem device `device`.
    pub fn from_pci(device: PciDevice) -> Result<Self, IvshmemError> {
        let registers = device.assigned_bar(0)?.address;
        if !arch::is_device_range(registers, REGISTERS_SIZE) {
            return Err(IvshmemError::RegistersUnreachable(registers));
        }
        let shared = device.assigned_bar(2)?.address;
        let size = device.bar_size(2)?;
        if !arch::is_shared_memory_range(shared, size) {
            return Err(IvshmemError::MemoryUnreachable(shared));
        }
        device.enable_memory();
        Ok(Self {
            device,
            registers: registers as usize,
            // SAFETY: BAR2 is the shared memory, where the identity map has normal memory for
            // it (checked), decoded from now on; no Rust object lives there.
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
        // SAFETY: a register of BAR0 (device memory, checked in `from_pci`); reads of
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

    /// Takes doorbells through INTx: the handler reads (clears) IntrStatus and counts.
    /// Enables the interrupt level-sensitive on this vCPU (x86_64: routes the I/O APIC pin),
    /// then IntrMask bit 0. Call with interrupts masked after
    /// [`init_interrupts`](crate::init_interrupts). Returns the counters and the interrupt.
    pub fn use_intx(&self) -> Result<(&'static DoorbellEvents, Interrupt), IvshmemError> {
        let interrupt = self.device.intx()?;
        let routed = arch::enable_level(interrupt, on_interrupt)?;
        let events = claim(routed.key(), self.registers)?;
        self.device.clear_command(COMMAND_INTX_DISABLE);
        self.write(INTR_MASK, 1);
        Ok((events, routed))
    }

    /// Takes doorbells on MSI-X table entry `vector`, delivered as interrupt `number`
    /// (aarch64: an INTID, edge-triggered SPI; x86_64: an IDT vector; see
    /// [`FIRST_MSI_INTERRUPT`]): installs the handler, programs the table entry with this
    /// vCPU's message, turns bus mastering and MSI-X on. Call with interrupts masked after
    /// [`init_interrupts`](crate::init_interrupts). Returns the counters and the interrupt.
    pub fn use_msix(
        &self,
        vector: u16,
        number: u32,
    ) -> Result<(&'static DoorbellEvents, Interrupt), IvshmemError> {
        let msix: MsiX = self.device.msix()?;
        let routed = arch::enable_msi(number, on_interrupt)?;
        let events = claim(routed.key(), 0)?;
        self.device.enable_bus_master();
        let (address, data) = arch::msi_message(&routed);
        msix.route(vector, address, data)?;
        Ok((events, routed))
    }
}

/// Where an MSI writes to reach this vCPU: aarch64 GICD_SETSPI_NSR or the GICv2m frame's
/// MSI_SETSPI_NS (the device tree's `arm,gic-v2m-frame`, else `DEFAULT_GICV2M_FRAME`);
/// x86_64 0xFEE0_0000 | (APIC ID << 12).
pub fn msi_address() -> u64 {
    arch::msi_address()
}

/// Doorbells a device's interrupt delivered.
#[derive(Debug)]
pub struct DoorbellEvents {
    /// The interrupt's key ([`Interrupt::key`]); 0 while the slot is free.
    key: AtomicU32,
    /// INTx: the register block whose IntrStatus the handler reads; 0 for MSI-X.
    registers: AtomicUsize,
    doorbells: AtomicU32,
    interrupts: AtomicU32,
}

impl DoorbellEvents {
    const fn new() -> Self {
        Self {
            key: AtomicU32::new(0),
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

/// A counter slot for the interrupt with `key` (its handler is [`on_interrupt`]).
fn claim(key: u32, registers: usize) -> Result<&'static DoorbellEvents, IvshmemError> {
    let saved = arch::disable_interrupts();
    let slot = EVENTS.iter().find(|slot| {
        slot.key
            .compare_exchange(0, key, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    });
    if let Some(slot) = slot {
        slot.registers.store(registers, Ordering::Relaxed);
    }
    arch::restore_interrupts(saved);
    slot.ok_or(IvshmemError::TooMany)
}

fn on_interrupt(key: u32) {
    for slot in &EVENTS {
        if slot.key.load(Ordering::Relaxed) != key {
            continue;
        }
        slot.interrupts.fetch_add(1, Ordering::AcqRel);
        let registers = slot.registers.load(Ordering::Relaxed);
        let rang = registers == 0 || {
            // SAFETY: IntrStatus of the device this slot was claimed for (BAR0, device
            // memory); reading clears it and drops the INTx line.
            unsafe { mmio::read32(registers + INTR_STATUS) != 0 }
        };
        if rang {
            slot.doorbells.fetch_add(1, Ordering::AcqRel);
        }
    }
}
