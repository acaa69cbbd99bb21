//! Unit tests of the validator: one per rule, plus a complete system.

use std::path::{Path, PathBuf};

use crate::model::{Arch, Console, Interrupt, MemoryRange, Region, System, UartLocation, Vdev};
use crate::{Errors, parse_board, parse_vm, validate};

/// 4 CPUs, 1 GiB at 0x4000_0000 of which the hypervisor keeps the first 16 MiB.
const ARM: &str = "\
board virt
arch aarch64
cpus 4
ram 0x40000000,1G
hypervisor 0x40000000,16M
shmem-pool 4M
console pl011 loc 0x09000000
";

/// 2 CPUs, low memory and 1 GiB from 1 MiB, of which the hypervisor keeps 15 MiB.
const PC: &str = "\
board pc
arch x86_64
cpus 2
ram 0,0x9f000
ram 0x100000,0x3ff00000
hypervisor 0x100000,0xf00000
console 8250 port 0x3f8
";

fn accept_all(load: &str) -> Result<PathBuf, String> {
    Ok(Path::new("images").join(load))
}

fn build(board: &str, vms: &[&str]) -> Result<System, Errors> {
    let mut board_text = board.to_string();
    for index in 0..vms.len() {
        board_text.push_str(&format!("vm vm{index}.qvmconf\n"));
    }
    let board = parse_board(Path::new("cfg/board.board"), &board_text).unwrap();
    let vms = vms
        .iter()
        .enumerate()
        .map(|(index, text)| {
            parse_vm(&PathBuf::from(format!("cfg/vm{index}.qvmconf")), text).unwrap()
        })
        .collect();
    validate(board, vms, &accept_all)
}

