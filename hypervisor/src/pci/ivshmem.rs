//! The QEMU `ivshmem-plain` / `ivshmem-doorbell` PCI function (1af4:1110): register block, doorbells, MSI-X or INTx, shared memory BAR.
//!
//! Guest-visible, as QEMU (`hw/misc/ivshmem.c`) and `docs/specs/ivshmem-spec` describe it:
//! - identity 1af4:1110 revision 1, class 0x050000 (RAM memory controller), subsystem
//!   1af4:1100 (QEMU's default subsystem IDs);
//! - BAR0, 256 bytes (32-bit, trapped): 0x00 IntrMask RW, 0x04 IntrStatus RW (a read returns
//!   it and clears it), 0x08 IVPosition RO (own peer ID, -1 until attached), 0x0C Doorbell WO
//!   (bits 31:16 peer ID, bits 15:0 vector); other offsets read 0 and ignore writes;
//! - BAR1 (doorbell only), 4 KiB: MSI-X table at 0 and PBA at 2048, QEMU's exclusive-BAR
//!   layout;
//! - BAR2: the shared memory, 64-bit prefetchable, its size the region's rounded up to a power
//!   of two (QEMU requires one); only the region's own bytes are mapped.
//!
//! A doorbell to an absent peer or to a vector at or above the peer's vector count is ignored.
//! A rung doorbell-device with MSI-X enabled sends the vector; otherwise it sets IntrStatus bit
//! 0 and drives INTA with (IntrStatus & IntrMask) != 0 (QEMU's INTx semantics). Differences
//! from QEMU, on purpose: the doorbell's vector field is 16 bits (QEMU keeps 8); a
//! doorbell device has INTA (QEMU's has no pin) so Linux's `uio_pci_generic` can drive it, and
//! falls back to it while MSI-X is off (QEMU drops the event); a plain device has no pin.
//! Registers accept any width: a narrower store changes only its bytes, a load of any part of
//! IntrStatus clears all of it.

use alloc::boxed::Box;
use alloc::sync::Arc;

use super::split::{self, merge};
use super::{BAR_COUNT, BarKind, BarSpec, BarWidth, Context, Identity, MsixSpec, PciFunction};
use crate::addr::{HostPhysAddr, PAGE_SIZE};
use crate::device::Effects;
use crate::exit::AccessWidth;
use crate::fast::{FastDoorbell, MsiRoute};

/// Red Hat / Qumranet vendor ID.
pub const VENDOR: u16 = 0x1af4;
/// ivshmem device ID.
pub const DEVICE: u16 = 0x1110;
/// QEMU's default subsystem ID.
pub const SUBSYSTEM: u16 = 0x1100;
/// Class code: memory controller, RAM.
pub const CLASS_CODE: u32 = 0x05_0000;
/// Bytes of the register block (BAR0).
pub const REGISTER_BLOCK_SIZE: u64 = 0x100;
/// Bytes of the MSI-X BAR (BAR1).
pub const MSIX_BAR_SIZE: u64 = 0x1000;
/// Offset of the PBA in the MSI-X BAR.
pub const PBA_OFFSET: u32 = 0x800;
/// Most vectors a doorbell device may have (one 64-bit pending mask per peer).
pub const MAX_VECTORS: u16 = 64;

/// Register indices (offset / 4) in BAR0.
const INTR_MASK: u64 = 0;
const INTR_STATUS: u64 = 1;
const IV_POSITION: u64 = 2;
const DOORBELL: u64 = 3;

/// BAR numbers (the shared memory is BAR2).
const REGISTER_BAR: u8 = 0;
const MSIX_BAR: u8 = 1;

/// How an ivshmem function reaches its peers: membership and doorbells. The lead binds it
/// to the region registry; [`super::doorbell::DoorbellBoard`] is the in-module
/// implementation.
pub trait PeerLink: Send {
    /// This device's peer ID, `None` until attached.
    fn position(&self) -> Option<u16>;
    /// Rings `vector` of peer `peer`: records it and pushes an [`crate::device::Effect::Signal`]
    /// for the peer's device. Returns `false` (and does nothing) for an absent peer or a
    /// vector the peer does not have.
    fn ring(&self, peer: u16, vector: u16, effects: &mut Effects) -> bool;
    /// Takes the vectors rung on this device since the last call, bit `v` = vector `v`.
    fn take_rung(&self) -> u64;
    /// The same ring as [`PeerLink::ring`] of a doorbell-register value, for the fast lane
    /// (`None`: rings take the slow path).
    fn fast_doorbell(&self) -> Option<Arc<dyn FastDoorbell>> {
        None
    }
    /// This device's MSI-X routes changed (see [`crate::fast::MsiRoute`]): per vector, where
    /// a ring may deliver at once, or `None`.
    fn publish_routes(&self, routes: &[Option<MsiRoute>]) {
        let _ = routes;
    }
}

/// Which of QEMU's two devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// `ivshmem-plain`: memory only, no interrupts, doorbell writes ignored.
    Plain,
    /// `ivshmem-doorbell` with `vectors` MSI-X vectors (1-64).
    Doorbell {
        /// Number of vectors.
        vectors: u16,
    },
}

/// Host memory behind a shared-memory BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedMemory {
    /// First byte (page-aligned).
    pub host: HostPhysAddr,
    /// Bytes (whole pages).
    pub size: u64,
}

/// Why an ivshmem function could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IvshmemError {
    /// A doorbell device with 0 or more than 64 vectors.
    InvalidVectors(u16),
    /// Memory of size zero, not whole pages, or not page-aligned.
    InvalidMemory,
}

/// One ivshmem function.
pub struct Ivshmem {
    variant: Variant,
    memory: SharedMemory,
    link: Box<dyn PeerLink>,
    intr_mask: u32,
    intr_status: u32,
}

