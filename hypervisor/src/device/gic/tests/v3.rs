//! Tests of GICv3 registers: GICD, GICR frames, ICC_SGI1R_EL1, the Linux driver's sequence.

use super::*;

#[test]
fn distributor_identity() {
    let mut guest = Guest::v3(4);
    // ITLinesNumber 2 (64 SPIs), CPUNumber 3, IDbits 9, No1N, MBIS; no LPIs, ESPI.
    assert_eq!(
        guest.dread(0, GICD_TYPER),
        2 | (3 << 5) | (1 << 16) | (9 << 19) | (1 << 25)
    );
    assert_eq!(guest.dread(0, GICD_IIDR), 0x4200_043b);
    assert_eq!(guest.dread(0, 0x000c), 0, "GICD_TYPER2");
    assert_eq!((guest.dread(0, GICD_PIDR2) >> 4) & 0xf, 3, "ArchRev");
    // DS=1 and ARE are fixed; RWP (bit 31) never set.
    assert_eq!(guest.dread(0, GICD_CTLR), (1 << 6) | (1 << 4));
    guest.dwrite(0, GICD_CTLR, (1 << 4) | 0b10);
    assert_eq!(guest.dread(0, GICD_CTLR), (1 << 6) | (1 << 4) | 0b10);
    guest.dwrite(0, GICD_CTLR, 0);
    assert_eq!(guest.dread(0, GICD_CTLR), (1 << 6) | (1 << 4), "ARE stays");

    for (spis, lines) in [(0, 0), (32, 1), (40, 2), (960, 30), (988, 31), (5000, 31)] {
        let mut sized = Guest::new(GicVersion::V3, 1, spis);
        assert_eq!(sized.dread(0, GICD_TYPER) & 0x1f, lines, "{spis} SPIs");
    }
    let mut many = Guest::new(GicVersion::V3, 200, 64);
    assert_eq!(many.gic.vcpu_count(), 64);
    assert_eq!((many.dread(0, GICD_TYPER) >> 5) & 7, 7);
}

#[test]
fn distributor_register_round_trips() {
    let mut guest = Guest::v3(2);
    // IGROUPR1: reset group 1, writable.
    assert_eq!(guest.dread(0, GICD_IGROUPR + 4), u64::from(u32::MAX));
    guest.dwrite(0, GICD_IGROUPR + 4, 0x0000_ff00);
    assert_eq!(guest.dread(0, GICD_IGROUPR + 4), 0x0000_ff00);
    // ISENABLER / ICENABLER.
    guest.dwrite(0, GICD_ISENABLER + 4, 0x8000_0101);
    guest.dwrite(0, GICD_ISENABLER + 8, 0x1);
    guest.dwrite(0, GICD_ICENABLER + 4, 0x1);
    assert_eq!(guest.dread(0, GICD_ISENABLER + 4), 0x8000_0100);
    assert_eq!(guest.dread(0, GICD_ICENABLER + 4), 0x8000_0100);
    assert_eq!(guest.dread(0, GICD_ISENABLER + 8), 1);
    // IPRIORITYR: byte, half, word and double accesses.
    guest.dwrite_width(0, GICD_IPRIORITYR + 33, AccessWidth::Byte, 0xa0);
    guest.dwrite_width(0, GICD_IPRIORITYR + 34, AccessWidth::Half, 0xc0b0);
    assert_eq!(guest.dread(0, GICD_IPRIORITYR + 32), 0xc0b0_a000);
    assert_eq!(
        guest.dread_width(0, GICD_IPRIORITYR + 35, AccessWidth::Byte),
        0xc0
    );
    guest.dwrite_width(
        0,
        GICD_IPRIORITYR + 40,
        AccessWidth::Double,
        0x0102_0304_0506_0708,
    );
    assert_eq!(guest.dread(0, GICD_IPRIORITYR + 44), 0x0102_0304);
    // ICFGR: bit 1 of each field (edge); bit 0 is RES0.
    guest.dwrite(0, GICD_ICFGR + 8, 0xffff_ffff);
    assert_eq!(guest.dread(0, GICD_ICFGR + 8), 0xaaaa_aaaa);
    // IROUTER: 64-bit and 32-bit halves; IRM and Aff3 are RES0.
    let router = GICD_IROUTER + 8 * 40;
    guest.dwrite_width(0, router, AccessWidth::Double, 0x0000_00ff_8001_0203);
    assert_eq!(
        guest.dread_width(0, router, AccessWidth::Double),
        0x0001_0203
    );
    guest.dwrite(0, router, 0x0000_0001);
    assert_eq!(guest.dread(0, router), 1);
    assert_eq!(guest.dread(0, router + 4), 0);
    // INTIDs 0-31 live in the redistributors, ITARGETSR and GICD_SGIR are gone (ARE=1).
    guest.dwrite(0, GICD_ISENABLER, u64::from(u32::MAX));
    guest.dwrite(0, GICD_IPRIORITYR, u64::from(u32::MAX));
    guest.dwrite(0, GICD_ITARGETSR + 32, u64::from(u32::MAX));
    guest.dwrite(0, GICD_SGIR, 0x0201_0001);
    assert_eq!(guest.dread(0, GICD_ISENABLER), 0);
    assert_eq!(guest.dread(0, GICD_IPRIORITYR), 0);
    assert_eq!(guest.dread(0, GICD_ITARGETSR + 32), 0);
    assert_eq!(guest.dread(0, GICD_IROUTER + 8 * 5), 0);
    assert!(guest.flush(1).is_empty());
    // SPIs beyond the configured 64 (INTIDs 96 on) read as zero and ignore writes.
    guest.dwrite(0, GICD_ISENABLER + 12, u64::from(u32::MAX));
    guest.dwrite(0, GICD_IPRIORITYR + 96, u64::from(u32::MAX));
    guest.dwrite_width(0, GICD_IROUTER + 8 * 96, AccessWidth::Double, 1);
    assert_eq!(guest.dread(0, GICD_ISENABLER + 12), 0);
    assert_eq!(guest.dread(0, GICD_IPRIORITYR + 96), 0);
    assert_eq!(guest.dread(0, GICD_IROUTER + 8 * 96), 0);
    // Pending and active arrays read back what was set.
    guest.dwrite(0, GICD_ISPENDR + 4, 0x10);
    guest.dwrite(0, GICD_ISACTIVER + 4, 0x20);
    assert_eq!(guest.dread(0, GICD_ICPENDR + 4), 0x10);
    assert_eq!(guest.dread(0, GICD_ISACTIVER + 4), 0x20);
    guest.dwrite(0, GICD_ICPENDR + 4, 0x10);
    guest.dwrite(0, GICD_ICACTIVER + 4, 0x20);
    assert_eq!(guest.dread(0, GICD_ISPENDR + 4), 0);
    assert_eq!(guest.dread(0, GICD_ICACTIVER + 4), 0);
}

