//! `bench`: doorbell round trips and copy bandwidth between two partitions (`cargo xtask bench`).
//!
//! Roles `benchping` and `benchpong` come from the partition name's suffix.
//!
//! 1. Doorbell round trips through the QNX personality (`vdev shmem`, PCI form, region
//!    "benchqnx" of 2 MiB): benchping writes a sequence number into the region, notifies
//!    benchpong and waits in WFI for the reply interrupt; benchpong, woken by its interrupt
//!    from WFI, copies the number to the reply slot and notifies back. [`WARMUP`] untimed
//!    round trips, then [`ROUNDS`] timed ones.
//! 2. The same through `ivshmem-doorbell` (region "benchiv", MSI-X on both sides), if the
//!    partition has that device.
//! 3. benchping alone, while benchpong sleeps: [`ROUNDS`] traps of each kind the hypervisor
//!    handles without a peer (a write and a read of an ivshmem register that ignores writes
//!    and reads as zero, an HVC PSCI_VERSION), counted in EL2 instructions (see
//!    [`hypervisor`]).
//! 4. benchping alone: 1 MiB copies private → private, private → shared, shared → private
//!    (see [`copy`]), while benchpong sleeps.
//!
//! Each round trip and copy is timed with the virtual counter (ns) and the PMU cycle counter
//! (see [`clock`]). Nothing is printed during a measurement; results follow each phase as
//! `bench: roundtrip qnx ns median=.. min=.. p90=.. max=.. n=200` lines (and `cycles`, and
//! `copy ...` lines), then benchping tells benchpong to stop and both print `PASS`.
//!
//! The hypervisor's share of the round trips (see [`hypervisor`]): benchping reads the whole
//! machine's instructions, its own EL1 and EL2 instructions and its exit counts over the timed
//! round trips (rounds `WARMUP + 1` to `WARMUP + ROUNDS`, edges outside the per-round stamps).
//! benchpong reads its EL1 counter on seeing round `WARMUP + 1` and round [`LAST`] (one
//! untimed round after the timed ones), so its figure spans exactly [`ROUNDS`] of its own
//! periods, and its exit counts on seeing rounds `WARMUP` and [`LAST`] ([`ROUNDS`] + 1
//! periods; its hypercall stays out of benchping's window); it publishes them in the region
//! before replying to [`LAST`]. In steady state every round repeats the same instructions,
//! so benchpong's [`ROUNDS`] periods are its EL1 share of benchping's window whatever their
//! phase (to a few instructions: the comparisons that pick the reading rounds). benchping
//! prints `bench: hyp roundtrip qnx instructions machine=.. el1=.. el2=.. peer_el1=.. n=200`
//! and `bench: hyp exits qnx exits total=.. mmio=.. wfi=.. irq=.. n=200 peer_total=.. ...
//! peer_n=201` (each side's exit total includes one of its two reading hypercalls); xtask
//! does the arithmetic. Unavailable: `bench: hyp ... n/a`, with the reason on a
//! `NAME: hypervisor: ...` line.
//!
//! Region data (both regions): 0x000 benchping's client index / peer ID + 1, 0x004
//! benchpong's; 0x040 the sequence number benchping sends, 0x080 the one benchpong returns;
//! 0x100 benchpong's report (see [`PeerReport`]).

#![no_std]
#![no_main]

mod clock;
mod copy;
mod hypervisor;
mod stats;

use bulkhead_guest::{cpu, exit_fail_with, exit_pass, println, timer};
use bulkhead_shmem::exchange::Role;
use bulkhead_shmem::ivshmem::{DoorbellEvents, Ivshmem};
use bulkhead_shmem::memory::SharedMemory;
use bulkhead_shmem::pci::Bus;
use bulkhead_shmem::qnx::{QnxShmem, Region, RegionEvents};
use bulkhead_shmem::{single_bit, wait};

use crate::clock::{Clock, CycleCounter};
use crate::hypervisor::{Counters, Exits, Trap, Window};
use crate::stats::{Samples, Summary};

/// One measurement summarised in ns and in cycles (`None`: not available).
type Summaries = (Option<Summary>, Option<Summary>);

bulkhead_guest::entry!(main);