impl Ivshmem {
    /// A function for `memory`, reaching its peers through `link`.
    pub fn new(
        variant: Variant,
        memory: SharedMemory,
        link: Box<dyn PeerLink>,
    ) -> Result<Self, IvshmemError> {
        if let Variant::Doorbell { vectors } = variant
            && (vectors == 0 || vectors > MAX_VECTORS)
        {
            return Err(IvshmemError::InvalidVectors(vectors));
        }
        let pages = memory.size.is_multiple_of(PAGE_SIZE) && memory.host.is_aligned(PAGE_SIZE);
        if memory.size == 0 || !pages || memory.size.checked_next_power_of_two().is_none() {
            return Err(IvshmemError::InvalidMemory);
        }
        Ok(Self {
            variant,
            memory,
            link,
            intr_mask: 0,
            intr_status: 0,
        })
    }

    fn read_register(&mut self, index: u64) -> u32 {
        match index {
            INTR_MASK => self.intr_mask,
            INTR_STATUS => core::mem::take(&mut self.intr_status),
            IV_POSITION => self.link.position().map_or(u32::MAX, u32::from),
            _ => 0,
        }
    }

    fn write_register(&mut self, index: u64, value: u32, mask: u32, effects: &mut Effects) {
        match index {
            INTR_MASK => self.intr_mask = merge(self.intr_mask, value, mask),
            INTR_STATUS => self.intr_status = merge(self.intr_status, value, mask),
            DOORBELL if matches!(self.variant, Variant::Doorbell { .. }) => {
                let value = value & mask;
                self.link.ring((value >> 16) as u16, value as u16, effects);
            }
            _ => {}
        }
    }
}

impl PciFunction for Ivshmem {
    fn identity(&self) -> Identity {
        Identity {
            vendor: VENDOR,
            device: DEVICE,
            revision: 1,
            class_code: CLASS_CODE,
            subsystem_vendor: VENDOR,
            subsystem: SUBSYSTEM,
        }
    }

    fn bars(&self) -> [Option<BarSpec>; BAR_COUNT] {
        let mmio = |size| BarSpec {
            size,
            width: BarWidth::Bits32,
            prefetchable: false,
            kind: BarKind::Mmio,
        };
        let msix = match self.variant {
            Variant::Plain => None,
            Variant::Doorbell { .. } => Some(mmio(MSIX_BAR_SIZE)),
        };
        let memory = BarSpec {
            size: self.memory.size.next_power_of_two(),
            width: BarWidth::Bits64,
            prefetchable: true,
            kind: BarKind::Memory {
                host: self.memory.host,
                backed: self.memory.size,
            },
        };
        // BAR0 registers, BAR1 MSI-X, BAR2 (and 3) memory.
        [
            Some(mmio(REGISTER_BLOCK_SIZE)),
            msix,
            Some(memory),
            None,
            None,
            None,
        ]
    }

    fn interrupt_pin(&self) -> u8 {
        match self.variant {
            Variant::Plain => 0,
            Variant::Doorbell { .. } => 1,
        }
    }

    fn msix(&self) -> Option<MsixSpec> {
        match self.variant {
            Variant::Plain => None,
            Variant::Doorbell { vectors } => Some(MsixSpec {
                vectors,
                table_bar: MSIX_BAR,
                table_offset: 0,
                pba_bar: MSIX_BAR,
                pba_offset: PBA_OFFSET,
            }),
        }
    }

    fn bar_read(
        &mut self,
        bar: u8,
        offset: u64,
        width: AccessWidth,
        _context: &mut Context,
    ) -> u64 {
        if bar != REGISTER_BAR {
            return 0;
        }
        split::read(offset, width, |index| self.read_register(index))
    }

    fn bar_write(
        &mut self,
        bar: u8,
        offset: u64,
        width: AccessWidth,
        value: u64,
        context: &mut Context,
    ) {
        if bar != REGISTER_BAR {
            return;
        }
        let effects = context.effects();
        split::write(offset, width, value, |index, value, mask| {
            self.write_register(index, value, mask, effects)
        });
    }

    fn intx_level(&self) -> bool {
        match self.variant {
            Variant::Plain => false,
            Variant::Doorbell { .. } => self.intr_status & self.intr_mask != 0,
        }
    }

    fn fast_doorbell(&self) -> Option<(u8, u64, Arc<dyn FastDoorbell>)> {
        // Doorbell writes have no effect on the function itself (`write_register`).
        match self.variant {
            Variant::Plain => None,
            Variant::Doorbell { .. } => self
                .link
                .fast_doorbell()
                .map(|doorbell| (REGISTER_BAR, DOORBELL * 4, doorbell)),
        }
    }

    fn msix_routes_changed(&mut self, routes: &[Option<MsiRoute>]) {
        self.link.publish_routes(routes);
    }

    fn reserved_from(&self, bar: u8) -> Option<u64> {
        // Past the four registers (`read_register`/`write_register`: `_`).
        (bar == REGISTER_BAR).then_some((DOORBELL + 1) * 4)
    }

    fn reset(&mut self) {
        // QEMU's ivshmem_reset; doorbells rung before the restart are dropped.
        self.intr_mask = 0;
        self.intr_status = 0;
        self.link.take_rung();
    }

    fn signalled(&mut self, context: &mut Context) {
        let rung = self.link.take_rung();
        let Variant::Doorbell { vectors } = self.variant else {
            return;
        };
        if rung == 0 {
            return;
        }
        if context.msix_enabled() {
            for vector in (0..vectors).filter(|&v| rung & (1u64 << v) != 0) {
                context.signal_vector(vector);
            }
        } else {
            self.intr_status |= 1;
        }
    }
}