#[test]
fn redistributor_frames() {
    let mut guest = Guest::v3(18);
    assert_eq!(guest.gic.redistributors_size(), 18 * STRIDE);
    assert_eq!(guest.gicr.as_ref().map(|r| r.size()), Some(18 * STRIDE));
    for vcpu in 0..18u64 {
        let base = vcpu * STRIDE;
        let typer = guest.rread_width(base + GICR_TYPER, AccessWidth::Double);
        let last = u64::from(vcpu == 17) << 4;
        // Affinity = the vCPU's MPIDR: Aff1 = vcpu / 16, Aff0 = vcpu % 16.
        let affinity = ((vcpu / 16) << 8) | (vcpu % 16);
        assert_eq!(typer, (affinity << 32) | (vcpu << 8) | last, "vcpu {vcpu}");
        assert_eq!(guest.rread(base + GICR_TYPER + 4), affinity);
        assert_eq!(guest.rread(base + GICR_TYPER), (vcpu << 8) | last);
        assert_eq!((guest.rread(base + GICR_PIDR2) >> 4) & 0xf, 3);
        assert_eq!(guest.rread(base + 0x0004), 0x4200_043b, "GICR_IIDR");
        assert_eq!(guest.rread(base + GICR_CTLR), 0, "no RWP, no LPIs");
    }
    // GICR_WAKER: asleep at reset; ChildrenAsleep follows ProcessorSleep.
    let waker = STRIDE + GICR_WAKER;
    assert_eq!(guest.rread(waker), 0b110);
    guest.rwrite(waker, 0);
    assert_eq!(guest.rread(waker), 0);
    assert_eq!(guest.rread(GICR_WAKER), 0b110, "vCPU 0 still asleep");
    guest.rwrite(waker, 0b010);
    assert_eq!(guest.rread(waker), 0b110);
    // No LPIs: PROPBASER / PENDBASER are RAZ/WI.
    guest.rwrite(0x70, 0xffff_ffff);
    assert_eq!(guest.rread(0x70), 0);
}

