//! Unit tests of partitions: PSCI, faults and restarts, console and port I/O, SGIs, the
//! stop count.

use super::*;
use crate::exit::AccessWidth;
use core::cell::RefCell;

struct Kicks(RefCell<Vec<usize>>);

impl Platform for Kicks {
    fn kick(&self, cpu: usize) {
        self.0.borrow_mut().push(cpu);
    }

    /// One partition per test: nothing rings another.
    fn deliver(&self, _partition: usize, _route: MsiRoute) {}
}

fn config(policy: FaultPolicy) -> &'static PartitionConfig {
    Box::leak(Box::new(PartitionConfig {
        name: "test",
        ram: &[],
        vcpus: &[2, 3],
        image: &[],
        image_path: "test",
        initrd: None,
        cmdline: None,
        fault_policy: policy,
        pl011: Some(0x0900_0000),
        pl011_interrupt: None,
        uart8250: Some(0x3f8),
        ioapic: None,
        shmem: &[],
        ivshmem: &[],
        windows: crate::config::GuestWindows::QEMU_VIRT,
    }))
}

/// Shared memory for tests: a 1 MiB pool at 0x8000_0000 that is never zeroed, and `board`.
fn shared_system(board: crate::pci::doorbell::DoorbellBoard) -> &'static SharedMemorySystem {
    struct NoZeroing;
    impl crate::shmem::ZeroMemory for NoZeroing {
        fn zero(&self, _range: crate::addr::PhysRange) {}
    }
    let pool = crate::addr::PhysRange::from_start_size(0x8000_0000, 0x10_0000).unwrap();
    let registry = Box::leak(Box::new(Mutex::new(Registry::new(pool, &NoZeroing))));
    Box::leak(Box::new(SharedMemorySystem {
        registry,
        board: Arc::new(Mutex::new(board)),
    }))
}

/// A GICv3 partition with one `ivshmem-doorbell` device (1 vector) on region "iv" of its own
/// board, and the device's PCI slot.
fn ivshmem_partition() -> (Partition, u8) {
    let mut board = crate::pci::doorbell::DoorbellBoard::new();
    let memory = crate::pci::ivshmem::SharedMemory {
        host: HostPhysAddr::new(0x9000_0000),
        size: 0x10_0000,
    };
    board.add_region("iv", memory).unwrap();
    let with_ivshmem = Box::leak(Box::new(PartitionConfig {
        ivshmem: &[crate::config::IvshmemConfig {
            name: "iv",
            size: 0x10_0000,
            vectors: 1,
        }],
        ..*config(FaultPolicy::Stop)
    }));
    let partition = Partition::new(
        0,
        with_ivshmem,
        InterruptModel::Gic(GicVersion::V3),
        Some(shared_system(board)),
    );
    let slot = (0u8..32)
        .find(|&slot| partition.pci.bar_address(slot, 0).is_some())
        .unwrap();
    (partition, slot)
}

fn call(function: u32, arguments: [u64; 4]) -> Exit {
    Exit::Hypercall {
        function: u64::from(function),
        arguments,
    }
}

#[test]
fn psci_cpu_on_affinity_info_and_off() {
    let partition = Partition::new(
        0,
        config(FaultPolicy::Stop),
        InterruptModel::Gic(GicVersion::V3),
        None,
    );
    let kicks = Kicks(RefCell::new(Vec::new()));
    let on = |target| call(psci::CPU_ON[1], [target, 0x4020_1000, 42, 0]);
    let info = |target| call(psci::AFFINITY_INFO[1], [target, 0, 0, 0]);
    assert_eq!(
        partition.handle_exit(0, info(0x8000_0001), &kicks),
        Action::ReturnValues([1, 0, 0, 0])
    );
    assert_eq!(
        partition.handle_exit(0, on(0x8000_0001), &kicks),
        Action::ReturnValues([0, 0, 0, 0])
    );
    assert_eq!(*kicks.0.borrow(), [3]);
    assert_eq!(
        partition.handle_exit(0, on(0x8000_0001), &kicks),
        Action::ReturnValues([-5i64 as u64, 0, 0, 0])
    );
    assert_eq!(
        partition.handle_exit(0, info(0x8000_0001), &kicks),
        Action::ReturnValues([2, 0, 0, 0])
    );
    assert_eq!(
        partition.take_start(1),
        Some(StartRequest {
            entry: 0x4020_1000,
            context: 42
        })
    );
    assert_eq!(
        partition.handle_exit(0, on(0x8000_0001), &kicks),
        Action::ReturnValues([-4i64 as u64, 0, 0, 0])
    );
    // vCPU 2 does not exist in this partition: a guest cannot reach other CPUs.
    assert_eq!(
        partition.handle_exit(0, on(0x8000_0002), &kicks),
        Action::ReturnValues([-2i64 as u64, 0, 0, 0])
    );
    assert_eq!(
        partition.handle_exit(1, call(psci::CPU_OFF, [0; 4]), &kicks),
        Action::VcpuOff
    );
    assert_eq!(partition.vcpu_state(1), Some(VcpuState::Off));
    assert_eq!(
        partition.handle_exit(0, info(0x8000_0001), &kicks),
        Action::ReturnValues([1, 0, 0, 0])
    );
}

