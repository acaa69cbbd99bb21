//! A partition's virtual GIC (GICv3 or GICv2) as its guest sees it, arch-neutral.
//!
//! The distributor and redistributor frames, hypervisor-side interrupt sources, and the
//! list-register interface arch code drives on every guest exit (fold) and entry (flush).
//!
//! The model is the one record of each interrupt's pending and active state between a fold
//! and the next flush. Arch code owns the hardware list registers and the CPU interface
//! (GICv3 system registers through ICH_VMCR_EL2, GICv2's GICV frame mapped as the guest's
//! GICC); the guest's distributor (and GICv3 redistributor) accesses trap to these devices.
//!
//! Every call that can make something deliverable returns [`Wakeups`], the vCPUs whose
//! physical CPUs should be kicked. Register writes through the [`MmioDevice`] frames cannot
//! return them, so they collect in the GIC: call [`VirtualGic::take_wakeups`] after an MMIO
//! exit (and after `fold`/`flush`, which may re-route a resident SPI).

mod delivery;
mod distributor;
mod list;
mod redistributor;
mod registers;
mod state;
#[cfg(test)]
mod tests;

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::ops::{BitOr, BitOrAssign};
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;

pub use list::{ListEntries, ListEntry, LrState, MAX_LIST_ENTRIES};

use crate::device::{Effects, InterruptLines, MmioDevice};
use crate::exit::AccessWidth;
use crate::psci;
use registers::{read_access, write_access};
use state::{FIRST_SPECIAL_INTID, PRIVATE_INTERRUPTS, State};

/// Which GIC architecture the guest sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicVersion {
    /// GICv2: distributor with banked per-CPU registers, GICD_SGIR, up to 8 vCPUs.
    V2,
    /// GICv3: affinity routing, one redistributor per vCPU, SGIs through ICC_SGI1R_EL1,
    /// up to 64 vCPUs here.
    V3,
}

impl GicVersion {
    /// Most vCPUs this model gives such a GIC.
    pub const fn max_vcpus(self) -> usize {
        match self {
            GicVersion::V2 => 8,
            GicVersion::V3 => 64,
        }
    }
}

/// A set of vCPUs (by index, up to 64) that got something new to deliver: the caller
/// kicks their physical CPUs so that they exit, fold and flush.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use = "kick the vCPUs that got something to deliver"]
pub struct Wakeups(u64);

impl Wakeups {
    /// Nobody.
    pub const NONE: Wakeups = Wakeups(0);

    /// Just vCPU `vcpu` (nobody if it is beyond 63).
    pub const fn of(vcpu: usize) -> Wakeups {
        if vcpu < 64 {
            Wakeups(1 << vcpu)
        } else {
            Wakeups::NONE
        }
    }

    /// From a bitmask, bit n = vCPU n.
    pub const fn from_bits(bits: u64) -> Wakeups {
        Wakeups(bits)
    }

    /// The bitmask, bit n = vCPU n.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Whether nobody needs waking.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether vCPU `vcpu` is in the set.
    pub const fn contains(self, vcpu: usize) -> bool {
        vcpu < 64 && self.0 & (1 << vcpu) != 0
    }

    /// The set without vCPU `vcpu`.
    pub const fn without(self, vcpu: usize) -> Wakeups {
        Wakeups(self.0 & !Wakeups::of(vcpu).0)
    }

    /// The vCPU indices, in increasing order.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        state::set_bits(self.0).map(|vcpu| vcpu as usize)
    }
}

impl BitOr for Wakeups {
    type Output = Wakeups;

    fn bitor(self, other: Wakeups) -> Wakeups {
        Wakeups(self.0 | other.0)
    }
}

impl BitOrAssign for Wakeups {
    fn bitor_assign(&mut self, other: Wakeups) {
        self.0 |= other.0;
    }
}

/// One partition's virtual GIC. Shared (in an `Arc`) by the partition's device table and
/// the physical CPUs running its vCPUs; one internal lock.
#[derive(Debug)]
pub struct VirtualGic {
    version: GicVersion,
    vcpus: usize,
    state: Mutex<State>,
    wakeups: AtomicU64,
    /// vCPUs (bit n = vCPU n) whose last flush found nothing to load and for which nothing
    /// changed since: their next flush can be skipped without taking the lock. Set by a
    /// flush, cleared by every change, both under the lock.
    quiet: AtomicU64,
    /// vCPUs (bit n = vCPU n) with physical deactivations due (checked without the lock on
    /// every guest entry).
    hardware_due: AtomicU64,
}

