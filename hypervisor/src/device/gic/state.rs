//! The interrupt state of one virtual GIC and the rules every change to it goes through.
//!
//! Per interrupt: configuration, pending and active state, routing. Changes come from
//! registers, hypervisor devices, SGIs and list registers.
//!
//! An interrupt flushed into a list register is *resident* there until the next fold of that
//! vCPU: its pending part has moved into the list register (reads still show it), and
//! changes made meanwhile are kept aside (`discard_lr_pending`, `active_override`) and
//! applied when the list register comes back. Every change returns the vCPUs to kick: the
//! one holding the interrupt in a list register (to re-synchronise it), or the one it is
//! now deliverable to.

use alloc::vec::Vec;

use super::list::{LrState, MAX_LIST_ENTRIES};
use super::{GicVersion, Wakeups};
use crate::psci;

/// SGIs and PPIs: INTIDs 0..32, banked per vCPU.
pub(super) const PRIVATE_INTERRUPTS: u32 = 32;
/// SGIs: INTIDs 0..16.
pub(super) const SGI_COUNT: u32 = 16;
/// INTIDs from 1020 on are special (spurious and reserved); SPIs stop before them.
pub(super) const FIRST_SPECIAL_INTID: u32 = 1020;
/// The GICD_IROUTER bits kept: Aff2.Aff1.Aff0. GICD_TYPER.A3V=0 makes Aff3 RES0 and
/// GICD_TYPER.No1N=1 makes IRM RES0.
pub(super) const ROUTER_MASK: u64 = 0x00ff_ffff;

/// One interrupt, as one vCPU (private) or the whole partition (SPI) sees it.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Irq {
    /// ISENABLER.
    pub(super) enabled: bool,
    /// IGROUPR: group 1.
    pub(super) group1: bool,
    /// IPRIORITYR.
    pub(super) priority: u8,
    /// ICFGR: edge-triggered (else level-sensitive).
    pub(super) edge: bool,
    /// Latched pending state: an edge, ISPENDR, an SGI (GICv3), `raise`.
    pub(super) latch: bool,
    /// Input line level (SPIs driven by `set_spi_level`).
    pub(super) line: bool,
    /// Active state (while resident: as loaded).
    pub(super) active: bool,
    /// GICv2 SGIs: the requesting vCPUs with a pending instance.
    pub(super) sources: u8,
    /// GICv2 SGIs: the requester of the active instance.
    pub(super) active_source: u8,
    /// Linked physical INTID (HW=1 list registers).
    pub(super) hardware: Option<u32>,
    /// The vCPU whose list registers hold it, between flush and fold.
    pub(super) resident: Option<usize>,
    /// Resident with a pending part.
    pub(super) lr_pending: bool,
    /// Resident: the GICv2 SGI requester loaded.
    pub(super) lr_source: u8,
    /// Resident and cleared meanwhile (ICPENDR): drop the list register's pending part.
    pub(super) discard_lr_pending: bool,
    /// Resident and (de)activated meanwhile (IS/ICACTIVER): the active state to keep.
    pub(super) active_override: Option<bool>,
}

impl Irq {
    /// Reset state: disabled, priority 0, inactive.
    fn reset(group1: bool, edge: bool, enabled: bool, hardware: Option<u32>) -> Irq {
        Irq {
            enabled,
            group1,
            edge,
            hardware,
            ..Irq::default()
        }
    }

    /// Whether the interrupt is in any state flush, fold or delivery must look at: pending,
    /// active, or held by a list register. Most interrupts are none of these, and the hot
    /// paths skip them on this check alone.
    #[inline]
    pub(super) fn is_busy(&self) -> bool {
        self.latch
            || self.sources != 0
            || (!self.edge && self.line)
            || self.active
            || self.resident.is_some()
    }

    /// Pending in the model (not counting a resident list register's part).
    pub(super) fn pending(&self) -> bool {
        self.latch || self.sources != 0 || (!self.edge && self.line)
    }

    /// Pending as the guest reads it (ISPENDR), including a resident list register's part.
    pub(super) fn visible_pending(&self) -> bool {
        self.pending() || (self.resident.is_some() && self.lr_pending && !self.discard_lr_pending)
    }

    /// Active as the guest reads it (ISACTIVER).
    pub(super) fn visible_active(&self) -> bool {
        self.active_override.unwrap_or(self.active)
    }