#[test]
fn banked_private_state_per_vcpu() {
    let mut guest = Guest::v3(2);
    let frame = |vcpu: u64| vcpu * STRIDE + SGI_BASE;
    guest.enable_private_v3(1, (1 << 27) | (1 << 1));
    assert_eq!(guest.rread(frame(1) + GICD_ISENABLER), (1 << 27) | (1 << 1));
    assert_eq!(guest.rread(frame(0) + GICD_ISENABLER), 0);
    guest.rwrite(frame(1) + GICD_ICENABLER, 1 << 1);
    assert_eq!(guest.rread(frame(1) + GICD_ICENABLER), 1 << 27);
    // Priorities by byte, per vCPU.
    let gicr = guest.gicr.as_mut().unwrap();
    gicr.write(
        1,
        frame(1) + GICD_IPRIORITYR + 27,
        AccessWidth::Byte,
        0x80,
        &mut guest.effects,
    );
    assert_eq!(guest.rread(frame(1) + GICD_IPRIORITYR + 24), 0x8000_0000);
    assert_eq!(guest.rread(frame(0) + GICD_IPRIORITYR + 24), 0);
    // ICFGR0 (SGIs) is fixed edge; ICFGR1 (PPIs) is writable.
    guest.rwrite(frame(0) + GICD_ICFGR, 0);
    assert_eq!(guest.rread(frame(0) + GICD_ICFGR), 0xaaaa_aaaa);
    guest.rwrite(frame(0) + GICD_ICFGR + 4, 0x0080_0000);
    assert_eq!(guest.rread(frame(0) + GICD_ICFGR + 4), 0x0080_0000);
    assert_eq!(guest.rread(frame(1) + GICD_ICFGR + 4), 0);
    // IGROUPR0 reset group 1; the SGI frame has nothing beyond INTID 31.
    assert_eq!(guest.rread(frame(0) + GICD_IGROUPR), u64::from(u32::MAX));
    guest.rwrite(frame(0) + GICD_ISENABLER + 4, u64::from(u32::MAX));
    assert_eq!(guest.rread(frame(0) + GICD_ISENABLER + 4), 0);
    // A pended PPI is delivered only to its own vCPU.
    guest.enable_groups();
    guest.rwrite(frame(1) + GICD_ISPENDR, 1 << 27);
    assert_eq!(guest.gic.take_wakeups(), Wakeups::of(1));
    assert!(guest.flush(0).is_empty());
    assert_eq!(guest.flush(1), [(27, LrState::Pending)]);
}

#[test]
fn sgi1r_targets_only_own_vcpus() {
    let mut guest = Guest::v3(20);
    guest.enable_groups();
    for vcpu in 0..20 {
        guest.enable_private_v3(vcpu, 0xffff);
    }
    let sgi = |intid: u64| intid << 24;
    // Target list at Aff1 = 0: vCPUs 1 and 3.
    let wake = guest.gic.write_sgi1r(0, sgi(5) | 0b1010);
    assert_eq!(wake.bits(), 0b1010);
    assert_eq!(wake.iter().collect::<Vec<_>>(), [1, 3]);
    assert_eq!(guest.flush(3), [(5, LrState::Pending)]);
    guest.gic.fold(3, &[]);
    // Aff1 = 1: vCPUs 16 + n.
    let wake = guest.gic.write_sgi1r(0, sgi(2) | (1 << 16) | 0b10);
    assert_eq!(wake, Wakeups::of(17));
    assert_eq!(guest.flush(17), [(2, LrState::Pending)]);
    // Affinities this partition does not have: n >= 4 at Aff1 = 1, RS != 0, Aff2, Aff3.
    assert!(
        guest
            .gic
            .write_sgi1r(0, sgi(2) | (1 << 16) | 0xfff0)
            .is_empty()
    );
    assert!(guest.gic.write_sgi1r(0, sgi(2) | (1 << 44) | 1).is_empty());
    assert!(guest.gic.write_sgi1r(0, sgi(2) | (1 << 32) | 1).is_empty());
    assert!(guest.gic.write_sgi1r(0, sgi(2) | (1 << 48) | 1).is_empty());
    assert!(
        guest.gic.write_sgi1r(20, sgi(2) | 1).is_empty(),
        "bad sender"
    );
    // IRM: everyone but the sender.
    let wake = guest.gic.write_sgi1r(4, sgi(7) | (1 << 40) | 0b1);
    assert_eq!(wake.bits(), ((1 << 20) - 1) & !(1 << 4));
    assert!(guest.flush(4).is_empty());
    assert_eq!(guest.flush(19), [(7, LrState::Pending)]);
    // An SGI that is not enabled is recorded but wakes nobody.
    guest.rwrite(2 * STRIDE + SGI_BASE + GICD_ICENABLER, 1 << 9);
    assert!(guest.gic.write_sgi1r(0, sgi(9) | 0b100).is_empty());
    assert_eq!(
        guest.rread(2 * STRIDE + SGI_BASE + GICD_ISPENDR) & (1 << 9),
        1 << 9
    );
}