/// Untimed round trips before the timed ones.
const WARMUP: u32 = 20;
/// Timed round trips per doorbell path, and timed traps per kind.
const ROUNDS: u32 = 200;
/// The last round trip's sequence number: one untimed round after the timed ones.
const LAST: u32 = WARMUP + ROUNDS + 1;
/// QNX region name and size in pages (2 MiB: the doorbell slots, then the copy target).
const QNX_REGION: &str = "benchqnx";
const QNX_PAGES: u32 = 512;
/// Doorbell vector and the INTID its MSI-X message raises, on both sides.
const VECTOR: u16 = 0;
const MSI_INTID: u32 = 96;
/// Time the peer has to show up.
const STARTUP_TIMEOUT_MS: u64 = 30_000;
/// Time one batch of round trips may take.
const BATCH_TIMEOUT_MS: u64 = 60_000;
/// Offsets in both regions' data.
const PING_ID: usize = 0x000;
const PONG_ID: usize = 0x004;
const SEQUENCE: usize = 0x040;
const REPLY: usize = 0x080;
/// Sequence number that tells benchpong to stop.
const QUIT: u32 = u32::MAX;
/// BAR0 offset of an ivshmem register that reads as zero and ignores writes (the 256-byte
/// block has four registers, 0x00-0x0F).
const IGNORED_REGISTER: usize = 0x10;

/// The name this end prints.
fn name(role: Role) -> &'static str {
    role.pick("benchping", "benchpong")
}

/// The QNX device's region and what its interrupt saw.
struct Qnx {
    region: Region,
    events: &'static RegionEvents,
    index: u32,
}

/// The ivshmem-doorbell device and its MSI-X doorbell count.
struct Iv {
    device: Ivshmem,
    events: &'static DoorbellEvents,
}

fn word(memory: SharedMemory, offset: usize) -> u32 {
    memory.read_u32(offset).unwrap_or(0)
}

fn set_word(me: &str, memory: SharedMemory, offset: usize, value: u32) {
    if let Err(error) = memory.write_u32(offset, value) {
        exit_fail_with(format_args!("{me}: region too small: {error}"));
    }
}

fn main() -> ! {
    let role = Role::from_partition_name("bench");
    let me = name(role);
    if let Err(error) = bulkhead_shmem::init_interrupts() {
        exit_fail_with(format_args!("{me}: interrupt set-up: {error}"));
    }
    let bus = Bus::discover();
    let qnx = attach_qnx(me, &bus, role);
    let iv = set_up_ivshmem(me, &bus, role);
    cpu::enable_interrupts();
    match role {
        Role::Ping => ping(&qnx, iv.as_ref()),
        Role::Pong => pong(&qnx, iv.as_ref()),
    }
}

fn attach_qnx(me: &'static str, bus: &Bus, role: Role) -> Qnx {
    let device = QnxShmem::pci(bus, 0)
        .unwrap_or_else(|error| exit_fail_with(format_args!("{me}: QNX shmem device: {error}")));
    // IRQs are still masked: the region is watched before its interrupt can arrive.
    let region = device
        .attach(QNX_REGION, QNX_PAGES)
        .unwrap_or_else(|status| {
            exit_fail_with(format_args!("{me}: attach \"{QNX_REGION}\": {status}"))
        });
    let events = region
        .watch()
        .unwrap_or_else(|error| exit_fail_with(format_args!("{me}: watch: {error}")));
    let index = region.index();
    println!(
        "{me}: QNX shmem ({}, interrupt {}): \"{QNX_REGION}\" client {index}, {} KiB at {:#x}",
        device.location(),
        device.interrupt(),
        region.data().len() / 1024,
        region.data().address()
    );
    let slot = if role == Role::Ping { PING_ID } else { PONG_ID };
    if let Err(error) = region.data().store_release_u32(slot, index + 1) {
        exit_fail_with(format_args!("{me}: region too small: {error}"));
    }
    Qnx {
        region,
        events,
        index,
    }
}

