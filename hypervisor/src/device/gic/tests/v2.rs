//! Tests of GICv2 registers: banked INTIDs 0-31, ITARGETSR routing, GICD_SGIR, SGI requesters.

use super::*;

#[test]
fn distributor_identity() {
    let mut guest = Guest::v2(2);
    // ITLinesNumber 2, CPUNumber 1, no security extensions.
    assert_eq!(guest.dread(0, GICD_TYPER), 2 | (1 << 5));
    assert_eq!(guest.dread(0, GICD_IIDR), 0x4200_043b);
    assert_eq!((guest.dread(0, 0x0fe8) >> 4) & 0xf, 2, "ArchRev at 0xfe8");
    assert_eq!((guest.dread(0, GICD_PIDR2) >> 4) & 0xf, 2, "and at 0xffe8");
    assert!(guest.gicr.is_none());
    assert_eq!(guest.gic.redistributors_size(), 0);
    assert_eq!(guest.gicd.size(), 0x1_0000);
    assert_eq!(guest.dread(0, GICD_CTLR), 0);
    guest.dwrite(0, GICD_CTLR, 0xffff_ffff);
    assert_eq!(guest.dread(0, GICD_CTLR), 0b11, "EnableGrp0/1 only");
    let mut big = Guest::v2(12);
    assert_eq!(big.gic.vcpu_count(), 8);
    assert_eq!((big.dread(0, GICD_TYPER) >> 5) & 7, 7);
}

#[test]
fn banked_registers_for_private_interrupts() {
    let mut guest = Guest::v2(4);
    // ITARGETSR0-7 read as the reader's own bit; writes are ignored.
    for vcpu in 0..4 {
        let own = 0x0101_0101u64 << vcpu;
        for word in 0..8 {
            assert_eq!(guest.dread(vcpu, GICD_ITARGETSR + 4 * word), own);
        }
    }
    guest.dwrite(1, GICD_ITARGETSR + 28, 0xffff_ffff);
    assert_eq!(guest.dread(1, GICD_ITARGETSR + 28), 0x0202_0202);
    // SGIs are always enabled; PPIs are per vCPU.
    assert_eq!(guest.dread(0, GICD_ISENABLER), 0xffff);
    guest.dwrite(0, GICD_ICENABLER, 0xffff_ffff);
    assert_eq!(guest.dread(0, GICD_ISENABLER), 0xffff);
    guest.dwrite(1, GICD_ISENABLER, 1 << 27);
    assert_eq!(guest.dread(1, GICD_ISENABLER), 0xffff | (1 << 27));
    assert_eq!(guest.dread(0, GICD_ISENABLER), 0xffff);
    // Priorities by byte, banked.
    guest.dwrite_width(2, GICD_IPRIORITYR + 27, AccessWidth::Byte, 0x90);
    assert_eq!(guest.dread(2, GICD_IPRIORITYR + 24), 0x9000_0000);
    assert_eq!(guest.dread(3, GICD_IPRIORITYR + 24), 0);
    // ICFGR0 fixed edge for SGIs; ICFGR1 (PPIs) writable per vCPU; group 0 at reset.
    guest.dwrite(0, GICD_ICFGR, 0);
    assert_eq!(guest.dread(0, GICD_ICFGR), 0xaaaa_aaaa);
    guest.dwrite(3, GICD_ICFGR + 4, 0x2);
    assert_eq!(guest.dread(3, GICD_ICFGR + 4), 0x2);
    assert_eq!(guest.dread(2, GICD_ICFGR + 4), 0);
    assert_eq!(guest.dread(0, GICD_IGROUPR + 4), 0);
    // A vCPU index the partition does not have sees nothing banked.
    assert_eq!(guest.dread(7, GICD_ISENABLER), 0);
    assert_eq!(guest.dread(7, GICD_ITARGETSR), 0);
    // A PPI pended by vCPU 1 is vCPU 1's.
    guest.dwrite(0, GICD_CTLR, 1);
    guest.dwrite(1, GICD_ISPENDR, 1 << 27);
    assert_eq!(guest.gic.take_wakeups(), Wakeups::of(1));
    assert!(guest.flush(0).is_empty());
    assert_eq!(guest.flush(1), [(27, LrState::Pending)]);
    assert!(!guest.gic.flush(1, 4).as_slice()[0].group1);
}

#[test]
fn itargetsr_routes_spis_to_the_lowest_target() {
    let mut guest = Guest::v2(4);
    guest.dwrite(0, GICD_CTLR, 1);
    guest.enable_spi(40, 0xa0);
    assert_eq!(guest.dread(0, GICD_ITARGETSR + 40), 0, "no target at reset");
    let _ = guest.gic.raise(40, 0);
    assert!((0..4).all(|vcpu| guest.flush(vcpu).is_empty()));
    guest.dwrite_width(0, GICD_ITARGETSR + 40, AccessWidth::Byte, 0b0100);
    assert_eq!(guest.gic.take_wakeups(), Wakeups::of(2));
    assert_eq!(guest.flush(2), [(40, LrState::Pending)]);
    guest.gic.fold(2, &[lr(40, LrState::Pending)]);
    guest.dwrite_width(0, GICD_ITARGETSR + 40, AccessWidth::Byte, 0b1111_0110);
    assert_eq!(
        guest.dread(3, GICD_ITARGETSR + 40) & 0xff,
        0b0110,
        "vCPUs 4-7 absent"
    );
    assert!(guest.flush(2).is_empty());
    assert_eq!(guest.flush(1), [(40, LrState::Pending)]);
    // With one vCPU every SPI targets it and ITARGETSR is fixed.
    let mut single = Guest::v2(1);
    single.dwrite(0, GICD_CTLR, 1);
    single.enable_spi(33, 0);
    single.dwrite(0, GICD_ITARGETSR + 32, 0);
    assert_eq!(single.dread(0, GICD_ITARGETSR + 32), 0x0101_0101);
    let _ = single.gic.raise(33, 0);
    assert_eq!(single.flush(0), [(33, LrState::Pending)]);
}

