//! `ivpingpong`: the `pingpong` exchange over an `ivshmem-doorbell` device (PCI 1af4:1110):
//! roles `ivping` and `ivpong` from the partition name's suffix. Peer IDs come from
//! IVPosition; each side writes its ID into shared memory and rings vector 0 of the other.
//! Ivping takes its doorbells through MSI-X (vector 0 → aarch64 INTID 96, edge; x86_64 IDT
//! vector 0x28), ivpong through INTx (level, acknowledged by reading IntrStatus; x86_64 an
//! I/O APIC pin), so both paths run. On plain QEMU (whose ivshmem-doorbell only signals
//! through MSI-X) `-append "ivpong msix"` switches ivpong over. The same source builds for
//! aarch64 and x86_64 (`guests/x86/ivpingpong-x86`); configuration space is reached through
//! the ECAM where the platform has one (on x86_64 `pingpong` uses ports 0xCF8/0xCFC, so the
//! two cover both mechanisms).
//!
//! Start-up without a membership interrupt: each side sets its interrupt up, publishes its
//! peer ID + 1 (0x000 ivping's, 0x004 ivpong's), then reads the other's slot and, if it is
//! there, rings it; at least one of two racing sides sees the other. Mailbox ivping → ivpong
//! at 0x100, ivpong → ivping at 0x200.
//!
//! `ivpingpong.rounds=N` on the command line (the VM file's `cmdline`) plays N rounds instead
//! of ten (both ends must be given the same).

#![no_std]
#![no_main]

use core::sync::atomic::{Ordering, fence};

use bulkhead_shmem::exchange::{Pattern, QUIET_ROUNDS, QuietWindows, Role};
use bulkhead_shmem::ivshmem::{DoorbellEvents, FIRST_MSI_INTERRUPT, Ivshmem};
use bulkhead_shmem::mailbox::{Letter, Mailbox};
use bulkhead_shmem::pci::Bus;
use bulkhead_shmem::{boot_option, exit_fail_with, exit_pass, println, wait};

bulkhead_shmem::entry!(main);

/// Round trips: ten, three on x86_64 (its test machine, Bochs, emulates every instruction).
const ROUNDS: u32 = if cfg!(target_arch = "x86_64") { 3 } else { 10 };
/// Round trips: `ivpingpong.rounds=N` on the command line (a longer exchange beside another test), else
/// [`ROUNDS`].
fn rounds() -> u32 {
    bulkhead_shmem::command_line_value("ivpingpong.rounds")
        .and_then(|value| value.parse().ok())
        .unwrap_or(ROUNDS)
}
/// Doorbell vector used both ways.
const VECTOR: u16 = 0;
/// The interrupt the MSI-X vector is delivered on (aarch64: INTID 96, the first MSI SPI;
/// x86_64: IDT vector 0x28).
const MSI_INTERRUPT: u32 = FIRST_MSI_INTERRUPT;
/// Time the device and the peer have to show up.
const STARTUP_TIMEOUT_MS: u64 = 30_000;
/// Time one message or reply may take.
const ROUND_TIMEOUT_MS: u64 = 5_000;
/// Time ivpong gives ivping's first message and each later one: longer, because ivping may be
/// Linux (qemu/systems/linux-uio) booting first and then driving the device from a shell
/// (about 2 s per round under TCG).
const PONG_FIRST_TIMEOUT_MS: u64 = 120_000;
const PONG_ROUND_TIMEOUT_MS: u64 = 30_000;
/// Offsets in shared memory.
const PING_ID: usize = 0x000;
const PONG_ID: usize = 0x004;
const TO_PONG: usize = 0x100;
const TO_PING: usize = 0x200;

/// The name this end prints.
fn name(role: Role) -> &'static str {
    role.pick("ivping", "ivpong")
}

/// ivping's payloads and ivpong's replies.
const PATTERN: Pattern = Pattern {
    round_step: 41,
    index_step: 13,
    offset: 7,
    reply_xor: 0xa5,
};

