//! Virtual PCI: each partition's ECAM host bridge, the function interface behind it, MSI-X, and the QEMU `ivshmem` personality.
//!
//! A partition that has PCI devices gets one [`PciBridge`]: configuration space (ECAM, bus 0
//! only) and both memory windows are three frames of the same object, so a BAR the guest moves
//! is found by the bridge itself from the BAR registers and nothing is re-registered. A BAR is
//! either trapped ([`BarKind::Mmio`]: every access goes to the function) or backed by host
//! memory ([`BarKind::Memory`]: mapped into stage 2 while memory decoding is on).
//!
//! Functions ([`PciFunction`]) only describe themselves and answer BAR accesses; the bridge owns
//! the configuration header, the MSI-X table and the INTx line. Interrupts leave as
//! [`Effect::SetLevel`] (INTx, level-sensitive, wired-OR per INTID) and [`Effect::Raise`] (an
//! MSI-X message whose data is an INTID in the layout's MSI range).
//!
//! Nothing a guest writes panics: bad BAR placements are refused, unknown registers read as
//! zero (all-ones where PCI says "nothing answered") and ignore writes.

mod bridge;
mod config_space;
pub mod device_tree;
pub mod doorbell;
mod handle;
pub mod ivshmem;
mod msix;
mod split;
pub mod v2m;

#[cfg(test)]
mod ivshmem_tests;
#[cfg(test)]
mod tests;

use crate::addr::HostPhysAddr;
use crate::config::GuestWindows;
use crate::device::{Effect, Effects};
use crate::exit::AccessWidth;
use crate::guest_layout;

pub use bridge::PciError;
pub use handle::{PciBridge, PciSignalTarget};

/// Devices on bus 0 (device numbers 0-31).
pub const SLOTS: u8 = 32;
/// BAR registers of a type-0 header.
pub const BAR_COUNT: usize = 6;

/// Where a partition's PCI lives and which interrupts it uses: drives both the bridge and the
/// device tree, so the two cannot disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestPci {
    /// ECAM configuration window `(base, size)`; bus 0 only needs 1 MiB.
    pub ecam: (u64, u64),
    /// 32-bit non-prefetchable memory window `(base, size)`.
    pub mmio32: (u64, u64),
    /// 64-bit prefetchable memory window `(base, size)`.
    pub mmio64: (u64, u64),
    /// INTID of INTA of slot 0; slot `s` pin `p` (1-4) raises `intx_first + (s + p - 1) % 4`.
    pub intx_first: u32,
    /// INTIDs MSI-X messages may name `(first, count)`; `None`: no MSI (messages are dropped and
    /// the device tree describes no MSI controller).
    pub msi: Option<(u32, u32)>,
    /// The GICv2m frame `(base, size)` (used only with a GICv2).
    pub v2m_frame: (u64, u64),
    /// An x86 APIC platform: MSI-X messages go to the local APICs as they are written
    /// (address 0xFEE0_0000 | APIC ID << 12, data = vector: [`Effect::Message`]) instead of
    /// naming GIC INTIDs, INTx lines are I/O APIC pins, and each function's Interrupt Line
    /// register starts at its pin's number, as PC firmware leaves it.
    pub apic: bool,
}

impl GuestPci {
    /// The layout of [`crate::guest_layout`] (QEMU `virt` addresses).
    pub const QEMU_VIRT: GuestPci = GuestPci {
        ecam: guest_layout::PCI_ECAM,
        mmio32: guest_layout::PCI_MMIO32,
        mmio64: guest_layout::PCI_MMIO64,
        intx_first: guest_layout::PCI_INTX_FIRST,
        msi: Some(guest_layout::MSI_INTIDS),
        v2m_frame: guest_layout::MSI_FRAME,
        apic: false,
    };

    /// The layout of an x86_64 partition ([`crate::guest_layout::x86`]): ECAM and the 32-bit
    /// window below the I/O APIC, INTx on I/O APIC pins 16-19, MSI-X to the local APICs.
    pub const X86: GuestPci = GuestPci {
        ecam: guest_layout::x86::PCI_ECAM,
        mmio32: guest_layout::x86::PCI_MMIO32,
        mmio64: guest_layout::PCI_MMIO64,
        intx_first: guest_layout::x86::PCI_INTX_FIRST_PIN,
        msi: None,
        v2m_frame: (0, 0),
        apic: true,
    };

