//! Tests of the list-register cycle: flush, fold, sources, hardware links, resident changes.

use super::*;

#[test]
fn enabled_pending_spi_is_flushed_with_its_priority() {
    let mut guest = Guest::v3(2);
    guest.enable_spi(40, 0xa0);
    assert!(guest.gic.raise(40, 0).is_empty(), "groups still disabled");
    assert!(guest.flush(0).is_empty());
    assert!(!guest.gic.has_pending(0));
    guest.enable_groups();
    assert_eq!(guest.gic.take_wakeups(), Wakeups::of(0));
    assert!(guest.gic.has_pending(0));
    assert!(!guest.gic.has_pending(1));
    let entries = guest.gic.flush(0, 4);
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries.as_slice()[0],
        ListEntry {
            intid: 40,
            priority: 0xa0,
            group1: true,
            state: LrState::Pending,
            hardware: None,
            source_cpu: 0,
            notify_on_deactivate: false,
        }
    );
    assert!(!entries.more_pending());
    assert!(guest.flush(1).is_empty(), "routed to vCPU 0 only");
    // While it sits in the list register the guest still reads it as pending.
    assert_eq!(guest.dread(1, GICD_ISPENDR + 4), 1 << 8);
    // Group 0 interrupts need EnableGrp0.
    guest.gic.fold(0, &[]);
    guest.dwrite(0, GICD_CTLR, 0b10);
    guest.dwrite(0, GICD_IGROUPR + 4, 0);
    guest.dwrite(0, GICD_ISPENDR + 4, 1 << 8);
    assert!(guest.flush(0).is_empty());
    guest.dwrite(0, GICD_CTLR, 0b01);
    assert_eq!(guest.flush(0), [(40, LrState::Pending)]);
    assert!(!guest.gic.flush(0, 4).as_slice()[0].group1);
}

#[test]
fn priority_order_and_slot_limit() {
    let mut guest = Guest::v3(1);
    guest.enable_groups();
    for (intid, priority) in [
        (40, 0xa0),
        (41, 0x20),
        (42, 0xa0),
        (43, 0x80),
        (44, 0xf0),
        (45, 0),
    ] {
        guest.enable_spi(intid, priority);
        let _ = guest.gic.raise(intid, 0);
    }
    let entries = guest.gic.flush(0, 4);
    assert_eq!(
        entries.iter().map(|e| e.intid).collect::<Vec<_>>(),
        [45, 41, 43, 40]
    );
    assert!(entries.more_pending());
    guest.gic.fold(0, &[]);
    let entries = guest.gic.flush(0, 4);
    assert_eq!(
        entries.iter().map(|e| e.intid).collect::<Vec<_>>(),
        [42, 44]
    );
    assert!(!entries.more_pending());
    guest.gic.fold(0, &[]);
    assert!(guest.flush(0).is_empty());
    // Never more than the selection's 4 entries, whatever the caller asks for; none with no
    // slots.
    for intid in 32..96 {
        guest.enable_spi(intid, 0x10);
        let _ = guest.gic.raise(intid, 0);
    }
    assert!(guest.gic.flush(0, 0).is_empty());
    let entries = guest.gic.flush(0, 100);
    assert_eq!(entries.len(), super::super::delivery::SELECTION_MAX);
    assert!(entries.more_pending());
    assert_eq!(entries.as_slice()[0].intid, 32);
}

