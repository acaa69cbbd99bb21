//! Partitions at run time: vCPU states, the exit handler that turns an [`Exit`] into an
//! [`Action`], PSCI for the partition's own vCPUs, console output, fault containment.
//!
//! One `Partition` is shared by the physical CPUs that run its vCPUs; its mutable parts are
//! behind locks or atomics. A guest can only ever stop its own partition.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

use spin::Mutex;

use crate::addr::{GuestPhysAddr, HostPhysAddr};
use crate::config::{FaultPolicy, PartitionConfig};
use crate::console::{CONSOLE, LineQuota};
use crate::console_mux::ConsoleLine;
use crate::device::apic::ApicBus;
use crate::device::gic::{GicVersion, ListEntries, ListEntry, VirtualGic, Wakeups};
use crate::device::pl011::VirtualPl011;
use crate::device::port::PortTable;
use crate::device::uart16550::Virtual16550;
use crate::device::{
    ClientId, DeviceTable, DispatchError, Effect, Effects, InterruptLines, SignalTarget,
};
use crate::exit::{AccessWidth, Action, Exit};
use crate::fast::{FastTarget, FastWindows, MsiRoute, Ring};
use crate::guest_layout;
use crate::pci::doorbell::SharedBoard;
use crate::pci::{GuestPci, PciBridge};
use crate::psci::{self, Request, status};
use crate::shmem::Registry;

mod ports;
mod shared;

use shared::{link_timers, place, shared_memory_devices};

/// What arch code offers the exit handler.
pub trait Platform {
    /// Wakes physical CPU `cpu` if it waits for work (a vCPU start).
    fn kick(&self, cpu: usize);
    /// Maps host memory into partition `partition`'s stage 2 (read-write, not executable).
    fn map_memory(
        &self,
        partition: usize,
        guest: GuestPhysAddr,
        host: HostPhysAddr,
        size: u64,
    ) -> Result<(), &'static str> {
        let _ = (partition, guest, host, size);
        Err("no stage-2 mapping on this platform")
    }
    /// Removes a mapping `map_memory` made.
    fn unmap_memory(&self, partition: usize, guest: GuestPhysAddr, size: u64) {
        let _ = (partition, guest, size);
    }
    /// Runs [`crate::device::SignalTarget::signalled`] of `client`'s device in its partition
    /// and applies the result there.
    fn signal(&self, client: ClientId) {
        let _ = client;
    }
    /// Delivers `route` in partition `partition` ([`Partition::deliver`] there, with no
    /// vCPU of it as the cause): a doorbell rung on the fast lane.
    fn deliver(&self, partition: usize, route: MsiRoute);
}

/// Power state of a vCPU, as PSCI AFFINITY_INFO reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum VcpuState {
    /// Running (or runnable).
    On = 0,
    /// Off: waits for CPU_ON.
    Off = 1,
    /// CPU_ON accepted, not yet running.
    OnPending = 2,
}

impl VcpuState {
    fn from_u8(value: u8) -> VcpuState {
        match value {
            0 => VcpuState::On,
            2 => VcpuState::OnPending,
            _ => VcpuState::Off,
        }
    }
}

/// Where and how a vCPU starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartRequest {
    /// Guest-physical entry point.
    pub entry: u64,
    /// Value of x0 at entry.
    pub context: u64,
}

/// One vCPU's shared state.
#[derive(Debug)]
struct VcpuSlot {
    physical_cpu: usize,
    state: AtomicU8,
    start: Mutex<Option<StartRequest>>,
    /// Exits of this vCPU by [`ExitClass`] (index) and in all (last), for benchmarks.
    exits: [AtomicU64; EXIT_CLASSES + 1],
    /// Out of the guest, waiting for a start (never started, CPU_OFF, or a restart): its
    /// CPU runs no guest code, so the partition's memory may be reloaded.
    parked: AtomicBool,
}

/// Why a vCPU left its guest, as counted for [`EXIT_COUNTS_CALL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitClass {
    /// A trapped load or store (MMIO, a data abort).
    Mmio = 0,
    /// WFI / HLT.
    WaitForInterrupt = 1,
    /// A physical interrupt (a kick, the maintenance interrupt, the timer).
    Interrupt = 2,
    /// Anything else (hypercalls, system registers, port I/O, faults).
    Other = 3,
}

const EXIT_CLASSES: usize = 4;

/// Bulkhead's own hypercall (SMCCC vendor-specific hypervisor service, fast call): returns
/// the calling vCPU's exit counts since it started: x0 = all exits, x1 = MMIO, x2 = WFI,
/// x3 = physical interrupts (the rest are other classes). `cargo xtask bench` reads them.
pub const EXIT_COUNTS_CALL: u64 = 0xc600_0001;

/// Why a partition stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The guest called PSCI SYSTEM_OFF.
    SystemOff {
        /// The calling vCPU.
        vcpu: usize,
    },
    /// The guest did something it may not; the text names what, where and the syndrome.
    Fault {
        /// The vCPU that faulted.
        vcpu: usize,
        /// What happened.
        description: String,
    },
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::SystemOff { vcpu } => write!(f, "exited: system off by vcpu {vcpu}"),
            StopReason::Fault { vcpu, description } => {
                write!(f, "stopped: vcpu {vcpu}: {description}")
            }
        }
    }
}

struct Inner {
    devices: DeviceTable,
    /// x86 I/O-port devices.
    ports: PortTable,
    console: ConsoleLine,
    stop_reason: Option<StopReason>,
    restarts: usize,
}

