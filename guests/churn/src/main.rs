//! `churn`: run-time QNX shmem regions attached and detached in a tight loop (issue 13 item
//! 2), two roles chosen by `churn.role=` on the command line (the VM file's `cmdline`).
//!
//! - `churner` (two vCPUs): vCPU 0 starts vCPU 1; each runs [`CYCLES_PER_VCPU`] cycles of
//!   attach, write, check, detach on region "CHURN" (every fourth cycle "CHURN2"), through the
//!   partition's one PCI `vdev shmem`. The device is one registry client for the whole
//!   partition, so both vCPUs share one attachment of a name: the guest counts its users, the
//!   first creates it (factory page `size` write), the last writes DETACH. Nothing orders one
//!   vCPU's DETACH before the other's next attach of the same name: the attach may reach the
//!   hypervisor while the detach is under way. Its outcome is then unknown to the guest (if
//!   the attach came first, the detach takes it away), so once the detach is done it attaches
//!   again, which either finds its own attachment or creates the region anew; it touches the
//!   data only after that. A region a vCPU created must have only this partition as client
//!   and read all zero; while attached, vCPU `v` writes the words `i` with `i % 2 == v` and
//!   checks that its words hold what it wrote and the other vCPU's words hold zero or only that
//!   vCPU's pattern for this name (never the checker's, never the other name's).
//! - `checker` (one vCPU, another partition): [`CHECKER_CYCLES`] times it creates one of the
//!   regions "FRESH0".."FRESH7" (sizes 1-4 pages, changing from one use of a name to the next),
//!   checks that it is the only client, that the size is the one it asked for and that every
//!   word reads zero (never the churner's pattern, never its own earlier one), fills it with
//!   its pattern, checks it is still all there, detaches, and checks that `find` of the name
//!   says DOES_NOT_EXIST.
//!
//! Each word written says who wrote it (high byte 0xc4 churner, 0xf5 checker), so a failure
//! names whose data leaked. Both roles print a count line and `PASS`, or `FAIL: reason`.

#![no_std]
#![no_main]

use core::fmt;

use bulkhead_guest::sync::SpinLock;
use bulkhead_guest::{cpu, psci, timer};
use bulkhead_shmem::memory::SharedMemory;
use bulkhead_shmem::pci::Bus;
use bulkhead_shmem::qnx::{QnxShmem, Region, Status};
use bulkhead_shmem::{
    command_line_value, exit_fail_with, exit_pass, fnv1a, partition_name, println,
};

bulkhead_shmem::entry!(main);

/// The command-line key that names the role.
const ROLE_KEY: &str = "churn.role";
/// Attach/detach cycles each churner vCPU runs.
const CYCLES_PER_VCPU: u32 = 2_000;
/// Fresh regions the checker creates.
const CHECKER_CYCLES: u32 = 4_000;
/// A progress line every this many cycles.
const PROGRESS_EVERY: u32 = 500;
/// Longest wait for the other churner vCPU to finish an attach or detach.
const STEP_TIMEOUT_MS: u64 = 10_000;
/// Longest wait of churner vCPU 0 for vCPU 1's last cycle.
const FINISH_TIMEOUT_MS: u64 = 120_000;

/// High byte of every word the churner writes.
const CHURNER_TAG: u32 = 0xc4;
/// High byte of every word a checker writes.
const CHECKER_TAG: u32 = 0xf5;

/// A region the churner's vCPUs share.
struct Churned {
    name: &'static str,
    pages: u32,
}

/// "CHURN" and "CHURN2".
const CHURNED: [Churned; 2] = [
    Churned {
        name: "CHURN",
        pages: 4,
    },
    Churned {
        name: "CHURN2",
        pages: 2,
    },
];

/// The checker's region names.
const FRESH: [&str; 8] = [
    "FRESH0", "FRESH1", "FRESH2", "FRESH3", "FRESH4", "FRESH5", "FRESH6", "FRESH7",
];