    /// This platform with the windows a partition's configuration placed: ECAM, both memory
    /// windows and (with a GIC) the MSI frame.
    pub fn placed(self, windows: &GuestWindows) -> GuestPci {
        GuestPci {
            ecam: windows.pci_ecam,
            mmio32: windows.pci_mmio32,
            mmio64: windows.pci_mmio64,
            v2m_frame: if self.apic {
                self.v2m_frame
            } else {
                windows.msi_frame
            },
            ..self
        }
    }

    /// The INTID slot `slot`'s interrupt pin `pin` (1 = INTA .. 4 = INTD) raises, or `None`
    /// for pin 0 (no interrupt) or a pin above 4.
    pub fn intx_intid(&self, slot: u8, pin: u8) -> Option<u32> {
        if !(1..=4).contains(&pin) {
            return None;
        }
        let swizzled = (u32::from(slot) + u32::from(pin) - 1) % 4;
        self.intx_first.checked_add(swizzled)
    }

    /// The INTID an MSI message with data `data` raises, if the data names one of the MSI
    /// INTIDs (the message address is not checked: the data alone selects the interrupt).
    pub fn msi_intid(&self, data: u32) -> Option<u32> {
        let (first, count) = self.msi?;
        (data >= first && data - first < count).then_some(data)
    }
}

/// What configuration space says a function is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Revision ID.
    pub revision: u8,
    /// Class code, 24 bits: base class << 16 | subclass << 8 | programming interface.
    pub class_code: u32,
    /// Subsystem vendor ID.
    pub subsystem_vendor: u16,
    /// Subsystem ID.
    pub subsystem: u16,
}

/// How wide a memory BAR's address is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarWidth {
    /// 32-bit: one register, must lie in the 32-bit window.
    Bits32,
    /// 64-bit: this register and the next one (which must be left empty).
    Bits64,
}

/// What a BAR is backed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// Trapped: reads and writes go to [`PciFunction::bar_read`] / [`PciFunction::bar_write`]
    /// (and the MSI-X table and PBA, when they live in this BAR, to the bridge).
    Mmio,
    /// Host memory mapped into stage 2 while memory decoding is on. Only the first `backed`
    /// bytes are mapped (a page multiple, at most the BAR size); accesses past them trap and
    /// read as all-ones.
    Memory {
        /// First byte of the host memory (page-aligned).
        host: HostPhysAddr,
        /// Bytes of host memory behind the BAR.
        backed: u64,
    },
}

/// One memory BAR of a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarSpec {
    /// Bytes decoded: a power of two, at least 16 (at least a page for [`BarKind::Memory`]).
    pub size: u64,
    /// 32- or 64-bit.
    pub width: BarWidth,
    /// The prefetchable bit; 64-bit prefetchable BARs start in the 64-bit window.
    pub prefetchable: bool,
    /// What backs it.
    pub kind: BarKind,
}

/// Where a function's MSI-X table and pending-bit array live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixSpec {
    /// Number of vectors (1-2048).
    pub vectors: u16,
    /// BAR holding the table (an [`BarKind::Mmio`] BAR).
    pub table_bar: u8,
    /// Offset of the table in that BAR (8-byte aligned); 16 bytes per vector.
    pub table_offset: u32,
    /// BAR holding the pending-bit array.
    pub pba_bar: u8,
    /// Offset of the PBA in that BAR (8-byte aligned); one bit per vector in 64-bit words.
    pub pba_offset: u32,
}

/// What a function may do during an access or a signal: push effects, ask for MSI-X vectors.
pub struct Context<'a> {
    effects: &'a mut Effects,
    msix_enabled: bool,
    /// Vectors asked for, bit n = vector n (functions have at most [`msix::MAX_VECTORS`]).
    vectors: u64,
}

impl<'a> Context<'a> {
    pub(crate) fn new(effects: &'a mut Effects, msix_enabled: bool) -> Self {
        Self {
            effects,
            msix_enabled,
            vectors: 0,
        }
    }

