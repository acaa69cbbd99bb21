//! Loads the example configuration in tests/examples/ from disk, and checks I/O errors.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use std::path::{Path, PathBuf};

use bulkhead_config::{Arch, FaultPolicy, Interrupt, Location, MemoryRange, Vdev, load_system};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/examples")
}

/// Accepts any image: the examples name images xtask has not built.
fn any_image(load: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(load))
}

#[test]
fn example_system_loads() {
    let board_path = examples().join("board.board");
    let system = load_system(&board_path, &any_image).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(system.board.name.value, "qemu-virt");
    assert_eq!(system.board.arch.value, Arch::Aarch64);
    assert_eq!(system.board.shmem_pool_size(), 16 << 20);
    let [ping, pong] = &system.vms[..] else {
        panic!("{:?}", system.vms)
    };
    assert_eq!(ping.name, "ping");
    assert_eq!(ping.path, examples().join("ping.qvmconf"));
    assert_eq!(ping.image.path, PathBuf::from("guests/pingpong/ping"));
    assert_eq!(ping.fault_policy, FaultPolicy::Restart);
    assert_eq!(pong.fault_policy, FaultPolicy::Stop);

    // CPUs: ping pins 1, pong pins 0, ping's second vCPU gets the lowest left: 2.
    let cpus: Vec<u32> = ping.vcpus.iter().map(|vcpu| vcpu.physical_cpu).collect();
    assert_eq!(cpus, [1, 2]);
    assert_eq!(pong.vcpus[0].physical_cpu, 0);

    // RAM: ping allocated right after the hypervisor's 32 MiB, pong pinned.
    assert_eq!(
        (ping.ram[0].guest_base, ping.ram[0].host_base),
        (0x4000_0000, 0x4200_0000)
    );
    assert_eq!(
        (pong.ram[0].guest_base, pong.ram[0].host_base),
        (0x4000_0000, 0x6000_0000)
    );
    assert!(pong.ram[0].pinned);

    // Devices.
    let Vdev::Shmem(shmem) = &ping.vdevs[1] else {
        panic!("{:?}", ping.vdevs)
    };
    assert_eq!(shmem.creates[0].name, "TEST1");
    assert_eq!(shmem.creates[0].host_name, "ping-TEST1");
    let rules: Vec<(bool, &str)> = shmem
        .rules
        .iter()
        .map(|rule| (rule.allow, rule.glob.as_str()))
        .collect();
    assert_eq!(rules, [(false, "pluto"), (true, "pluto*"), (true, "TEST*")]);
    assert_eq!(shmem.mmio, None);
    let Vdev::Pl011(console) = &pong.vdevs[0] else {
        panic!("{:?}", pong.vdevs)
    };
    assert_eq!(console.base.value, 0x0900_0000);
    let Vdev::Shmem(mmio) = &pong.vdevs[1] else {
        panic!("{:?}", pong.vdevs)
    };
    let mmio = mmio.mmio.as_ref().unwrap();
    assert_eq!(mmio.base.value, 0x1000_0000);
    assert_eq!(
        mmio.intr,
        Interrupt {
            controller: "gic".into(),
            number: 40,
            at: Location::new(examples().join("pong.qvmconf"), 7),
        }
    );
    let Vdev::Ivshmem(doorbell) = &pong.vdevs[2] else {
        panic!("{:?}", pong.vdevs)
    };
    assert_eq!(doorbell.doorbell_vectors, Some(2));
    assert_eq!(doorbell.size.at.line, 12);

    // Regions: one per host name, the shared ivshmem region once.
    let regions: Vec<(&str, u64)> = system
        .regions
        .iter()
        .map(|r| (r.name.as_str(), r.size))
        .collect();
    assert_eq!(
        regions,
        [
            ("ping-TEST1", 1 << 20),
            ("pingpong", 1 << 20),
            ("shared", 2 << 20)
        ]
    );

    // Free RAM: everything but the reserve and the two VMs.
    assert_eq!(
        system.free_ram,
        [
            MemoryRange {
                base: 0x4600_0000,
                size: 0x1a00_0000
            },
            MemoryRange {
                base: 0x6200_0000,
                size: 0x5e00_0000
            },
        ]
    );
}