#[test]
fn linux_driver_sequence() {
    // What irq-gic-v3 does at boot, in order, on a two-vCPU partition.
    let mut guest = Guest::v3(2);
    assert_eq!(guest.dread(0, GICD_PIDR2) & 0xf0, 0x30);
    let typer = guest.dread(0, GICD_TYPER);
    let lines = 32 * ((typer & 0x1f) + 1);
    guest.dwrite(0, GICD_CTLR, 0);
    assert_eq!(guest.dread(0, GICD_CTLR) & (1 << 31), 0, "RWP");
    for i in (32..lines).step_by(32) {
        guest.dwrite(0, GICD_IGROUPR + i / 8, 0xffff_ffff);
        guest.dwrite(0, GICD_ICACTIVER + i / 8, 0xffff_ffff);
        guest.dwrite(0, GICD_ICENABLER + i / 8, 0xffff_ffff);
    }
    for i in (32..lines).step_by(16) {
        guest.dwrite(0, GICD_ICFGR + i / 4, 0);
    }
    for i in (32..lines).step_by(4) {
        guest.dwrite(0, GICD_IPRIORITYR + i, 0xa0a0_a0a0);
    }
    guest.dwrite(0, GICD_CTLR, (1 << 4) | 0b11);
    for i in 32..lines {
        guest.dwrite_width(0, GICD_IROUTER + 8 * i, AccessWidth::Double, 0);
    }
    // Redistributor discovery for each CPU, by affinity, then wake-up.
    for vcpu in 0..2u64 {
        let mut base = 0;
        loop {
            assert_eq!(guest.rread(base + GICR_PIDR2) & 0xf0, 0x30);
            let typer = guest.rread_width(base + GICR_TYPER, AccessWidth::Double);
            if typer >> 32 == vcpu {
                break;
            }
            assert_eq!(typer & (1 << 4), 0, "found before Last");
            base += STRIDE;
        }
        assert_eq!(base, vcpu * STRIDE);
        let waker = guest.rread(base + GICR_WAKER);
        guest.rwrite(base + GICR_WAKER, waker & !0b10);
        assert_eq!(guest.rread(base + GICR_WAKER) & 0b100, 0);
        guest.rwrite(base + SGI_BASE + GICD_IGROUPR, 0xffff_ffff);
        guest.rwrite(base + SGI_BASE + GICD_ICACTIVER, 0xffff_ffff);
        guest.rwrite(base + SGI_BASE + GICD_ICENABLER, 0xffff_0000);
        guest.rwrite(base + SGI_BASE + GICD_ISENABLER, 0x0000_ffff);
        for i in (0..32).step_by(4) {
            guest.rwrite(base + SGI_BASE + GICD_IPRIORITYR + i, 0xa0a0_a0a0);
        }
    }
    // request_irq on SPI 48 routed to CPU 1 (Aff0 = 1); an IPI from CPU 1 to CPU 0.
    guest.dwrite_width(0, GICD_IROUTER + 8 * 48, AccessWidth::Double, 1);
    guest.dwrite(0, GICD_ISENABLER + 4, 1 << 16);
    assert!(guest.gic.set_spi_level(48, true).contains(1));
    assert_eq!(guest.gic.write_sgi1r(1, (1 << 24) | 1), Wakeups::of(0));
    let entries = guest.gic.flush(1, 4);
    assert_eq!(pairs(&entries), [(48, LrState::Pending)]);
    assert!(entries.as_slice()[0].group1);
    assert_eq!(entries.as_slice()[0].priority, 0xa0);
    assert_eq!(guest.flush(0), [(1, LrState::Pending)]);
}

#[test]
fn message_based_spis() {
    let mut guest = Guest::v3(2);
    // INTID 40 enabled in group 1, distributor on.
    guest.dwrite(0, GICD_CTLR, 0x2);
    guest.dwrite(0, GICD_ISENABLER + 4, 1 << 8);
    // An MSI: the device writes the INTID to GICD_SETSPI_NSR.
    guest.dwrite(1, 0x0040, 40);
    assert_eq!(guest.dread(0, GICD_ISPENDR + 4), 1 << 8);
    let entries = guest.gic.flush(0, 4);
    assert_eq!(entries.iter().map(|e| e.intid).collect::<Vec<_>>(), [40]);
    // CLRSPI clears a pending one; SGIs/PPIs and INTIDs beyond the SPIs are ignored.
    guest.gic.fold(0, &[]);
    guest.dwrite(1, 0x0040, 41);
    guest.dwrite(1, 0x0048, 41);
    guest.dwrite(1, 0x0040, 5);
    guest.dwrite(1, 0x0040, 1000);
    assert_eq!(guest.dread(0, GICD_ISPENDR + 4), 0);
    assert_eq!(guest.dread(0, GICD_ISPENDR), 0);
}