#[test]
fn fold_invalid_clears_and_active_is_not_redelivered() {
    let mut guest = Guest::v3(1);
    guest.enable_groups();
    guest.enable_spi(40, 0x80);
    let _ = guest.gic.raise(40, 0);
    assert_eq!(guest.flush(0), [(40, LrState::Pending)]);
    // Acknowledged, not yet deactivated: it comes back active only, to be deactivated.
    guest.gic.fold(0, &[lr(40, LrState::Active)]);
    assert_eq!(guest.dread(0, GICD_ISACTIVER + 4), 1 << 8);
    assert_eq!(guest.dread(0, GICD_ISPENDR + 4), 0);
    assert!(!guest.gic.has_pending(0));
    assert_eq!(guest.flush(0), [(40, LrState::Active)]);
    // A new edge while active: pending and active together.
    let _ = guest.gic.raise(40, 0);
    guest.gic.fold(0, &[lr(40, LrState::Active)]);
    assert_eq!(guest.flush(0), [(40, LrState::PendingActive)]);
    guest.gic.fold(0, &[lr(40, LrState::Pending)]);
    assert_eq!(guest.flush(0), [(40, LrState::Pending)]);
    // Handled (Invalid, or simply not reported): gone.
    guest.gic.fold(0, &[lr(40, LrState::Invalid)]);
    assert!(guest.flush(0).is_empty());
    assert_eq!(guest.dread(0, GICD_ISACTIVER + 4), 0);
    // An edge that arrives while the first is in a list register is kept.
    let _ = guest.gic.raise(40, 0);
    assert_eq!(guest.flush(0), [(40, LrState::Pending)]);
    let _ = guest.gic.raise(40, 0);
    guest.gic.fold(0, &[]);
    assert_eq!(guest.flush(0), [(40, LrState::Pending)]);
    // Flushing twice without a fold gives the same entries back.
    assert_eq!(guest.flush(0), [(40, LrState::Pending)]);
    guest.gic.fold(0, &[]);
    assert!(guest.flush(0).is_empty());
    // A disabled interrupt that is active still gets a list register, to be deactivated.
    let _ = guest.gic.raise(40, 0);
    assert_eq!(guest.flush(0), [(40, LrState::Pending)]);
    guest.gic.fold(0, &[lr(40, LrState::Active)]);
    guest.dwrite(0, GICD_ICENABLER + 4, 1 << 8);
    assert_eq!(guest.flush(0), [(40, LrState::Active)]);
}

#[test]
fn level_sensitive_spi_stays_pending_while_high() {
    let mut guest = Guest::v3(2);
    guest.enable_groups();
    guest.enable_spi(50, 0x40);
    assert_eq!(guest.gic.set_spi_level(50, true), Wakeups::of(0));
    assert!(guest.gic.set_spi_level(50, true).is_empty(), "no change");
    let entries = guest.gic.flush(0, 4);
    assert!(entries.as_slice()[0].notify_on_deactivate);
    // The guest handled it but the device still asserts the line: pending again.
    guest.gic.fold(0, &[]);
    assert_eq!(guest.flush(0), [(50, LrState::Pending)]);
    // Acknowledged with the line still high: active and pending.
    guest.gic.fold(0, &[lr(50, LrState::Active)]);
    assert_eq!(guest.flush(0), [(50, LrState::PendingActive)]);
    // The line drops while it sits in a list register: its holder is kicked, and the
    // pending part disappears at the fold.
    assert_eq!(guest.gic.set_spi_level(50, false), Wakeups::of(0));
    guest.gic.fold(0, &[lr(50, LrState::PendingActive)]);
    assert_eq!(guest.flush(0), [(50, LrState::Active)]);
    guest.gic.fold(0, &[]);
    assert!(guest.flush(0).is_empty());
    assert_eq!(guest.dread(0, GICD_ISPENDR + 4), 0);
    // Edge-triggered: a rising edge latches, the falling edge does not clear.
    guest.dwrite(0, GICD_ICFGR + 12, 0b10 << 4);
    assert_eq!(guest.gic.set_spi_level(50, true), Wakeups::of(0));
    assert!(guest.gic.set_spi_level(50, false).is_empty());
    let entries = guest.gic.flush(0, 4);
    assert_eq!(pairs(&entries), [(50, LrState::Pending)]);
    assert!(!entries.as_slice()[0].notify_on_deactivate);
    guest.gic.fold(0, &[]);
    assert!(guest.flush(0).is_empty());
    // Only existing SPIs have lines.
    assert!(guest.gic.set_spi_level(27, true).is_empty());
    assert!(guest.gic.set_spi_level(96, true).is_empty());
}