#[test]
fn psci_version_features_and_system_off() {
    let partition = Partition::new(
        0,
        config(FaultPolicy::Stop),
        InterruptModel::Gic(GicVersion::V3),
        None,
    );
    let kicks = Kicks(RefCell::new(Vec::new()));
    assert_eq!(
        partition.handle_exit(0, call(psci::VERSION, [0; 4]), &kicks),
        Action::ReturnValues([0x1_0000, 0, 0, 0])
    );
    let features = |f: u32| call(psci::FEATURES, [u64::from(f), 0, 0, 0]);
    assert_eq!(
        partition.handle_exit(0, features(psci::CPU_ON[1]), &kicks),
        Action::ReturnValues([0, 0, 0, 0])
    );
    assert_eq!(
        partition.handle_exit(0, features(0x8000_0000), &kicks),
        Action::ReturnValues([u64::MAX, 0, 0, 0])
    );
    assert_eq!(
        partition.handle_exit(0, call(psci::SYSTEM_OFF, [0; 4]), &kicks),
        Action::StopPartition
    );
    assert_eq!(
        partition.stop_reason(),
        Some(StopReason::SystemOff { vcpu: 0 })
    );
    // Once stopped, every exit of every vCPU stops.
    assert_eq!(
        partition.handle_exit(1, Exit::WaitForInterrupt, &kicks),
        Action::StopPartition
    );
}

#[test]
fn faults_stop_or_restart_by_policy() {
    let kicks = Kicks(RefCell::new(Vec::new()));
    let stray = Exit::MmioWrite {
        address: GuestPhysAddr::new(0x1_0000),
        width: AccessWidth::Word,
        value: 1,
        syndrome: 0x9200_0046,
    };
    let stopping = Partition::new(
        0,
        config(FaultPolicy::Stop),
        InterruptModel::Gic(GicVersion::V3),
        None,
    );
    assert_eq!(
        stopping.handle_exit(0, stray, &kicks),
        Action::StopPartition
    );
    let Some(StopReason::Fault {
        vcpu: 0,
        description,
    }) = stopping.stop_reason()
    else {
        panic!()
    };
    assert!(
        description.contains("outside its map at 0x10000"),
        "{description}"
    );
    assert!(description.contains("syndrome 0x92000046"), "{description}");

    let limited = Partition::new(
        0,
        config(FaultPolicy::Restart),
        InterruptModel::Gic(GicVersion::V3),
        None,
    );
    assert_eq!(limited.runnable(1), Runnable::Park);
    assert_eq!(limited.runnable(0), Runnable::Run);
    for _ in 0..MAX_FAULT_RESTARTS {
        assert_eq!(
            limited.handle_exit(0, stray, &kicks),
            Action::RestartPartition
        );
        limited.reset_vcpus();
    }
    assert_eq!(
        limited.handle_exit(0, stray, &kicks),
        Action::StopPartition,
        "restart limit"
    );
    assert_eq!(limited.runnable(0), Runnable::Stop);
    let Some(StopReason::Fault { description, .. }) = limited.stop_reason() else {
        panic!()
    };
    assert!(
        description.contains("restart limit of 3 reached"),
        "{description}"
    );

    let restarting = Partition::new(
        0,
        config(FaultPolicy::Restart),
        InterruptModel::Gic(GicVersion::V3),
        None,
    );
    assert_eq!(
        restarting.handle_exit(0, stray, &kicks),
        Action::RestartPartition
    );
    assert!(!restarting.is_stopped());
    assert_eq!(
        restarting.handle_exit(0, call(0x8600_ff01, [0; 4]), &kicks),
        Action::RestartPartition,
        "unknown calls are faults too"
    );
}