    /// GICv2 SGIs: pending requesters as the guest reads them (SPENDSGIR).
    pub(super) fn visible_sources(&self) -> u8 {
        let resident = self.resident.is_some() && self.lr_pending && !self.discard_lr_pending;
        self.sources | if resident { bit(self.lr_source) } else { 0 }
    }
}

/// One shared peripheral interrupt and its routing.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Spi {
    /// Its state.
    pub(super) irq: Irq,
    /// GICv3: GICD_IROUTER (masked by [`ROUTER_MASK`]).
    pub(super) router: u64,
    /// GICv2: GICD_ITARGETSR, a bitmask of vCPUs.
    pub(super) targets: u8,
    /// The vCPU holding its active state.
    pub(super) active_on: usize,
}

/// What one flush loaded into a list register.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Loaded {
    /// vINTID.
    pub(super) intid: u32,
    /// GICv2 SGI requester.
    pub(super) source: u8,
    /// Its pending part came from the latch (or a GICv2 SGI source), not a line level.
    pub(super) from_latch: bool,
    /// The state loaded.
    pub(super) state: LrState,
}

/// One vCPU's banked state.
#[derive(Clone, Debug)]
pub(super) struct Vcpu {
    /// SGIs and PPIs.
    pub(super) private: [Irq; PRIVATE_INTERRUPTS as usize],
    /// What the last flush loaded.
    pub(super) loaded: [Loaded; MAX_LIST_ENTRIES],
    /// How many of `loaded` are valid.
    pub(super) loaded_len: usize,
    /// GICR_WAKER.ProcessorSleep.
    pub(super) processor_sleep: bool,
    /// The [`State::generation`] at which a flush for this vCPU found nothing to load: until
    /// the state changes, the next flush has nothing to load either.
    pub(super) quiet_at: Option<u64>,
    /// The [`State::generation`] right after the last flush of this vCPU.
    pub(super) flushed_at: u64,
    /// A fold found the list registers exactly as flushed and nothing changed: the next
    /// flush may leave them alone.
    pub(super) kept: bool,
    /// Private interrupts changed since the last [`State::refresh_busy`] (bit = INTID).
    pub(super) dirty: u32,
    /// Private interrupts that are busy ([`Irq::is_busy`]) as of the last refresh.
    pub(super) busy: u32,
    /// Hardware-linked private interrupts (bit = INTID) the guest deactivated through the
    /// distributor or redistributor rather than its CPU interface: their physical
    /// interrupts must be deactivated on this vCPU's CPU (no list register will do it).
    pub(super) hardware_deactivate: u32,
}

/// The whole virtual GIC's state.
#[derive(Debug)]
pub(super) struct State {
    /// GICv2 or GICv3.
    pub(super) version: GicVersion,
    /// Per-vCPU state, indexed by vCPU.
    pub(super) vcpus: Vec<Vcpu>,
    /// SPIs, INTID 32 first.
    pub(super) spis: Vec<Spi>,
    /// SPI count GICD_TYPER.ITLinesNumber reports (a multiple of 32).
    pub(super) spi_lines: u32,
    /// GICD_CTLR.EnableGrp0.
    pub(super) group0_enabled: bool,
    /// GICD_CTLR.EnableGrp1(A).
    pub(super) group1_enabled: bool,
    /// Counts changes made through [`super::VirtualGic`] (every mutating entry point bumps
    /// it), so a flush can tell that nothing changed since it last found nothing.
    pub(super) generation: u64,
    /// SPIs changed since the last [`State::refresh_busy`] (bit = SPI index).
    pub(super) spi_dirty: Vec<u64>,
    /// SPIs busy as of the last refresh: flush and WFI only look at these.
    pub(super) spi_busy: Vec<u64>,
}

/// The set bits of `word`, lowest first.
pub(super) fn set_bits(mut word: u64) -> impl Iterator<Item = u32> {
    core::iter::from_fn(move || {
        (word != 0).then(|| {
            let index = word.trailing_zeros();
            word &= word - 1;
            index
        })
    })
}

/// The bit of vCPU `index` in an 8-bit mask (none beyond 8).
pub(super) fn bit(index: u8) -> u8 {
    1u8.checked_shl(u32::from(index)).unwrap_or(0)
}

