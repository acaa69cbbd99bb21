//! Tests of the virtual GIC through its public interface, as guest drivers and arch code use it.

mod delivery;
mod robustness;
mod v2;
mod v3;

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;

use super::*;
use crate::device::{Effects, MmioDevice};
use crate::exit::AccessWidth;

/// GICD registers used by the tests.
const GICD_CTLR: u64 = 0x0000;
const GICD_TYPER: u64 = 0x0004;
const GICD_IIDR: u64 = 0x0008;
const GICD_IGROUPR: u64 = 0x0080;
const GICD_ISENABLER: u64 = 0x0100;
const GICD_ICENABLER: u64 = 0x0180;
const GICD_ISPENDR: u64 = 0x0200;
const GICD_ICPENDR: u64 = 0x0280;
const GICD_ISACTIVER: u64 = 0x0300;
const GICD_ICACTIVER: u64 = 0x0380;
const GICD_IPRIORITYR: u64 = 0x0400;
const GICD_ITARGETSR: u64 = 0x0800;
const GICD_ICFGR: u64 = 0x0c00;
const GICD_SGIR: u64 = 0x0f00;
const GICD_CPENDSGIR: u64 = 0x0f10;
const GICD_SPENDSGIR: u64 = 0x0f20;
const GICD_IROUTER: u64 = 0x6000;
const GICD_PIDR2: u64 = 0xffe8;
/// GICR registers (RD_base) and the SGI frame's offset.
const GICR_CTLR: u64 = 0x0000;
const GICR_TYPER: u64 = 0x0008;
const GICR_WAKER: u64 = 0x0014;
const GICR_PIDR2: u64 = 0xffe8;
const SGI_BASE: u64 = 0x1_0000;
const STRIDE: u64 = 0x2_0000;

/// A virtual GIC with its frames, accessed like a guest would.
struct Guest {
    gic: Arc<VirtualGic>,
    gicd: Box<dyn MmioDevice>,
    gicr: Option<Box<dyn MmioDevice>>,
    effects: Effects,
}

impl Guest {
    fn new(version: GicVersion, vcpus: usize, spis: u32) -> Guest {
        let gic = Arc::new(VirtualGic::new(version, vcpus, spis));
        Guest {
            gicd: gic.distributor(),
            gicr: gic.redistributors(),
            gic,
            effects: Effects::default(),
        }
    }

    fn v3(vcpus: usize) -> Guest {
        Guest::new(GicVersion::V3, vcpus, 64)
    }

    fn v2(vcpus: usize) -> Guest {
        Guest::new(GicVersion::V2, vcpus, 64)
    }

    /// A 32-bit distributor load by `vcpu`.
    fn dread(&mut self, vcpu: usize, offset: u64) -> u64 {
        self.dread_width(vcpu, offset, AccessWidth::Word)
    }

    fn dread_width(&mut self, vcpu: usize, offset: u64, width: AccessWidth) -> u64 {
        self.gicd.read(vcpu, offset, width, &mut self.effects)
    }

    /// A 32-bit distributor store by `vcpu`.
    fn dwrite(&mut self, vcpu: usize, offset: u64, value: u64) {
        self.dwrite_width(vcpu, offset, AccessWidth::Word, value);
    }

    fn dwrite_width(&mut self, vcpu: usize, offset: u64, width: AccessWidth, value: u64) {
        self.gicd
            .write(vcpu, offset, width, value & width.mask(), &mut self.effects);
    }

    /// A 32-bit redistributor load (by vCPU 0) at `offset` from the region's start.
    fn rread(&mut self, offset: u64) -> u64 {
        self.rread_width(offset, AccessWidth::Word)
    }

    fn rread_width(&mut self, offset: u64, width: AccessWidth) -> u64 {
        let gicr = self.gicr.as_mut().expect("GICv3");
        gicr.read(0, offset, width, &mut self.effects)
    }

    /// A 32-bit redistributor store (by vCPU 0).
    fn rwrite(&mut self, offset: u64, value: u64) {
        let gicr = self.gicr.as_mut().expect("GICv3");
        gicr.write(0, offset, AccessWidth::Word, value, &mut self.effects);
    }

    /// Enables both groups in GICD_CTLR (GICv3 keeps ARE).
    fn enable_groups(&mut self) {
        self.dwrite(0, GICD_CTLR, 0b11);
    }

    /// Enables SPI `intid` with `priority` (through the distributor).
    fn enable_spi(&mut self, intid: u32, priority: u8) {
        let intid = u64::from(intid);
        self.dwrite_width(
            0,
            GICD_IPRIORITYR + intid,
            AccessWidth::Byte,
            u64::from(priority),
        );
        self.dwrite(0, GICD_ISENABLER + intid / 32 * 4, 1 << (intid % 32));
    }

    /// Enables SGIs and PPIs `mask` of `vcpu` through its SGI frame (GICv3).
    fn enable_private_v3(&mut self, vcpu: usize, mask: u32) {
        self.rwrite(
            vcpu as u64 * STRIDE + SGI_BASE + GICD_ISENABLER,
            u64::from(mask),
        );
    }

    /// Flushes `vcpu` with four list registers and returns (intid, state) pairs.
    fn flush(&self, vcpu: usize) -> Vec<(u32, LrState)> {
        pairs(&self.gic.flush(vcpu, 4))
    }
}

/// The (intid, state) pairs of a flush.
fn pairs(entries: &ListEntries) -> Vec<(u32, LrState)> {
    entries.iter().map(|e| (e.intid, e.state)).collect()
}

/// A fold report of `intid` in `state` (source 0).
fn lr(intid: u32, state: LrState) -> ListEntry {
    ListEntry::reported(intid, 0, state)
}
