//! Filling a vCPU's list registers (flush) and taking back what the guest did with them (fold).
//!
//! Runs on every guest entry and exit: no allocation, bounded work.

use super::list::{ListEntries, ListEntry, LrState};
use super::state::{Irq, Loaded, SGI_COUNT, State, bit, set_bits};
use super::{GicVersion, Wakeups};

/// An interrupt offered for a list register.
#[derive(Clone, Copy, Debug, Default)]
struct Candidate {
    /// 0 for active ones (they must be in a list register for the guest to deactivate
    /// them), 1 for pending ones.
    class: u8,
    priority: u8,
    intid: u32,
    state: LrState,
    source: u8,
}

impl Candidate {
    /// Sort key: active first, then most urgent priority, then lowest INTID.
    fn key(&self) -> (u8, u8, u32) {
        (self.class, self.priority, self.intid)
    }
}

/// Most list registers one flush fills. Every Arm core Bulkhead runs on implements 4
/// (ICH_VTR_EL2.ListRegs + 1 on Cortex-A53/A57/A72/A76, GIC-400's GICH_VTR); a CPU with more
/// gets 4 per entry, the rest follow through the underflow interrupt. Kept small because
/// the selection is built on every flush.
pub(super) const SELECTION_MAX: usize = 4;

/// The best candidates so far, sorted, at most `capacity`.
struct Selection {
    best: [Candidate; SELECTION_MAX],
    len: usize,
    capacity: usize,
    dropped: bool,
}

impl Selection {
    fn new(capacity: usize) -> Selection {
        Selection {
            best: [Candidate::default(); SELECTION_MAX],
            len: 0,
            capacity: capacity.min(SELECTION_MAX),
            dropped: false,
        }
    }

    fn kept(&self) -> &[Candidate] {
        self.best.get(..self.len).unwrap_or(&[])
    }

    /// Inserts in order; the least urgent falls off when full.
    fn offer(&mut self, candidate: Candidate) {
        let at = self
            .kept()
            .partition_point(|kept| kept.key() <= candidate.key());
        if at >= self.capacity {
            self.dropped = true;
            return;
        }
        if self.len == self.capacity {
            self.dropped = true;
        } else {
            self.len = self.len.saturating_add(1);
        }
        if let Some(tail) = self.best.get_mut(at..self.len) {
            tail.rotate_right(1);
            if let Some(first) = tail.first_mut() {
                *first = candidate;
            }
        }
    }
}

/// What the interrupt would look like in a list register now, if anything; without its
/// pending part unless `pending_here`.
fn candidate(state: &State, intid: u32, irq: &Irq, pending_here: bool) -> Option<Candidate> {
    if irq.resident.is_some() {
        return None;
    }
    let forwarded = pending_here && irq.enabled && state.group_enabled(irq.group1);
    let (pending, source) = if state.is_v2_sgi(intid) {
        // One requester at a time; while active, only that requester's next instance.
        let source = if irq.active {
            irq.active_source
        } else {
            irq.sources.trailing_zeros() as u8
        };
        (forwarded && irq.sources & bit(source) != 0, source)
    } else {
        (forwarded && irq.pending(), 0)
    };
    // A hardware interrupt's pending part lives in the physical GIC while it is active.
    let pending = pending && !(irq.active && irq.hardware.is_some());
    let lr_state = LrState::from_parts(pending, irq.active);
    (lr_state != LrState::Invalid).then_some(Candidate {
        class: u8::from(!irq.active),
        priority: irq.priority,
        intid,
        state: lr_state,
        source,
    })
}