/// The ivshmem-doorbell device with MSI-X set up and my peer ID published, or `None` if the
/// partition has none.
fn set_up_ivshmem(me: &'static str, bus: &Bus, role: Role) -> Option<Iv> {
    let device = match Ivshmem::find(bus, 0) {
        Ok(device) => device,
        Err(bulkhead_shmem::ivshmem::IvshmemError::NotFound) => {
            println!("{me}: no ivshmem device: the ivshmem round trips are skipped");
            return None;
        }
        Err(error) => exit_fail_with(format_args!("{me}: ivshmem: {error}")),
    };
    let (events, _) = device
        .use_msix(VECTOR, MSI_INTID)
        .unwrap_or_else(|error| exit_fail_with(format_args!("{me}: MSI-X set-up: {error}")));
    wait::polling(
        "waiting for IVPosition (peer ID)",
        STARTUP_TIMEOUT_MS,
        10,
        || device.position().is_some(),
    );
    let id = device.position().unwrap_or(0);
    println!(
        "{me}: ivshmem (PCI slot {}, MSI-X vector {VECTOR} -> INTID {MSI_INTID}): peer ID {id}, {} KiB at {:#x}",
        device.pci().slot(),
        device.memory().len() / 1024,
        device.memory().address()
    );
    let memory = device.memory();
    let (mine, theirs) = match role {
        Role::Ping => (PING_ID, PONG_ID),
        Role::Pong => (PONG_ID, PING_ID),
    };
    if let Err(error) = memory.store_release_u32(mine, u32::from(id) + 1) {
        exit_fail_with(format_args!("{me}: shared memory too small: {error}"));
    }
    // Whoever publishes second rings the first, so a waiting benchping always wakes.
    if let Some(peer) = memory.load_acquire_u32(theirs).unwrap_or(0).checked_sub(1) {
        device.ring(peer as u16, VECTOR);
    }
    Some(Iv { device, events })
}

/// Waits in WFI until `done()`; fails the run once the virtual counter passes `deadline`
/// (the caller armed the virtual timer for it, so a lost interrupt still wakes this loop).
/// Returns with IRQs masked. Kept lean: it runs inside the measured interval.
///
/// Under icount this CPU's EL1 counter goes on counting the whole machine while the CPU
/// sleeps at EL1 in a WFI the hypervisor does not trap (Bulkhead lets guests' WFI idle the
/// CPU): what it counted across each WFI is added to `halted`, which the windows subtract.
#[inline(always)]
fn wait_lean(
    what: &str,
    deadline: u64,
    counters: &Counters,
    halted: &mut u64,
    mut done: impl FnMut() -> bool,
) {
    let mut woken = false;
    loop {
        cpu::disable_interrupts();
        if done() {
            return;
        }
        if woken && timer::counter() >= deadline {
            exit_fail_with(format_args!("{what}: timed out"));
        }
        let before = counters.el1();
        cpu::wait_for_interrupt();
        *halted += u64::from(counters.el1().wrapping_sub(before));
        cpu::enable_interrupts();
        woken = true;
    }
}

/// What this vCPU can measure of the hypervisor: the EL1/EL2 instruction counters and the
/// exit-count hypercall.
struct Meter {
    counters: Counters,
    exits: Result<(), &'static str>,
}

impl Meter {
    /// Sets the counters up and asks for the hypercall; prints what is missing.
    fn start(me: &str) -> Self {
        let counters = Counters::start();
        let exits = hypervisor::exit_counts_offered();
        match counters.available() {
            Ok(()) => println!(
                "{me}: hypervisor: PMU INST_RETIRED counters on (PMEVTYPER0_EL0 EL1 only, PMEVTYPER1_EL0 EL2 only)"
            ),
            Err(reason) => println!("{me}: hypervisor: instruction counters n/a: {reason}"),
        }
        match exits {
            Ok(()) => println!("{me}: hypervisor: exit counts through HVC 0xc6000001"),
            Err(reason) => println!("{me}: hypervisor: exit counts n/a: {reason}"),
        }
        Self { counters, exits }
    }

    /// This vCPU's exit counts (zeros if unavailable).
    #[inline(always)]
    fn exits(&self) -> Exits {
        if self.exits.is_ok() {
            hypervisor::exit_counts().unwrap_or_default()
        } else {
            Exits::default()
        }
    }
}