#[test]
fn console_and_device_reads() {
    let partition = Partition::new(
        0,
        config(FaultPolicy::Stop),
        InterruptModel::Gic(GicVersion::V3),
        None,
    );
    let kicks = Kicks(RefCell::new(Vec::new()));
    let flag = Exit::MmioRead {
        address: GuestPhysAddr::new(0x0900_0018),
        width: AccessWidth::Word,
        syndrome: 0,
    };
    assert_eq!(
        partition.handle_exit(0, flag, &kicks),
        Action::CompleteRead(0x90)
    );
}

#[test]
fn port_io_reaches_the_16550_and_stray_ports_stop_the_partition() {
    let partition = Partition::new(
        0,
        config(FaultPolicy::Stop),
        InterruptModel::Gic(GicVersion::V3),
        None,
    );
    let kicks = Kicks(RefCell::new(Vec::new()));
    let out = |port, value| Exit::PortWrite {
        port,
        width: AccessWidth::Byte,
        value,
    };
    assert_eq!(
        partition.handle_exit(0, out(0x3f8, u64::from(b'h')), &kicks),
        Action::Resume
    );
    assert_eq!(
        partition.handle_exit(
            0,
            Exit::PortRead {
                port: 0x3fd,
                width: AccessWidth::Byte
            },
            &kicks
        ),
        Action::CompleteRead(0x60)
    );
    assert_eq!(
        partition.handle_exit(0, out(0x80, 0), &kicks),
        Action::StopPartition
    );
    let Some(StopReason::Fault { description, .. }) = partition.stop_reason() else {
        panic!()
    };
    assert!(
        description.contains("out of 1 bytes at I/O port 0x80: no device"),
        "{description}"
    );
}

#[test]
fn sgis_kick_the_target_cpu_and_end_its_idle() {
    let partition = Partition::new(
        0,
        config(FaultPolicy::Stop),
        InterruptModel::Gic(GicVersion::V3),
        None,
    );
    let kicks = Kicks(RefCell::new(Vec::new()));
    let gicr_sgi =
        guest_layout::GIC_REDISTRIBUTORS + guest_layout::GIC_REDISTRIBUTOR_SIZE + 0x1_0000;
    let write = |address: u64, value: u64| Exit::MmioWrite {
        address: GuestPhysAddr::new(address),
        width: AccessWidth::Word,
        value,
        syndrome: 0,
    };
    // vCPU 1 enables SGI 1 in its redistributor; the distributor enables group 1.
    assert_eq!(
        partition.handle_exit(1, write(gicr_sgi + 0x100, 1 << 1), &kicks),
        Action::Resume
    );
    assert_eq!(
        partition.handle_exit(0, write(guest_layout::GIC_DISTRIBUTOR.0, 0x12), &kicks),
        Action::Resume
    );
    assert_eq!(
        partition.handle_exit(1, Exit::WaitForInterrupt, &kicks),
        Action::Idle
    );
    // vCPU 0 sends SGI 1 to vCPU 1 (target list bit 1): vCPU 1's CPU (3) is kicked.
    let sgi = (1 << 24) | 0b10;
    assert_eq!(
        partition.handle_exit(0, Exit::SendSoftwareInterrupt { value: sgi }, &kicks),
        Action::Resume
    );
    assert_eq!(*kicks.0.borrow(), [3]);
    assert_eq!(
        partition.handle_exit(1, Exit::WaitForInterrupt, &kicks),
        Action::Resume
    );
    let mut entries = ListEntries::new();
    partition.flush_interrupts(1, 4, &mut entries, &kicks);
    assert_eq!(
        entries
            .as_slice()
            .iter()
            .map(|e| e.intid)
            .collect::<Vec<_>>(),
        [1]
    );
}

#[test]
fn last_partition_stopping_is_reported() {
    let configs: &'static [PartitionConfig] = Box::leak(Box::new([
        *config(FaultPolicy::Stop),
        *config(FaultPolicy::Stop),
    ]));
    let system = System::new(configs, InterruptModel::Gic(GicVersion::V3), None);
    assert!(!system.partition_stopped());
    assert!(system.partition_stopped());
}