/// The churner's view of one shared name.
struct Shared {
    /// vCPUs using the region now.
    users: u32,
    /// The partition's attachment, while `users > 0`.
    region: Option<Region>,
    /// A vCPU is attaching it (`users == 0`); the other waits.
    attaching: bool,
    /// The last user is writing DETACH.
    detaching: bool,
}

impl Shared {
    const fn new() -> Self {
        Self {
            users: 0,
            region: None,
            attaching: false,
            detaching: false,
        }
    }
}

/// One [`Shared`] per entry of [`CHURNED`].
static SHARED: [SpinLock<Shared>; 2] = [const { SpinLock::new(Shared::new()) }; 2];
/// The churner's device; the lock keeps one factory-page request (name, size, status,
/// address, size read back) together, since both vCPUs use the same registers.
static FACTORY: SpinLock<Option<QnxShmem>> = SpinLock::new(None);
/// vCPU 1's counts once it is done.
static SECOND_COUNTS: SpinLock<Option<Counts>> = SpinLock::new(None);

/// What one churner vCPU did.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    cycles: u32,
    /// Attaches that created the region (it was not attached by the partition).
    created: u32,
    /// Of those, attaches made while the other vCPU's DETACH of the name was under way.
    raced: u32,
    /// Attaches that joined the other vCPU's attachment.
    joined: u32,
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} cycles: created {} ({} while the other vCPU's detach was under way), joined {}",
            self.cycles, self.created, self.raced, self.joined
        )
    }
}

/// A word the churner writes: tag, vCPU, name, cycle.
fn churner_word(vcpu: usize, which: usize, cycle: u32) -> u32 {
    CHURNER_TAG << 24 | (vcpu as u32 & 0xf) << 20 | (which as u32 & 0xf) << 16 | (cycle & 0xffff)
}

/// The upper half of the churner's words of `vcpu` in region `which`.
fn churner_stamp(vcpu: usize, which: usize) -> u32 {
    churner_word(vcpu, which, 0) >> 16
}

/// A word a checker writes: tag, the checker's id, cycle.
fn checker_word(id: u8, cycle: u32) -> u32 {
    CHECKER_TAG << 24 | u32::from(id) << 16 | (cycle & 0xffff)
}

/// Says whose a word is, for failure messages.
struct Whose {
    value: u32,
    /// The reader's own checker id, if it is a checker.
    checker: Option<u8>,
}

impl fmt::Display for Whose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.value;
        let cycle = value & 0xffff;
        match value >> 24 {
            CHURNER_TAG => {
                let name = CHURNED
                    .get(((value >> 16) & 0xf) as usize)
                    .map_or("?", |churned| churned.name);
                write!(
                    f,
                    "the churner's pattern (vcpu {}, \"{name}\", cycle {cycle})",
                    (value >> 20) & 0xf
                )
            }
            CHECKER_TAG => {
                let id = ((value >> 16) & 0xff) as u8;
                let whose = if Some(id) == self.checker {
                    "this checker's own earlier"
                } else {
                    "another checker's"
                };
                write!(f, "{whose} pattern (checker {id:#04x}, cycle {cycle})")
            }
            _ if value == 0 => f.write_str("zero"),
            _ => f.write_str("data nobody in this test writes"),
        }
    }
}

/// A point in time a wait must not pass.
struct Deadline(u64);

impl Deadline {
    fn after(ms: u64) -> Self {
        Self(timer::counter().saturating_add(timer::ticks_from_ms(ms)))
    }

    /// Fails the run with `what` if the deadline has passed.
    fn check(&self, what: fmt::Arguments<'_>) {
        if timer::counter() > self.0 {
            exit_fail_with(format_args!("churn: {what}: timed out"));
        }
    }
}

fn main() -> ! {
    match command_line_value(ROLE_KEY) {
        Some("churner") => churner(),
        Some("checker") => checker(),
        other => exit_fail_with(format_args!(
            "churn: {ROLE_KEY} is {other:?}, expected churner or checker"
        )),
    }
}