/// What benchpong publishes about one path's round trips, at offset 0x100 of its region:
/// 0x100 [`LAST`] once written (stored last), 0x104 flags (bit 0 EL1 instructions, bit 1 exit
/// counts measured), 0x108 its EL1 instructions over [`ROUNDS`] rounds, 0x10C the rounds its
/// exit counts span, 0x110.. exits total, MMIO, WFI, IRQ (u32 each).
#[derive(Clone, Copy, Debug, Default)]
struct PeerReport {
    el1: Option<u32>,
    exits: Option<(Exits, u32)>,
}

const REPORT: usize = 0x100;
const REPORT_FLAGS: usize = 0x104;
const REPORT_EL1: usize = 0x108;
const REPORT_EXIT_ROUNDS: usize = 0x10c;
const REPORT_EXITS: usize = 0x110;

impl PeerReport {
    fn publish(self, memory: SharedMemory) {
        let flags = u32::from(self.el1.is_some()) | (u32::from(self.exits.is_some()) << 1);
        let (exits, rounds) = self.exits.unwrap_or_default();
        set_word("benchpong", memory, REPORT_FLAGS, flags);
        set_word("benchpong", memory, REPORT_EL1, self.el1.unwrap_or(0));
        set_word("benchpong", memory, REPORT_EXIT_ROUNDS, rounds);
        for (index, value) in [exits.total, exits.mmio, exits.wfi, exits.irq]
            .into_iter()
            .enumerate()
        {
            let value = u32::try_from(value).unwrap_or(u32::MAX);
            set_word("benchpong", memory, REPORT_EXITS + 4 * index, value);
        }
        if let Err(error) = memory.store_release_u32(REPORT, LAST) {
            exit_fail_with(format_args!("benchpong: region too small: {error}"));
        }
    }

    /// benchpong's report in `memory`, if it wrote one.
    fn read(memory: SharedMemory) -> Option<Self> {
        if memory.load_acquire_u32(REPORT).ok()? != LAST {
            return None;
        }
        let flags = word(memory, REPORT_FLAGS);
        let exit = |index: usize| u64::from(word(memory, REPORT_EXITS + 4 * index));
        Some(Self {
            el1: (flags & 1 != 0).then(|| word(memory, REPORT_EL1)),
            exits: (flags & 2 != 0).then(|| {
                (
                    Exits {
                        total: exit(0),
                        mmio: exit(1),
                        wfi: exit(2),
                        irq: exit(3),
                    },
                    word(memory, REPORT_EXIT_ROUNDS),
                )
            }),
        })
    }
}

/// benchpong's readings over one path's round trips (see the crate documentation).
#[derive(Default)]
struct PeerProbe {
    el1_start: u32,
    halted_start: u64,
    exits_start: Exits,
}

impl PeerProbe {
    /// Called when round `sequence` arrives, before replying: reads the counters at the
    /// window's edges and publishes the report in `memory` at [`LAST`].
    #[inline(always)]
    fn at(&mut self, sequence: u32, meter: &Meter, halted: u64, memory: SharedMemory) {
        if sequence == WARMUP {
            self.exits_start = meter.exits();
        } else if sequence == WARMUP + 1 {
            self.el1_start = meter.counters.el1();
            self.halted_start = halted;
        } else if sequence == LAST {
            // Only what this CPU ran at EL1 (see `wait_lean`).
            let slept = (halted - self.halted_start).min(u64::from(u32::MAX)) as u32;
            let el1 = meter
                .counters
                .el1()
                .wrapping_sub(self.el1_start)
                .wrapping_sub(slept);
            let exits = self.exits_start.until(meter.exits());
            PeerReport {
                el1: meter.counters.available().is_ok().then_some(el1),
                exits: meter.exits.is_ok().then_some((exits, ROUNDS + 1)),
            }
            .publish(memory);
        }
    }
}

/// One doorbell path as benchping drives it.
trait Doorbell {
    /// Writes `sequence` and rings benchpong.
    fn send(&mut self, sequence: u32);
    /// Whether benchpong's reply to `sequence` and its interrupt have arrived.
    fn replied(&self, sequence: u32) -> bool;
    /// The shared memory of this path (where benchpong's report is).
    fn memory(&self) -> SharedMemory;
}

struct QnxDoorbell<'a> {
    qnx: &'a Qnx,
    pong_mask: u16,
}