/// An x86 partition: the I/O APIC at its `loc`, PCI through CF8/CFC, interrupts posted on the
/// APIC bus, EOIs reaching level pins, no GIC anywhere in its map.
#[test]
fn x86_partition_has_ioapic_config_ports_and_apic_bus() {
    let config: &'static PartitionConfig = Box::leak(Box::new(PartitionConfig {
        pl011: None,
        ioapic: Some(0xfec0_0000),
        windows: crate::config::GuestWindows::X86,
        ram: &[crate::config::RamConfig {
            guest_base: 0,
            host_base: 0x1000_0000,
            size: 0x100_0000,
        }],
        ..*config(FaultPolicy::Stop)
    }));
    let partition = Partition::new(0, config, InterruptModel::Apic, None);
    let kicks = Kicks(RefCell::new(Vec::new()));
    assert_eq!(partition.gic_version(), None);
    let write = |address: u64, value: u64| Exit::MmioWrite {
        address: GuestPhysAddr::new(address),
        width: AccessWidth::Word,
        value,
        syndrome: 0,
    };
    let read = |address: u64| Exit::MmioRead {
        address: GuestPhysAddr::new(address),
        width: AccessWidth::Word,
        syndrome: 0,
    };
    // The I/O APIC answers at its base: version register through IOREGSEL/IOWIN.
    assert_eq!(
        partition.handle_exit(0, write(0xfec0_0000, 1), &kicks),
        Action::Resume
    );
    assert_eq!(
        partition.handle_exit(0, read(0xfec0_0010), &kicks),
        Action::CompleteRead(0x0017_0020)
    );
    // Pin 5: level, vector 0x44, to vCPU 1; raising the line posts it and kicks CPU 3.
    partition.handle_exit(0, write(0xfec0_0000, 0x1b), &kicks);
    partition.handle_exit(0, write(0xfec0_0010, 1 << 24), &kicks);
    partition.handle_exit(0, write(0xfec0_0000, 0x1a), &kicks);
    partition.handle_exit(0, write(0xfec0_0010, 0x8044), &kicks);
    let bus = partition.apic_bus().unwrap();
    assert_eq!(bus.set_line(5, true), 0b10);
    assert_eq!(bus.take_posted(1)[1], 1 << 4);
    // The guest's EOI delivers again while the line stays up, and kicks vCPU 1's CPU.
    partition.end_of_interrupt(0, 0x44, &kicks);
    assert!(bus.has_posted(1));
    assert_eq!(*kicks.0.borrow(), [3]);
    // An IPI between vCPUs stays in the partition.
    partition.post_interrupt(1, 0, 0x50, &kicks);
    assert_eq!(bus.take_posted(0)[1], 1 << 0x10);
    // PCI configuration through the ports: no device in slot 0 reads all ones.
    let port_write = Exit::PortWrite {
        port: 0xcf8,
        width: AccessWidth::Word,
        value: 0x8000_0000,
    };
    assert_eq!(partition.handle_exit(0, port_write, &kicks), Action::Resume);
    assert_eq!(
        partition.handle_exit(
            0,
            Exit::PortRead {
                port: 0xcfc,
                width: AccessWidth::Word
            },
            &kicks
        ),
        Action::CompleteRead(0xffff_ffff)
    );
    // No GIC distributor in an x86 partition's map: an access there is a fault.
    assert_eq!(
        partition.handle_exit(0, read(guest_layout::GIC_DISTRIBUTOR.0), &kicks),
        Action::StopPartition
    );
}

#[test]
fn a_device_that_cannot_be_placed_is_reported_not_dropped() {
    let fine = Partition::new(
        0,
        config(FaultPolicy::Stop),
        InterruptModel::Gic(GicVersion::V3),
        None,
    );
    assert!(fine.setup_problems().is_empty());
    // A PL011 on top of the GIC distributor (the build refuses it; should one get here).
    let clash = Box::leak(Box::new(PartitionConfig {
        pl011: Some(guest_layout::GIC_DISTRIBUTOR.0),
        ..*config(FaultPolicy::Stop)
    }));
    let partition = Partition::new(0, clash, InterruptModel::Gic(GicVersion::V3), None);
    let problems = partition.setup_problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("gicd at 0x8000000-0x8010000 overlaps pl011 at 0x8000000-"),
        "{problems:?}"
    );
    // The system names the partition, for the image to fail the boot with.
    let configs: &'static [PartitionConfig] =
        Box::leak(alloc::vec![*config(FaultPolicy::Stop), *clash].into_boxed_slice());
    let system = System::new(configs, InterruptModel::Gic(GicVersion::V3), None);
    assert_eq!(system.check_setup(), Err("test"));
    let fine: &'static [PartitionConfig] =
        Box::leak(alloc::vec![*config(FaultPolicy::Stop)].into_boxed_slice());
    let system = System::new(fine, InterruptModel::Gic(GicVersion::V3), None);
    assert_eq!(system.check_setup(), Ok(()));
}

