//! Findings of `cargo xtask fuzz` in files that were being changed by someone else when they
//! were found (the trap path: hypervisor/src/partition/mod.rs, hypervisor/src/pci/bridge.rs),
//! written down as the smallest guest-visible reproductions. All three are fixed (CPU_SUSPEND's
//! status, NOT_SUPPORTED for the PSCI functions Bulkhead lacks, one store moving two BARs):
//! they stay as regression tests, and `KNOWN` (hypervisor/fuzz/src/lib.rs) is empty again, so
//! the fuzz targets fail on them like on anything else.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests assert by panicking"
)]

use std::sync::Arc;

use hypervisor::addr::{GuestPhysAddr, PhysRange};
use hypervisor::config::{FaultPolicy, GuestWindows, IvshmemConfig, PartitionConfig};
use hypervisor::device::gic::GicVersion;
use hypervisor::exit::{AccessWidth, Action, Exit};
use hypervisor::guest_layout;
use hypervisor::partition::{InterruptModel, Partition, Platform, SharedMemorySystem};
use hypervisor::pci::doorbell::DoorbellBoard;
use hypervisor::pci::ivshmem::SharedMemory;
use hypervisor::shmem::{Registry, ZeroMemory};
use spin::Mutex;

struct NoPlatform;

impl Platform for NoPlatform {
    fn kick(&self, _cpu: usize) {}

    /// Single partitions here: nothing rings another.
    fn deliver(&self, _partition: usize, _route: hypervisor::fast::MsiRoute) {}
}

struct NoZeroing;

impl ZeroMemory for NoZeroing {
    fn zero(&self, _range: PhysRange) {}
}

const IVSHMEM: [IvshmemConfig; 1] = [IvshmemConfig {
    name: "region",
    size: 0x10_0000,
    vectors: 1,
}];

fn partition(with_ivshmem: bool) -> Partition {
    let mut registry = Registry::new(
        PhysRange::from_start_size(0x8000_0000, 0x20_0000).unwrap(),
        &NoZeroing,
    );
    let id = registry.create_at_startup("region", 0x10_0000).unwrap();
    let info = registry.region(id).unwrap();
    let mut board = DoorbellBoard::new();
    board
        .add_region(
            "region",
            SharedMemory {
                host: info.base,
                size: info.size,
            },
        )
        .unwrap();
    let shared: &'static SharedMemorySystem = Box::leak(Box::new(SharedMemorySystem {
        registry: Box::leak(Box::new(Mutex::new(registry))),
        board: Arc::new(Mutex::new(board)),
    }));
    let config: &'static PartitionConfig = Box::leak(Box::new(PartitionConfig {
        name: "finding",
        ram: &[],
        vcpus: &[0],
        image: &[],
        image_path: "finding",
        initrd: None,
        cmdline: None,
        fault_policy: FaultPolicy::Stop,
        pl011: Some(0x0900_0000),
        pl011_interrupt: None,
        uart8250: None,
        ioapic: None,
        shmem: &[],
        ivshmem: if with_ivshmem { &IVSHMEM } else { &[] },
        windows: GuestWindows::QEMU_VIRT,
    }));
    Partition::new(0, config, InterruptModel::Gic(GicVersion::V3), Some(shared))
}

fn read(partition: &Partition, address: u64, width: AccessWidth) -> u64 {
    let exit = Exit::MmioRead {
        address: GuestPhysAddr::new(address),
        width,
        syndrome: 0,
    };
    match partition.handle_exit(0, exit, &NoPlatform) {
        Action::CompleteRead(value) => value,
        other => panic!("read at {address:#x}: {other:?}"),
    }
}

fn write(partition: &Partition, address: u64, width: AccessWidth, value: u64) {
    let exit = Exit::MmioWrite {
        address: GuestPhysAddr::new(address),
        width,
        value,
        syndrome: 0,
    };
    assert_eq!(partition.handle_exit(0, exit, &NoPlatform), Action::Resume);
}

fn call(partition: &Partition, function: u64) -> Action {
    let exit = Exit::Hypercall {
        function,
        arguments: [0; 4],
    };
    partition.handle_exit(0, exit, &NoPlatform)
}

/// PSCI CPU_SUSPEND must return SUCCESS (a standby) or NOT_SUPPORTED in x0 (issue 13 item 6):
/// the partition answers Standby, which the run loop completes with x0 = SUCCESS after the
/// wait (host test `cpu_suspend_returns_success_after_waiting` in hypervisor/src/vcpu/tests.rs).
#[test]
fn cpu_suspend_answers_with_a_status() {
    let partition = partition(false);
    for function in [0x8400_0001, 0xc400_0001] {
        let action = call(&partition, function);
        assert!(
            matches!(
                action,
                Action::Standby
                    | Action::ReturnValues([0, ..])
                    | Action::ReturnValues([u64::MAX, ..])
            ),
            "CPU_SUSPEND {function:#x}: {action:?}"
        );
    }
}

/// A function PSCI 1.1 defines but Bulkhead does not implement answers NOT_SUPPORTED (-1);
/// today it is a guest fault that stops the partition.
#[test]
fn defined_psci_functions_answer_not_supported() {
    // MIGRATE, MIGRATE_INFO_UP_CPU, SYSTEM_SUSPEND (64-bit), PSCI_STAT_COUNT (64-bit).
    for function in [0x8400_0005, 0x8400_0007, 0xc400_000e, 0xc400_0011] {
        let partition = partition(false);
        assert_eq!(
            call(&partition, function),
            Action::ReturnValues([u64::MAX, 0, 0, 0]),
            "{function:#x}"
        );
    }
}

/// One 8-byte configuration write at offset 0x10 programs BAR0 with BAR1's place and BAR1
/// with 0: BAR1's move is refused, BAR0's is accepted, and both decode at one address
/// (issue 13 item 6).
#[test]
fn a_wide_bar_write_never_leaves_two_bars_at_one_address() {
    let partition = partition(true);
    let ecam = guest_layout::PCI_ECAM.0;
    let slot = (0..32u64)
        .find(|slot| read(&partition, ecam + (slot << 15), AccessWidth::Word) == 0x1110_1af4)
        .expect("the ivshmem function");
    let config = ecam + (slot << 15);
    write(&partition, config + 0x04, AccessWidth::Half, 0x6);
    let bar1 = read(&partition, config + 0x14, AccessWidth::Word) & !0xf;
    write(&partition, config + 0x10, AccessWidth::Double, bar1);
    let bar0 = read(&partition, config + 0x10, AccessWidth::Word) & !0xf;
    let bar1_now = read(&partition, config + 0x14, AccessWidth::Word) & !0xf;
    assert_ne!(
        bar0, bar1_now,
        "BAR0 (256 bytes) and BAR1 (MSI-X, 4 KiB) both at {bar0:#x}"
    );
}