impl State {
    /// Reset state for `vcpus` vCPUs and `spis` SPIs (of which `spi_lines` are reported).
    pub(super) fn new(version: GicVersion, vcpus: usize, spi_lines: u32, spis: usize) -> State {
        let mut state = State {
            version,
            vcpus: Vec::with_capacity(vcpus),
            spis: Vec::with_capacity(spis),
            spi_lines,
            group0_enabled: false,
            group1_enabled: false,
            generation: 0,
            spi_dirty: alloc::vec![0; spis.div_ceil(64)],
            spi_busy: alloc::vec![0; spis.div_ceil(64)],
        };
        state.vcpus.resize(
            vcpus,
            Vcpu {
                private: [Irq::default(); PRIVATE_INTERRUPTS as usize],
                loaded: [Loaded::default(); MAX_LIST_ENTRIES],
                loaded_len: 0,
                processor_sleep: true,
                quiet_at: None,
                flushed_at: 0,
                kept: false,
                dirty: 0,
                busy: 0,
                hardware_deactivate: 0,
            },
        );
        state.spis.resize(spis, Spi::default());
        state.reset();
        state
    }

    /// Back to reset state, keeping the hardware links (they are the hypervisor's, not the
    /// guest's). GICv3 interrupts start in group 1 (as KVM does), GICv2 ones in group 0;
    /// GICv2 SGIs are always enabled (like GIC-400).
    pub(super) fn reset(&mut self) {
        self.changed();
        for vcpu in &mut self.vcpus {
            vcpu.dirty = u32::MAX;
        }
        self.spi_dirty.fill(u64::MAX);
        let group1 = self.version == GicVersion::V3;
        let v2 = self.version == GicVersion::V2;
        self.group0_enabled = false;
        self.group1_enabled = false;
        for vcpu in &mut self.vcpus {
            for (intid, irq) in (0u32..).zip(vcpu.private.iter_mut()) {
                let sgi = intid < SGI_COUNT;
                *irq = Irq::reset(group1, sgi, sgi && v2, irq.hardware);
            }
            vcpu.loaded_len = 0;
            vcpu.processor_sleep = true;
        }
        for spi in &mut self.spis {
            *spi = Spi {
                irq: Irq::reset(group1, false, false, spi.irq.hardware),
                ..Spi::default()
            };
        }
    }

    /// Whether vCPU `vcpu`'s last flush found nothing and nothing changed since.
    pub(super) fn is_quiet(&self, vcpu: usize) -> bool {
        self.vcpus
            .get(vcpu)
            .is_some_and(|cpu| cpu.quiet_at == Some(self.generation))
    }

    /// Records that the state changed (every mutating entry point calls it).
    pub(super) fn changed(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// Number of vCPUs.
    pub(super) fn vcpu_count(&self) -> usize {
        self.vcpus.len()
    }

    /// Whether `intid` is a GICv2 SGI (pending per requester, always enabled).
    pub(super) fn is_v2_sgi(&self, intid: u32) -> bool {
        self.version == GicVersion::V2 && intid < SGI_COUNT
    }

    /// Interrupt `intid` as vCPU `bank` sees it (the bank matters for INTIDs below 32).
    pub(super) fn irq(&self, bank: usize, intid: u32) -> Option<&Irq> {
        match intid.checked_sub(PRIVATE_INTERRUPTS) {
            None => self.vcpus.get(bank)?.private.get(intid as usize),
            Some(index) => self.spis.get(index as usize).map(|spi| &spi.irq),
        }
    }

    /// Mutable form of [`State::irq`].
    pub(super) fn irq_mut(&mut self, bank: usize, intid: u32) -> Option<&mut Irq> {
        match intid.checked_sub(PRIVATE_INTERRUPTS) {
            None => {
                let cpu = self.vcpus.get_mut(bank)?;
                cpu.dirty |= 1u32.checked_shl(intid).unwrap_or(0);
                cpu.private.get_mut(intid as usize)
            }
            Some(_) => self.spi_mut(intid).map(|spi| &mut spi.irq),
        }
    }

    /// Brings the busy bitmaps up to date for everything changed since the last call (every
    /// mutable access goes through [`State::irq_mut`] / [`State::spi_mut`] / `reset`, which
    /// mark it).
    pub(super) fn refresh_busy(&mut self) {
        for cpu in &mut self.vcpus {
            let dirty = core::mem::take(&mut cpu.dirty);
            for intid in set_bits(u64::from(dirty)) {
                let busy = cpu.private.get(intid as usize).is_some_and(Irq::is_busy);
                let mask = 1u32 << intid;
                cpu.busy = if busy {
                    cpu.busy | mask
                } else {
                    cpu.busy & !mask
                };
            }
        }
        for (word, (dirty, busy)) in self
            .spi_dirty
            .iter_mut()
            .zip(self.spi_busy.iter_mut())
            .enumerate()
        {
            for bit in set_bits(core::mem::take(dirty)) {
                let index = word * 64 + bit as usize;
                let is_busy = self.spis.get(index).is_some_and(|spi| spi.irq.is_busy());
                let mask = 1u64 << bit;
                *busy = if is_busy { *busy | mask } else { *busy & !mask };
            }
        }
    }

    /// INTIDs of the SPIs busy as of the last refresh.
    pub(super) fn busy_spis(&self) -> impl Iterator<Item = u32> + '_ {
        self.spi_busy.iter().enumerate().flat_map(|(word, &bits)| {
            set_bits(bits).map(move |bit| PRIVATE_INTERRUPTS + (word as u32) * 64 + bit)
        })
    }