fn errors(board: &str, vms: &[&str]) -> Vec<String> {
    match build(board, vms) {
        Ok(system) => panic!("expected errors, got {system:#?}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// Asserts exactly one error, starting `file:line: ` and containing `needle`.
#[track_caller]
fn assert_error(board: &str, vms: &[&str], place: &str, needle: &str) {
    let found = errors(board, vms);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].starts_with(&format!("{place}: ")),
        "expected {place} in {found:#?}"
    );
    assert!(
        found[0].contains(needle),
        "expected `{needle}` in {found:#?}"
    );
}

/// A VM named `name` with `extra` lines after four fixed ones (system, ram 64M, cpu, load).
fn vm(name: &str, extra: &str) -> String {
    format!("system {name}\nram 64M\ncpu\nload {name}.img\n{extra}")
}

#[test]
fn complete_system() {
    let ping = vm(
        "ping",
        "vdev pl011\nvdev shmem\n  create TEST1,0x100000\n  allow test*\nvdev shmem loc 0x10000000 intr gic:40\nvdev ivshmem-doorbell name pingpong size 1M vectors 2\n",
    );
    let pong = "system pong\nram 0x80000000,32M\ncpu runmask 0\nload pong.img\nfault-policy restart\nvdev pl011 loc 0x09000000 intr gic:33\nvdev shmem create TEST1,1M\nvdev ivshmem-doorbell name pingpong size 1M\n";
    let system = build(ARM, &[&ping, pong]).unwrap();
    assert_eq!(system.board.arch.value, Arch::Aarch64);
    assert_eq!(
        system.board.console.as_ref().map(|c| c.value),
        Some(Console::Pl011 { base: 0x0900_0000 })
    );
    let [ping, pong] = &system.vms[..] else {
        panic!()
    };
    assert_eq!(ping.name, "ping");
    assert_eq!(ping.path, PathBuf::from("cfg/vm0.qvmconf"));
    assert_eq!(ping.image.path, PathBuf::from("images/ping.img"));
    assert_eq!(ping.image.load, "ping.img");
    // Guest RAM at the aarch64 default, host RAM first fit after the reserve.
    assert_eq!(
        (
            ping.ram[0].guest_base,
            ping.ram[0].size,
            ping.ram[0].host_base
        ),
        (0x4000_0000, 64 << 20, 0x4100_0000)
    );
    assert!(!ping.ram[0].pinned);
    assert_eq!(
        (pong.ram[0].guest_base, pong.ram[0].host_base),
        (0x8000_0000, 0x4500_0000)
    );
    // pong pins CPU 0, so ping's plain `cpu` gets CPU 1.
    assert_eq!(
        ping.vcpus
            .iter()
            .map(|v| v.physical_cpu)
            .collect::<Vec<_>>(),
        [1]
    );
    assert_eq!(
        pong.vcpus
            .iter()
            .map(|v| (v.physical_cpu, v.pinned))
            .collect::<Vec<_>>(),
        [(0, true)]
    );
    assert_eq!(pong.fault_policy, crate::FaultPolicy::Restart);
    let Vdev::Pl011(console) = &ping.vdevs[0] else {
        panic!()
    };
    assert_eq!(console.base.value, 0x0900_0000);
    assert_eq!(
        system.regions,
        [
            Region {
                name: "TEST1".into(),
                size: 1 << 20,
                at: crate::Location::new("cfg/vm0.qvmconf", 7)
            },
            Region {
                name: "pingpong".into(),
                size: 1 << 20,
                at: crate::Location::new("cfg/vm0.qvmconf", 10)
            },
        ]
    );
    assert_eq!(
        system.free_ram,
        [MemoryRange {
            base: 0x4700_0000,
            size: 0x3900_0000
        }]
    );
}

#[test]
fn x86_defaults() {
    let guest = vm(
        "pc",
        "vdev ioapic intr apic name myioapic\nvdev ser8250 intr myioapic:4\n",
    );
    let system = build(PC, &[&guest]).unwrap();
    let vm = &system.vms[0];
    // Guest RAM at 0, host RAM 2 MiB aligned after the reserve (low memory is too small).
    assert_eq!((vm.ram[0].guest_base, vm.ram[0].host_base), (0, 0x100_0000));
    let Vdev::IoApic(ioapic) = &vm.vdevs[0] else {
        panic!()
    };
    assert_eq!(ioapic.base.value, crate::IOAPIC_DEFAULT_BASE);
    let Vdev::Uart8250(uart) = &vm.vdevs[1] else {
        panic!()
    };
    assert_eq!(uart.location.value, UartLocation::Port(0x3f8));
    assert_eq!(
        uart.intr.as_ref().map(ToString::to_string),
        Some("myioapic:4".to_string())
    );
}

#[test]
fn ram_without_gpa_follows_the_previous_ram() {
    let text = "system a\nram 16M\nram 0x60000000,4M\nram 8M\ncpu\nload a\n";
    let system = build(ARM, &[text]).unwrap();
    let guest: Vec<u64> = system.vms[0].ram.iter().map(|r| r.guest_base).collect();
    assert_eq!(guest, [0x4000_0000, 0x6000_0000, 0x6040_0000]);
}

#[test]
fn host_allocation_is_first_fit_and_2m_aligned_when_the_size_allows() {
    // A 2 MiB ram needs a 2 MiB-aligned guest base too, or blocks would not line up; the
    // last one (guest 0x40402000) is placed 4 KiB-aligned, after the gap it does not fit in.
    let text = "system a\nram 4K\nram 0x40200000,2M\nram 8K\nram 2M\ncpu\nload a\n";
    let system = build(ARM, &[text]).unwrap();
    let host: Vec<u64> = system.vms[0].ram.iter().map(|r| r.host_base).collect();
    assert_eq!(host, [0x4100_0000, 0x4120_0000, 0x4100_1000, 0x4140_0000]);
    // No 2 MiB-aligned room: fall back to 4 KiB alignment.
    let board =
        "board b\narch aarch64\ncpus 1\nram 0x40000000,0x201000\nhypervisor 0x40000000,4K\n";
    let system = build(board, &["system a\nram 2M\ncpu\nload a\n"]).unwrap();
    assert_eq!(system.vms[0].ram[0].host_base, 0x4000_1000);
}

#[test]
fn pinned_host_ram_is_reserved_before_allocation() {
    let first = "system a\nram 64M\ncpu\nload a\n";
    let second = "system b\nram 32M host 0x41000000\ncpu\nload b\n";
    let system = build(ARM, &[first, second]).unwrap();
    assert_eq!(system.vms[0].ram[0].host_base, 0x4300_0000);
    assert_eq!(
        (system.vms[1].ram[0].host_base, system.vms[1].ram[0].pinned),
        (0x4100_0000, true)
    );
}

#[test]
fn host_ram_overlapping_another_vm() {
    let first = "system a\nram 32M host 0x48000000\ncpu\nload a\n";
    let second = "system b\nram 16M\nram 32M host 0x49000000\ncpu\nload b\n";
    assert_error(
        ARM,
        &[first, second],
        "cfg/vm1.qvmconf:3",
        "host RAM 0x49000000-0x4affffff overlaps RAM of VM `a`, 0x48000000-0x49ffffff (cfg/vm0.qvmconf:2)",
    );
    let same = "system a\nram 32M host 0x48000000\nram 32M host 0x49000000\ncpu\nload a\n";
    assert_error(
        ARM,
        &[same],
        "cfg/vm0.qvmconf:3",
        "overlaps another ram of this VM",
    );
}

#[test]
fn host_ram_overlapping_the_hypervisor_reserve() {
    let text = "system a\nram 32M host 0x40000000\ncpu\nload a\n";
    assert_error(
        ARM,
        &[text],
        "cfg/vm0.qvmconf:2",
        "host RAM 0x40000000-0x41ffffff overlaps the hypervisor's reserve 0x40000000-0x40ffffff (cfg/board.board:5)",
    );
}

#[test]
fn host_ram_outside_board_ram() {
    let text = "system a\nram 32M host 0x7f000000\ncpu\nload a\n";
    assert_error(
        ARM,
        &[text],
        "cfg/vm0.qvmconf:2",
        "host RAM 0x7f000000-0x80ffffff lies outside board RAM (0x40000000-0x7fffffff)",
    );
}

#[test]
fn not_enough_board_ram() {
    let big = "system a\nram 1G\ncpu\nload a\n";
    assert_error(
        ARM,
        &[big],
        "cfg/vm0.qvmconf:2",
        "no room in board RAM for this ram (1 GiB): 1008 MiB left in all, the largest free block is 1008 MiB",
    );
}

#[test]
fn guest_rams_overlapping() {
    let text = "system a\nram 0x40000000,64M\nram 0x42000000,4K\ncpu\nload a\n";
    assert_error(
        ARM,
        &[text],
        "cfg/vm0.qvmconf:3",
        "guest-physical ram 0x42000000-0x42000fff overlaps ram 0x40000000-0x43ffffff (line 2)",
    );
}

#[test]
fn guest_ram_overlapping_a_vdev_loc() {
    let text = vm(
        "a",
        "vdev shmem\n  create A,4K\n  loc 0x40001000\n  intr gic:40\n",
    );
    assert_error(
        ARM,
        &[&text],
        "cfg/vm0.qvmconf:7",
        "guest-physical vdev shmem at 0x40001000 overlaps ram 0x40000000-0x43ffffff (line 2)",
    );
    // A device written before the ram: reported at the ram, the later line.
    let text = "system a\nvdev pl011 loc 0x40000000\nram 64M\ncpu\nload a\n";
    assert_error(
        ARM,
        &[text],
        "cfg/vm0.qvmconf:3",
        "guest-physical ram 0x40000000-0x43ffffff overlaps vdev pl011 at 0x40000000 (line 2)",
    );
}

#[test]
fn the_seed_mmio_example_moves_the_pci_window_around_its_loc() {
    // shared/seeds/000: `vdev shmem create TEST1,0xf0000 loc 0x10000000 intr ...`.
    let text = vm(
        "seed",
        "vdev shmem\n  create TEST1,0xf0000\n  loc 0x10000000\n  intr gic:40\n",
    );
    let system = build(ARM, &[&text]).unwrap();
    let layout = system.vms[0].layout;
    assert_eq!(
        layout.pci_mmio32,
        MemoryRange {
            base: 0x1001_0000,
            size: 0x2efe_0000
        }
    );
    assert_eq!(layout.pci_ecam.base, 0x3f00_0000);
    assert_eq!(layout.shmem_windows.base, 0x60_0000_0000);
}

#[test]
fn a_vdev_loc_on_the_gic_fails_at_its_line() {
    let text = vm(
        "a",
        "vdev shmem\n  create A,4K\n  loc 0x08010000\n  intr gic:40\n",
    );
    assert_error(
        ARM,
        &[&text],
        "cfg/vm0.qvmconf:7",
        "guest-physical 0x8010000-0x8011000 overlaps the GICv2 CPU interface (0x8010000-0x8012000)",
    );
}

#[test]
fn vdevs_overlapping_each_other() {
    let text = vm("a", "vdev pl011\nvdev shmem loc 0x09000000 intr gic:40\n");
    assert_error(
        ARM,
        &[&text],
        "cfg/vm0.qvmconf:6",
        "vdev shmem at 0x9000000 overlaps vdev pl011 at 0x9000000 (line 5)",
    );
    let text = vm("a", "vdev ser8250\nvdev ser8250 loc 0x3fc\n");
    assert_error(
        PC,
        &[&text],
        "cfg/vm0.qvmconf:6",
        "I/O port vdev ser8250 at port 0x3fc overlaps vdev ser8250 at port 0x3f8 (line 5)",
    );
}

#[test]
fn mmio_loc_must_be_page_aligned() {
    let text = vm("a", "vdev pl011 loc 0x09000800\n");
    assert_error(
        ARM,
        &[&text],
        "cfg/vm0.qvmconf:5",
        "vdev pl011 loc 0x9000800 is not 4 KiB page-aligned (the hypervisor traps whole pages)",
    );
    let text = vm("a", "vdev pl011 loc 0xfffffffffffff000\n");
    assert_error(
        ARM,
        &[&text],
        "cfg/vm0.qvmconf:5",
        "overflows the 64-bit address space",
    );
}

#[test]
fn arch_specific_devices() {
    assert_error(
        PC,
        &[&vm("a", "vdev pl011\n")],
        "cfg/vm0.qvmconf:5",
        "vdev pl011 needs `loc ADDR` on x86_64",
    );
    let system = build(PC, &[&vm("a", "vdev pl011 loc 0xfe000000\n")]).unwrap();
    assert!(matches!(&system.vms[0].vdevs[0], Vdev::Pl011(p) if p.base.value == 0xfe00_0000));
    assert_error(
        ARM,
        &[&vm("a", "vdev ser8250\n")],
        "cfg/vm0.qvmconf:5",
        "vdev ser8250 needs `loc ADDR` on aarch64",
    );
    let system = build(
        ARM,
        &[&vm("a", "vdev ser8250 loc 0x09001000 intr gic:34\n")],
    )
    .unwrap();
    assert!(
        matches!(&system.vms[0].vdevs[0], Vdev::Uart8250(u) if u.location.value == UartLocation::Mmio(0x0900_1000))
    );
    assert_error(
        PC,
        &[&vm("a", "vdev ser8250 loc 0xfffc\n")],
        "cfg/vm0.qvmconf:5",
        "vdev ser8250 port 0xfffc is out of range",
    );
    assert_error(
        ARM,
        &[&vm("a", "vdev ioapic intr gic\n")],
        "cfg/vm0.qvmconf:5",
        "vdev ioapic exists only on x86_64",
    );
}

#[test]
fn cpus_are_pinned_then_handed_out_lowest_first() {
    let first = "system a\nram 4M\ncpu\ncpu runmask 2\nload a\n";
    let second = "system b\nram 4M\ncpu runmask 0\ncpu\nload b\n";
    let system = build(ARM, &[first, second]).unwrap();
    let cpus = |index: usize| {
        system.vms[index]
            .vcpus
            .iter()
            .map(|v| v.physical_cpu)
            .collect::<Vec<_>>()
    };
    assert_eq!(cpus(0), [1, 2]);
    assert_eq!(cpus(1), [0, 3]);
}

#[test]
fn cpu_given_to_two_vms() {
    let first = "system a\nram 4M\ncpu runmask 1\nload a\n";
    let second = "system b\nram 4M\ncpu runmask 1\nload b\n";
    assert_error(
        ARM,
        &[first, second],
        "cfg/vm1.qvmconf:3",
        "physical CPU 1 is already given to VM `a` (cfg/vm0.qvmconf:3); static partitioning gives each CPU to one vCPU",
    );
    let twice = "system a\nram 4M\ncpu runmask 1\ncpu runmask 1\nload a\n";
    assert_error(
        ARM,
        &[twice],
        "cfg/vm0.qvmconf:4",
        "already given to another vCPU of this VM (cfg/vm0.qvmconf:3)",
    );
}

#[test]
fn cpu_not_on_the_board() {
    let text = "system a\nram 4M\ncpu runmask 5\nload a\n";
    assert_error(
        ARM,
        &[text],
        "cfg/vm0.qvmconf:3",
        "physical CPU 5 does not exist: the board has 4 CPUs (0-3)",
    );
}

#[test]
fn no_cpu_left() {
    let first = "system a\nram 4M\ncpu\ncpu\ncpu runmask 3\nload a\n";
    let second = "system b\nram 4M\ncpu runmask 0\ncpu\nload b\n";
    assert_error(
        ARM,
        &[first, second],
        "cfg/vm1.qvmconf:4",
        "no physical CPU left for this vCPU: all 4 CPUs of the board are given out",
    );
}

#[test]
fn image_that_does_not_exist() {
    let board = parse_board(Path::new("b.board"), &format!("{ARM}vm a\n")).unwrap();
    let vm = parse_vm(Path::new("a.qvmconf"), &vm("a", "")).unwrap();
    let missing =
        |load: &str| -> Result<PathBuf, String> { Err(format!("no file `{load}` in out/")) };
    let errors = validate(board, vec![vm], &missing).unwrap_err();
    assert_eq!(
        errors.to_string(),
        "a.qvmconf:4: image `a.img` does not exist: no file `a.img` in out/"
    );
}

#[test]
fn initrd_is_resolved_like_the_image() {
    let system = build(ARM, &[&vm("a", "initrd rd.cpio\n"), &vm("b", "")]).unwrap();
    let initrd = system.vms[0].initrd.as_ref().unwrap();
    assert_eq!(initrd.load, "rd.cpio");
    assert_eq!(initrd.path, Path::new("images/rd.cpio"));
    assert_eq!(initrd.at.to_string(), "cfg/vm0.qvmconf:5");
    assert!(system.vms[1].initrd.is_none());

    let board = parse_board(Path::new("b.board"), &format!("{ARM}vm a\n")).unwrap();
    let vm = parse_vm(Path::new("a.qvmconf"), &vm("a", "initrd rd.cpio\n")).unwrap();
    let only_images = |load: &str| -> Result<PathBuf, String> {
        if load == "rd.cpio" {
            Err("no file `rd.cpio` in out/".into())
        } else {
            Ok(PathBuf::from(load))
        }
    };
    let errors = validate(board, vec![vm], &only_images).unwrap_err();
    assert_eq!(
        errors.to_string(),
        "a.qvmconf:5: initrd `rd.cpio` does not exist: no file `rd.cpio` in out/"
    );
}

#[test]
fn initrd_only_on_aarch64() {
    assert_error(
        PC,
        &[&vm("a", "initrd rd.cpio\n")],
        "cfg/vm0.qvmconf:5",
        "`initrd` is only supported on aarch64",
    );
}

#[test]
fn interrupt_controllers() {
    assert_error(
        ARM,
        &[&vm("a", "vdev pl011 intr apic:33\n")],
        "cfg/vm0.qvmconf:5",
        "unknown interrupt controller `apic` (this VM has: gic)",
    );
    assert_error(
        PC,
        &[&vm("a", "vdev ser8250 intr gic:4\n")],
        "cfg/vm0.qvmconf:5",
        "unknown interrupt controller `gic` (this VM has: apic)",
    );
    assert_error(
        PC,
        &[&vm(
            "a",
            "vdev ioapic intr apic name io0\nvdev ser8250\n  intr io1:4\n",
        )],
        "cfg/vm0.qvmconf:7",
        "unknown interrupt controller `io1` (this VM has: apic, io0)",
    );
    // An ioapic declared after its user still counts.
    assert!(
        build(
            PC,
            &[&vm(
                "a",
                "vdev ser8250 intr io0:4\nvdev ioapic intr apic name io0\n"
            )]
        )
        .is_ok()
    );
    assert_error(
        PC,
        &[&vm("a", "vdev ioapic intr pic\n")],
        "cfg/vm0.qvmconf:5",
        "unknown interrupt controller `pic` (this VM has: apic, ioapic)",
    );
    assert_error(
        PC,
        &[&vm("a", "vdev ioapic intr ioapic\n")],
        "cfg/vm0.qvmconf:5",
        "ioapic `ioapic` cannot deliver to itself",
    );
    assert_error(
        PC,
        &[&vm(
            "a",
            "vdev ioapic intr apic\nvdev ioapic loc 0xfec01000 intr apic\n",
        )],
        "cfg/vm0.qvmconf:6",
        "ioapic name `ioapic` is already used at line 5",
    );
    assert_error(
        PC,
        &[&vm("a", "vdev ioapic intr apic name apic\n")],
        "cfg/vm0.qvmconf:5",
        "ioapic name `apic` is the name of the built-in controller",
    );
}

#[test]
fn interrupt_numbers() {
    assert_error(
        ARM,
        &[&vm("a", "vdev pl011 intr gic:27\n")],
        "cfg/vm0.qvmconf:5",
        "interrupt gic:27 is out of range: GIC SPIs are 32-1019",
    );
    assert_error(
        PC,
        &[&vm("a", "vdev ser8250 intr apic:4\n")],
        "cfg/vm0.qvmconf:5",
        "interrupt apic:4 is out of range: local APIC vectors are 32-255",
    );
    assert_error(
        PC,
        &[&vm(
            "a",
            "vdev ioapic intr apic\nvdev ser8250 intr ioapic:24\n",
        )],
        "cfg/vm0.qvmconf:6",
        "I/O APIC pins are 0-23",
    );
    assert_error(
        ARM,
        &[&vm(
            "a",
            "vdev pl011 intr gic:40\nvdev shmem\n  loc 0x10000000\n  intr gic:40\n",
        )],
        "cfg/vm0.qvmconf:8",
        "interrupt gic:40 is already used by vdev pl011 at line 5",
    );
    // Each VM has its own interrupt numbers.
    let system = build(
        ARM,
        &[
            &vm("a", "vdev pl011 intr gic:40\n"),
            &vm("b", "vdev pl011 intr gic:40\n"),
        ],
    )
    .unwrap();
    let Vdev::Pl011(pl011) = &system.vms[1].vdevs[0] else {
        panic!()
    };
    assert!(matches!(&pl011.intr, Some(Interrupt { number: 40, .. })));
}

#[test]
fn duplicate_vm_names() {
    assert_error(
        ARM,
        &[&vm("a", ""), &vm("a", "")],
        "cfg/vm1.qvmconf:1",
        "VM name `a` is already used at cfg/vm0.qvmconf:1",
    );
}

#[test]
fn region_created_with_two_sizes() {
    let first = vm("a", "vdev shmem create TEST1,1M\n");
    let second = vm("b", "vdev shmem\n  create TEST1,2M\n");
    assert_error(
        ARM,
        &[&first, &second],
        "cfg/vm1.qvmconf:6",
        "region `TEST1` is created here with size 2 MiB, but with size 1 MiB at cfg/vm0.qvmconf:5",
    );
    // Same size: one region.
    let system = build(ARM, &[&first, &vm("b", "vdev shmem create TEST1,1M\n")]).unwrap();
    assert_eq!(system.regions.len(), 1);
}

#[test]
fn region_sizes_compare_host_names_after_subst() {
    // Both guests see `foomem`; subst makes them two host regions, so sizes may differ.
    let first = vm("a", "vdev shmem subst foo,guest0 create foomem,1M\n");
    let second = vm("b", "vdev shmem subst foo,guest1 create foomem,2M\n");
    let system = build(ARM, &[&first, &second]).unwrap();
    let names: Vec<&str> = system.regions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["guest0mem", "guest1mem"]);
    // Different guest names that become one host name must agree.
    let third = vm("c", "vdev shmem subst ,guest0 create mem,4K\n");
    assert_error(
        ARM,
        &[&first, &third],
        "cfg/vm1.qvmconf:5",
        "region `guest0mem` is created here with size 4 KiB, but with size 1 MiB at cfg/vm0.qvmconf:5",
    );
}