/// A partition at run time.
pub struct Partition {
    /// Its configuration.
    pub config: &'static PartitionConfig,
    /// Its index in the system (0-based, configuration order).
    pub index: usize,
    vcpus: Vec<VcpuSlot>,
    inner: Mutex<Inner>,
    controller: Controller,
    stopped: AtomicBool,
    /// A vCPU other than 0 asked for a restart, which vCPU 0 carries out.
    restart_requested: AtomicBool,
    /// Set by the first CPU that handles the partition's stop (releases, kicks, counts).
    stop_handled: AtomicBool,
    /// vCPUs (bit n = vCPU n) whose run state may have changed (stop, restart request,
    /// turned off): only they evaluate [`Partition::runnable`] in full; for the others it is
    /// this one load.
    attention: AtomicU64,
    /// Shared-memory devices, by their index in [`ClientId::device`].
    signal_targets: Vec<Arc<dyn SignalTarget>>,
    /// Shared-memory devices holding attachments.
    releasers: Vec<Arc<dyn SignalTarget>>,
    /// The virtual PCI host bridge.
    pci: PciBridge,
    /// Registers the fast lane answers (the bridge publishes them).
    fast: Arc<FastWindows>,
    /// Its console lines waiting for the UART.
    console_lines: LineQuota,
    /// The shared-memory registry (for [`Effect::Scrub`]), if the system has one.
    registry: Option<&'static Mutex<Registry>>,
    /// Configured devices that could not be set up (the image fails the boot on them).
    problems: Vec<String>,
}

/// The interrupt controller a partition's guest sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptModel {
    /// aarch64: a virtual GIC of this version.
    Gic(GicVersion),
    /// x86_64: local APICs (x2APIC, kept by arch code per vCPU) on an [`ApicBus`], with the
    /// I/O APIC the configuration asks for.
    Apic,
}

/// A partition's interrupt controller.
enum Controller {
    Gic(Arc<VirtualGic>),
    Apic(Arc<ApicBus>),
}

impl Controller {
    /// Sets a level-sensitive line: a GIC SPI, or an I/O APIC pin.
    fn set_line(&self, intid: u32, level: bool) -> Wakeups {
        match self {
            Controller::Gic(gic) => gic.set_spi_level(intid, level),
            Controller::Apic(bus) => Wakeups::from_bits(bus.set_line(intid, level)),
        }
    }

    /// vCPUs a GIC operation made something deliverable to since last asked.
    fn take_wakeups(&self) -> Wakeups {
        match self {
            Controller::Gic(gic) => gic.take_wakeups(),
            Controller::Apic(_) => Wakeups::from_bits(0),
        }
    }

    fn lines(&self) -> Arc<dyn InterruptLines> {
        match self {
            Controller::Gic(gic) => gic.clone(),
            Controller::Apic(bus) => bus.clone(),
        }
    }

    fn reset(&self, vcpus: usize) {
        match self {
            Controller::Gic(gic) => {
                gic.reset();
                link_timers(gic, vcpus);
            }
            Controller::Apic(bus) => bus.reset(),
        }
    }
}

/// Fault restarts a partition with fault policy `restart` gets before it is stopped instead
/// (a guest that faults at once would otherwise restart forever).
pub const MAX_FAULT_RESTARTS: usize = 3;

/// Whether a vCPU's CPU should go back into the guest after an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runnable {
    /// Yes.
    Run,
    /// No: the vCPU is off (CPU_OFF, or its partition restarted); wait for a CPU_ON.
    Park,
    /// No: the partition stopped.
    Stop,
    /// No: (vCPU 0 only) another vCPU asked for a restart of the whole partition, which
    /// this vCPU carries out now ([`Partition::restart_from`]).
    Restart,
}