/// Moves one chosen interrupt into the list register image and marks it resident.
fn load(state: &mut State, vcpu: usize, chosen: &Candidate) -> Option<(ListEntry, Loaded)> {
    let v2_sgi = state.is_v2_sgi(chosen.intid);
    let irq = state.irq_mut(vcpu, chosen.intid)?;
    let mut from_latch = false;
    if chosen.state.is_pending() {
        if v2_sgi {
            irq.sources &= !bit(chosen.source);
            from_latch = true;
        } else if irq.latch {
            irq.latch = false;
            from_latch = true;
        }
    }
    irq.resident = Some(vcpu);
    irq.lr_pending = chosen.state.is_pending();
    irq.lr_source = chosen.source;
    irq.discard_lr_pending = false;
    irq.active_override = None;
    let entry = ListEntry {
        intid: chosen.intid,
        priority: irq.priority,
        group1: irq.group1,
        state: chosen.state,
        hardware: irq.hardware,
        source_cpu: chosen.source,
        notify_on_deactivate: !irq.edge && irq.line && irq.hardware.is_none(),
    };
    let loaded = Loaded {
        intid: chosen.intid,
        source: chosen.source,
        from_latch,
        state: chosen.state,
    };
    Some((entry, loaded))
}

/// The list register contents for vCPU `vcpu` with `slots` list registers.
pub(super) fn flush(
    state: &mut State,
    vcpu: usize,
    slots: usize,
    entries: &mut ListEntries,
) -> Wakeups {
    entries.clear();
    if vcpu >= state.vcpu_count() {
        return Wakeups::NONE;
    }
    // Nothing changed since a flush found nothing for this vCPU: nothing to load now either.
    let generation = state.generation;
    // Nothing changed and the guest left the list registers as flushed: keep them.
    if let Some(cpu) = state.vcpus.get_mut(vcpu)
        && core::mem::take(&mut cpu.kept)
        && cpu.flushed_at == generation
    {
        entries.set_unchanged();
        return Wakeups::NONE;
    }
    if state.vcpus.get(vcpu).and_then(|cpu| cpu.quiet_at) == Some(generation) {
        return Wakeups::NONE;
    }
    // A flush with no fold since the last one: the guest has not run, nothing changed.
    let wake = fold_with(state, vcpu, |loaded| loaded.state);
    let mut selection = Selection::new(slots);
    state.refresh_busy();
    if let Some(cpu) = state.vcpus.get(vcpu) {
        for intid in set_bits(u64::from(cpu.busy)) {
            let Some(irq) = cpu.private.get(intid as usize) else {
                continue;
            };
            if let Some(offered) = candidate(state, intid, irq, true) {
                selection.offer(offered);
            }
        }
    }
    for intid in state.busy_spis() {
        let Some(spi) = state.spi(intid) else {
            continue;
        };
        // An SPI active here but routed elsewhere: its next pending instance goes to its
        // route once this vCPU has deactivated it.
        let pending_here = state.route(spi) == Some(vcpu);
        if state.target(vcpu, intid) == Some(vcpu)
            && let Some(offered) = candidate(state, intid, &spi.irq, pending_here)
        {
            selection.offer(offered);
        }
    }
    let mut count = 0;
    for chosen in selection.kept() {
        let Some((entry, loaded)) = load(state, vcpu, chosen) else {
            continue;
        };
        // Written in place (fold_with above emptied the record).
        if let Some(slot) = state
            .vcpus
            .get_mut(vcpu)
            .and_then(|cpu| cpu.loaded.get_mut(count))
            && entries.push(entry).is_ok()
        {
            *slot = loaded;
            count += 1;
        }
    }
    if let Some(cpu) = state.vcpus.get_mut(vcpu) {
        cpu.loaded_len = count;
        // Quiet: nothing loaded, nothing left over, nobody to wake. (Loading changed the
        // state otherwise; the generation only moves through the VirtualGic entry points.)
        let quiet = count == 0 && !selection.dropped && wake.is_empty();
        cpu.quiet_at = quiet.then_some(generation);
        cpu.flushed_at = generation;
    }
    if selection.dropped {
        entries.set_more_pending();
    }
    wake
}

