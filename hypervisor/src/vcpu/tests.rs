//! The run loop against a mock backend: exits answered, stops and restarts orchestrated, a
//! secondary vCPU's fault restarting the whole partition (two threads, one per vCPU).

use super::*;
use crate::config::{FaultPolicy, PartitionConfig};
use crate::device::gic::GicVersion;
use crate::exit::AccessWidth;
use crate::partition::InterruptModel;
use crate::psci;
use crate::{addr::GuestPhysAddr, partition::VcpuState};
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// A backend that plays back exits and records what the loop asked of it.
#[derive(Default)]
struct Mock {
    exits: VecDeque<Exit>,
    completed: Vec<Action>,
    starts: Vec<StartRequest>,
    idles: usize,
    waits: usize,
}

impl Mock {
    fn with(exits: impl IntoIterator<Item = Exit>) -> Mock {
        Mock {
            exits: exits.into_iter().collect(),
            ..Mock::default()
        }
    }
}

impl VcpuBackend for Mock {
    fn run(&mut self) -> Exit {
        // An exhausted script idles the guest (a harmless exit).
        self.exits.pop_front().unwrap_or(Exit::Interrupt)
    }
    fn complete(&mut self, action: Action) {
        self.completed.push(action);
    }
    fn idle(&mut self) {
        self.idles += 1;
    }
    fn start(&mut self, start: StartRequest) {
        self.starts.push(start);
    }
    fn wait(&mut self) {
        self.waits += 1;
        assert!(self.waits < 5_000_000, "waited for ever");
        std::thread::yield_now();
    }
    fn halt(&mut self) -> ! {
        panic!("halt")
    }
}

/// The image's side: counts stops and reloads, and the kicks of the platform.
#[derive(Default)]
struct Host {
    stops: AtomicUsize,
    reloads: AtomicUsize,
    kicks: Mutex<Vec<usize>>,
}

impl Platform for Host {
    fn kick(&self, cpu: usize) {
        self.kicks.lock().unwrap().push(cpu);
    }

    /// One partition here: nothing rings another.
    fn deliver(&self, _partition: usize, _route: crate::fast::MsiRoute) {}
}

impl PartitionHost for Host {
    fn platform(&self) -> &dyn Platform {
        self
    }
    fn reload(&self, _partition: &Partition) -> StartRequest {
        self.reloads.fetch_add(1, Ordering::SeqCst);
        StartRequest {
            entry: 0x4000_0000,
            context: 0x4800_0000,
        }
    }
    fn partition_stopped(&self, _partition: &Partition) {
        self.stops.fetch_add(1, Ordering::SeqCst);
    }
}

fn partition(policy: FaultPolicy) -> &'static Partition {
    let config = Box::leak(Box::new(PartitionConfig {
        name: "looped",
        ram: &[],
        vcpus: &[4, 5],
        image: &[],
        image_path: "looped",
        initrd: None,
        cmdline: None,
        fault_policy: policy,
        pl011: Some(0x0900_0000),
        pl011_interrupt: None,
        uart8250: None,
        ioapic: None,
        shmem: &[],
        ivshmem: &[],
        windows: crate::config::GuestWindows::QEMU_VIRT,
    }));
    Box::leak(Box::new(Partition::new(
        0,
        config,
        InterruptModel::Gic(GicVersion::V3),
        None,
    )))
}

fn outside() -> Exit {
    Exit::MmioRead {
        address: GuestPhysAddr::new(0x7000_0000),
        width: AccessWidth::Word,
        syndrome: 0,
    }
}

fn call(function: u32, arguments: [u64; 4]) -> Exit {
    Exit::Hypercall {
        function: u64::from(function),
        arguments,
    }
}

#[test]
fn exits_are_answered_and_counted() {
    let partition = partition(FaultPolicy::Stop);
    let host = Host::default();
    let mut mock = Mock::with([
        call(psci::VERSION, [0; 4]),
        Exit::MmioRead {
            address: GuestPhysAddr::new(0x0900_0018),
            width: AccessWidth::Word,
            syndrome: 0,
        },
        Exit::WaitForInterrupt,
        Exit::Interrupt,
    ]);
    for _ in 0..4 {
        assert_eq!(step(&mut mock, partition, 0, &host), Step::Running);
    }
    assert_eq!(
        mock.completed,
        [
            Action::ReturnValues([psci::REPORTED_VERSION, 0, 0, 0]),
            // PL011 UARTFR: transmit FIFO empty.
            Action::CompleteRead(0x90),
            Action::Resume,
            Action::Resume,
        ]
    );
    assert_eq!(mock.idles, 1, "WFI with nothing pending idles");
    // All, MMIO, WFI, interrupts.
    assert_eq!(partition.exit_counts(0), [4, 1, 1, 1]);
}

#[test]
fn cpu_suspend_returns_success_after_waiting() {
    let partition = partition(FaultPolicy::Stop);
    let host = Host::default();
    // CPU_SUSPEND, SMC64 and SMC32 forms, standby power state 0.
    let mut mock = Mock::with([call(0xc400_0001, [0; 4]), call(0x8400_0001, [0; 4])]);
    for _ in 0..2 {
        assert_eq!(step(&mut mock, partition, 0, &host), Step::Running);
    }
    assert_eq!(
        mock.completed,
        [Action::ReturnValues([0; 4]), Action::ReturnValues([0; 4])],
        "x0 = SUCCESS, never the function ID left in place"
    );
    assert_eq!(mock.idles, 2);
}