impl Doorbell for QnxDoorbell<'_> {
    #[inline(always)]
    fn send(&mut self, sequence: u32) {
        self.qnx.events.take_notified();
        set_word("benchping", self.qnx.region.data(), SEQUENCE, sequence);
        self.qnx.region.notify(u32::from(self.pong_mask));
    }

    #[inline(always)]
    fn replied(&self, sequence: u32) -> bool {
        self.qnx.events.notified() & self.pong_mask != 0
            && word(self.qnx.region.data(), REPLY) == sequence
    }

    fn memory(&self) -> SharedMemory {
        self.qnx.region.data()
    }
}

struct IvDoorbell<'a> {
    iv: &'a Iv,
    peer: u16,
    doorbells_before: u32,
}

impl Doorbell for IvDoorbell<'_> {
    #[inline(always)]
    fn send(&mut self, sequence: u32) {
        self.doorbells_before = self.iv.events.doorbells();
        set_word("benchping", self.iv.device.memory(), SEQUENCE, sequence);
        self.iv.device.ring(self.peer, VECTOR);
    }

    #[inline(always)]
    fn replied(&self, sequence: u32) -> bool {
        self.iv.events.doorbells() != self.doorbells_before
            && word(self.iv.device.memory(), REPLY) == sequence
    }

    fn memory(&self) -> SharedMemory {
        self.iv.device.memory()
    }
}

/// One path's round trips: the timed ones summarised in ns and cycles, and what the
/// hypervisor did during them.
struct RoundTrips {
    summaries: Summaries,
    window: Window,
    exits: Exits,
    peer: Option<PeerReport>,
}

/// [`WARMUP`] + [`ROUNDS`] + 1 round trips; the [`ROUNDS`] after the warm-up are timed.
#[inline(never)]
fn round_trips(
    what: &str,
    clock: &Clock,
    meter: &Meter,
    doorbell: &mut impl Doorbell,
) -> RoundTrips {
    let daif = cpu::disable_interrupts();
    let deadline = timer::counter().saturating_add(timer::ticks_from_ms(BATCH_TIMEOUT_MS));
    timer::arm_virtual_timer(timer::ticks_from_ms(BATCH_TIMEOUT_MS));
    let mut samples = Samples::<{ ROUNDS as usize }>::new();
    let (mut exits_start, mut exits_end) = (Exits::default(), Exits::default());
    let (mut window_start, mut window_end) = Default::default();
    let (mut halted, mut halted_start, mut halted_end) = (0u64, 0u64, 0u64);
    for round in 1..=LAST {
        if round == WARMUP + 1 {
            exits_start = meter.exits();
            window_start = meter.counters.read();
            halted_start = halted;
        }
        let start = clock.stamp();
        doorbell.send(round);
        wait_lean(what, deadline, &meter.counters, &mut halted, || {
            doorbell.replied(round)
        });
        let end = clock.stamp();
        if round > WARMUP && round < LAST {
            samples.push(start.until(end));
        }
        if round == WARMUP + ROUNDS {
            window_end = meter.counters.read();
            halted_end = halted;
            exits_end = meter.exits();
        }
    }
    let mut window: Window = window_start.until(window_end);
    // Only what this CPU ran at EL1 (not what the machine ran while it slept there).
    window.halted = halted_end - halted_start;
    window.el1 = window.el1.saturating_sub(window.halted);
    timer::stop_virtual_timer();
    cpu::restore_interrupts(daif);
    RoundTrips {
        summaries: samples.summaries(clock),
        window,
        exits: exits_start.until(exits_end),
        peer: PeerReport::read(doorbell.memory()),
    }
}