    /// SPI `intid`.
    pub(super) fn spi(&self, intid: u32) -> Option<&Spi> {
        let index = intid.checked_sub(PRIVATE_INTERRUPTS)?;
        self.spis.get(index as usize)
    }

    /// Mutable form of [`State::spi`].
    pub(super) fn spi_mut(&mut self, intid: u32) -> Option<&mut Spi> {
        let index = intid.checked_sub(PRIVATE_INTERRUPTS)? as usize;
        if let Some(word) = self.spi_dirty.get_mut(index / 64) {
            *word |= 1 << (index % 64);
        }
        self.spis.get_mut(index)
    }

    /// Whether the distributor forwards interrupts of this group.
    pub(super) fn group_enabled(&self, group1: bool) -> bool {
        if group1 {
            self.group1_enabled
        } else {
            self.group0_enabled
        }
    }

    /// Whether the interrupt's pending state should reach a CPU interface.
    pub(super) fn deliverable(&self, irq: &Irq) -> bool {
        irq.pending() && irq.enabled && self.group_enabled(irq.group1)
    }

    /// The vCPU an SPI's routing names: GICv3 by GICD_IROUTER affinity, GICv2 the
    /// lowest-numbered vCPU in GICD_ITARGETSR (all SPIs go to vCPU 0 with one vCPU).
    pub(super) fn route(&self, spi: &Spi) -> Option<usize> {
        let vcpu = match self.version {
            GicVersion::V3 => psci::vcpu_index(spi.router & ROUTER_MASK)?,
            GicVersion::V2 if self.vcpu_count() == 1 => 0,
            GicVersion::V2 => spi.targets.trailing_zeros() as usize,
        };
        (vcpu < self.vcpu_count()).then_some(vcpu)
    }

    /// The vCPU whose list registers the interrupt belongs in: the bank for SGIs and PPIs;
    /// for an SPI, the vCPU holding it active, else its route.
    pub(super) fn target(&self, bank: usize, intid: u32) -> Option<usize> {
        match self.spi(intid) {
            Some(spi) if spi.irq.active => Some(spi.active_on),
            Some(spi) => self.route(spi),
            None if intid < PRIVATE_INTERRUPTS && bank < self.vcpu_count() => Some(bank),
            None => None,
        }
    }

    /// Who must hear about a change to the interrupt: the vCPU holding it in a list
    /// register, or the one it is now deliverable to.
    pub(super) fn touch(&self, bank: usize, intid: u32) -> Wakeups {
        let Some(irq) = self.irq(bank, intid) else {
            return Wakeups::NONE;
        };
        if let Some(vcpu) = irq.resident {
            return Wakeups::of(vcpu);
        }
        if self.deliverable(irq) {
            return self.target(bank, intid).map_or(Wakeups::NONE, Wakeups::of);
        }
        Wakeups::NONE
    }

    /// Applies `change` to the interrupt, if it exists, and reports whom to wake.
    fn change(&mut self, bank: usize, intid: u32, change: impl FnOnce(&mut Irq)) -> Wakeups {
        match self.irq_mut(bank, intid) {
            Some(irq) => change(irq),
            None => return Wakeups::NONE,
        }
        self.touch(bank, intid)
    }