    /// The effect list (for [`Effect::Signal`] and the like; interrupts of the function itself
    /// go through [`PciFunction::intx_level`] and [`Context::signal_vector`]).
    pub fn effects(&mut self) -> &mut Effects {
        self.effects
    }

    /// Records one effect.
    pub fn push(&mut self, effect: Effect) {
        self.effects.push(effect);
    }

    /// Whether the guest enabled MSI-X on this function (then INTx is off by definition).
    pub fn msix_enabled(&self) -> bool {
        self.msix_enabled
    }

    /// Asks for MSI-X vector `vector`: sent now, or left pending in the PBA while masked,
    /// dropped while MSI-X is disabled or for a vector the function does not have.
    pub fn signal_vector(&mut self, vector: u16) {
        // A vector past 63 is one the function does not have (the bridge refuses MSI-X
        // tables of more than 64 entries): dropped, as for any absent vector.
        self.vectors |= 1u64.checked_shl(u32::from(vector)).unwrap_or(0);
    }

    /// The vectors asked for, as a bitmask (bit n = vector n).
    pub(crate) fn take_vectors(&mut self) -> u64 {
        core::mem::take(&mut self.vectors)
    }
}

/// A PCI function behind the host bridge (function 0 of its slot).
///
/// The description methods are read once, when the function is added; the access methods see
/// offsets inside one BAR and never an access outside it.
pub trait PciFunction: Send {
    /// Vendor, device, class, revision, subsystem.
    fn identity(&self) -> Identity;
    /// The BARs by register index; a 64-bit BAR at `i` leaves `i + 1` empty.
    fn bars(&self) -> [Option<BarSpec>; BAR_COUNT];
    /// Interrupt pin: 0 none, 1 INTA (2-4 INTB-INTD).
    fn interrupt_pin(&self) -> u8 {
        0
    }
    /// The MSI-X capability, if the function has one.
    fn msix(&self) -> Option<MsixSpec> {
        None
    }
    /// A load from an [`BarKind::Mmio`] BAR (MSI-X table and PBA excluded).
    fn bar_read(&mut self, bar: u8, offset: u64, width: AccessWidth, context: &mut Context) -> u64;
    /// A store to an [`BarKind::Mmio`] BAR (MSI-X table and PBA excluded).
    fn bar_write(
        &mut self,
        bar: u8,
        offset: u64,
        width: AccessWidth,
        value: u64,
        context: &mut Context,
    );
    /// The function's INTx output before the command register's INTx Disable (shown in status
    /// bit 3; the bridge masks it).
    fn intx_level(&self) -> bool {
        false
    }
    /// Something outside the partition changed the function's state (a peer's doorbell).
    fn signalled(&mut self, context: &mut Context) {
        let _ = context;
    }
    /// The partition restarts: back to the state after power-on (the bridge resets the
    /// configuration header and MSI-X itself).
    fn reset(&mut self) {}
    /// Where the reserved tail of [`BarKind::Mmio`] BAR `bar` starts: from this offset to the
    /// BAR's end every access reads as zero, ignores writes and changes no state, so the
    /// partition's fast lane answers it without the bridge ([`crate::fast`]). `None`: no such
    /// tail. A BAR holding the MSI-X table or PBA is never published.
    fn reserved_from(&self, bar: u8) -> Option<u64> {
        let _ = bar;
        None
    }
    /// A 32-bit doorbell register the fast lane may ring without the bridge's lock: (BAR,
    /// offset, ring). Only for a register whose store changes nothing of the function but
    /// what the ring records (and reads as zero).
    fn fast_doorbell(&self) -> Option<(u8, u64, alloc::sync::Arc<dyn crate::fast::FastDoorbell>)> {
        None
    }
    /// Its MSI-X state changed (enable, function mask, a table entry, a reset): per vector,
    /// the interrupt a message would raise now, or `None` (MSI-X off, masked, or data naming
    /// no interrupt), for a function whose rings are delivered without the bridge.
    fn msix_routes_changed(&mut self, routes: &[Option<crate::fast::MsiRoute>]) {
        let _ = routes;
    }
}