#[test]
fn missing_board_file() {
    let path = examples().join("no-such.board");
    let errors = load_system(&path, &any_image).unwrap_err();
    assert_eq!(errors.len(), 1);
    let message = errors.to_string();
    assert!(
        message.starts_with(&format!("{}: cannot read board file: ", path.display())),
        "{message}"
    );
}

/// A scratch directory for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("bulkhead-config-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn missing_vm_file_is_reported_at_its_vm_line() {
    let scratch = Scratch::new("missing-vm");
    let board = scratch.write(
        "b.board",
        "board b\narch aarch64\ncpus 1\nram 0x40000000,1G\nhypervisor 0x40000000,16M\nvm gone.qvmconf\n",
    );
    let errors = load_system(&board, &any_image).unwrap_err();
    let message = errors.to_string();
    let expected = format!(
        "{}:6: cannot read VM file `{}`: ",
        board.display(),
        scratch.0.join("gone.qvmconf").display()
    );
    assert!(message.starts_with(&expected), "{message}");
}

#[test]
fn parse_errors_of_every_file_are_reported_together() {
    let scratch = Scratch::new("parse-errors");
    let board = scratch.write(
        "b.board",
        "board b\narch aarch64\ncpus 2\nram 0x40000000,1G\nhypervisor 0x40000000,16M\nvm a.qvmconf\nvm b.qvmconf\n",
    );
    let a = scratch.write("a.qvmconf", "system a\nram 64M\ncpu runmask 0-1\nload a\n");
    let b = scratch.write("b.qvmconf", "system b\nram 64X\ncpu\nload b\n");
    let errors = load_system(&board, &any_image).unwrap_err();
    let places: Vec<(PathBuf, u32)> = errors.iter().map(|d| (d.file.clone(), d.line)).collect();
    assert_eq!(places, [(a, 3), (b, 2)]);
}

#[test]
fn validation_errors_carry_file_and_line() {
    let scratch = Scratch::new("validation");
    let board = scratch.write(
        "b.board",
        "board b\narch aarch64\ncpus 4\nram 0x40000000,1G\nhypervisor 0x40000000,16M\nvm a.qvmconf\n",
    );
    scratch.write("a.qvmconf", "system a\nram 64M\ncpu runmask 5\nload a\n");
    let errors = load_system(&board, &any_image).unwrap_err();
    assert_eq!(
        errors.to_string(),
        format!(
            "{}:3: physical CPU 5 does not exist: the board has 4 CPUs (0-3)",
            scratch.0.join("a.qvmconf").display()
        )
    );
}

/// The board files the README's "On a board" section ships (real boards and QEMU's model of
/// the ZCU102) are valid configurations: RAM at 0, no console line (the device tree's
/// stdout-path), the demo's VM files.
#[test]
fn shipped_board_files_load() {
    let systems = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../qemu/systems");
    for (directory, board, partitions) in [
        ("demo-zcu102", "zcu102", 4),
        ("demo-zcu104", "zcu104", 4),
        ("demo-rpi4", "rpi4", 2),
        ("partitions-zcu102", "zcu102", 4),
    ] {
        let path = systems.join(directory).join("board.board");
        let system = load_system(&path, &any_image)
            .unwrap_or_else(|errors| panic!("{}: {errors}", path.display()));
        assert_eq!(system.board.name.value, board);
        assert_eq!(system.board.arch.value, Arch::Aarch64);
        assert_eq!(system.vms.len(), partitions, "{directory}");
        for vm in &system.vms {
            for ram in &vm.ram {
                assert!(
                    ram.host_base >= 32 << 20,
                    "{directory}: {} RAM at {:#x} inside the hypervisor's first 32 MiB",
                    vm.name,
                    ram.host_base
                );
            }
        }
    }
}