    /// ISENABLER / ICENABLER (GICv2 SGIs stay enabled).
    pub(super) fn set_enabled(&mut self, bank: usize, intid: u32, enabled: bool) -> Wakeups {
        if self.is_v2_sgi(intid) {
            return Wakeups::NONE;
        }
        self.change(bank, intid, |irq| irq.enabled = enabled)
    }

    /// IGROUPR.
    pub(super) fn set_group(&mut self, bank: usize, intid: u32, group1: bool) -> Wakeups {
        self.change(bank, intid, |irq| irq.group1 = group1)
    }

    /// IPRIORITYR.
    pub(super) fn set_priority(&mut self, bank: usize, intid: u32, priority: u8) -> Wakeups {
        self.change(bank, intid, |irq| irq.priority = priority)
    }

    /// ICFGR: edge-triggered or level-sensitive (SGIs are always edge-triggered).
    pub(super) fn set_edge(&mut self, bank: usize, intid: u32, edge: bool) -> Wakeups {
        if intid < SGI_COUNT {
            return Wakeups::NONE;
        }
        self.change(bank, intid, |irq| irq.edge = edge)
    }

    /// Makes the interrupt pending: a latch, or for a GICv2 SGI the instance from `source`.
    pub(super) fn set_pending(&mut self, bank: usize, intid: u32, source: usize) -> Wakeups {
        let v2_sgi = self.is_v2_sgi(intid);
        let source = u8::try_from(source).map_or(0, bit);
        self.change(bank, intid, |irq| {
            if v2_sgi {
                irq.sources |= source;
            } else {
                irq.latch = true;
            }
        })
    }

    /// ICPENDR: clears the latch (a level-sensitive interrupt whose line is high stays
    /// pending), and the pending part of a resident list register.
    pub(super) fn clear_pending(&mut self, bank: usize, intid: u32) -> Wakeups {
        self.change(bank, intid, |irq| {
            irq.latch = false;
            irq.sources = 0;
            if irq.resident.is_some() {
                irq.discard_lr_pending = true;
            }
        })
    }

    /// GICv2 SPENDSGIR / CPENDSGIR: sets or clears the pending instances of SGI `intid`
    /// from the requesters in `mask`.
    pub(super) fn change_sgi_sources(
        &mut self,
        bank: usize,
        intid: u32,
        mask: u8,
        set: bool,
    ) -> Wakeups {
        if !self.is_v2_sgi(intid) || mask == 0 {
            return Wakeups::NONE;
        }
        self.change(bank, intid, |irq| {
            if set {
                irq.sources |= mask;
            } else {
                irq.sources &= !mask;
                if irq.resident.is_some() && mask & bit(irq.lr_source) != 0 {
                    irq.discard_lr_pending = true;
                }
            }
        })
    }

    /// ISACTIVER / ICACTIVER. An SPI activated by the guest is held active by its route,
    /// else by the accessing vCPU.
    pub(super) fn set_active(
        &mut self,
        bank: usize,
        intid: u32,
        active: bool,
        accessor: usize,
    ) -> Wakeups {
        let owner = self
            .spi(intid)
            .and_then(|spi| self.route(spi))
            .unwrap_or(accessor);
        if let Some(spi) = self.spi_mut(intid)
            && active
            && spi.irq.resident.is_none()
        {
            spi.active_on = owner;
        }
        let was_active = self.irq(bank, intid).is_some_and(Irq::visible_active);
        let wake = self.change(bank, intid, |irq| {
            if irq.resident.is_some() {
                irq.active_override = Some(active);
            } else {
                irq.active = active;
            }
        });
        // A linked interrupt the guest deactivates here: its physical one is still active
        // and would never fire again.
        if was_active
            && !active
            && intid < PRIVATE_INTERRUPTS
            && self
                .irq(bank, intid)
                .is_some_and(|irq| irq.hardware.is_some())
            && let Some(cpu) = self.vcpus.get_mut(bank)
        {
            cpu.hardware_deactivate |= 1 << intid;
        }
        wake
    }