/// Whether the list registers came back exactly as the last flush of vCPU `vcpu` loaded
/// them (same INTIDs, states and GICv2 SGI sources, in order) with nothing changed since:
/// then the fold and the next flush can leave everything as it is.
pub(super) fn unchanged_since_flush(state: &State, vcpu: usize, reported: &[ListEntry]) -> bool {
    let Some(cpu) = state.vcpus.get(vcpu) else {
        return false;
    };
    let loaded = cpu.loaded.get(..cpu.loaded_len).unwrap_or(&[]);
    cpu.flushed_at == state.generation
        && loaded.len() == reported.len()
        && loaded.iter().zip(reported).all(|(loaded, now)| {
            loaded.intid == now.intid
                && loaded.state == now.state
                && loaded.source == now.source_cpu
        })
}

/// Takes back vCPU `vcpu`'s list registers as arch code read them after the guest ran.
pub(super) fn fold(state: &mut State, vcpu: usize, reported: &[ListEntry]) -> Wakeups {
    let v2 = state.version == GicVersion::V2;
    fold_with(state, vcpu, |loaded| {
        reported
            .iter()
            .find(|entry| {
                entry.intid == loaded.intid
                    && (!v2 || loaded.intid >= SGI_COUNT || entry.source_cpu == loaded.source)
            })
            .map_or(LrState::Invalid, |entry| entry.state)
    })
}

/// Folds every loaded entry with the state `now` gives for it; returns the other vCPUs
/// that something became deliverable to (an SPI re-routed while it was resident).
fn fold_with(state: &mut State, vcpu: usize, now: impl Fn(&Loaded) -> LrState) -> Wakeups {
    let Some(cpu) = state.vcpus.get_mut(vcpu) else {
        return Wakeups::NONE;
    };
    let count = core::mem::take(&mut cpu.loaded_len);
    let mut wake = Wakeups::NONE;
    // One entry copied at a time (the record is not copied whole on this hot path).
    for index in 0..count {
        let Some(entry) = state
            .vcpus
            .get(vcpu)
            .and_then(|cpu| cpu.loaded.get(index))
            .copied()
        else {
            break;
        };
        settle(state, vcpu, &entry, now(&entry));
        wake |= state.touch(vcpu, entry.intid).without(vcpu);
    }
    wake
}

/// Applies one list register's final state to its interrupt.
fn settle(state: &mut State, vcpu: usize, loaded: &Loaded, now: LrState) {
    let v2_sgi = state.is_v2_sgi(loaded.intid);
    let Some(irq) = state.irq_mut(vcpu, loaded.intid) else {
        return;
    };
    if irq.resident != Some(vcpu) {
        return;
    }
    if now.is_pending() && loaded.from_latch && !irq.discard_lr_pending {
        if v2_sgi {
            irq.sources |= bit(loaded.source);
        } else {
            irq.latch = true;
        }
    }
    let active = irq.active_override.take().unwrap_or(now.is_active());
    irq.active = active;
    if active {
        irq.active_source = loaded.source;
    }
    irq.resident = None;
    irq.lr_pending = false;
    irq.discard_lr_pending = false;
    if active && let Some(spi) = state.spi_mut(loaded.intid) {
        spi.active_on = vcpu;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(intid: u32, priority: u8) -> Candidate {
        Candidate {
            class: 1,
            priority,
            intid,
            state: LrState::Pending,
            source: 0,
        }
    }

    #[test]
    fn selection_keeps_the_most_urgent() {
        let mut selection = Selection::new(3);
        for (intid, priority) in [(40, 0xa0), (41, 0x10), (42, 0xa0), (43, 0x80), (44, 0xf0)] {
            selection.offer(pending(intid, priority));
        }
        let mut active = pending(45, 0xff);
        active.class = 0;
        selection.offer(active);
        let kept: alloc::vec::Vec<u32> = selection.kept().iter().map(|c| c.intid).collect();
        assert_eq!(kept, [45, 41, 43]);
        assert!(selection.dropped);

        let mut none = Selection::new(0);
        none.offer(pending(32, 0));
        assert!(none.kept().is_empty() && none.dropped);
        let mut wide = Selection::new(99);
        for intid in 0..40 {
            wide.offer(pending(intid, 0));
        }
        assert_eq!(wide.kept().len(), SELECTION_MAX);
        assert_eq!(wide.kept().last().map(|c| c.intid), Some(3));
    }
}