impl fmt::Debug for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Partition")
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl Partition {
    /// A partition from its configuration: vCPU 0 on, the others off; its virtual devices.
    pub fn new(
        index: usize,
        config: &'static PartitionConfig,
        model: InterruptModel,
        shared: Option<&'static SharedMemorySystem>,
    ) -> Partition {
        let vcpus = config
            .vcpus
            .iter()
            .enumerate()
            .map(|(i, &physical_cpu)| VcpuSlot {
                physical_cpu,
                state: AtomicU8::new(if i == 0 {
                    VcpuState::On
                } else {
                    VcpuState::Off
                } as u8),
                start: Mutex::new(None),
                exits: Default::default(),
                parked: AtomicBool::new(i != 0),
            })
            .collect();
        let mut devices = DeviceTable::new();
        // The configuration build refuses overlapping devices; should one get here anyway,
        // it is recorded and the boot fails naming it (see `Partition::setup_problems`).
        let mut problems = Vec::new();
        if let Some(base) = config.pl011 {
            let intid = config
                .pl011_interrupt
                .unwrap_or(guest_layout::PL011_DEFAULT_INTID);
            place(
                &mut devices,
                GuestPhysAddr::new(base),
                Box::new(VirtualPl011::new(intid)),
                &mut problems,
            );
        }
        let mut ports = PortTable::new();
        if let Some(port) = config.uart8250
            && ports.insert(port, Box::new(Virtual16550::new())).is_err()
        {
            problems.push(format!(
                "vdev ser8250 at port {port:#x} overlaps another port"
            ));
        }
        let (controller, layout) = match model {
            InterruptModel::Gic(version) => {
                let gic = Arc::new(VirtualGic::new(
                    version,
                    config.vcpus.len(),
                    guest_layout::SPI_COUNT,
                ));
                link_timers(&gic, config.vcpus.len());
                place(
                    &mut devices,
                    GuestPhysAddr::new(guest_layout::GIC_DISTRIBUTOR.0),
                    gic.distributor(),
                    &mut problems,
                );
                if let Some(redistributors) = gic.redistributors() {
                    place(
                        &mut devices,
                        GuestPhysAddr::new(guest_layout::GIC_REDISTRIBUTORS),
                        redistributors,
                        &mut problems,
                    );
                }
                (
                    Controller::Gic(gic),
                    GuestPci::QEMU_VIRT.placed(&config.windows),
                )
            }
            InterruptModel::Apic => {
                let bus = Arc::new(ApicBus::new(config.vcpus.len(), config.ioapic.is_some()));
                if let (Some(base), Some(frame)) = (config.ioapic, bus.ioapic_frame()) {
                    place(&mut devices, GuestPhysAddr::new(base), frame, &mut problems);
                }
                (Controller::Apic(bus), GuestPci::X86.placed(&config.windows))
            }
        };
        let gic_version = match model {
            InterruptModel::Gic(version) => Some(version),
            InterruptModel::Apic => None,
        };
        let (shared_devices, pci) = shared_memory_devices(
            index,
            config,
            layout,
            controller.lines(),
            gic_version,
            shared,
            &mut devices,
        );
        problems.extend(shared_devices.problems.iter().cloned());
        let fast = pci.enable_fast_lane();
        if layout.apic
            && ports
                .insert(guest_layout::x86::PCI_CONFIG_PORTS, pci.config_ports())
                .is_err()
        {
            problems.push(String::from(
                "PCI configuration ports 0xcf8-0xcff overlap vdev ser8250",
            ));
        }
        Partition {
            config,
            index,
            vcpus,
            controller,
            stopped: AtomicBool::new(false),
            restart_requested: AtomicBool::new(false),
            stop_handled: AtomicBool::new(false),
            // vCPUs other than 0 start off.
            attention: AtomicU64::new(!1),
            signal_targets: shared_devices.targets,
            releasers: shared_devices.releasers,
            problems,
            pci,
            fast,
            console_lines: LineQuota::default(),
            registry: shared.map(|shared| shared.registry),
            inner: Mutex::new(Inner {
                devices,
                ports,
                console: ConsoleLine::new(config.name),
                stop_reason: None,
                restarts: 0,
            }),
        }
    }

    /// What of its configuration could not be set up (devices overlapping one another, no
    /// PCI slot, an unknown region): the image fails the boot with these, so that nothing
    /// configured is dropped silently.
    pub fn setup_problems(&self) -> &[String] {
        &self.problems
    }

    /// Its name.
    pub fn name(&self) -> &'static str {
        self.config.name
    }

    /// Number of vCPUs.
    pub fn vcpu_count(&self) -> usize {
        self.vcpus.len()
    }

    /// The physical CPU vCPU `vcpu` runs on.
    pub fn physical_cpu(&self, vcpu: usize) -> Option<usize> {
        self.vcpus.get(vcpu).map(|slot| slot.physical_cpu)
    }

    /// The power state of vCPU `vcpu`.
    pub fn vcpu_state(&self, vcpu: usize) -> Option<VcpuState> {
        self.vcpus
            .get(vcpu)
            .map(|slot| VcpuState::from_u8(slot.state.load(Ordering::Acquire)))
    }

    /// Whether the partition has stopped for good.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Whether vCPU `vcpu` may go back into the guest (checked after every exit).
    pub fn runnable(&self, vcpu: usize) -> Runnable {
        let bit = Wakeups::of(vcpu).bits();
        if bit == 0 {
            // Beyond 64 vCPUs there is no bit: always evaluated in full.
            return self.evaluate_runnable(vcpu);
        }
        if self.attention.load(Ordering::Acquire) & bit == 0 {
            return Runnable::Run;
        }
        // Cleared before the state is read: a change made meanwhile sets it again.
        self.attention.fetch_and(!bit, Ordering::AcqRel);
        let runnable = self.evaluate_runnable(vcpu);
        if runnable != Runnable::Run {
            self.attention.fetch_or(bit, Ordering::AcqRel);
        }
        runnable
    }

    /// Asks vCPUs `vcpus` (bit n = vCPU n) to look at their run state at their next exit.
    fn call_attention(&self, vcpus: u64) {
        self.attention.fetch_or(vcpus, Ordering::AcqRel);
    }

    fn evaluate_runnable(&self, vcpu: usize) -> Runnable {
        if self.is_stopped() {
            Runnable::Stop
        } else if vcpu == 0 && self.restart_requested.load(Ordering::Acquire) {
            Runnable::Restart
        } else if self.vcpu_state(vcpu) == Some(VcpuState::Off) {
            Runnable::Park
        } else {
            Runnable::Run
        }
    }

    /// Why it stopped, if it did.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.inner.lock().stop_reason.clone()
    }

    /// How many times it was restarted.
    pub fn restarts(&self) -> usize {
        self.inner.lock().restarts
    }

    /// The partition stopped: the first CPU to call this gives up its shared memory (peers see
    /// it leave, run-time regions can be freed) and kicks its other vCPUs out of their guests
    /// (they halt at their next exit); returns whether this call was that first one, which
    /// then accounts for the stop.
    pub fn handle_stop(&self, from_vcpu: usize, platform: &dyn Platform) -> bool {
        if self.stop_handled.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.release_shared_memory(platform);
        for (index, slot) in self.vcpus.iter().enumerate() {
            if index != from_vcpu {
                platform.kick(slot.physical_cpu);
            }
        }
        true
    }

    /// For a vCPU that waits to be started: takes its start request (CPU_ON), marking it on
    /// (and no longer parked).
    pub fn take_start(&self, vcpu: usize) -> Option<StartRequest> {
        let slot = self.vcpus.get(vcpu)?;
        let request = slot.start.lock().take()?;
        slot.state.store(VcpuState::On as u8, Ordering::Release);
        slot.parked.store(false, Ordering::Release);
        Some(request)
    }

    /// vCPU `vcpu` left its guest to wait for a start ([`Partition::take_start`] ends that);
    /// if vCPU 0 waits for it to restart the partition, its CPU is kicked.
    pub fn park(&self, vcpu: usize, platform: &dyn Platform) {
        if let Some(slot) = self.vcpus.get(vcpu) {
            slot.parked.store(true, Ordering::Release);
        }
        if vcpu != 0
            && self.restart_requested.load(Ordering::Acquire)
            && let Some(cpu) = self.physical_cpu(0)
        {
            platform.kick(cpu);
        }
    }

    /// A restart of the whole partition, asked for by vCPU `vcpu` (its fault policy, or
    /// SYSTEM_RESET). vCPU 0 carries restarts out: from vCPU 0 this returns true and the
    /// caller goes on with [`Partition::restart_from`]; from another vCPU it turns that vCPU
    /// off (it parks), records the request, kicks vCPU 0 (whose next exit sees
    /// [`Runnable::Restart`]) and returns false.
    pub fn request_restart(&self, vcpu: usize, platform: &dyn Platform) -> bool {
        if vcpu == 0 {
            return true;
        }
        if let Some(slot) = self.vcpus.get(vcpu) {
            slot.state.store(VcpuState::Off as u8, Ordering::Release);
        }
        self.restart_requested.store(true, Ordering::Release);
        self.call_attention(Wakeups::of(vcpu).bits() | 1);
        if let Some(cpu) = self.physical_cpu(0) {
            platform.kick(cpu);
        }
        false
    }

    /// Called on vCPU 0's CPU: turns every other vCPU off and kicks it, so that it parks at
    /// its next exit. The caller waits for [`Partition::others_parked`] before it touches
    /// the partition's memory, then calls [`Partition::restart_from`].
    pub fn stop_other_vcpus(&self, platform: &dyn Platform) {
        // A restart is under way: a vCPU that parks kicks vCPU 0, which waits for it.
        self.restart_requested.store(true, Ordering::Release);
        for (index, slot) in self.vcpus.iter().enumerate().skip(1) {
            *slot.start.lock() = None;
            slot.state.store(VcpuState::Off as u8, Ordering::Release);
            self.call_attention(Wakeups::of(index).bits());
            if index != 0 {
                platform.kick(slot.physical_cpu);
            }
        }
    }

    /// Whether every vCPU but 0 waits outside its guest.
    pub fn others_parked(&self) -> bool {
        self.vcpus
            .iter()
            .skip(1)
            .all(|slot| slot.parked.load(Ordering::Acquire))
    }

    /// The restart itself, on vCPU 0's CPU once the others parked: shared memory released,
    /// PCI bus and interrupt controller reset, vCPU states as at boot, the request cleared.
    /// The caller then reloads the partition's memory and enters vCPU 0 at its entry.
    pub fn restart_from(&self, platform: &dyn Platform) {
        self.release_shared_memory(platform);
        self.reset_pci(platform);
        self.reset_vcpus();
        self.restart_requested.store(false, Ordering::Release);
    }

    /// Resets vCPU states for a restart: vCPU 0 on, the others off, no pending starts.
    pub fn reset_vcpus(&self) {
        self.controller.reset(self.vcpus.len());
        for (i, slot) in self.vcpus.iter().enumerate() {
            *slot.start.lock() = None;
            let state = if i == 0 {
                VcpuState::On
            } else {
                VcpuState::Off
            };
            slot.state.store(state as u8, Ordering::Release);
        }
        self.call_attention(u64::MAX);
        self.inner.lock().restarts += 1;
    }

    /// Counts one exit of vCPU `vcpu` (arch code calls this once per guest exit).
    #[inline]
    pub fn count_exit(&self, vcpu: usize, class: ExitClass) {
        // Only this vCPU's own CPU writes its counters: plain load and store.
        let bump = |counter: &AtomicU64| {
            counter.store(
                counter.load(Ordering::Relaxed).wrapping_add(1),
                Ordering::Relaxed,
            );
        };
        if let Some(slot) = self.vcpus.get(vcpu) {
            let [mmio, wait, interrupt, other, total] = &slot.exits;
            bump(total);
            bump(match class {
                ExitClass::Mmio => mmio,
                ExitClass::WaitForInterrupt => wait,
                ExitClass::Interrupt => interrupt,
                ExitClass::Other => other,
            });
        }
    }

    /// The fast lane's answer to a hypercall of vCPU `vcpu`: the result registers for a pure
    /// PSCI query (counted as an exit), or `None` when the slow path must take it (any other
    /// call, or the vCPU's run state needs a look). See [`crate::fast`].
    #[inline]
    pub fn fast_call(&self, vcpu: usize, function: u64, arguments: [u64; 4]) -> Option<[u64; 4]> {
        if self.needs_attention(vcpu) {
            return None;
        }
        let [argument, ..] = arguments;
        let values = pure_psci(Request::decode_pure(function, argument)?)?;
        self.count_exit(vcpu, ExitClass::Other);
        Some(values)
    }

    /// The fast lane's answer to an MMIO access of vCPU `vcpu` to `[address, address +
    /// bytes)` (`write`: the stored value): `true` when the access lies in a published range
    /// (a reserved register: a load gets zero, a store is ignored; a doorbell register: a
    /// load gets zero, a store rings and the device it names is signalled now), counted as an
    /// exit; `false` when the slow path must take it. `kick_self`: whether a ring that makes
    /// an interrupt deliverable to `vcpu` itself kicks its own CPU, as it must where the
    /// answer re-enters the guest without loading new interrupts (aarch64's exit vector);
    /// x86's run loops sync the virtual APIC before every entry and pass `false`.
    #[inline]
    pub fn fast_mmio(
        &self,
        vcpu: usize,
        address: u64,
        bytes: u64,
        write: Option<u64>,
        platform: &dyn Platform,
        kick_self: bool,
    ) -> bool {
        if self.needs_attention(vcpu) {
            return false;
        }
        match self.fast.find(address, bytes) {
            None => return false,
            Some(FastTarget::Reserved) => {}
            Some(FastTarget::Doorbell(doorbell)) => {
                // `usize::MAX`: no vCPU of this partition is spared its kick.
                let cause = if kick_self { usize::MAX } else { vcpu };
                match write.and_then(|value| doorbell.ring(value as u32)) {
                    Some(Ring::Signal(client)) => self.signal_client(cause, client, platform),
                    Some(Ring::Deliver { partition, route }) => {
                        if usize::from(partition) == self.index {
                            self.deliver(cause, route, platform);
                        } else {
                            platform.deliver(usize::from(partition), route);
                        }
                    }
                    None => {}
                }
            }
        }
        self.count_exit(vcpu, ExitClass::Mmio);
        true
    }

    /// Whether an MMIO access to `[address, address + bytes)` may be the fast lane's (a cheap
    /// test of the published ranges' bounds, for arch code to tell most misses early; a `true`
    /// is decided by [`Partition::fast_mmio`]).
    #[inline]
    pub fn fast_mmio_may_answer(&self, address: u64, bytes: u64) -> bool {
        self.fast.may_contain(address, bytes)
    }

    /// Whether the fast lane may answer vCPU `vcpu`'s exits: its run state needs no look (no
    /// stop, restart or CPU_OFF pending). An arch fast lane that answers an exit without
    /// [`Partition::fast_call`] or [`Partition::fast_mmio`] asks this first.
    #[inline]
    pub fn fast_lane_open(&self, vcpu: usize) -> bool {
        !self.needs_attention(vcpu)
    }

    /// Whether vCPU `vcpu` must look at its run state (or has no attention bit).
    #[inline]
    fn needs_attention(&self, vcpu: usize) -> bool {
        let bit = Wakeups::of(vcpu).bits();
        bit == 0 || self.attention.load(Ordering::Acquire) & bit != 0
    }

    /// Whether vCPU `vcpu` has nothing new to load into its (empty) list registers: its
    /// last flush loaded nothing and its interrupt controller has not changed since. Arch
    /// code then skips the flush on guest entry.
    #[inline]
    pub fn interrupts_quiet(&self, vcpu: usize) -> bool {
        match &self.controller {
            Controller::Gic(gic) => gic.is_quiet(vcpu),
            Controller::Apic(_) => false,
        }
    }

    /// The exit counts [`EXIT_COUNTS_CALL`] returns: all, MMIO, WFI, interrupts.
    pub fn exit_counts(&self, vcpu: usize) -> [u64; 4] {
        let count = |index: usize| {
            self.vcpus
                .get(vcpu)
                .and_then(|slot| slot.exits.get(index))
                .map_or(0, |counter| counter.load(Ordering::Relaxed))
        };
        [
            count(EXIT_CLASSES),
            count(ExitClass::Mmio as usize),
            count(ExitClass::WaitForInterrupt as usize),
            count(ExitClass::Interrupt as usize),
        ]
    }

    /// Handles one exit of vCPU `vcpu`.
    pub fn handle_exit(&self, vcpu: usize, exit: Exit, platform: &dyn Platform) -> Action {
        if self.is_stopped() {
            return Action::StopPartition;
        }
        match exit {
            Exit::MmioRead {
                address,
                width,
                syndrome,
            } => self.mmio_read(vcpu, address, width, syndrome, platform),
            Exit::MmioWrite {
                address,
                width,
                value,
                syndrome,
            } => self.mmio_write(vcpu, address, width, value, syndrome, platform),
            Exit::PortRead { port, width } => self.port_read(vcpu, port, width, platform),
            Exit::PortWrite { port, width, value } => {
                self.port_write(vcpu, port, width, value, platform)
            }
            Exit::Hypercall {
                function: EXIT_COUNTS_CALL,
                ..
            } => Action::ReturnValues(self.exit_counts(vcpu)),
            Exit::Hypercall {
                function,
                arguments,
            } => match Request::decode(function, arguments) {
                Some(request) => self.psci(vcpu, request, platform),
                None => self.unknown_call(vcpu, function, arguments[0]),
            },
            Exit::WaitForInterrupt => {
                let pending = match &self.controller {
                    Controller::Gic(gic) => gic.has_pending(vcpu),
                    Controller::Apic(bus) => bus.has_posted(vcpu),
                };
                if pending {
                    Action::Resume
                } else {
                    Action::Idle
                }
            }
            Exit::Interrupt => Action::Resume,
            Exit::VirtualTimer => {
                self.virtual_timer_fired(vcpu);
                Action::Resume
            }
            Exit::SendSoftwareInterrupt { value } => {
                if let Controller::Gic(gic) = &self.controller {
                    let wakeups = gic.write_sgi1r(vcpu, value);
                    self.wake(vcpu, wakeups, platform);
                }
                Action::Resume
            }
            Exit::GuestFault {
                reason,
                syndrome,
                address,
            } => self.guest_fault(vcpu, reason, syndrome, address),
        }
    }

    /// A load from a trapped address: the device table answers (out of line, so that the
    /// dispatch in [`Partition::handle_exit`] keeps a small frame).
    #[inline(never)]
    fn mmio_read(
        &self,
        vcpu: usize,
        address: GuestPhysAddr,
        width: AccessWidth,
        syndrome: u64,
        platform: &dyn Platform,
    ) -> Action {
        let mut effects = Effects::default();
        let mut inner = self.inner.lock();
        let result = inner.devices.read(vcpu, address, width, &mut effects);
        self.apply_memory(&mut effects, platform);
        drop(inner);
        self.apply(vcpu, &mut effects, platform);
        self.wake(vcpu, self.controller.take_wakeups(), platform);
        match result {
            Ok(value) => Action::CompleteRead(value),
            Err(error) => self.access_fault(vcpu, "read", address, width, syndrome, error),
        }
    }

    /// A store to a trapped address: the device table takes it.
    #[inline(never)]
    fn mmio_write(
        &self,
        vcpu: usize,
        address: GuestPhysAddr,
        width: AccessWidth,
        value: u64,
        syndrome: u64,
        platform: &dyn Platform,
    ) -> Action {
        let mut effects = Effects::default();
        let mut inner = self.inner.lock();
        let result = inner
            .devices
            .write(vcpu, address, width, value, &mut effects);
        self.apply_memory(&mut effects, platform);
        drop(inner);
        self.apply(vcpu, &mut effects, platform);
        self.wake(vcpu, self.controller.take_wakeups(), platform);
        match result {
            Ok(()) => Action::Resume,
            Err(error) => self.access_fault(vcpu, "write", address, width, syndrome, error),
        }
    }

    #[cold]
    #[inline(never)]
    fn access_fault(
        &self,
        vcpu: usize,
        kind: &str,
        address: GuestPhysAddr,
        width: AccessWidth,
        syndrome: u64,
        error: DispatchError,
    ) -> Action {
        self.fault(
            vcpu,
            access_report(kind, address, width.bytes(), syndrome, error),
        )
    }

    #[cold]
    #[inline(never)]
    fn unknown_call(&self, vcpu: usize, function: u64, x1: u64) -> Action {
        self.fault(
            vcpu,
            format!("unknown SMC/HVC function {function:#x} (x1={x1:#x})"),
        )
    }

    #[cold]
    #[inline(never)]
    fn guest_fault(
        &self,
        vcpu: usize,
        reason: Option<&'static str>,
        syndrome: u64,
        address: Option<GuestPhysAddr>,
    ) -> Action {
        let at = address.map_or(String::new(), |a| format!(" at {:#x}", a.as_u64()));
        let what = reason.unwrap_or("unhandled guest exception");
        self.fault(vcpu, format!("{what}{at} (syndrome {syndrome:#x})"))
    }

    /// Applies the second-stage changes among `effects` now, while the caller still holds the
    /// lock under which the devices decided them (the partition's `inner`): a map and an
    /// unmap decided in one order by two vCPUs are applied in that order (an attach's map
    /// can never land after a racing detach's unmap and keep freed memory mapped).
    #[inline]
    pub(super) fn apply_memory(&self, effects: &mut Effects, platform: &dyn Platform) {
        effects.take_memory(|effect| match effect {
            Effect::MapMemory { guest, host, size } => {
                if let Err(reason) = platform.map_memory(self.index, guest, host, size) {
                    self.report(format_args!(
                        "stage-2 mapping at {:#x} refused: {reason}",
                        guest.as_u64()
                    ));
                }
            }
            Effect::UnmapMemory { guest, size } => platform.unmap_memory(self.index, guest, size),
            _ => {}
        });
    }

    /// Applies device effects; `vcpu` is the vCPU whose access caused them (`usize::MAX`
    /// when none of this partition's did), which needs no kick.
    fn apply(&self, vcpu: usize, effects: &mut Effects, platform: &dyn Platform) {
        if effects.is_empty() {
            return;
        }
        for effect in effects.drain() {
            match effect {
                Effect::ConsoleByte(byte) => {
                    let line = self.inner.lock().console.push(byte);
                    if let Some(line) = line {
                        CONSOLE.print_line(&self.console_lines, line);
                    }
                }
                Effect::SetLevel { intid, level } => {
                    let wakeups = self.controller.set_line(intid, level);
                    self.wake(vcpu, wakeups, platform);
                }
                Effect::Wake { vcpus } => self.wake(vcpu, Wakeups::from_bits(vcpus), platform),
                Effect::Raise { intid } => {
                    if let Controller::Gic(gic) = &self.controller {
                        let wakeups = gic.raise(intid, 0);
                        self.wake(vcpu, wakeups, platform);
                    }
                }
                Effect::Message { address, data } => {
                    if let Controller::Apic(bus) = &self.controller {
                        let wakeups = Wakeups::from_bits(bus.message(address, data));
                        self.wake(vcpu, wakeups, platform);
                    }
                }
                Effect::MapMemory { guest, host, size } => {
                    if let Err(reason) = platform.map_memory(self.index, guest, host, size) {
                        self.report(format_args!(
                            "stage-2 mapping at {:#x} refused: {reason}",
                            guest.as_u64()
                        ));
                    }
                }
                Effect::UnmapMemory { guest, size } => {
                    platform.unmap_memory(self.index, guest, size)
                }
                // A device of this partition signalled itself (a PCI function's INTx after a
                // control-page access): no trip through the platform, and no kick of the CPU
                // that is handling the access anyway.
                Effect::Signal(client) => self.signal_client(vcpu, client, platform),
                // After the unmaps before it (applied under the device lock, or above): no
                // partition maps the memory any more.
                Effect::Scrub => {
                    if let Some(registry) = self.registry {
                        crate::shmem::registry::scrub(
                            registry,
                            u16::try_from(self.index).unwrap_or(u16::MAX),
                        );
                    }
                }
            }
        }
    }

    /// Kicks the physical CPUs of the vCPUs in `wakeups` (not the caller's own: it is about
    /// to flush anyway).
    fn wake(&self, caller: usize, wakeups: Wakeups, platform: &dyn Platform) {
        for vcpu in wakeups.iter() {
            if vcpu != caller
                && let Some(slot) = self.vcpus.get(vcpu)
            {
                platform.kick(slot.physical_cpu);
            }
        }
    }

    /// A shared-memory device of this partition was signalled (by a peer's notify or a
    /// membership change): let it recompute its interrupt.
    pub fn signal_device(&self, device: u16, platform: &dyn Platform) {
        self.signal_device_from(device, usize::MAX, platform);
    }

    /// As [`Partition::signal_device`], caused by an access of vCPU `vcpu` (`usize::MAX`:
    /// none of this partition's), which needs no kick.
    fn signal_device_from(&self, device: u16, vcpu: usize, platform: &dyn Platform) {
        if let Some(target) = self.signal_targets.get(usize::from(device)) {
            let mut effects = Effects::default();
            target.signalled(&mut effects);
            self.apply(vcpu, &mut effects, platform);
        }
    }

    /// Delivers a doorbell's MSI-X `route` here at once (the fast lane's ring, from vCPU
    /// `vcpu`, `usize::MAX`: none of this partition's): as the MSI-X table's message would
    /// through [`Effect::Raise`] or [`Effect::Message`]. A route of the other controller's
    /// kind is never published for this partition (its bridge computes them) and is ignored.
    pub fn deliver(&self, vcpu: usize, route: MsiRoute, platform: &dyn Platform) {
        let wakeups = match (route, &self.controller) {
            (MsiRoute::Spi(intid), Controller::Gic(gic)) => gic.raise(intid, 0),
            (MsiRoute::Message { address, data }, Controller::Apic(bus)) => {
                Wakeups::from_bits(bus.message(address, data))
            }
            _ => return,
        };
        self.wake(vcpu, wakeups, platform);
    }

    /// Runs `client`'s device's [`SignalTarget::signalled`] (a doorbell vCPU `vcpu` rang):
    /// here for a device of this partition, through the platform for another's.
    fn signal_client(&self, vcpu: usize, client: ClientId, platform: &dyn Platform) {
        if usize::from(client.partition) == self.index {
            self.signal_device_from(client.device, vcpu, platform);
        } else {
            platform.signal(client);
        }
    }

    /// Gives up every shared-memory attachment (the partition stopped or restarts), so that
    /// peers see it leave and run-time regions can be freed.
    pub fn release_shared_memory(&self, platform: &dyn Platform) {
        for target in &self.releasers {
            let mut effects = Effects::default();
            target.release(&mut effects);
            self.apply(usize::MAX, &mut effects, platform);
        }
    }

    /// Puts the virtual PCI bus back to its reset state (a restart): BARs where firmware put
    /// them, decoding off.
    pub fn reset_pci(&self, platform: &dyn Platform) {
        let mut effects = Effects::default();
        self.pci.reset(&mut effects);
        self.apply(usize::MAX, &mut effects, platform);
    }

    /// Interrupts to load into list registers before vCPU `vcpu` runs (at most `slots`).
    pub fn flush_interrupts(
        &self,
        vcpu: usize,
        slots: usize,
        entries: &mut ListEntries,
        platform: &dyn Platform,
    ) {
        if let Controller::Gic(gic) = &self.controller {
            gic.flush_into(vcpu, slots, entries);
            self.wake(vcpu, gic.take_wakeups(), platform);
        }
    }

    /// What the list registers of vCPU `vcpu` held after it ran.
    pub fn fold_interrupts(&self, vcpu: usize, entries: &[ListEntry], platform: &dyn Platform) {
        if let Controller::Gic(gic) = &self.controller {
            gic.fold(vcpu, entries);
            self.wake(vcpu, gic.take_wakeups(), platform);
        }
    }

    /// Hands `deactivate` the physical INTIDs this vCPU's CPU must deactivate now (see
    /// [`VirtualGic::take_hardware_deactivations`]); arch code calls it after each flush.
    #[inline]
    pub fn take_hardware_deactivations(&self, vcpu: usize, deactivate: impl FnMut(u32)) {
        if let Controller::Gic(gic) = &self.controller {
            gic.take_hardware_deactivations(vcpu, deactivate);
        }
    }

    /// The virtual timer of vCPU `vcpu` fired (the physical PPI stays active until the guest
    /// deactivates the virtual one, through the hardware link).
    pub fn virtual_timer_fired(&self, vcpu: usize) {
        if let Controller::Gic(gic) = &self.controller {
            let _ = gic.raise(guest_layout::VIRTUAL_TIMER_INTID, vcpu);
        }
    }

    /// The GIC version the partition sees (`None`: an x86 partition).
    pub fn gic_version(&self) -> Option<GicVersion> {
        match &self.controller {
            Controller::Gic(gic) => Some(gic.version()),
            Controller::Apic(_) => None,
        }
    }

    /// The APIC bus of an x86 partition (where its vCPUs' interrupts are posted).
    pub fn apic_bus(&self) -> Option<&ApicBus> {
        match &self.controller {
            Controller::Apic(bus) => Some(bus),
            Controller::Gic(_) => None,
        }
    }

    /// An x86 vCPU `vcpu` ended the interrupt with `vector` (x2APIC EOI): I/O APIC level
    /// pins waiting for it may fire again; their vCPUs are kicked.
    pub fn end_of_interrupt(&self, vcpu: usize, vector: u8, platform: &dyn Platform) {
        if let Controller::Apic(bus) = &self.controller {
            let wakeups = Wakeups::from_bits(bus.end_of_interrupt(vector));
            self.wake(vcpu, wakeups, platform);
        }
    }

    /// Posts fixed interrupt `vector` to vCPU `target` of this x86 partition (an IPI another
    /// vCPU sent, kept inside the partition) and kicks its CPU.
    pub fn post_interrupt(
        &self,
        sender: usize,
        target: usize,
        vector: u8,
        platform: &dyn Platform,
    ) {
        if let Controller::Apic(bus) = &self.controller {
            let wakeups = Wakeups::from_bits(bus.post(target, vector));
            self.wake(sender, wakeups, platform);
        }
    }

    fn psci(&self, vcpu: usize, request: Request, platform: &dyn Platform) -> Action {
        let values = |x0: i64| Action::ReturnValues([x0 as u64, 0, 0, 0]);
        match request {
            Request::Version
            | Request::Features(_)
            | Request::MigrateInfoType
            | Request::NotSupported => Action::ReturnValues(pure_psci(request).unwrap_or([
                status::NOT_SUPPORTED as u64,
                0,
                0,
                0,
            ])),
            // Every power state is treated as standby: the call returns SUCCESS once the
            // vCPU has waited for an interrupt (a wake-up may come at once).
            Request::Suspend => Action::Standby,
            Request::CpuOff => {
                if let Some(slot) = self.vcpus.get(vcpu) {
                    slot.state.store(VcpuState::Off as u8, Ordering::Release);
                }
                self.call_attention(Wakeups::of(vcpu).bits());
                Action::VcpuOff
            }
            Request::CpuOn {
                target,
                entry,
                context,
            } => {
                let Some(slot) = psci::vcpu_index(target).and_then(|i| self.vcpus.get(i)) else {
                    return values(status::INVALID_PARAMETERS);
                };
                let off = VcpuState::Off as u8;
                let pending = VcpuState::OnPending as u8;
                match slot
                    .state
                    .compare_exchange(off, pending, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => {
                        // What was posted to it while it was off is dropped now, before the
                        // caller learns it starts: an IPI sent after CPU_ON returned reaches
                        // the new vCPU however late its CPU takes the start.
                        if let (Controller::Apic(bus), Some(index)) =
                            (&self.controller, psci::vcpu_index(target))
                        {
                            let _stale = bus.take_posted(index);
                        }
                        *slot.start.lock() = Some(StartRequest { entry, context });
                        platform.kick(slot.physical_cpu);
                        values(status::SUCCESS)
                    }
                    Err(state) if state == pending => values(status::ON_PENDING),
                    Err(_) => values(status::ALREADY_ON),
                }
            }
            Request::AffinityInfo { target, level } => {
                match (
                    level,
                    psci::vcpu_index(target).and_then(|i| self.vcpu_state(i)),
                ) {
                    (0, Some(state)) => values(state as i64),
                    _ => values(status::INVALID_PARAMETERS),
                }
            }
            Request::SystemOff => self.stop(StopReason::SystemOff { vcpu }),
            Request::SystemReset => {
                self.report(format_args!("reset requested by vcpu {vcpu}"));
                Action::RestartPartition
            }
        }
    }

    /// A guest did something it may not: report, then apply the partition's fault policy.
    fn fault(&self, vcpu: usize, description: String) -> Action {
        match self.config.fault_policy {
            FaultPolicy::Stop => self.stop(StopReason::Fault { vcpu, description }),
            FaultPolicy::Restart if self.restarts() >= MAX_FAULT_RESTARTS => {
                self.stop(StopReason::Fault {
                    vcpu,
                    description: format!(
                        "{description} (restart limit of {MAX_FAULT_RESTARTS} reached)"
                    ),
                })
            }
            FaultPolicy::Restart => {
                self.report(format_args!(
                    "vcpu {vcpu}: {description}; restarting (fault policy restart)"
                ));
                Action::RestartPartition
            }
        }
    }

    fn stop(&self, reason: StopReason) -> Action {
        let mut inner = self.inner.lock();
        if inner.stop_reason.is_none() {
            let pending = inner.console.flush();
            drop(inner);
            if let Some(line) = pending {
                CONSOLE.print_line(&self.console_lines, line);
            }
            self.report(format_args!("{reason}"));
            inner = self.inner.lock();
            inner.stop_reason = Some(reason);
            self.stopped.store(true, Ordering::Release);
            self.call_attention(u64::MAX);
        }
        Action::StopPartition
    }

    fn report(&self, args: fmt::Arguments<'_>) {
        CONSOLE.print(format_args!(
            "bulkhead: partition {} {args}\n",
            self.config.name
        ));
    }
}