    /// Takes the physical INTIDs vCPU `vcpu`'s CPU must deactivate (see
    /// [`Vcpu::hardware_deactivate`]), as a bitmask of their virtual private INTIDs mapped
    /// through `each`.
    pub(super) fn take_hardware_deactivations(&mut self, vcpu: usize, mut each: impl FnMut(u32)) {
        let Some(cpu) = self.vcpus.get_mut(vcpu) else {
            return;
        };
        let due = core::mem::take(&mut cpu.hardware_deactivate);
        for intid in set_bits(u64::from(due)) {
            if let Some(physical) = cpu.private.get(intid as usize).and_then(|irq| irq.hardware) {
                each(physical);
            }
        }
    }

    /// Whether vCPU `vcpu` has physical deactivations due.
    pub(super) fn hardware_deactivations_due(&self, vcpu: usize) -> bool {
        self.vcpus
            .get(vcpu)
            .is_some_and(|cpu| cpu.hardware_deactivate != 0)
    }

    /// A device drives SPI `intid`'s line: level-sensitive, it is pending while high;
    /// edge-triggered, a rising edge latches it.
    pub(super) fn set_line(&mut self, intid: u32, level: bool) -> Wakeups {
        let Some(spi) = self.spi_mut(intid) else {
            return Wakeups::NONE;
        };
        let irq = &mut spi.irq;
        if irq.edge && level && !irq.line {
            irq.latch = true;
        }
        let changed = irq.line != level;
        irq.line = level;
        match (changed, level) {
            (false, _) => Wakeups::NONE,
            (true, true) => self.touch(0, intid),
            // A falling level-sensitive line takes back the pending part of a list register.
            (true, false) if !irq.edge => irq.resident.map_or(Wakeups::NONE, Wakeups::of),
            (true, false) => Wakeups::NONE,
        }
    }

    /// GICD_IROUTER (GICv3).
    pub(super) fn set_router(&mut self, intid: u32, router: u64) -> Wakeups {
        match self.spi_mut(intid) {
            Some(spi) => spi.router = router & ROUTER_MASK,
            None => return Wakeups::NONE,
        }
        self.touch(0, intid)
    }

    /// GICD_ITARGETSR for an SPI (GICv2; fixed with one vCPU).
    pub(super) fn set_targets(&mut self, intid: u32, targets: u8) -> Wakeups {
        let count = self.vcpu_count();
        let valid = u8::try_from(count).map_or(u8::MAX, |n| bit(n).wrapping_sub(1));
        match self.spi_mut(intid) {
            Some(spi) if count > 1 => spi.targets = targets & valid,
            _ => return Wakeups::NONE,
        }
        self.touch(0, intid)
    }

    /// GICD_ITARGETSR as read: an SPI's mask, or (INTIDs below 32) the reader's own bit.
    pub(super) fn targets(&self, bank: usize, intid: u32) -> u8 {
        match self.spi(intid) {
            Some(_) if self.vcpu_count() == 1 => 1,
            Some(spi) => spi.targets,
            None => u8::try_from(bank).map_or(0, bit),
        }
    }

    /// GICD_CTLR group enables.
    pub(super) fn set_group_enables(&mut self, group0: bool, group1: bool) -> Wakeups {
        self.group0_enabled = group0;
        self.group1_enabled = group1;
        let mut wake = Wakeups::NONE;
        for vcpu in 0..self.vcpu_count() {
            if self.has_deliverable(vcpu) {
                wake |= Wakeups::of(vcpu);
            }
        }
        wake
    }

    /// Whether vCPU `vcpu` has something to take: an interrupt deliverable to it that no
    /// list register holds, or a pending one in its own list registers.
    pub(super) fn has_deliverable(&mut self, vcpu: usize) -> bool {
        self.refresh_busy();
        let Some(cpu) = self.vcpus.get(vcpu) else {
            return false;
        };
        // `here`: its pending part would go to this vCPU (what flush offers).
        let waiting = |irq: &Irq, here: bool| match irq.resident {
            Some(holder) => holder == vcpu && irq.lr_pending && !irq.discard_lr_pending,
            None => here && self.deliverable(irq),
        };
        set_bits(u64::from(cpu.busy)).any(|intid| {
            cpu.private
                .get(intid as usize)
                .is_some_and(|irq| waiting(irq, true))
        }) || self.busy_spis().any(|intid| {
            self.spi(intid).is_some_and(|spi| {
                let here =
                    self.route(spi) == Some(vcpu) && (!spi.irq.active || spi.active_on == vcpu);
                waiting(&spi.irq, here)
            })
        })
    }
}