/// The QNX seed's MMIO example (`vdev shmem create TEST1,0xf0000 loc 0x10000000 intr gic:40`):
/// with the usual windows its factory page lies in the PCI 32-bit window and the partition
/// reports it (the boot fails naming both); with the windows build.rs places around the
/// `loc`, it sets up cleanly and the factory page answers at 0x10000000.
#[test]
fn the_seed_mmio_shmem_answers_at_its_loc_once_the_windows_move() {
    let shared = shared_system(crate::pci::doorbell::DoorbellBoard::new());
    let shmem: &'static [crate::config::ShmemConfig] = &[crate::config::ShmemConfig {
        rules: &[],
        substs: &[],
        creates: &[("TEST1", "TEST1", 0xf0000)],
        mmio: Some((0x1000_0000, 40)),
    }];
    let usual = Box::leak(Box::new(PartitionConfig {
        shmem,
        ..*config(FaultPolicy::Stop)
    }));
    let partition = Partition::new(0, usual, InterruptModel::Gic(GicVersion::V3), Some(shared));
    let problems = partition.setup_problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("at 0x10000000-0x10001000 overlaps pci-mmio32 at 0x10000000-"),
        "{problems:?}"
    );

    let moved = Box::leak(Box::new(PartitionConfig {
        shmem,
        windows: crate::config::GuestWindows {
            pci_mmio32: (0x1001_0000, 0x2efe_0000),
            ..crate::config::GuestWindows::QEMU_VIRT
        },
        ..*config(FaultPolicy::Stop)
    }));
    let partition = Partition::new(1, moved, InterruptModel::Gic(GicVersion::V3), Some(shared));
    assert_eq!(partition.setup_problems(), &[] as &[String]);
    let kicks = Kicks(RefCell::new(Vec::new()));
    let signature = Exit::MmioRead {
        address: GuestPhysAddr::new(0x1000_0000),
        width: AccessWidth::Double,
        syndrome: 0,
    };
    assert_eq!(
        partition.handle_exit(0, signature, &kicks),
        Action::CompleteRead(0x4d53_4732_474d_5651)
    );
    // The moved 32-bit window answers where the device tree says it starts (no BAR there:
    // all-ones), and the old start is now the factory page, not the window.
    let window = Exit::MmioRead {
        address: GuestPhysAddr::new(0x1001_0000),
        width: AccessWidth::Word,
        syndrome: 0,
    };
    assert_eq!(
        partition.handle_exit(0, window, &kicks),
        Action::CompleteRead(0xffff_ffff)
    );
}