#[test]
fn hardware_linked_ppi() {
    let mut guest = Guest::v3(2);
    guest.enable_groups();
    guest.gic.link_hardware(27, 1, 27);
    guest.enable_private_v3(1, 1 << 27);
    assert_eq!(guest.gic.raise(27, 1), Wakeups::of(1));
    let entries = guest.gic.flush(1, 4);
    assert_eq!(entries.as_slice()[0].hardware, Some(27));
    assert!(!entries.as_slice()[0].notify_on_deactivate);
    // Active with a new edge: only the active part goes in (HW=1 never pending+active).
    guest.gic.fold(1, &[lr(27, LrState::Active)]);
    let _ = guest.gic.raise(27, 1);
    assert_eq!(guest.flush(1), [(27, LrState::Active)]);
    guest.gic.fold(1, &[]);
    assert_eq!(guest.flush(1), [(27, LrState::Pending)]);
    // vCPU 0's PPI 27 is not linked; links survive a reset.
    guest.gic.reset();
    guest.enable_groups();
    guest.enable_private_v3(0, 1 << 27);
    guest.enable_private_v3(1, 1 << 27);
    let _ = guest.gic.raise(27, 0);
    let _ = guest.gic.raise(27, 1);
    assert_eq!(guest.gic.flush(0, 4).as_slice()[0].hardware, None);
    assert_eq!(guest.gic.flush(1, 4).as_slice()[0].hardware, Some(27));
}

#[test]
fn deactivating_a_linked_ppi_through_the_redistributor_reaches_the_hardware() {
    let mut guest = Guest::v3(2);
    guest.enable_groups();
    guest.gic.link_hardware(27, 1, 27);
    guest.enable_private_v3(1, 1 << 27);
    let _ = guest.gic.raise(27, 1);
    assert_eq!(guest.flush(1), [(27, LrState::Pending)]);
    // The guest acknowledged it, then clears its active state with ICACTIVER0 (vCPU 1's
    // SGI_base frame) instead of EOI: the physical PPI must be deactivated on its CPU.
    guest.gic.fold(1, &[lr(27, LrState::Active)]);
    let mut due = Vec::new();
    guest
        .gic
        .take_hardware_deactivations(1, |physical| due.push(physical));
    assert!(due.is_empty(), "nothing due while the guest holds it");
    guest.rwrite(STRIDE + SGI_BASE + 0x380, 1 << 27);
    assert_eq!(guest.rread(STRIDE + SGI_BASE + 0x300) & (1 << 27), 0);
    assert!(guest.flush(1).is_empty());
    guest
        .gic
        .take_hardware_deactivations(0, |physical| due.push(physical));
    assert!(due.is_empty(), "vCPU 0 has nothing to deactivate");
    guest
        .gic
        .take_hardware_deactivations(1, |physical| due.push(physical));
    assert_eq!(due, [27]);
    // Taken once.
    guest
        .gic
        .take_hardware_deactivations(1, |physical| due.push(physical));
    assert_eq!(due, [27]);
}

#[test]
fn changes_while_in_a_list_register() {
    let mut guest = Guest::v3(2);
    guest.enable_groups();
    guest.enable_spi(40, 0x80);
    let _ = guest.gic.raise(40, 0);
    assert_eq!(guest.flush(0), [(40, LrState::Pending)]);
    // vCPU 1 clears it: vCPU 0 holds it, so it is kicked, and the fold drops it.
    guest.dwrite(1, GICD_ICPENDR + 4, 1 << 8);
    assert_eq!(guest.gic.take_wakeups(), Wakeups::of(0));
    assert_eq!(guest.dread(1, GICD_ISPENDR + 4), 0);
    guest.gic.fold(0, &[lr(40, LrState::Pending)]);
    assert!(guest.flush(0).is_empty());
    // Deactivated by another vCPU while acknowledged in a list register.
    let _ = guest.gic.raise(40, 0);
    assert_eq!(guest.flush(0), [(40, LrState::Pending)]);
    guest.gic.fold(0, &[lr(40, LrState::Active)]);
    assert_eq!(guest.flush(0), [(40, LrState::Active)]);
    guest.dwrite(1, GICD_ICACTIVER + 4, 1 << 8);
    assert_eq!(guest.dread(1, GICD_ISACTIVER + 4), 0);
    guest.gic.fold(0, &[lr(40, LrState::Active)]);
    assert!(guest.flush(0).is_empty());
    // Re-routed while pending in vCPU 0's list register: vCPU 1 gets it after the fold.
    let _ = guest.gic.take_wakeups();
    let _ = guest.gic.raise(40, 0);
    assert_eq!(guest.flush(0), [(40, LrState::Pending)]);
    guest.dwrite_width(0, GICD_IROUTER + 8 * 40, AccessWidth::Double, 1);
    assert_eq!(guest.gic.take_wakeups(), Wakeups::of(0), "its holder");
    assert!(guest.flush(1).is_empty(), "at most one list register");
    guest.gic.fold(0, &[lr(40, LrState::Pending)]);
    assert_eq!(guest.gic.take_wakeups(), Wakeups::of(1));
    assert!(guest.flush(0).is_empty());
    assert_eq!(guest.flush(1), [(40, LrState::Pending)]);
    // Acknowledged on vCPU 1 and re-routed back: it stays with vCPU 1 until deactivated,
    // and a new edge meanwhile goes to vCPU 0 after that.
    guest.gic.fold(1, &[lr(40, LrState::Active)]);
    guest.dwrite_width(0, GICD_IROUTER + 8 * 40, AccessWidth::Double, 0);
    let _ = guest.gic.raise(40, 0);
    assert!(guest.flush(0).is_empty());
    assert_eq!(guest.flush(1), [(40, LrState::Active)]);
    let _ = guest.gic.take_wakeups();
    guest.gic.fold(1, &[]);
    assert_eq!(guest.gic.take_wakeups(), Wakeups::of(0));
    assert!(guest.flush(1).is_empty());
    assert_eq!(guest.flush(0), [(40, LrState::Pending)]);
    guest.gic.fold(0, &[]);
    // Unrouted SPIs (an affinity that is no vCPU) wait.
    guest.dwrite_width(0, GICD_IROUTER + 8 * 40, AccessWidth::Double, 0x5);
    let _ = guest.gic.raise(40, 0);
    assert!(guest.flush(0).is_empty() && guest.flush(1).is_empty());
    guest.dwrite(0, GICD_IROUTER + 8 * 40, 1);
    assert_eq!(guest.gic.take_wakeups(), Wakeups::of(1));
}