struct Link {
    role: Role,
    device: Ivshmem,
    events: &'static DoorbellEvents,
    peer: u16,
}

impl Link {
    fn me(&self) -> &'static str {
        name(self.role)
    }

    fn mailbox(&self, offset: usize) -> Mailbox {
        Mailbox::new(self.device.memory(), offset).unwrap_or_else(|error| {
            exit_fail_with(format_args!(
                "{}: shared memory too small: {error}",
                self.me()
            ))
        })
    }

    fn read(&self, mailbox: &Mailbox) -> Letter {
        mailbox.read().unwrap_or_else(|error| {
            exit_fail_with(format_args!("{}: reading the mailbox: {error}", self.me()))
        })
    }
}

fn main() -> ! {
    let role = Role::from_partition_name("ivpingpong");
    let me = name(role);
    if let Err(error) = bulkhead_shmem::init_interrupts() {
        exit_fail_with(format_args!("{me}: interrupt set-up: {error}"));
    }

    let bus = Bus::discover_ecam().unwrap_or_else(Bus::discover);
    if let Some(pci) = bus.find(
        bulkhead_shmem::ivshmem::VENDOR_ID,
        bulkhead_shmem::ivshmem::DEVICE_ID,
        0,
    ) {
        // Firmware's job, done only where nobody did it (plain QEMU boots without firmware).
        match pci.assign_unassigned_bars() {
            Ok(0) => {}
            Ok(placed) => println!("{me}: placed {placed} unassigned BAR(s) (no firmware)"),
            Err(error) => exit_fail_with(format_args!("{me}: placing BARs: {error}")),
        }
    }
    let device = Ivshmem::find(&bus, 0)
        .unwrap_or_else(|error| exit_fail_with(format_args!("{me}: {error}")));
    let pci = device.pci();
    println!("{me}: PCI configuration through {}", bus.mechanism());
    println!(
        "{me}: ivshmem at PCI slot {} (revision {}, class {:#08x}): registers {:#x}, shared memory {:#x} ({} KiB)",
        pci.slot(),
        pci.revision(),
        pci.class(),
        device.registers_address(),
        device.memory().address(),
        device.memory().len() / 1024
    );

    let use_msix = match role {
        Role::Ping => !boot_option("intx"),
        Role::Pong => boot_option("msix"),
    };
    let events = if use_msix {
        let (events, interrupt) = device
            .use_msix(VECTOR, MSI_INTERRUPT)
            .unwrap_or_else(|error| exit_fail_with(format_args!("{me}: MSI-X set-up: {error}")));
        println!(
            "{me}: doorbells through MSI-X vector {VECTOR} -> {} (message address {:#x})",
            interrupt.labelled(),
            bulkhead_shmem::ivshmem::msi_address()
        );
        events
    } else {
        let (events, interrupt) = device
            .use_intx()
            .unwrap_or_else(|error| exit_fail_with(format_args!("{me}: INTx set-up: {error}")));
        println!("{me}: doorbells through INTx, {}", interrupt.labelled());
        events
    };

    wait::polling(
        "waiting for IVPosition (peer ID)",
        STARTUP_TIMEOUT_MS,
        10,
        || device.position().is_some(),
    );
    let id = device.position().unwrap_or(0);
    println!("{me}: my peer ID is {id}");

    let memory = device.memory();
    let (mine, theirs) = match role {
        Role::Ping => (PING_ID, PONG_ID),
        Role::Pong => (PONG_ID, PING_ID),
    };
    if let Err(error) = memory.store_release_u32(mine, u32::from(id) + 1) {
        exit_fail_with(format_args!("{me}: shared memory too small: {error}"));
    }
    fence(Ordering::SeqCst);
    let other = || memory.load_acquire_u32(theirs).unwrap_or(0);
    if let Some(peer) = other().checked_sub(1) {
        device.ring(peer as u16, VECTOR);
    }
    bulkhead_shmem::enable_interrupts();

    let link = Link {
        role,
        device,
        events,
        peer: 0,
    };
    match role {
        Role::Ping => {
            wait::until("ivping: waiting for ivpong", STARTUP_TIMEOUT_MS, || {
                other() != 0
            });
            let peer = other().wrapping_sub(1) as u16;
            println!("ivping: ivpong is peer {peer}");
            ping(Link { peer, ..link })
        }
        Role::Pong => pong(link),
    }
}