#[test]
fn ivshmem_and_create_share_one_namespace() {
    let first = vm("a", "vdev shmem create ring,1M\n");
    let second = vm("b", "vdev ivshmem-plain\n  name ring\n  size 2M\n");
    assert_error(
        ARM,
        &[&first, &second],
        "cfg/vm1.qvmconf:7",
        "region `ring` is created here with size 2 MiB, but with size 1 MiB",
    );
}

#[test]
fn shmem_creates_larger_than_board_ram_left() {
    // 1008 MiB free after the reserve; 900 + 64 MiB of VM RAM leave 44, the pool takes 4.
    let first = "system a\nram 900M\ncpu\nload a\nvdev shmem create big,16M\n";
    let second = vm("b", "vdev shmem create bigger,64M\n");
    let found = errors(ARM, &[first, &second]);
    assert_eq!(
        found,
        [
            "cfg/vm1.qvmconf:5: shared-memory regions created at start-up plus shmem-pool (4 MiB) need 84 MiB by here, but only 44 MiB of board RAM is left after the VMs and the hypervisor's reserve"
        ],
        "{found:#?}"
    );
    assert!(build(ARM, &[first]).is_ok());
}

#[test]
fn shmem_pool_larger_than_board_ram_left() {
    let board = ARM.replace("shmem-pool 4M", "shmem-pool 2G");
    assert_error(
        &board,
        &[&vm("a", "")],
        "cfg/board.board:6",
        "shmem-pool of 2 GiB does not fit: only 944 MiB of board RAM is left",
    );
}