#[test]
fn sgir_filters_and_requesters() {
    let mut guest = Guest::v2(4);
    guest.dwrite(0, GICD_CTLR, 1);
    let sgir = |filter: u64, list: u64, intid: u64| (filter << 24) | (list << 16) | intid;
    // Filter 0: the target list (bits of vCPUs that do not exist are ignored).
    guest.dwrite(0, GICD_SGIR, sgir(0, 0b1111_0110, 3));
    assert_eq!(guest.gic.take_wakeups().bits(), 0b0110);
    let entries = guest.gic.flush(1, 4);
    assert_eq!(pairs(&entries), [(3, LrState::Pending)]);
    assert_eq!(entries.as_slice()[0].source_cpu, 0);
    guest.gic.fold(1, &[]);
    // Filter 1: everyone but the requester; filter 2: the requester only; 3: reserved.
    guest.dwrite(2, GICD_SGIR, sgir(1, 0, 4));
    assert_eq!(guest.gic.take_wakeups().bits(), 0b1011);
    guest.dwrite(3, GICD_SGIR, sgir(2, 0b1, 5));
    assert_eq!(guest.gic.take_wakeups().bits(), 0b1000);
    guest.dwrite(3, GICD_SGIR, sgir(3, 0xff, 5));
    assert!(guest.gic.take_wakeups().is_empty());
    // Sub-word writes to GICD_SGIR do nothing.
    guest.dwrite_width(0, GICD_SGIR, AccessWidth::Byte, 6);
    assert!(guest.gic.take_wakeups().is_empty());
    let entries = guest.gic.flush(3, 4);
    assert_eq!(
        pairs(&entries),
        [(4, LrState::Pending), (5, LrState::Pending)]
    );
    assert_eq!(entries.as_slice()[0].source_cpu, 2);
    assert_eq!(entries.as_slice()[1].source_cpu, 3);
}

#[test]
fn sgi_pending_per_requester() {
    let mut guest = Guest::v2(4);
    guest.dwrite(0, GICD_CTLR, 1);
    // vCPUs 0 and 2 both send SGI 5 to vCPU 1: two instances, one list register each time.
    guest.dwrite(0, GICD_SGIR, (0b10 << 16) | 5);
    guest.dwrite(2, GICD_SGIR, (0b10 << 16) | 5);
    assert_eq!(guest.dread(1, GICD_SPENDSGIR + 4) >> 8 & 0xff, 0b101);
    assert_eq!(guest.dread(1, GICD_ISPENDR), 1 << 5);
    let entries = guest.gic.flush(1, 4);
    assert_eq!(pairs(&entries), [(5, LrState::Pending)]);
    assert_eq!(entries.as_slice()[0].source_cpu, 0);
    assert_eq!(
        guest.dread(1, GICD_SPENDSGIR + 4) >> 8 & 0xff,
        0b101,
        "resident"
    );
    // Acknowledged from vCPU 0: while active, vCPU 2's instance waits.
    guest
        .gic
        .fold(1, &[ListEntry::reported(5, 0, LrState::Active)]);
    let entries = guest.gic.flush(1, 4);
    assert_eq!(pairs(&entries), [(5, LrState::Active)]);
    assert_eq!(entries.as_slice()[0].source_cpu, 0);
    guest.gic.fold(1, &[]);
    let entries = guest.gic.flush(1, 4);
    assert_eq!(pairs(&entries), [(5, LrState::Pending)]);
    assert_eq!(entries.as_slice()[0].source_cpu, 2);
    // A report for another requester's instance does not count as this one.
    guest
        .gic
        .fold(1, &[ListEntry::reported(5, 0, LrState::Pending)]);
    assert!(guest.flush(1).is_empty());
    // ISPENDR / ICPENDR do not touch SGIs; SPENDSGIR / CPENDSGIR do, per requester.
    guest.dwrite(1, GICD_ISPENDR, 1 << 6);
    assert_eq!(guest.dread(1, GICD_ISPENDR), 0);
    guest.dwrite_width(1, GICD_SPENDSGIR + 6, AccessWidth::Byte, 0b1001);
    assert_eq!(guest.dread(1, GICD_SPENDSGIR + 4), 0b1001 << 16);
    assert_eq!(guest.gic.take_wakeups(), Wakeups::of(1));
    guest.dwrite(1, GICD_ICPENDR, 1 << 6);
    assert_eq!(guest.dread(1, GICD_ISPENDR), 1 << 6);
    guest.dwrite_width(1, GICD_CPENDSGIR + 6, AccessWidth::Byte, 0b0001);
    assert_eq!(guest.dread(1, GICD_CPENDSGIR + 4), 0b1000 << 16);
    let entries = guest.gic.flush(1, 4);
    assert_eq!(entries.as_slice()[0].source_cpu, 3);
    // Cleared while resident: the fold drops it.
    guest.dwrite_width(1, GICD_CPENDSGIR + 6, AccessWidth::Byte, 0b1000);
    guest
        .gic
        .fold(1, &[ListEntry::reported(6, 3, LrState::Pending)]);
    assert!(guest.flush(1).is_empty());
}