/// The answer to a PSCI call that reads and changes nothing (VERSION, FEATURES,
/// MIGRATE_INFO_TYPE, a function of the PSCI range Bulkhead does not implement), the same on
/// the fast lane and the slow path; `None` for any other call.
#[inline]
fn pure_psci(request: Request) -> Option<[u64; 4]> {
    let x0 = match request {
        Request::Version => return Some([psci::REPORTED_VERSION, 0, 0, 0]),
        Request::Features(function) => {
            if psci::implemented(function) || u64::from(function) == EXIT_COUNTS_CALL {
                status::SUCCESS
            } else {
                status::NOT_SUPPORTED
            }
        }
        Request::MigrateInfoType => 2,
        Request::NotSupported => status::NOT_SUPPORTED,
        _ => return None,
    };
    Some([x0 as u64, 0, 0, 0])
}

fn access_report(
    kind: &str,
    address: GuestPhysAddr,
    bytes: u64,
    syndrome: u64,
    error: DispatchError,
) -> String {
    let what = match error {
        DispatchError::NoDevice => "outside its map",
        DispatchError::Straddles => "straddling a device's end",
    };
    format!(
        "{kind} of {bytes} bytes {what} at {:#x} (syndrome {syndrome:#x})",
        address.as_u64()
    )
}

