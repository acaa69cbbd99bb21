//! The interrupt controller: GICv2 or GICv3, whichever the platform has, behind one small API
//! (set up, enable/disable an INTID, level or edge, acknowledge/end, send an SGI to a vCPU of
//! this guest).
//!
//! All interrupts get one priority (0xa0) and are routed to the vCPU that enables them. On
//! GICv3 everything is Group 1 (ICC_IGRPEN1_EL1), as Linux does; on GICv2 Group 0 with
//! GICC_CTLR.EnableGrp0, which a GIC without security extensions signals as IRQ (also Linux's
//! choice). SGIs name their target by vCPU index: Aff0 on GICv3, the CPU interface number on
//! GICv2.

mod v2;
mod v3;

use core::sync::atomic::{AtomicU8, Ordering};

use crate::platform::{self, GicLayout};

/// Priority given to every interrupt the runtime enables.
const DEFAULT_PRIORITY: u8 = 0xa0;

/// INTIDs 1020-1023 are special (spurious, no interrupt pending).
const FIRST_SPECIAL_INTID: u32 = 1020;

/// Distributor set-up: not started, in progress, done.
static DISTRIBUTOR_STATE: AtomicU8 = AtomicU8::new(0);

/// Which GIC architecture this partition has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// GICv2 (memory-mapped CPU interface).
    V2,
    /// GICv3 (system-register CPU interface).
    V3,
}

impl core::fmt::Display for Version {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Version::V2 => "GICv2",
            Version::V3 => "GICv3",
        })
    }
}

/// The GIC version of the platform.
pub fn version() -> Version {
    match platform::gic() {
        GicLayout::V2 { .. } => Version::V2,
        GicLayout::V3 { .. } => Version::V3,
    }
}

/// Why a GIC operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicError {
    /// INTID beyond what the distributor implements (or a special one).
    InvalidIntid(u32),
    /// SGI number above 15, or a target vCPU the SGI encoding cannot name.
    InvalidSgi,
    /// GICv3: no redistributor frame matches this vCPU's affinity.
    NoRedistributor,
    /// GICv3: ICC_SRE_EL1.SRE stays 0, the system-register interface is unavailable.
    NoSystemRegisters,
}

/// An acknowledged interrupt, to hand back to [`end_of_interrupt`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acknowledged {
    raw: u32,
}

impl Acknowledged {
    /// The interrupt's INTID.
    pub fn intid(self) -> u32 {
        match version() {
            Version::V2 => self.raw & 0x3ff,
            Version::V3 => self.raw & 0xff_ffff,
        }
    }
}

/// Sets the GIC up for this vCPU: the distributor once (whichever vCPU comes first, the others
/// wait for it), then this vCPU's redistributor (v3) and CPU interface. Call on every vCPU that
/// takes interrupts, with IRQs masked.
pub fn init() -> Result<(), GicError> {
    match DISTRIBUTOR_STATE.compare_exchange(0, 1, Ordering::Acquire, Ordering::Acquire) {
        Ok(_) => {
            match platform::gic() {
                GicLayout::V2 { distributor, .. } => v2::init_distributor(distributor),
                GicLayout::V3 { distributor, .. } => v3::init_distributor(distributor),
            }
            DISTRIBUTOR_STATE.store(2, Ordering::Release);
        }
        Err(_) => {
            while DISTRIBUTOR_STATE.load(Ordering::Acquire) != 2 {
                crate::cpu::relax();
            }
        }
    }
    match platform::gic() {
        GicLayout::V2 {
            distributor,
            cpu_interface,
        } => {
            v2::init_cpu(distributor, cpu_interface);
            Ok(())
        }
        GicLayout::V3 { redistributors, .. } => v3::init_cpu(redistributors),
    }
}

/// Enables `intid`: an SGI or PPI on this vCPU, an SPI routed to this vCPU.
pub fn enable(intid: u32) -> Result<(), GicError> {
    match platform::gic() {
        GicLayout::V2 { distributor, .. } => v2::enable(distributor, intid),
        GicLayout::V3 { distributor, .. } => v3::enable(distributor, intid),
    }
}

/// How a shared peripheral interrupt signals (GICD_ICFGR).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Pending while the line is asserted (a device interrupt line, PCI INTx).
    Level,
    /// Pending once per rising edge or message (MSI, GICD_SETSPI_NSR, GICv2m).
    Edge,
}