fn find_device(role: &str) -> QnxShmem {
    QnxShmem::pci(&Bus::discover(), 0)
        .unwrap_or_else(|error| exit_fail_with(format_args!("churn: {role}: {error}")))
}

/// Reads the word at `offset` (in range and aligned by construction).
fn read(memory: &SharedMemory, offset: usize) -> u32 {
    memory
        .read_u32(offset)
        .unwrap_or_else(|error| exit_fail_with(format_args!("churn: {error}")))
}

/// Writes the word at `offset` (in range and aligned by construction).
fn write(memory: &SharedMemory, offset: usize, value: u32) {
    if let Err(error) = memory.write_u32(offset, value) {
        exit_fail_with(format_args!("churn: {error}"));
    }
}

/// The first word (offset, value) of `memory` that `expected(offset, value)` rejects.
fn first_unexpected(
    memory: &SharedMemory,
    expected: impl Fn(usize, u32) -> bool,
) -> Option<(usize, u32)> {
    (0..memory.len()).step_by(4).find_map(|offset| {
        let value = read(memory, offset);
        (!expected(offset, value)).then_some((offset, value))
    })
}

// ---- churner ----------------------------------------------------------------------------

fn churner_fail(vcpu: usize, what: fmt::Arguments<'_>) -> ! {
    exit_fail_with(format_args!("churn: churner vcpu {vcpu}: {what}"))
}

fn churned(which: usize) -> &'static Churned {
    CHURNED.get(which).unwrap_or(&CHURNED[0])
}

fn shared(which: usize) -> &'static SpinLock<Shared> {
    SHARED.get(which).unwrap_or(&SHARED[0])
}

fn churner() -> ! {
    let device = find_device("churner");
    println!(
        "churn: churner: QNX shmem factory page at {:#x} ({}); {CYCLES_PER_VCPU} cycles per vCPU on \"{}\" ({} pages) and \"{}\" ({} pages)",
        device.factory_address(),
        device.location(),
        churned(0).name,
        churned(0).pages,
        churned(1).name,
        churned(1).pages,
    );
    *FACTORY.lock() = Some(device);
    if let Err(error) = cpu::start_vcpu(1, second) {
        churner_fail(0, format_args!("CPU_ON of vcpu 1 failed: {error:?}"));
    }
    let mine = churn(0);
    let deadline = Deadline::after(FINISH_TIMEOUT_MS);
    let theirs = loop {
        if let Some(counts) = *SECOND_COUNTS.lock() {
            break counts;
        }
        deadline.check(format_args!("churner vcpu 0: waiting for vcpu 1 to finish"));
        cpu::relax();
    };
    println!("churn: churner: vcpu 0: {mine}");
    println!("churn: churner: vcpu 1: {theirs}");
    println!(
        "churn: churner: {} attach/detach cycles on 2 vCPUs, every region created read all zero, no foreign data",
        mine.cycles + theirs.cycles
    );
    exit_pass()
}

/// vCPU 1 of the churner.
fn second(index: usize) -> ! {
    if index != 1 || cpu::current_index() != 1 {
        churner_fail(
            index,
            format_args!("started as index {index} with MPIDR {:#x}", cpu::mpidr()),
        );
    }
    let counts = churn(1);
    *SECOND_COUNTS.lock() = Some(counts);
    let result = psci::cpu_off();
    churner_fail(1, format_args!("CPU_OFF returned {result}"))
}

