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
//! 3. benchping alone: 1 MiB copies private → private, private → shared, shared → private
//!    (see [`copy`]), while benchpong sleeps.
//!
//! Each round trip and copy is timed with the virtual counter (ns) and the PMU cycle counter
//! (see [`clock`]). Nothing is printed during a measurement; results follow each phase as
//! `bench: roundtrip qnx ns median=.. min=.. p90=.. max=.. n=200` lines (and `cycles`, and
//! `copy ...` lines), then benchping tells benchpong to stop and both print `PASS`.
//!
//! Region data (both regions): 0x000 benchping's client index / peer ID + 1, 0x004
//! benchpong's; 0x040 the sequence number benchping sends, 0x080 the one benchpong returns.

#![no_std]
#![no_main]

mod clock;
mod copy;
mod stats;

use bulkhead_guest::{cpu, exit_fail_with, exit_pass, println, timer};
use bulkhead_shmem::exchange::Role;
use bulkhead_shmem::ivshmem::{DoorbellEvents, Ivshmem};
use bulkhead_shmem::memory::SharedMemory;
use bulkhead_shmem::pci::Bus;
use bulkhead_shmem::qnx::{QnxShmem, Region, RegionEvents};
use bulkhead_shmem::{single_bit, wait};

use crate::clock::{Clock, CycleCounter};
use crate::stats::{Samples, Summary};

/// One measurement summarised in ns and in cycles (`None`: not available).
type Summaries = (Option<Summary>, Option<Summary>);

bulkhead_guest::entry!(main);

/// Untimed round trips before the timed ones.
const WARMUP: u32 = 20;
/// Timed round trips per doorbell path.
const ROUNDS: u32 = 200;
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
#[inline(always)]
fn wait_lean(what: &str, deadline: u64, mut done: impl FnMut() -> bool) {
    let mut woken = false;
    loop {
        cpu::disable_interrupts();
        if done() {
            return;
        }
        if woken && timer::counter() >= deadline {
            exit_fail_with(format_args!("{what}: timed out"));
        }
        cpu::wait_for_interrupt();
        cpu::enable_interrupts();
        woken = true;
    }
}

/// One doorbell path as benchping drives it.
trait Doorbell {
    /// Writes `sequence` and rings benchpong.
    fn send(&mut self, sequence: u32);
    /// Whether benchpong's reply to `sequence` and its interrupt have arrived.
    fn replied(&self, sequence: u32) -> bool;
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
}

/// [`WARMUP`] + [`ROUNDS`] round trips; returns the timed ones summarised in ns and cycles.
#[inline(never)]
fn round_trips(what: &str, clock: &Clock, doorbell: &mut impl Doorbell) -> Summaries {
    let daif = cpu::disable_interrupts();
    let deadline = timer::counter().saturating_add(timer::ticks_from_ms(BATCH_TIMEOUT_MS));
    timer::arm_virtual_timer(timer::ticks_from_ms(BATCH_TIMEOUT_MS));
    let mut samples = Samples::<{ ROUNDS as usize }>::new();
    for round in 1..=WARMUP + ROUNDS {
        let start = clock.stamp();
        doorbell.send(round);
        wait_lean(what, deadline, || doorbell.replied(round));
        let end = clock.stamp();
        if round > WARMUP {
            samples.push(start.until(end));
        }
    }
    timer::stop_virtual_timer();
    cpu::restore_interrupts(daif);
    samples.summaries(clock)
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
    match clock.cycle_counter() {
        CycleCounter::Counting { el2, filter } => println!(
            "benchping: counter {} Hz; PMU cycle counter on, PMCCFILTR_EL0 {filter:#x} ({})",
            clock.frequency(),
            if el2 {
                "EL1 and EL2 counted"
            } else {
                "EL2 not counted: hypervisor time is missing from cycles"
            }
        ),
        CycleCounter::Unavailable(reason) => println!(
            "benchping: counter {} Hz; cycles n/a: {reason}",
            clock.frequency()
        ),
    }
    println!(
        "benchping: {WARMUP} warm-up + {ROUNDS} timed round trips per doorbell, {} x 1 MiB copies per case",
        copy::REPETITIONS
    );

    let mut qnx_doorbell = QnxDoorbell {
        qnx,
        pong_mask: 1u16 << pong,
    };
    let qnx_round_trips = round_trips("benchping: QNX round trip", &clock, &mut qnx_doorbell);

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
        round_trips("benchping: ivshmem round trip", &clock, &mut doorbell)
    });

    // Results of the round trips first (copies print their own lines).
    let (ns, cycles) = qnx_round_trips;
    stats::print("roundtrip", "qnx", "ns", ns, None);
    stats::print("roundtrip", "qnx", "cycles", cycles, None);
    if let Some((ns, cycles)) = ivshmem {
        stats::print("roundtrip", "ivshmem", "ns", ns, None);
        stats::print("roundtrip", "ivshmem", "cycles", cycles, None);
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
    let ping_mask = 1u16 << ping;
    let qnx_memory = qnx.region.data();
    let iv_memory = iv.map(|iv| iv.device.memory());
    let iv_sequence = || iv_memory.map_or(0, |memory| word(memory, SEQUENCE));
    let mut qnx_answered = 0u32;
    let mut iv_answered = 0u32;
    let mut ping_peer: Option<u16> = None;
    let daif = cpu::disable_interrupts();
    loop {
        // No deadline: if benchping ends, its detach changes the active bits and wakes us.
        wait_lean("benchpong: waiting for a doorbell", u64::MAX, || {
            word(qnx_memory, SEQUENCE) != qnx_answered
                || iv_sequence() != iv_answered
                || qnx.events.active() & ping_mask == 0
        });
        let sequence = word(qnx_memory, SEQUENCE);
        if sequence == QUIT {
            break;
        }
        if sequence != qnx_answered {
            qnx.events.take_notified();
            set_word("benchpong", qnx_memory, REPLY, sequence);
            qnx.region.notify(u32::from(ping_mask));
            qnx_answered = sequence;
        }
        if let (Some(iv), Some(memory)) = (iv, iv_memory) {
            let sequence = word(memory, SEQUENCE);
            if sequence != iv_answered {
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