/// Issue 13: two vCPUs of one partition, one attaching a run-time region through the QNX
/// factory page while the other detaches it through the control page. The stage-2 map of the
/// attach is slow (the platform sleeps in it); the detach must not overtake it, or the
/// partition would keep a mapping of memory the registry has already freed. The platform's
/// log shows the order in which map and unmap reached the stage 2.
#[test]
fn an_attach_racing_a_detach_never_leaves_freed_memory_mapped() {
    use crate::config::ShmemConfig;
    use crate::shmem::qnx::{control, factory};
    use core::sync::atomic::AtomicBool;
    use std::sync::Mutex as StdMutex;
    use std::time::Duration;

    struct NoZeroing;
    impl crate::shmem::ZeroMemory for NoZeroing {
        fn zero(&self, _range: crate::addr::PhysRange) {}
    }
    /// Records map/unmap in the order they reach the stage 2; a map takes 50 ms.
    #[derive(Default)]
    struct SlowMaps {
        log: StdMutex<Vec<(&'static str, u64)>>,
        mapping: AtomicBool,
    }
    impl Platform for SlowMaps {
        fn kick(&self, _cpu: usize) {}
        fn deliver(&self, _partition: usize, _route: MsiRoute) {}
        fn map_memory(
            &self,
            _partition: usize,
            guest: GuestPhysAddr,
            _host: HostPhysAddr,
            _size: u64,
        ) -> Result<(), &'static str> {
            self.mapping.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(50));
            self.log.lock().unwrap().push(("map", guest.as_u64()));
            Ok(())
        }
        fn unmap_memory(&self, _partition: usize, guest: GuestPhysAddr, _size: u64) {
            self.log.lock().unwrap().push(("unmap", guest.as_u64()));
        }
    }

    let pool = crate::addr::PhysRange::from_start_size(0x8000_0000, 0x10_0000).unwrap();
    let registry = Box::leak(Box::new(Mutex::new(Registry::new(pool, &NoZeroing))));
    let shared: &'static SharedMemorySystem = Box::leak(Box::new(SharedMemorySystem {
        registry,
        board: Arc::new(Mutex::new(crate::pci::doorbell::DoorbellBoard::new())),
    }));
    const FACTORY: u64 = 0x1000_0000;
    let shmem: &'static [ShmemConfig] = &[ShmemConfig {
        rules: &[],
        substs: &[],
        creates: &[],
        mmio: Some((FACTORY, 40)),
    }];
    let config = Box::leak(Box::new(PartitionConfig {
        shmem,
        windows: crate::config::GuestWindows {
            pci_mmio32: (0x1001_0000, 0x2efe_0000),
            ..crate::config::GuestWindows::QEMU_VIRT
        },
        ..*config(FaultPolicy::Stop)
    }));
    let partition: &'static Partition = Box::leak(Box::new(Partition::new(
        0,
        config,
        InterruptModel::Gic(GicVersion::V3),
        Some(shared),
    )));
    assert_eq!(partition.setup_problems(), &[] as &[String]);
    let platform: &'static SlowMaps = Box::leak(Box::new(SlowMaps::default()));
    let write = |vcpu: usize, address: u64, value: u64| {
        let exit = Exit::MmioWrite {
            address: GuestPhysAddr::new(address),
            width: AccessWidth::Word,
            value,
            syndrome: 0,
        };
        assert_eq!(partition.handle_exit(vcpu, exit, platform), Action::Resume);
    };
    let read = |vcpu: usize, address: u64| {
        let exit = Exit::MmioRead {
            address: GuestPhysAddr::new(address),
            width: AccessWidth::Double,
            syndrome: 0,
        };
        match partition.handle_exit(vcpu, exit, platform) {
            Action::CompleteRead(value) => value,
            other => panic!("read answered {other:?}"),
        }
    };
    // vCPU 0 attaches "RACE" (one page): the name, then the size starts the attach.
    let attach = move || {
        write(
            0,
            FACTORY + factory::NAME,
            u64::from(u32::from_le_bytes(*b"RACE")),
        );
        write(0, FACTORY + factory::SIZE, 1);
        read(0, FACTORY + factory::SHMEM)
    };
    // Once, in order, to learn where the control page lands; then detached.
    let control_page = attach();
    assert_ne!(control_page, 0);
    write(0, control_page + control::DETACH, 0);
    platform.log.lock().unwrap().clear();
    platform.mapping.store(false, Ordering::SeqCst);

    let attacher = std::thread::spawn(attach);
    // vCPU 1 detaches while vCPU 0's map is in flight.
    let mut waited = 0;
    while !platform.mapping.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
        waited += 1;
        assert!(waited < 5_000, "the attach never reached the stage 2");
    }
    write(1, control_page + control::DETACH, 0);
    assert_eq!(attacher.join().unwrap(), control_page);
    let log = platform.log.lock().unwrap().clone();
    let kinds: Vec<&str> = log.iter().map(|(kind, _)| *kind).collect();
    assert_eq!(
        kinds,
        ["map", "unmap"],
        "the detach's unmap overtook the attach's map: {log:x?}"
    );
}

/// An IPI posted to an x86 vCPU that is off is dropped when CPU_ON starts it; one posted after
/// CPU_ON returned stays posted for the new vCPU, however late its CPU takes the start.
#[test]
fn cpu_on_drops_stale_ipis_and_keeps_later_ones() {
    let config: &'static PartitionConfig = Box::leak(Box::new(PartitionConfig {
        pl011: None,
        ..*config(FaultPolicy::Stop)
    }));
    let partition = Partition::new(0, config, InterruptModel::Apic, None);
    let kicks = Kicks(RefCell::new(Vec::new()));
    let bus = partition.apic_bus().unwrap();
    partition.post_interrupt(0, 1, 0x30, &kicks);
    assert_eq!(
        partition.handle_exit(0, call(psci::CPU_ON[1], [1, 0x20_0000, 0, 0]), &kicks),
        Action::ReturnValues([0, 0, 0, 0])
    );
    assert!(!bus.has_posted(1));
    partition.post_interrupt(0, 1, 0x21, &kicks);
    assert!(partition.take_start(1).is_some());
    assert_eq!(bus.take_posted(1)[0], 1 << 0x21);
}