impl VirtualGic {
    /// A GIC in reset state for `vcpus` vCPUs (clamped to 1..=[`GicVersion::max_vcpus`])
    /// with `spi_count` SPIs from INTID 32 (rounded up to a multiple of 32; INTIDs from
    /// 1020 on do not exist).
    pub fn new(version: GicVersion, vcpus: usize, spi_count: u32) -> VirtualGic {
        let vcpus = vcpus.clamp(1, version.max_vcpus());
        let spi_lines = spi_count
            .min(FIRST_SPECIAL_INTID)
            .next_multiple_of(32)
            .min(1024 - PRIVATE_INTERRUPTS);
        let spis = spi_lines.min(FIRST_SPECIAL_INTID - PRIVATE_INTERRUPTS) as usize;
        VirtualGic {
            version,
            vcpus,
            state: Mutex::new(State::new(version, vcpus, spi_lines, spis)),
            wakeups: AtomicU64::new(0),
            quiet: AtomicU64::new(0),
            hardware_due: AtomicU64::new(0),
        }
    }

    /// The state, locked for a change: no vCPU is quiet any more.
    fn lock_changing(&self) -> spin::MutexGuard<'_, State> {
        let mut state = self.state.lock();
        state.changed();
        self.quiet.store(0, Ordering::Release);
        state
    }

    /// Whether vCPU `vcpu`'s last flush loaded nothing and nothing changed since: a flush now
    /// would load nothing either (checked without the lock, on every guest entry).
    #[inline]
    pub fn is_quiet(&self, vcpu: usize) -> bool {
        self.quiet.load(Ordering::Acquire) & Wakeups::of(vcpu).0 != 0
    }

    /// Its architecture version.
    pub fn version(&self) -> GicVersion {
        self.version
    }

    /// Number of vCPUs.
    pub fn vcpu_count(&self) -> usize {
        self.vcpus
    }

    /// The distributor (GICD), a 64 KiB frame, for the partition's device table.
    pub fn distributor(self: &Arc<Self>) -> Box<dyn MmioDevice> {
        Box::new(Frame {
            gic: Arc::clone(self),
            kind: FrameKind::Distributor,
        })
    }

    /// GICv3: the redistributors (GICR), 128 KiB per vCPU in vCPU order (RD_base then
    /// SGI_base), for the partition's device table; `None` for GICv2.
    pub fn redistributors(self: &Arc<Self>) -> Option<Box<dyn MmioDevice>> {
        match self.version {
            GicVersion::V3 => Some(Box::new(Frame {
                gic: Arc::clone(self),
                kind: FrameKind::Redistributors,
            })),
            GicVersion::V2 => None,
        }
    }

    /// Size of the redistributor region (0 for GICv2).
    pub fn redistributors_size(&self) -> u64 {
        match self.version {
            GicVersion::V3 => redistributor::STRIDE.saturating_mul(self.vcpus as u64),
            GicVersion::V2 => 0,
        }
    }

    /// A hypervisor device drives SPI `intid`'s line (level-sensitive: pending while high,
    /// pending again after the guest handles it if still high; edge-triggered: a rising
    /// edge pends it). Anything but an existing SPI is ignored.
    pub fn set_spi_level(&self, intid: u32, level: bool) -> Wakeups {
        let mut state = self.lock_changing();
        state.set_line(intid, level)
    }

    /// A hypervisor source raises an edge: an SGI or PPI of vCPU `vcpu` (for a GICv2 SGI
    /// the requester recorded is `vcpu` itself), or an SPI (`vcpu` ignored). For a linked
    /// interrupt ([`VirtualGic::link_hardware`]) the physical one stays active until the
    /// guest deactivates the virtual one.
    pub fn raise(&self, intid: u32, vcpu: usize) -> Wakeups {
        let mut state = self.lock_changing();
        state.set_pending(vcpu, intid, vcpu)
    }

    /// A guest's trapped ICC_SGI1R_EL1 write from vCPU `from_vcpu`: SGI INTID in bits
    /// 27:24, IRM (bit 40) = all vCPUs but the sender, else TargetList (15:0) at
    /// Aff3.Aff2.Aff1 (55:48, 39:32, 23:16) with RS (47:44) selecting Aff0 = RS * 16 + n.
    /// Targets that are not this partition's vCPUs are ignored.
    pub fn write_sgi1r(&self, from_vcpu: usize, value: u64) -> Wakeups {
        if from_vcpu >= self.vcpus {
            return Wakeups::NONE;
        }
        let intid = ((value >> 24) & 0xf) as u32;
        let field = |shift: u32| (value >> shift) & 0xff;
        let mut state = self.lock_changing();
        let mut wake = Wakeups::NONE;
        if value & (1 << 40) != 0 {
            for vcpu in (0..self.vcpus).filter(|&vcpu| vcpu != from_vcpu) {
                wake |= state.set_pending(vcpu, intid, from_vcpu);
            }
            return wake;
        }
        let cluster = (field(48) << 32) | (field(32) << 16) | (field(16) << 8);
        let range = ((value >> 44) & 0xf) * 16;
        for target in (0..16).filter(|n| value & (1 << n) != 0) {
            let vcpu = psci::vcpu_index(cluster | (range + target));
            if let Some(vcpu) = vcpu.filter(|&vcpu| vcpu < self.vcpus) {
                wake |= state.set_pending(vcpu, intid, from_vcpu);
            }
        }
        wake
    }

    /// What to load into vCPU `vcpu`'s `slots` list registers (at most
    /// [`MAX_LIST_ENTRIES`]) before it enters the guest: interrupts for this vCPU that are
    /// active (regardless of enables: the guest must be able to deactivate them) or pending
    /// and enabled in a distributor-enabled group, active ones first, then by priority
    /// (lower value first), then by INTID. SPIs go to their route (GICv3 GICD_IROUTER,
    /// GICv2 the lowest vCPU in GICD_ITARGETSR), so one is in at most one list register.
    /// The entries stay "in a list register" until the next [`VirtualGic::fold`] of this
    /// vCPU; arch code writes all of its list registers from them (the rest empty).
    /// Flushing again without a fold returns the previous entries to the model first.
    pub fn flush(&self, vcpu: usize, slots: usize) -> ListEntries {
        let mut entries = ListEntries::new();
        self.flush_into(vcpu, slots, &mut entries);
        entries
    }

    /// [`VirtualGic::flush`] into a caller's list (no copy on the trap path).
    pub fn flush_into(&self, vcpu: usize, slots: usize, entries: &mut ListEntries) {
        let mut state = self.state.lock();
        let wake = delivery::flush(&mut state, vcpu, slots, entries);
        if state.is_quiet(vcpu) {
            self.quiet.fetch_or(Wakeups::of(vcpu).0, Ordering::AcqRel);
        }
        drop(state);
        self.defer(wake);
    }

    /// After vCPU `vcpu` left the guest: the list registers as they are now. Only each
    /// entry's `intid`, `state` and (GICv2 SGIs) `source_cpu` are read; an entry of the
    /// last flush that `lrs` does not mention is taken as [`LrState::Invalid`] (the guest
    /// acknowledged and deactivated it), so arch code may skip empty list registers.
    /// Interrupts that became pending meanwhile stay pending.
    pub fn fold(&self, vcpu: usize, lrs: &[ListEntry]) {
        let mut state = self.state.lock();
        // Nothing was loaded and nothing is reported: nothing to take back.
        let loaded = state.vcpus.get(vcpu).is_some_and(|cpu| cpu.loaded_len > 0);
        if !loaded && lrs.is_empty() {
            return;
        }
        // The guest ran without touching its list registers and nothing else changed: they
        // stay as they are (the next flush says so), the model is already right.
        if delivery::unchanged_since_flush(&state, vcpu, lrs) {
            if let Some(cpu) = state.vcpus.get_mut(vcpu) {
                cpu.kept = true;
            }
            return;
        }
        state.changed();
        self.quiet.store(0, Ordering::Release);
        let wake = delivery::fold(&mut state, vcpu, lrs);
        drop(state);
        self.defer(wake);
    }

    /// Links virtual INTID `intid` (of vCPU `vcpu` for a PPI or SGI) to physical INTID
    /// `physical`: its list register entries carry HW=1 (e.g. the virtual timer, PPI 27).
    /// Kept across [`VirtualGic::reset`].
    pub fn link_hardware(&self, intid: u32, vcpu: usize, physical: u32) {
        let mut state = self.lock_changing();
        if let Some(irq) = state.irq_mut(vcpu, intid) {
            irq.hardware = Some(physical);
        }
    }

    /// Whether vCPU `vcpu` has an interrupt to take (for WFI): pending, enabled, in an
    /// enabled group, routed to it, or pending in its list registers. The CPU interface's
    /// priority mask is arch state and not considered.
    pub fn has_pending(&self, vcpu: usize) -> bool {
        self.state.lock().has_deliverable(vcpu)
    }

    /// Hands `deactivate` the physical INTIDs vCPU `vcpu`'s CPU must deactivate because the
    /// guest deactivated their linked virtual interrupts through the distributor or
    /// redistributor (ICACTIVER), not through its CPU interface. Call it on that CPU after
    /// the flush; one atomic load when there are none.
    #[inline]
    pub fn take_hardware_deactivations(&self, vcpu: usize, deactivate: impl FnMut(u32)) {
        let bit = Wakeups::of(vcpu).0;
        if self.hardware_due.load(Ordering::Acquire) & bit == 0 {
            return;
        }
        self.hardware_due.fetch_and(!bit, Ordering::AcqRel);
        self.state
            .lock()
            .take_hardware_deactivations(vcpu, deactivate);
    }

    /// Records which vCPUs got physical deactivations due (after a register write).
    fn note_hardware_due(&self, state: &State) {
        let due = (0..self.vcpus)
            .filter(|&vcpu| state.hardware_deactivations_due(vcpu))
            .fold(0u64, |bits, vcpu| bits | Wakeups::of(vcpu).0);
        if due != 0 {
            self.hardware_due.fetch_or(due, Ordering::AcqRel);
            // Their CPUs exit (and deactivate) at the kick; the caller's own is skipped.
            self.defer(Wakeups(due));
        }
    }

    /// Takes the vCPUs that register writes, folds and flushes made something deliverable
    /// to since the last call.
    pub fn take_wakeups(&self) -> Wakeups {
        // Usually there are none: a load, and no read-modify-write, on every exit.
        if self.wakeups.load(Ordering::Acquire) == 0 {
            return Wakeups::NONE;
        }
        Wakeups(self.wakeups.swap(0, Ordering::AcqRel))
    }

    /// Back to reset state (partition restart); hardware links stay.
    pub fn reset(&self) {
        let mut state = self.state.lock();
        state.reset();
        self.quiet.store(0, Ordering::Release);
        drop(state);
        self.wakeups.store(0, Ordering::Release);
    }

    fn defer(&self, wake: Wakeups) {
        if !wake.is_empty() {
            self.wakeups.fetch_or(wake.0, Ordering::AcqRel);
        }
    }

    fn read(&self, kind: FrameKind, vcpu: usize, offset: u64, width: AccessWidth) -> u64 {
        let state = self.state.lock();
        read_access(offset, width, |word| match kind {
            FrameKind::Distributor => distributor::read_word(&state, vcpu, word),
            FrameKind::Redistributors => redistributor::read_word(&state, word),
        })
    }

    fn write(&self, kind: FrameKind, vcpu: usize, offset: u64, width: AccessWidth, value: u64) {
        let mut state = self.lock_changing();
        let mut wake = Wakeups::NONE;
        write_access(offset, width, value, |word, value, mask| {
            wake |= match kind {
                FrameKind::Distributor => {
                    distributor::write_word(&mut state, vcpu, word, value, mask)
                }
                FrameKind::Redistributors => {
                    redistributor::write_word(&mut state, vcpu, word, value, mask)
                }
            };
        });
        self.note_hardware_due(&state);
        drop(state);
        self.defer(wake);
    }
}