#[test]
fn reset_clears_guest_state() {
    let mut guest = Guest::v3(1);
    guest.enable_groups();
    guest.enable_spi(40, 0x80);
    let _ = guest.gic.raise(40, 0);
    assert_eq!(guest.flush(0), [(40, LrState::Pending)]);
    guest.gic.reset();
    assert_eq!(guest.dread(0, GICD_CTLR) & 0b11, 0);
    assert_eq!(guest.dread(0, GICD_ISENABLER + 4), 0);
    assert_eq!(guest.dread(0, GICD_ISPENDR + 4), 0);
    assert!(guest.gic.take_wakeups().is_empty());
    guest.gic.fold(0, &[lr(40, LrState::Pending)]);
    assert_eq!(guest.dread(0, GICD_ISPENDR + 4), 0, "stale fold ignored");
}

#[test]
fn untouched_list_registers_are_kept_until_something_changes() {
    let mut guest = Guest::v3(2);
    guest.dwrite(0, GICD_CTLR, 0x2);
    guest.dwrite(0, GICD_ISENABLER + 4, 1 << 8);
    let _ = guest.gic.set_spi_level(40, true);
    let first = guest.gic.flush(0, 4);
    assert_eq!(first.iter().map(|e| e.intid).collect::<Vec<_>>(), [40]);
    // The guest acknowledged it (active now) and trapped for something else.
    let active = [ListEntry::reported(40, 0, LrState::Active)];
    guest.gic.fold(0, &active);
    let second = guest.gic.flush(0, 4);
    assert!(
        !second.is_unchanged(),
        "the guest changed the list register"
    );
    // Another exit with the register as loaded and nothing else changed: keep it.
    let as_loaded: Vec<ListEntry> = second
        .iter()
        .map(|e| ListEntry::reported(e.intid, e.source_cpu, e.state))
        .collect();
    guest.gic.fold(0, &as_loaded);
    let third = guest.gic.flush(0, 4);
    assert!(third.is_unchanged());
    // Something changes meanwhile (another interrupt pends): a full flush again.
    guest.gic.fold(0, &as_loaded);
    guest.dwrite(0, GICD_ISENABLER + 4, 1 << 9);
    let _ = guest.gic.raise(41, 0);
    let fourth = guest.gic.flush(0, 4);
    assert!(!fourth.is_unchanged());
    let mut intids: Vec<u32> = fourth.iter().map(|e| e.intid).collect();
    intids.sort_unstable();
    assert_eq!(intids, [40, 41]);
}