fn ping(link: Link) -> ! {
    let outbox = link.mailbox(TO_PONG);
    let inbox = link.mailbox(TO_PING);
    let mut quiet = QuietWindows::default();
    for round in 1..=rounds() + QUIET_ROUNDS {
        let loud = round <= rounds();
        quiet.round(round, rounds());
        let payload = PATTERN.message(round);
        let checksum = outbox.post(round, &payload).unwrap_or_else(|error| {
            exit_fail_with(format_args!("ivping: posting {round}: {error}"))
        });
        let before = link.events.doorbells();
        link.device.ring(link.peer, VECTOR);
        if loud {
            println!("ivping: sent {round} (checksum {checksum:#010x})");
        }

        wait::until("ivping: waiting for a reply", ROUND_TIMEOUT_MS, || {
            inbox.sequence() == round && link.events.doorbells() != before
        });
        let reply = link.read(&inbox);
        if !reply.checksum_ok() {
            exit_fail_with(format_args!(
                "ivping: reply {round} checksum {:#010x} does not match its payload ({:#010x})",
                reply.checksum,
                bulkhead_shmem::fnv1a(reply.bytes())
            ));
        }
        if reply.bytes() != PATTERN.reply(&payload) {
            exit_fail_with(format_args!(
                "ivping: reply {round} payload is not the transformed message"
            ));
        }
        if loud {
            println!("ivping: got reply {round} checksum ok");
        }
    }
    quiet.report("ivping");
    println!(
        "ivping: {} round trips, {} doorbells",
        rounds() + QUIET_ROUNDS,
        link.events.doorbells()
    );
    exit_pass()
}

fn pong(link: Link) -> ! {
    let inbox = link.mailbox(TO_PONG);
    let outbox = link.mailbox(TO_PING);
    let memory = link.device.memory();
    let mut seen = 0;
    let mut quiet = QuietWindows::default();
    for round in 1..=rounds() + QUIET_ROUNDS {
        let loud = round <= rounds();
        quiet.round(round, rounds());
        let timeout = if round == 1 {
            PONG_FIRST_TIMEOUT_MS
        } else {
            PONG_ROUND_TIMEOUT_MS
        };
        wait::until("ivpong: waiting for a message", timeout, || {
            inbox.sequence() == round && link.events.doorbells() != seen
        });
        seen = link.events.doorbells();
        let message = link.read(&inbox);
        if !message.checksum_ok() {
            exit_fail_with(format_args!(
                "ivpong: message {round} checksum {:#010x} does not match its payload ({:#010x})",
                message.checksum,
                bulkhead_shmem::fnv1a(message.bytes())
            ));
        }
        if loud {
            println!("ivpong: got {round} checksum ok");
        }
        let Some(peer) = memory.load_acquire_u32(PING_ID).unwrap_or(0).checked_sub(1) else {
            exit_fail_with(format_args!(
                "ivpong: message {round} arrived but ivping's peer ID is not in shared memory"
            ))
        };
        let reply = PATTERN.reply(message.bytes());
        let checksum = outbox.post(round, &reply).unwrap_or_else(|error| {
            exit_fail_with(format_args!("ivpong: posting reply {round}: {error}"))
        });
        link.device.ring(peer as u16, VECTOR);
        if loud {
            println!("ivpong: replied {round} (checksum {checksum:#010x})");
        }
    }
    quiet.report("ivpong");
    println!(
        "ivpong: {} messages answered, {} doorbells",
        rounds() + QUIET_ROUNDS,
        link.events.doorbells()
    );
    exit_pass()
}