/// Prints one path's round-trip figures, its hypervisor instructions (if the whole machine,
/// both EL1 counts and benchpong's report are there) and its exits.
fn print_round_trips(name: &str, trips: &RoundTrips, meter: &Meter, machine: bool) {
    let (ns, cycles) = trips.summaries;
    stats::print("roundtrip", name, "ns", ns, None);
    stats::print("roundtrip", name, "cycles", cycles, None);
    let peer = trips.peer.unwrap_or_default();
    match (meter.counters.available(), peer.el1) {
        (Ok(()), Some(peer_el1)) if machine => println!(
            "bench: hyp roundtrip {name} instructions machine={} el1={} el2={} halted={} peer_el1={peer_el1} n={ROUNDS}",
            trips.window.machine, trips.window.el1, trips.window.el2, trips.window.halted
        ),
        _ => println!("bench: hyp roundtrip {name} instructions n/a"),
    }
    match (meter.exits, peer.exits) {
        (Ok(()), Some((theirs, rounds))) => {
            let mine = trips.exits;
            println!(
                "bench: hyp exits {name} exits total={} mmio={} wfi={} irq={} n={ROUNDS} peer_total={} peer_mmio={} peer_wfi={} peer_irq={} peer_n={rounds}",
                mine.total,
                mine.mmio,
                mine.wfi,
                mine.irq,
                theirs.total,
                theirs.mmio,
                theirs.wfi,
                theirs.irq
            );
        }
        _ => println!("bench: hyp exits {name} exits n/a"),
    }
    if trips.peer.is_none() {
        println!("benchping: hypervisor: benchpong published no report for the {name} round trips");
    }
}

/// [`WARMUP`] + [`ROUNDS`] traps of each kind while benchpong sleeps; returns the counter
/// deltas of the timed ones (`None` for the MMIO traps without an ivshmem device).
fn traps(meter: &Meter, iv: Option<&Iv>) -> [(Trap, Option<Window>); 3] {
    // Let benchpong finish its last reply and sleep: only this CPU runs from here on.
    wait::sleep_ms(1);
    let register = iv.map(|iv| iv.device.registers_address() as usize + IGNORED_REGISTER);
    let daif = cpu::disable_interrupts();
    let measure = |trap: Trap| {
        let register = match trap {
            Trap::Hvc => 0,
            Trap::MmioWrite | Trap::MmioRead => register?,
        };
        // SAFETY: `register` is in the ivshmem register block (BAR0, device memory), at an
        // offset past its four registers, which reads as zero and ignores writes.
        unsafe { hypervisor::trap_loop(trap, register, WARMUP) };
        let start = meter.counters.read();
        // SAFETY: as above.
        unsafe { hypervisor::trap_loop(trap, register, ROUNDS) };
        Some(start.until(meter.counters.read()))
    };
    let result = [Trap::MmioWrite, Trap::MmioRead, Trap::Hvc].map(|trap| (trap, measure(trap)));
    cpu::restore_interrupts(daif);
    result
}

fn ping(qnx: &Qnx, iv: Option<&Iv>) -> ! {
    let mine = 1u16 << qnx.index;
    wait::until(
        "benchping: waiting for benchpong to attach",
        STARTUP_TIMEOUT_MS,
        || qnx.events.active() & !mine != 0,
    );
    let others = qnx.events.active() & !mine;
    let Some(pong) = single_bit(u32::from(others)) else {
        exit_fail_with(format_args!(
            "benchping: expected one other client, active clients are {:#06x}",
            qnx.events.active()
        ))
    };
    let clock = Clock::start();
    let machine = match clock.cycle_counter() {
        CycleCounter::Counting { el2, filter } => {
            println!(
                "benchping: counter {} Hz; PMU cycle counter on, PMCCFILTR_EL0 {filter:#x} ({})",
                clock.frequency(),
                if el2 {
                    "EL1 and EL2 counted"
                } else {
                    "EL2 not counted: hypervisor time is missing from cycles"
                }
            );
            el2
        }
        CycleCounter::Unavailable(reason) => {
            println!(
                "benchping: counter {} Hz; cycles n/a: {reason}",
                clock.frequency()
            );
            false
        }
    };
    let meter = Meter::start("benchping");
    println!(
        "benchping: {WARMUP} warm-up + {ROUNDS} timed + 1 round trips per doorbell, {WARMUP} + {ROUNDS} traps per kind, {} x 1 MiB copies per case",
        copy::REPETITIONS
    );

    let mut qnx_doorbell = QnxDoorbell {
        qnx,
        pong_mask: 1u16 << pong,
    };
    let qnx_round_trips = round_trips(
        "benchping: QNX round trip",
        &clock,
        &meter,
        &mut qnx_doorbell,
    );

    let ivshmem = iv.map(|iv| {
        let memory = iv.device.memory();
        wait::until(
            "benchping: waiting for benchpong's ivshmem peer ID",
            STARTUP_TIMEOUT_MS,
            || word(memory, PONG_ID) != 0,
        );
        let peer = word(memory, PONG_ID).wrapping_sub(1) as u16;
        let mut doorbell = IvDoorbell {
            iv,
            peer,
            doorbells_before: 0,
        };
        round_trips(
            "benchping: ivshmem round trip",
            &clock,
            &meter,
            &mut doorbell,
        )
    });

    let traps = traps(&meter, iv);

    // Results of the round trips and traps first (copies print their own lines).
    print_round_trips("qnx", &qnx_round_trips, &meter, machine);
    if let Some(trips) = &ivshmem {
        print_round_trips("ivshmem", trips, &meter, machine);
    }
    for (trap, window) in traps {
        match (meter.counters.available(), window) {
            (Ok(()), Some(window)) => println!(
                "bench: hyp trap {} instructions machine={} el1={} el2={} n={ROUNDS}",
                trap.name(),
                window.machine,
                window.el1,
                window.el2
            ),
            _ => println!("bench: hyp trap {} instructions n/a", trap.name()),
        }
    }

    copy::run(&clock, qnx.region.data());

    // benchpong stops; its detach is only a membership change here.
    set_word("benchping", qnx.region.data(), SEQUENCE, QUIT);
    qnx.region.notify(1u32 << pong);
    exit_pass()
}

