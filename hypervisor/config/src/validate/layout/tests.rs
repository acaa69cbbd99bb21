//! The layout rules: usual places kept, windows moved around RAM and `loc`s, collisions with
//! what the architecture fixes refused at the configuration's line.

use super::*;

fn at(line: u32) -> Location {
    Location::new("cfg/vm.qvmconf", line)
}

fn item<'a>(base: u64, size: u64, what: &str, at: &'a Location) -> Placed<'a> {
    Placed {
        range: range(base, size),
        what: what.to_string(),
        at,
    }
}

/// Places an aarch64 VM with one vCPU and `shmem` vdev shmems; returns the layout and the
/// messages.
fn aarch64(placed: &[Placed<'_>], shmem: u64) -> (GuestLayout, Vec<String>) {
    let system = at(1);
    let shmem_line = at(9);
    let mut errors = Errors::new();
    let layout = place(
        Arch::Aarch64,
        1,
        placed,
        (shmem, (shmem > 0).then_some(&shmem_line)),
        &system,
        &mut errors,
    );
    (layout, errors.iter().map(ToString::to_string).collect())
}

/// QEMU virt's addresses.
const USUAL_ECAM: MemoryRange = range(0x3f00_0000, MIB);
const USUAL_MMIO32: MemoryRange = range(0x1000_0000, 0x2eff_0000);
const USUAL_MMIO64: MemoryRange = range(0x80_0000_0000, 0x80_0000_0000);
const USUAL_MSI_FRAME: MemoryRange = range(0x0802_0000, 0x1000);

#[test]
fn usual_places_when_nothing_is_in_the_way() {
    let ram_line = at(2);
    let uart_line = at(5);
    let (layout, errors) = aarch64(
        &[
            item(0x4000_0000, 64 * MIB, "ram", &ram_line),
            item(0x0900_0000, 0x1000, "vdev pl011", &uart_line),
        ],
        2,
    );
    assert_eq!(errors, Vec::<String>::new());
    assert_eq!(
        layout,
        GuestLayout {
            pci_ecam: USUAL_ECAM,
            pci_mmio32: USUAL_MMIO32,
            pci_mmio64: USUAL_MMIO64,
            msi_frame: USUAL_MSI_FRAME,
            shmem_windows: range(0x60_0000_0000, 2 * SHMEM_WINDOW_SIZE),
        }
    );
}

#[test]
fn no_shmem_device_no_shmem_windows() {
    let (layout, errors) = aarch64(&[], 0);
    assert!(errors.is_empty());
    assert_eq!(layout.shmem_windows.size, 0);
    assert_eq!(layout.pci_mmio64, USUAL_MMIO64);
}

#[test]
fn the_seed_loc_shrinks_the_32_bit_window_past_it() {
    // `vdev shmem create TEST1,0xf0000 loc 0x10000000 intr gic:40` (shared/seeds/000).
    let ram_line = at(2);
    let loc_line = at(8);
    let (layout, errors) = aarch64(
        &[
            item(0x4000_0000, 16 * MIB, "ram", &ram_line),
            item(0x1000_0000, 0x1000, "vdev shmem", &loc_line),
        ],
        1,
    );
    assert_eq!(errors, Vec::<String>::new());
    assert_eq!(layout.pci_mmio32, range(0x1001_0000, 0x2efe_0000));
    assert!(!layout.pci_mmio32.overlaps(&range(0x1000_0000, 0x1000)));
    assert_eq!(layout.pci_ecam, USUAL_ECAM);
    assert_eq!(layout.msi_frame, USUAL_MSI_FRAME);
}

#[test]
fn a_loc_in_the_middle_keeps_the_larger_part() {
    let loc_line = at(6);
    let (layout, errors) = aarch64(&[item(0x3000_0000, 0x1000, "vdev pl011", &loc_line)], 0);
    assert!(errors.is_empty());
    // 0x10000000-0x30000000 is larger than 0x30010000-0x3eff0000.
    assert_eq!(layout.pci_mmio32, range(0x1000_0000, 0x2000_0000));
}

#[test]
fn ram_over_the_usual_places_moves_ecam_and_the_32_bit_window() {
    let ram_line = at(2);
    let (layout, errors) = aarch64(&[item(0x1000_0000, GIB, "ram", &ram_line)], 1);
    assert!(errors.is_empty(), "{errors:?}");
    // The lowest free MiB above the GIC (distributor, CPU interface, one redistributor).
    assert_eq!(layout.pci_ecam, range(0x0810_0000, MIB));
    // No 16 MiB left of its usual place: the lowest free place of its full size.
    assert_eq!(layout.pci_mmio32, range(0x5000_0000, 0x2eff_0000));
    assert_eq!(layout.msi_frame, USUAL_MSI_FRAME);
    for window in [layout.pci_ecam, layout.pci_mmio32, layout.msi_frame] {
        assert!(!window.overlaps(&range(0x1000_0000, GIB)), "{window:?}");
    }
}

#[test]
fn a_loc_on_the_msi_frame_moves_the_frame() {
    let loc_line = at(7);
    let (layout, errors) = aarch64(&[item(0x0802_0000, 0x1000, "vdev shmem", &loc_line)], 1);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(layout.msi_frame, range(0x0803_0000, 0x1000));
}

#[test]
fn three_shmem_devices_push_the_64_bit_window_up() {
    let (layout, errors) = aarch64(&[], 3);
    assert!(errors.is_empty());
    assert_eq!(
        layout.shmem_windows,
        range(0x60_0000_0000, 3 * SHMEM_WINDOW_SIZE)
    );
    assert_eq!(layout.pci_mmio64, range(0x90_0000_0000, 0x70_0000_0000));
    assert!(!layout.pci_mmio64.overlaps(&layout.shmem_windows));
}

#[test]
fn high_ram_moves_the_shared_memory_windows() {
    let ram_line = at(3);
    let (layout, errors) = aarch64(&[item(0x60_0000_0000, 16 * GIB, "ram", &ram_line)], 1);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        layout.shmem_windows,
        range(0x1_0000_0000, SHMEM_WINDOW_SIZE)
    );
    assert_eq!(layout.pci_mmio64, USUAL_MMIO64);
}