/// All partitions, and the count of those still running.
pub struct System {
    /// The partitions in configuration order.
    pub partitions: Vec<Partition>,
    running: AtomicUsize,
}

impl fmt::Debug for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("System")
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

/// What partitions share: the region registry (QNX personality) and the doorbell board
/// (QEMU ivshmem personality), both host-wide.
pub struct SharedMemorySystem {
    /// Named regions, restriction lists, signalling.
    pub registry: &'static Mutex<Registry>,
    /// ivshmem regions and peers.
    pub board: SharedBoard,
}

impl fmt::Debug for SharedMemorySystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemorySystem").finish_non_exhaustive()
    }
}

impl System {
    /// The run-time system from the static configuration; partitions see `model`'s
    /// interrupt controller.
    pub fn new(
        configs: &'static [PartitionConfig],
        model: InterruptModel,
        shared: Option<&'static SharedMemorySystem>,
    ) -> System {
        let partitions: Vec<Partition> = configs
            .iter()
            .enumerate()
            .map(|(index, config)| Partition::new(index, config, model, shared))
            .collect();
        let running = AtomicUsize::new(partitions.len());
        System {
            partitions,
            running,
        }
    }

    /// Prints every configured device that could not be set up (each partition's
    /// [`Partition::setup_problems`]); `Err` with the name of the last partition that had one,
    /// for the image to fail the boot with (nothing configured is dropped silently).
    pub fn check_setup(&self) -> Result<(), &'static str> {
        let mut failed = None;
        for partition in &self.partitions {
            for problem in partition.setup_problems() {
                CONSOLE.print(format_args!(
                    "bulkhead: partition {}: {problem}\n",
                    partition.name()
                ));
                failed = Some(partition.name());
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Records that a partition stopped (call once per partition); returns true when it was
    /// the last one running.
    pub fn partition_stopped(&self) -> bool {
        self.running.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// Prints how each partition ended.
    pub fn print_summary(&self) {
        CONSOLE.print(format_args!("bulkhead: all partitions stopped\n"));
        for partition in &self.partitions {
            let reason = partition
                .stop_reason()
                .map_or_else(|| String::from("still running"), |r| format!("{r}"));
            let restarts = match partition.restarts() {
                0 => String::new(),
                n => format!(" after {n} restart(s)"),
            };
            CONSOLE.print(format_args!("  {}: {reason}{restarts}\n", partition.name()));
        }
    }
}

#[cfg(test)]
mod tests;
