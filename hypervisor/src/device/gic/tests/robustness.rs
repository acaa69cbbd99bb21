//! Tests that nothing a guest or a confused caller does makes the model panic.

use super::*;

const WIDTHS: [AccessWidth; 4] = [
    AccessWidth::Byte,
    AccessWidth::Half,
    AccessWidth::Word,
    AccessWidth::Double,
];

fn hammer(guest: &mut Guest, value: u64) {
    for vcpu in [0, 1, 9, usize::MAX] {
        for offset in 0..0x1_0000 {
            for width in WIDTHS {
                if offset + width.bytes() > 0x1_0000 {
                    continue;
                }
                guest.dwrite_width(vcpu, offset, width, value);
                let _ = guest.dread_width(vcpu, offset, width);
            }
        }
    }
    let Some(gicr) = guest.gicr.as_mut() else {
        return;
    };
    let size = gicr.size();
    for offset in 0..size {
        for width in WIDTHS {
            if offset + width.bytes() > size {
                continue;
            }
            gicr.write(
                offset as usize % 3,
                offset,
                width,
                value,
                &mut guest.effects,
            );
            let _ = gicr.read(usize::MAX, offset, width, &mut guest.effects);
        }
    }
}

fn abuse_interface(gic: &VirtualGic) {
    for intid in [0, 15, 16, 31, 32, 95, 96, 1019, 1020, 1023, u32::MAX] {
        for vcpu in [0, 1, 2, 64, usize::MAX] {
            let _ = gic.raise(intid, vcpu);
            let _ = gic.set_spi_level(intid, true);
            gic.link_hardware(intid, vcpu, u32::MAX);
            let _ = gic.has_pending(vcpu);
        }
    }
    for value in [0, u64::MAX, 1 << 40, 0xffff, 0x00ff_ffff_ffff_ffff] {
        for from in [0, 1, 63, 64, usize::MAX] {
            let _ = gic.write_sgi1r(from, value);
        }
    }
    let garbage = [
        ListEntry::reported(u32::MAX, 0xff, LrState::PendingActive),
        ListEntry::reported(40, 0xff, LrState::Active),
        ListEntry::reported(3, 200, LrState::Pending),
    ];
    for vcpu in [0, 1, 2, 64, usize::MAX] {
        for slots in [0, 1, 4, 16, 17, usize::MAX] {
            let entries = gic.flush(vcpu, slots);
            assert!(entries.len() <= MAX_LIST_ENTRIES.min(slots));
            gic.fold(vcpu, entries.as_slice());
            let _ = gic.flush(vcpu, slots);
            gic.fold(vcpu, &garbage);
        }
    }
    let _ = gic.take_wakeups();
}

#[test]
fn garbage_accesses_never_panic_v3() {
    let mut guest = Guest::v3(2);
    for value in [u64::MAX, 0x5a5a_5a5a_a5a5_a5a5, 0] {
        hammer(&mut guest, value);
        abuse_interface(&guest.gic);
    }
}

#[test]
fn garbage_accesses_never_panic_v2() {
    let mut guest = Guest::v2(2);
    for value in [u64::MAX, 0x5a5a_5a5a_a5a5_a5a5, 0] {
        hammer(&mut guest, value);
        abuse_interface(&guest.gic);
    }
    let odd = VirtualGic::new(GicVersion::V2, 0, u32::MAX);
    abuse_interface(&odd);
    let odd = VirtualGic::new(GicVersion::V3, usize::MAX, 1);
    abuse_interface(&odd);
}