fn pong(qnx: &Qnx, iv: Option<&Iv>) -> ! {
    let mine = 1u16 << qnx.index;
    wait::until(
        "benchpong: waiting for benchping to attach",
        STARTUP_TIMEOUT_MS,
        || qnx.events.active() & !mine != 0,
    );
    let others = qnx.events.active() & !mine;
    let Some(ping) = single_bit(u32::from(others)) else {
        exit_fail_with(format_args!(
            "benchpong: expected one other client, active clients are {:#06x}",
            qnx.events.active()
        ))
    };
    let meter = Meter::start("benchpong");
    let ping_mask = 1u16 << ping;
    let qnx_memory = qnx.region.data();
    let iv_memory = iv.map(|iv| iv.device.memory());
    let iv_sequence = || iv_memory.map_or(0, |memory| word(memory, SEQUENCE));
    let mut qnx_answered = 0u32;
    let mut iv_answered = 0u32;
    let mut qnx_probe = PeerProbe::default();
    let mut iv_probe = PeerProbe::default();
    let mut ping_peer: Option<u16> = None;
    // EL1 instructions the machine ran while this CPU slept in WFI (see `wait_lean`).
    let mut halted = 0u64;
    let daif = cpu::disable_interrupts();
    loop {
        // No deadline: if benchping ends, its detach changes the active bits and wakes us.
        wait_lean(
            "benchpong: waiting for a doorbell",
            u64::MAX,
            &meter.counters,
            &mut halted,
            || {
                word(qnx_memory, SEQUENCE) != qnx_answered
                    || iv_sequence() != iv_answered
                    || qnx.events.active() & ping_mask == 0
            },
        );
        let sequence = word(qnx_memory, SEQUENCE);
        if sequence == QUIT {
            break;
        }
        if sequence != qnx_answered {
            qnx_probe.at(sequence, &meter, halted, qnx_memory);
            qnx.events.take_notified();
            set_word("benchpong", qnx_memory, REPLY, sequence);
            qnx.region.notify(u32::from(ping_mask));
            qnx_answered = sequence;
        }
        if let (Some(iv), Some(memory)) = (iv, iv_memory) {
            let sequence = word(memory, SEQUENCE);
            if sequence != iv_answered {
                iv_probe.at(sequence, &meter, halted, memory);
                let peer =
                    *ping_peer.get_or_insert_with(|| word(memory, PING_ID).wrapping_sub(1) as u16);
                set_word("benchpong", memory, REPLY, sequence);
                iv.device.ring(peer, VECTOR);
                iv_answered = sequence;
            }
        }
        if qnx.events.active() & ping_mask == 0 {
            exit_fail_with(format_args!(
                "benchpong: benchping detached before it said stop"
            ));
        }
    }
    cpu::restore_interrupts(daif);
    println!("benchpong: answered {qnx_answered} QNX and {iv_answered} ivshmem round trips");
    exit_pass()
}