#[test]
fn a_loc_on_the_gic_is_refused_naming_both_ranges() {
    let loc_line = at(8);
    let (_, errors) = aarch64(&[item(0x0800_0000, 0x1000, "vdev shmem", &loc_line)], 1);
    assert_eq!(
        errors,
        [
            "cfg/vm.qvmconf:8: guest-physical 0x8000000-0x8001000 overlaps the GIC distributor \
             (0x8000000-0x8010000), which every aarch64 partition has at that address (move \
             this vdev shmem outside that range)"
        ]
    );
}

#[test]
fn ram_on_the_redistributors_of_its_vcpus_is_refused() {
    let ram_line = at(2);
    let mut errors = Errors::new();
    let system = at(1);
    place(
        Arch::Aarch64,
        4,
        &[item(0x0810_0000, MIB, "ram", &ram_line)],
        (0, None),
        &system,
        &mut errors,
    );
    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("the GICv3 redistributors (0x80a0000-0x8120000)"),
        "{errors:?}"
    );
    // With one vCPU the redistributors end at 0x80c0000: no collision.
    let (_, errors) = aarch64(&[item(0x0810_0000, MIB, "ram", &ram_line)], 0);
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn no_room_for_the_32_bit_window_is_reported_at_what_took_its_place() {
    // RAM from the UART's page up to 4 GiB leaves less than 16 MiB below 4 GiB.
    let ram_line = at(2);
    let (_, errors) = aarch64(
        &[item(0x0900_0000, 4 * GIB - 0x0900_0000, "ram", &ram_line)],
        0,
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(
            "cfg/vm.qvmconf:2: no room for the PCI 32-bit window (at least 16 MiB, 64 KiB-aligned, \
             in 0x8000000-0x100000000): its usual place 0x10000000-0x3eff0000 holds this ram \
             (0x9000000-0x100000000)"
        ),
        "{errors:?}"
    );
}

#[test]
fn too_many_shmem_devices_are_reported_at_the_last() {
    let (_, errors) = aarch64(&[], 16);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("cfg/vm.qvmconf:9: no room for the shared-memory windows"),
        "{errors:?}"
    );
}

#[test]
fn x86_windows_stay_and_refuse_what_overlaps_them() {
    let line = at(6);
    let system = at(1);
    let mut errors = Errors::new();
    let layout = place(
        Arch::X86_64,
        1,
        &[item(0xc000_1000, 0x1000, "vdev ioapic", &line)],
        (1, None),
        &system,
        &mut errors,
    );
    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        [
            "cfg/vm.qvmconf:6: guest-physical 0xc0001000-0xc0002000 overlaps the PCI 32-bit \
             window (0xc0000000-0xe0000000), which every x86_64 partition has at that address \
             (move this vdev ioapic outside that range)"
        ]
    );
    assert_eq!(layout.pci_mmio32, range(0xc000_0000, 0x2000_0000));
    assert_eq!(layout.pci_ecam, range(0xe000_0000, MIB));
    assert_eq!(layout.msi_frame.size, 0);
}

/// Found by `cargo xtask fuzz` (config-validate): on x86_64 the windows do not move, and a
/// third `vdev shmem` made the shared-memory windows (0x60_0000_0000 + 64 GiB each) reach the
/// PCI 64-bit window at 0x80_0000_0000, where ivshmem's BAR2 maps its region: the third
/// device's attachments would have landed on it. Refused at the last `vdev shmem`.
#[test]
fn x86_shmem_windows_never_reach_the_64_bit_window() {
    let system = at(1);
    let shmem_line = at(9);
    for (devices, refused) in [(2, false), (3, true), (4, true)] {
        let mut errors = Errors::new();
        let layout = place(
            Arch::X86_64,
            1,
            &[],
            (devices, Some(&shmem_line)),
            &system,
            &mut errors,
        );
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        if refused {
            assert_eq!(errors.len(), 1, "{devices}: {errors:?}");
            assert!(
                errors[0].starts_with("cfg/vm.qvmconf:9: the shared-memory windows (0x6000000000-")
                    && errors[0].contains("would overlap the PCI 64-bit window"),
                "{errors:?}"
            );
        } else {
            assert_eq!(errors, Vec::<String>::new());
            assert!(!layout.shmem_windows.overlaps(&layout.pci_mmio64));
        }
    }
}