/// Issue 9: the fast lane answers exactly the reserved tail of an ivshmem register BAR that
/// decodes now (following the BAR when the guest moves it, nothing while memory decoding is
/// off), answers pure PSCI queries, and sends every exit of a vCPU that needs a look at its
/// run state (off, stopped) to the slow path, which gives the same answers.
#[test]
fn the_fast_lane_serves_decoding_reserved_registers_and_pure_calls_only() {
    let (partition, slot) = ivshmem_partition();
    assert_eq!(partition.setup_problems(), &[] as &[String]);
    let kicks = Kicks(RefCell::new(Vec::new()));
    let base = partition.pci.bar_address(slot, 0).unwrap().as_u64();
    let ecam = crate::config::GuestWindows::QEMU_VIRT.pci_ecam.0 + (u64::from(slot) << 15);
    let config_write = |register: u64, value: u64| {
        let exit = Exit::MmioWrite {
            address: GuestPhysAddr::new(ecam + register),
            width: AccessWidth::Word,
            value,
            syndrome: 0,
        };
        assert_eq!(partition.handle_exit(0, exit, &kicks), Action::Resume);
    };
    let slow_read = |address: u64| {
        let exit = Exit::MmioRead {
            address: GuestPhysAddr::new(address),
            width: AccessWidth::Word,
            syndrome: 0,
        };
        partition.handle_exit(0, exit, &kicks)
    };

    // Memory decoding off: nothing is published.
    assert!(!partition.fast_mmio(0, base + 0x10, 4, None, &kicks, true));
    config_write(0x04, 0x2);
    assert!(partition.fast_mmio(0, base + 0x10, 4, None, &kicks, true));
    assert!(partition.fast_mmio(0, base + 0xf8, 8, None, &kicks, true));
    assert!(
        !partition.fast_mmio(0, base + 0xfc, 8, None, &kicks, true),
        "past the BAR"
    );
    assert!(
        !partition.fast_mmio(0, base + 0x8, 4, None, &kicks, true),
        "IVPosition"
    );
    assert!(
        !partition.fast_mmio(0, base + 0xc, 2, Some(0), &kicks, true),
        "a doorbell takes words"
    );
    // The doorbell: ringing vector 0 of peer 0 (this device itself) reaches the function as
    // a slow-path ring would: without MSI-X, bit 0 of IntrStatus.
    assert_eq!(slow_read(base + 0x4), Action::CompleteRead(0));
    assert!(partition.fast_mmio(0, base + 0xc, 4, Some(0), &kicks, true));
    assert_eq!(slow_read(base + 0x4), Action::CompleteRead(1));
    assert_eq!(
        slow_read(base + 0x4),
        Action::CompleteRead(0),
        "read clears"
    );
    assert!(
        partition.fast_mmio(0, base + 0xc, 4, Some(5), &kicks, true),
        "no vector 5"
    );
    assert_eq!(slow_read(base + 0x4), Action::CompleteRead(0));
    assert_eq!(slow_read(base + 0x10), Action::CompleteRead(0));
    assert_eq!(slow_read(base + 0x8), Action::CompleteRead(0), "peer 0");

    // The guest moves BAR0: the fast lane follows.
    let moved = base + 0x1_0000;
    config_write(0x10, moved);
    assert_eq!(partition.pci.bar_address(slot, 0).unwrap().as_u64(), moved);
    assert!(!partition.fast_mmio(0, base + 0x10, 4, None, &kicks, true));
    assert!(partition.fast_mmio(0, moved + 0x10, 4, None, &kicks, true));
    config_write(0x04, 0);
    assert!(!partition.fast_mmio(0, moved + 0x10, 4, None, &kicks, true));
    config_write(0x04, 0x2);

    // Pure PSCI queries only; vCPU 1 is off (its run state needs a look).
    assert_eq!(
        partition.fast_call(0, u64::from(psci::VERSION), [0; 4]),
        Some([0x1_0000, 0, 0, 0])
    );
    assert_eq!(
        partition.fast_call(
            0,
            u64::from(psci::FEATURES),
            [u64::from(psci::CPU_ON[1]), 0, 0, 0]
        ),
        Some([0, 0, 0, 0])
    );
    assert_eq!(
        partition.fast_call(0, u64::from(psci::CPU_OFF), [0; 4]),
        None
    );
    assert_eq!(
        partition.fast_call(1, u64::from(psci::VERSION), [0; 4]),
        None
    );
    assert!(!partition.fast_mmio(1, moved + 0x10, 4, None, &kicks, true));
    let [total, ..] = partition.exit_counts(0);
    // Five MMIO accesses and two calls answered here (the run loop counts the others).
    assert_eq!(total, 7);

    // A stopped partition: every exit goes to the slow path, which answers StopPartition.
    assert_eq!(
        partition.handle_exit(0, call(psci::SYSTEM_OFF, [0; 4]), &kicks),
        Action::StopPartition
    );
    assert_eq!(
        partition.fast_call(0, u64::from(psci::VERSION), [0; 4]),
        None
    );
    assert!(!partition.fast_mmio(0, moved + 0x10, 4, None, &kicks, true));
}