#[test]
fn board_ram_checks() {
    let overlapping = format!("{ARM}ram 0x60000000,1G\n");
    assert_error(
        &overlapping,
        &[&vm("a", "")],
        "cfg/board.board:8",
        "board ram 0x60000000-0x9fffffff overlaps board ram 0x40000000-0x7fffffff (line 4)",
    );
    let outside = ARM.replace("hypervisor 0x40000000,16M", "hypervisor 0x3f000000,32M");
    assert_error(
        &outside,
        &[&vm("a", "")],
        "cfg/board.board:5",
        "hypervisor reserve 0x3f000000-0x40ffffff lies outside board RAM (0x40000000-0x7fffffff)",
    );
    // Adjacent board RAM ranges join up.
    let split = "board b\narch aarch64\ncpus 1\nram 0x40000000,16M\nram 0x41000000,16M\nhypervisor 0x40000000,4M\n";
    let system = build(split, &["system a\nram 16M host 0x40800000\ncpu\nload a\n"]).unwrap();
    assert_eq!(
        system.free_ram,
        [
            MemoryRange {
                base: 0x4040_0000,
                size: 0x40_0000
            },
            MemoryRange {
                base: 0x4180_0000,
                size: 0x80_0000
            }
        ]
    );
}

#[test]
fn console_checks() {
    let arm_8250 = ARM.replace("console pl011 loc 0x09000000", "console 8250 port 0x3f8");
    assert_error(
        &arm_8250,
        &[&vm("a", "")],
        "cfg/board.board:7",
        "`console 8250 port N` needs I/O ports, which aarch64 does not have",
    );
    let in_ram = ARM.replace("loc 0x09000000", "loc 0x50000000");
    assert_error(
        &in_ram,
        &[&vm("a", "")],
        "cfg/board.board:7",
        "console pl011 at 0x50000000 lies inside board RAM",
    );
}

#[test]
fn errors_of_all_vms_are_collected() {
    let first = "system a\nram 4M\ncpu runmask 9\nload a\nvdev pl011 intr gic:3\n";
    let second = "system a\nram 4M\ncpu\nload a\n";
    let found = errors(ARM, &[first, second]);
    assert_eq!(
        found
            .iter()
            .map(|e| e.split(": ").next().unwrap())
            .collect::<Vec<_>>(),
        [
            "cfg/vm1.qvmconf:1",
            "cfg/vm0.qvmconf:3",
            "cfg/vm0.qvmconf:5"
        ],
        "{found:#?}"
    );
}