/// Which register frame a [`Frame`] device is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FrameKind {
    Distributor,
    Redistributors,
}

/// A register frame of a [`VirtualGic`] in a partition's device table.
struct Frame {
    gic: Arc<VirtualGic>,
    kind: FrameKind,
}

impl MmioDevice for Frame {
    fn name(&self) -> &'static str {
        match self.kind {
            FrameKind::Distributor => "gicd",
            FrameKind::Redistributors => "gicr",
        }
    }

    fn size(&self) -> u64 {
        match self.kind {
            FrameKind::Distributor => distributor::FRAME_SIZE,
            FrameKind::Redistributors => self.gic.redistributors_size(),
        }
    }

    fn read(
        &mut self,
        vcpu: usize,
        offset: u64,
        width: AccessWidth,
        _effects: &mut Effects,
    ) -> u64 {
        self.gic.read(self.kind, vcpu, offset, width)
    }

    fn write(
        &mut self,
        vcpu: usize,
        offset: u64,
        width: AccessWidth,
        value: u64,
        _effects: &mut Effects,
    ) {
        self.gic.write(self.kind, vcpu, offset, width, value);
    }
}

/// The model is shared between physical CPUs.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<VirtualGic>();
};

impl InterruptLines for VirtualGic {
    fn set_line(&self, intid: u32, level: bool) -> u64 {
        self.set_spi_level(intid, level).bits()
    }
}