/// One churner vCPU's cycles.
fn churn(vcpu: usize) -> Counts {
    let other = 1 - vcpu;
    let mut counts = Counts::default();
    for cycle in 0..CYCLES_PER_VCPU {
        let which = usize::from((cycle as usize + vcpu) % 4 == 3);
        let memory = acquire(vcpu, which, &mut counts);
        let mine = churner_word(vcpu, which, cycle);
        let own_stamp = churner_stamp(vcpu, which);
        let other_stamp = churner_stamp(other, which);
        let is_mine = |offset: usize| (offset / 4) % 2 == vcpu;
        let check = |when: &str, own: &dyn Fn(u32) -> bool| {
            let bad = first_unexpected(&memory, |offset, value| {
                if is_mine(offset) {
                    own(value)
                } else {
                    value == 0 || value >> 16 == other_stamp
                }
            });
            if let Some((offset, value)) = bad {
                churner_fail(
                    vcpu,
                    format_args!(
                        "cycle {cycle}: {when}: \"{}\" word at {offset:#x} is {value:#010x}: {}",
                        churned(which).name,
                        Whose {
                            value,
                            checker: None
                        }
                    ),
                );
            }
        };
        check("attached", &|value| value == 0 || value >> 16 == own_stamp);
        for offset in (vcpu * 4..memory.len()).step_by(8) {
            write(&memory, offset, mine);
        }
        check("after writing", &|value| value == mine);
        release(vcpu, which);
        counts.cycles += 1;
        if counts.cycles % PROGRESS_EVERY == 0 {
            println!("churn: churner: vcpu {vcpu}: {} cycles", counts.cycles);
        }
    }
    counts
}

/// Starts using region `which`: joins the partition's attachment, or creates it.
fn acquire(vcpu: usize, which: usize, counts: &mut Counts) -> SharedMemory {
    let slot = shared(which);
    let deadline = Deadline::after(STEP_TIMEOUT_MS);
    loop {
        let mut state = slot.lock();
        if let Some(memory) = state.region.as_ref().map(Region::data) {
            state.users += 1;
            counts.joined += 1;
            return memory;
        }
        if !state.attaching {
            state.attaching = true;
            let raced = state.detaching;
            drop(state);
            return create(vcpu, which, raced, counts);
        }
        drop(state);
        deadline.check(format_args!(
            "churner vcpu {vcpu}: waiting for vcpu {}'s attach",
            1 - vcpu
        ));
        cpu::relax();
    }
}

/// Attaches region `which` through the factory page.
fn attach(vcpu: usize, which: usize) -> Region {
    let churned = churned(which);
    let factory = FACTORY.lock();
    let Some(device) = factory.as_ref() else {
        churner_fail(vcpu, format_args!("no device"));
    };
    device
        .attach(churned.name, churned.pages)
        .unwrap_or_else(|status: Status| {
            churner_fail(vcpu, format_args!("attach \"{}\": {status}", churned.name))
        })
}

/// Attaches region `which`, which the partition does not hold (or is detaching when
/// `raced`), checks that it is fresh and publishes it for the other vCPU.
fn create(vcpu: usize, which: usize, raced: bool, counts: &mut Counts) -> SharedMemory {
    let slot = shared(which);
    let churned = churned(which);
    let mut region = attach(vcpu, which);
    if raced {
        // This attach met the other vCPU's DETACH of the same name in the hypervisor, in an
        // order the guest cannot see. Once the detach is done, attach again: that finds this
        // attachment if it came second, or creates the region anew if it came first.
        let deadline = Deadline::after(STEP_TIMEOUT_MS);
        while slot.lock().detaching {
            deadline.check(format_args!(
                "churner vcpu {vcpu}: waiting for vcpu {}'s detach",
                1 - vcpu
            ));
            cpu::relax();
        }
        region = attach(vcpu, which);
        counts.raced += 1;
    }
    let status = region.status();
    let me = 1u32 << region.index();
    if u32::from(status.active()) != me {
        churner_fail(
            vcpu,
            format_args!(
                "created \"{}\" but its clients are {:#06x}, not only this partition ({me:#06x})",
                churned.name,
                status.active()
            ),
        );
    }
    if region.pages() != churned.pages {
        churner_fail(
            vcpu,
            format_args!(
                "created \"{}\" with {} pages, asked for {}",
                churned.name,
                region.pages(),
                churned.pages
            ),
        );
    }
    let memory = region.data();
    if let Some((offset, value)) = first_unexpected(&memory, |_, value| value == 0) {
        churner_fail(
            vcpu,
            format_args!(
                "created \"{}\", word at {offset:#x} is {value:#010x}: {}",
                churned.name,
                Whose {
                    value,
                    checker: None
                }
            ),
        );
    }
    let mut state = slot.lock();
    state.region = Some(region);
    state.users = 1;
    state.attaching = false;
    counts.created += 1;
    memory
}