#[test]
fn psci_functions_not_implemented_answer_not_supported() {
    let partition = partition(FaultPolicy::Stop);
    let host = Host::default();
    // MIGRATE, MIGRATE_INFO_UP_CPU, SYSTEM_SUSPEND (SMC64), PSCI_STAT_COUNT (SMC64).
    let functions = [0x8400_0005, 0x8400_0007, 0xc400_000e, 0xc400_0011];
    let mut mock = Mock::with(functions.map(|function| call(function, [0; 4])));
    for _ in functions {
        assert_eq!(step(&mut mock, partition, 0, &host), Step::Running);
    }
    let not_supported = Action::ReturnValues([psci::status::NOT_SUPPORTED as u64, 0, 0, 0]);
    assert_eq!(mock.completed, [not_supported; 4]);
    assert!(!partition.is_stopped());
    // PSCI_FEATURES says so too; a function outside the PSCI ranges is still a fault.
    let mut mock = Mock::with([call(psci::FEATURES, [0xc400_000e, 0, 0, 0])]);
    assert_eq!(step(&mut mock, partition, 0, &host), Step::Running);
    assert_eq!(mock.completed, [not_supported]);
    let mut mock = Mock::with([call(0x8600_0000, [0; 4])]);
    assert_eq!(step(&mut mock, partition, 0, &host), Step::Stopped);
}

#[test]
fn a_fault_stops_the_partition_once() {
    let partition = partition(FaultPolicy::Stop);
    let host = Host::default();
    let mut mock = Mock::with([outside()]);
    assert_eq!(step(&mut mock, partition, 0, &host), Step::Stopped);
    assert!(partition.is_stopped());
    assert_eq!(host.stops.load(Ordering::SeqCst), 1);
    // vCPU 1's CPU (5) is kicked out of its guest.
    assert_eq!(*host.kicks.lock().unwrap(), [5]);
    // Its other vCPU stops at its next exit without counting the stop again.
    let mut other = Mock::with([Exit::Interrupt]);
    assert_eq!(step(&mut other, partition, 1, &host), Step::Stopped);
    assert_eq!(host.stops.load(Ordering::SeqCst), 1);
}

#[test]
fn a_restart_on_vcpu_0_reloads_and_starts_it() {
    let partition = partition(FaultPolicy::Restart);
    let host = Host::default();
    let mut mock = Mock::with([outside()]);
    assert_eq!(step(&mut mock, partition, 0, &host), Step::Running);
    assert_eq!(host.reloads.load(Ordering::SeqCst), 1);
    assert_eq!(mock.starts.len(), 1);
    assert_eq!(partition.restarts(), 1);
    assert_eq!(partition.vcpu_state(1), Some(VcpuState::Off));
}

#[test]
fn a_secondary_vcpu_fault_restarts_the_whole_partition() {
    let partition = partition(FaultPolicy::Restart);
    let host: &'static Host = Box::leak(Box::default());
    // vCPU 0 starts vCPU 1, which then runs on its own CPU (a thread here).
    let mut vcpu0 = Mock::with([call(psci::CPU_ON[1], [0x8000_0001, 0x4000_1000, 7, 0])]);
    assert_eq!(step(&mut vcpu0, partition, 0, host), Step::Running);
    let secondary = std::thread::spawn(move || {
        let mut vcpu1 = Mock::default();
        // Waiting for CPU_ON, as its CPU does at boot.
        let first = loop {
            if let Some(start) = partition.take_start(1) {
                break start;
            }
            vcpu1.wait();
        };
        vcpu1.start(first);
        // Its guest reads outside the partition's map: the fault asks for a restart, vCPU 1
        // parks until the restarted guest starts it again.
        vcpu1.exits.push_back(outside());
        let outcome = step(&mut vcpu1, partition, 1, host);
        (outcome, vcpu1.starts)
    });
    // vCPU 0 spins in its guest; its next exit (the kick) carries out the restart once
    // vCPU 1 has parked.
    while host.reloads.load(Ordering::SeqCst) == 0 {
        vcpu0.exits.push_back(Exit::Interrupt);
        assert_eq!(step(&mut vcpu0, partition, 0, host), Step::Running);
        std::thread::yield_now();
    }
    assert_eq!(partition.restarts(), 1);
    assert_eq!(
        vcpu0.starts,
        [StartRequest {
            entry: 0x4000_0000,
            context: 0x4800_0000
        }]
    );
    // The restarted guest starts vCPU 1 again.
    vcpu0
        .exits
        .push_back(call(psci::CPU_ON[1], [0x8000_0001, 0x4000_2000, 9, 0]));
    assert_eq!(step(&mut vcpu0, partition, 0, host), Step::Running);
    let (outcome, starts) = secondary.join().unwrap();
    assert_eq!(outcome, Step::Running);
    assert_eq!(
        starts,
        [
            StartRequest {
                entry: 0x4000_1000,
                context: 7
            },
            StartRequest {
                entry: 0x4000_2000,
                context: 9
            }
        ]
    );
    assert!(!partition.is_stopped());
}