/// GICD_ICFGR<n>: two bits per INTID, the upper one set for edge-triggered (GICv2 and v3).
const GICD_ICFGR: usize = 0xc00;
/// GICD_TYPER (GICv2 and v3): ITLinesNumber in bits 0-4.
const GICD_TYPER: usize = 0x004;

/// Configures SPI `intid` as level-sensitive or edge-triggered. Call it before [`enable`]
/// (the GIC may ignore the change while the interrupt is enabled).
pub fn set_trigger(intid: u32, trigger: Trigger) -> Result<(), GicError> {
    let distributor = match platform::gic() {
        GicLayout::V2 { distributor, .. } | GicLayout::V3 { distributor, .. } => distributor,
    };
    // SAFETY: GICD_TYPER is a read-only ID register of the platform's distributor.
    let typer = unsafe { crate::mmio::read32(distributor + GICD_TYPER) };
    let lines = (32 * ((typer & 0x1f) + 1)).min(FIRST_SPECIAL_INTID);
    if intid < 32 || intid >= lines {
        return Err(GicError::InvalidIntid(intid));
    }
    let register = distributor + GICD_ICFGR + intid as usize / 16 * 4;
    let edge_bit = 2u32 << ((intid % 16) * 2);
    // SAFETY: a read-modify-write of the distributor's configuration register for this SPI;
    // GIC registers never alias program memory.
    unsafe {
        let value = crate::mmio::read32(register);
        let value = match trigger {
            Trigger::Level => value & !edge_bit,
            Trigger::Edge => value | edge_bit,
        };
        crate::mmio::write32(register, value);
    }
    Ok(())
}

/// Disables `intid` (an SGI or PPI on this vCPU).
pub fn disable(intid: u32) -> Result<(), GicError> {
    match platform::gic() {
        GicLayout::V2 { distributor, .. } => v2::disable(distributor, intid),
        GicLayout::V3 { distributor, .. } => v3::disable(distributor, intid),
    }
}

/// Clears `intid`'s active state through the distributor (GICv2, SPIs) or this vCPU's
/// redistributor (GICv3 SGIs and PPIs): ICACTIVER, the way a guest deactivates without its
/// CPU interface.
pub fn clear_active(intid: u32) -> Result<(), GicError> {
    match platform::gic() {
        GicLayout::V2 { distributor, .. } => v2::clear_active(distributor, intid),
        GicLayout::V3 { distributor, .. } => v3::clear_active(distributor, intid),
    }
}

/// Acknowledges the highest-priority pending interrupt; `None` if there is none (spurious).
pub fn acknowledge() -> Option<Acknowledged> {
    let raw = match platform::gic() {
        GicLayout::V2 { cpu_interface, .. } => v2::acknowledge(cpu_interface),
        GicLayout::V3 { .. } => v3::acknowledge(),
    };
    let acknowledged = Acknowledged { raw };
    (acknowledged.intid() < FIRST_SPECIAL_INTID).then_some(acknowledged)
}

/// Ends (drops priority and deactivates) an acknowledged interrupt.
pub fn end_of_interrupt(interrupt: Acknowledged) {
    match platform::gic() {
        GicLayout::V2 { cpu_interface, .. } => v2::end_of_interrupt(cpu_interface, interrupt.raw),
        GicLayout::V3 { .. } => v3::end_of_interrupt(interrupt.raw),
    }
}

/// Sends SGI `sgi` (0-15) to vCPU `target` of this guest (may be this vCPU).
pub fn send_sgi(sgi: u32, target: usize) -> Result<(), GicError> {
    if sgi > 15 {
        return Err(GicError::InvalidSgi);
    }
    match platform::gic() {
        GicLayout::V2 { distributor, .. } => v2::send_sgi(distributor, sgi, target),
        GicLayout::V3 { .. } => v3::send_sgi(sgi, target),
    }
}

/// Byte `intid` of a priority register block, as a 32-bit read-modify-write (every GIC
/// implementation and emulation accepts word accesses there).
fn priority_register(intid: u32) -> (usize, u32, u32) {
    let offset = (intid as usize / 4) * 4;
    let shift = (intid % 4) * 8;
    (offset, shift, 0xff << shift)
}