/// Issue 9: a fast-lane ring of the device's own peer ID, with its MSI-X vector programmed,
/// raises the SPI in this partition at once; with `kick_self` the ringing vCPU's own CPU is
/// kicked (the aarch64 fast lane re-enters the guest without loading interrupts), without it
/// (x86, whose loops load them before every entry) it is not.
#[test]
fn a_fast_ring_of_the_device_itself_raises_its_msi_and_kicks_as_asked() {
    let (partition, slot) = ivshmem_partition();
    let kicks = Kicks(RefCell::new(Vec::new()));
    let registers = partition.pci.bar_address(slot, 0).unwrap().as_u64();
    let table = partition.pci.bar_address(slot, 1).unwrap().as_u64();
    let ecam = crate::config::GuestWindows::QEMU_VIRT.pci_ecam.0 + (u64::from(slot) << 15);
    let write = |address: u64, width: AccessWidth, value: u64| {
        let exit = Exit::MmioWrite {
            address: GuestPhysAddr::new(address),
            width,
            value,
            syndrome: 0,
        };
        assert_eq!(partition.handle_exit(0, exit, &kicks), Action::Resume);
    };
    let spi_pending = || {
        let exit = Exit::MmioRead {
            address: GuestPhysAddr::new(0x0800_0000 + 0x200 + 4 * (96 / 32)),
            width: AccessWidth::Word,
            syndrome: 0,
        };
        partition.handle_exit(0, exit, &kicks) == Action::CompleteRead(1)
    };
    // The guest's set-up: decoding on, MSI-X on with vector 0 -> SPI 96 unmasked; the
    // distributor forwarding group 1 with SPI 96 enabled (routed to vCPU 0 by reset).
    write(ecam + 0x04, AccessWidth::Word, 0x2);
    write(ecam + 0x42, AccessWidth::Half, 0x8000);
    write(table, AccessWidth::Word, 0x0802_0040);
    write(table + 8, AccessWidth::Word, 96);
    write(table + 12, AccessWidth::Word, 0);
    write(0x0800_0000, AccessWidth::Word, 0x12);
    write(0x0800_0000 + 0x100 + 4 * (96 / 32), AccessWidth::Word, 1);
    kicks.0.borrow_mut().clear();

    assert!(!spi_pending());
    assert!(partition.fast_mmio(0, registers + 0xc, 4, Some(0), &kicks, false));
    assert!(
        spi_pending(),
        "the ring raised SPI 96 without the device's signal"
    );
    assert_eq!(
        *kicks.0.borrow(),
        [] as [usize; 0],
        "x86-style: no kick of oneself"
    );
    // Taken by the guest (pending cleared), rung again the aarch64 way: vCPU 0's CPU (2).
    write(0x0800_0000 + 0x280 + 4 * (96 / 32), AccessWidth::Word, 1);
    assert!(!spi_pending());
    assert!(partition.fast_mmio(0, registers + 0xc, 4, Some(0), &kicks, true));
    assert!(spi_pending());
    assert_eq!(*kicks.0.borrow(), [2]);
}