/// Stops using region `which`; the last user detaches it.
fn release(vcpu: usize, which: usize) {
    let slot = shared(which);
    let mut state = slot.lock();
    state.users = state.users.saturating_sub(1);
    if state.users > 0 {
        return;
    }
    let Some(region) = state.region.take() else {
        churner_fail(
            vcpu,
            format_args!("\"{}\" released but not attached", churned(which).name),
        );
    };
    state.detaching = true;
    drop(state);
    region.detach();
    slot.lock().detaching = false;
}

// ---- checker ----------------------------------------------------------------------------

fn checker() -> ! {
    let partition = partition_name().unwrap_or("checker");
    let id = fnv1a(partition.as_bytes()) as u8;
    let fail = |what: fmt::Arguments<'_>| -> ! {
        exit_fail_with(format_args!("churn: checker {id:#04x}: {what}"))
    };
    let device = find_device("checker");
    println!(
        "churn: checker: QNX shmem factory page at {:#x} ({}); {CHECKER_CYCLES} fresh regions \"FRESH0\"..\"FRESH7\", checker id {id:#04x}",
        device.factory_address(),
        device.location()
    );
    for cycle in 0..CHECKER_CYCLES {
        let slot = cycle as usize % FRESH.len();
        let name = FRESH.get(slot).copied().unwrap_or("FRESH0");
        let pages = 1 + (cycle / FRESH.len() as u32 + slot as u32) % 4;
        let region = device.attach(name, pages).unwrap_or_else(|status| {
            fail(format_args!("cycle {cycle}: attach \"{name}\": {status}"))
        });
        let status = region.status();
        let me = 1u32 << region.index();
        if u32::from(status.active()) != me || region.pages() != pages {
            fail(format_args!(
                "cycle {cycle}: \"{name}\" is not fresh: clients {:#06x} (me {me:#06x}), {} pages (asked {pages})",
                status.active(),
                region.pages()
            ));
        }
        let memory = region.data();
        let whose = |value| Whose {
            value,
            checker: Some(id),
        };
        if let Some((offset, value)) = first_unexpected(&memory, |_, value| value == 0) {
            fail(format_args!(
                "cycle {cycle}: fresh \"{name}\" word at {offset:#x} is {value:#010x}: {}",
                whose(value)
            ));
        }
        let mine = checker_word(id, cycle);
        for offset in (0..memory.len()).step_by(4) {
            write(&memory, offset, mine);
        }
        if let Some((offset, value)) = first_unexpected(&memory, |_, value| value == mine) {
            fail(format_args!(
                "cycle {cycle}: \"{name}\" word at {offset:#x} changed to {value:#010x} while attached: {}",
                whose(value)
            ));
        }
        region.detach();
        match device.find(name) {
            Err(Status::DoesNotExist) => {}
            Err(status) => fail(format_args!(
                "cycle {cycle}: find \"{name}\" after its detach: {status}, expected DOES_NOT_EXIST"
            )),
            Ok(_) => fail(format_args!(
                "cycle {cycle}: \"{name}\" still exists after its only client detached"
            )),
        }
        if (cycle + 1) % PROGRESS_EVERY == 0 {
            println!("churn: checker: {} fresh regions", cycle + 1);
        }
    }
    println!(
        "churn: checker: {CHECKER_CYCLES} fresh regions created, each was all zero, kept only this checker's data and was gone after its detach"
    );
    exit_pass()
}
