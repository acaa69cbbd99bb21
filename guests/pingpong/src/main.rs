//! `pingpong`: two partitions (roles `ping` and `pong`, from the partition name's suffix)
//! attach the QNX shmem region "pingpong" through the MMIO QNX device the platform describes
//! (device tree, x86_64 boot information), else the PCI one (1C05:0001; on x86_64 found
//! through ports 0xCF8/0xCFC, its INTx on an I/O APIC pin). Whoever attaches first creates
//! it. The same source builds for aarch64 and x86_64 (`guests/x86/pingpong-x86`). Ping
//! waits until pong is an active client (the membership-change interrupt tells it), then
//! plays ten rounds: it posts a message (sequence number, payload, FNV-1a checksum) and
//! notifies pong alone; pong checks the checksum, posts a reply (the payload reversed and
//! XORed with 0x5a, its own checksum) and notifies ping. Both wait in WFI for the device
//! interrupt and check who notified them (signal knowledge).
//!
//! The region is `pingpong.region=NAME` from the partition's command line (the VM file's
//! `cmdline`), else "pingpong"; `pingpong.rounds=N` plays N rounds instead of ten (both ends
//! must be given the same).
//!
//! Region data: 0x000 ping's client index + 1, 0x004 pong's; mailbox ping → pong at 0x100,
//! pong → ping at 0x200.

#![no_std]
#![no_main]

use bulkhead_shmem::exchange::{Pattern, QUIET_ROUNDS, QuietWindows, Role};
use bulkhead_shmem::mailbox::{Letter, Mailbox};
use bulkhead_shmem::memory::SharedMemory;
use bulkhead_shmem::pci::Bus;
use bulkhead_shmem::qnx::{QnxShmem, Region, RegionEvents};
use bulkhead_shmem::{exit_fail_with, exit_pass, println, single_bit, wait};

bulkhead_shmem::entry!(main);

/// Region name unless the command line gives `pingpong.region=NAME`.
const DEFAULT_REGION: &str = "pingpong";
/// Data pages asked for (the creator's choice wins).
const PAGES: u32 = 1;
/// Round trips: ten, three on x86_64 (its test machine, Bochs, emulates every instruction).
const ROUNDS: u32 = if cfg!(target_arch = "x86_64") { 3 } else { 10 };
/// Round trips: `pingpong.rounds=N` on the command line (a longer exchange beside another test), else
/// [`ROUNDS`].
fn rounds() -> u32 {
    bulkhead_shmem::command_line_value("pingpong.rounds")
        .and_then(|value| value.parse().ok())
        .unwrap_or(ROUNDS)
}
/// Time the peer has to show up.
const STARTUP_TIMEOUT_MS: u64 = 30_000;
/// Time one message or reply may take.
const ROUND_TIMEOUT_MS: u64 = 5_000;
/// Offsets in the region's data.
const PING_INDEX: usize = 0x000;
const PONG_INDEX: usize = 0x004;
const TO_PONG: usize = 0x100;
const TO_PING: usize = 0x200;

/// The name this end prints.
fn name(role: Role) -> &'static str {
    role.pick("ping", "pong")
}

/// ping's payloads and pong's replies.
const PATTERN: Pattern = Pattern {
    round_step: 37,
    index_step: 11,
    offset: 5,
    reply_xor: 0x5a,
};

fn mailbox(role: Role, memory: SharedMemory, offset: usize) -> Mailbox {
    Mailbox::new(memory, offset).unwrap_or_else(|error| {
        exit_fail_with(format_args!("{}: region too small: {error}", name(role)))
    })
}

fn read(role: Role, mailbox: &Mailbox) -> Letter {
    mailbox.read().unwrap_or_else(|error| {
        exit_fail_with(format_args!("{}: reading the mailbox: {error}", name(role)))
    })
}

fn main() -> ! {
    let role = Role::from_partition_name("pingpong");
    let me = name(role);
    if let Err(error) = bulkhead_shmem::init_interrupts() {
        exit_fail_with(format_args!("{me}: interrupt set-up: {error}"));
    }

    // The MMIO form first: looking for PCI touches configuration space, which a partition
    // without a PCI bus may not have.
    let device = QnxShmem::from_platform(0)
        .or_else(|_| QnxShmem::pci(&Bus::discover(), 0))
        .unwrap_or_else(|error| exit_fail_with(format_args!("{me}: QNX shmem device: {error}")));
    println!(
        "{me}: QNX shmem factory page at {:#x} ({}), interrupt {}",
        device.factory_address(),
        device.location(),
        device.interrupt()
    );
    println!("{me}: factory page signature {:#018x}", device.signature());

    // IRQs are still masked: the region is watched before its interrupt can arrive.
    let region_name =
        bulkhead_shmem::command_line_value("pingpong.region").unwrap_or(DEFAULT_REGION);
    let region = device.attach(region_name, PAGES).unwrap_or_else(|status| {
        exit_fail_with(format_args!("{me}: attach \"{region_name}\": {status}"))
    });
    let events = region
        .watch()
        .unwrap_or_else(|error| exit_fail_with(format_args!("{me}: watch: {error}")));
    let index = region.index();
    println!(
        "{me}: attached \"{region_name}\", {} page(s), as client {index}, data at {:#x}",
        region.pages(),
        region.data().address()
    );
    let slot = if role == Role::Ping {
        PING_INDEX
    } else {
        PONG_INDEX
    };
    if let Err(error) = region.data().store_release_u32(slot, index + 1) {
        exit_fail_with(format_args!("{me}: region too small: {error}"));
    }
    bulkhead_shmem::enable_interrupts();

    match role {
        Role::Ping => ping(&region, events, index),
        Role::Pong => pong(&region, events, index),
    }
}

fn ping(region: &Region, events: &'static RegionEvents, index: u32) -> ! {
    let role = Role::Ping;
    let mine = 1u16 << index;
    wait::until(
        "ping: waiting for pong to attach",
        STARTUP_TIMEOUT_MS,
        || events.active() & !mine != 0,
    );
    let others = events.active() & !mine;
    let Some(pong) = single_bit(u32::from(others)) else {
        exit_fail_with(format_args!(
            "ping: expected one other client, active clients are {:#06x}",
            events.active()
        ))
    };
    println!(
        "ping: pong is client {pong} (active clients {:#06x})",
        events.active()
    );
    let pong_mask = 1u16 << pong;
    let outbox = mailbox(role, region.data(), TO_PONG);
    let inbox = mailbox(role, region.data(), TO_PING);

    let mut quiet = QuietWindows::default();
    for round in 1..=rounds() + QUIET_ROUNDS {
        let loud = round <= rounds();
        quiet.round(round, rounds());
        let payload = PATTERN.message(round);
        let checksum = outbox
            .post(round, &payload)
            .unwrap_or_else(|error| exit_fail_with(format_args!("ping: posting {round}: {error}")));
        region.notify(u32::from(pong_mask));
        if loud {
            println!("ping: sent {round} (checksum {checksum:#010x})");
        }

        wait::until("ping: waiting for a reply", ROUND_TIMEOUT_MS, || {
            inbox.sequence() == round && events.notified() & pong_mask != 0
        });
        let notified = events.take_notified();
        if notified != pong_mask {
            exit_fail_with(format_args!(
                "ping: reply {round} notified by {notified:#06x}, expected only pong {pong_mask:#06x}"
            ));
        }
        let reply = read(role, &inbox);
        if !reply.checksum_ok() {
            exit_fail_with(format_args!(
                "ping: reply {round} checksum {:#010x} does not match its payload ({:#010x})",
                reply.checksum,
                bulkhead_shmem::fnv1a(reply.bytes())
            ));
        }
        if reply.bytes() != PATTERN.reply(&payload) {
            exit_fail_with(format_args!(
                "ping: reply {round} payload is not the transformed message"
            ));
        }
        if loud {
            println!("ping: got reply {round} checksum ok");
        }
    }
    quiet.report("ping");
    println!(
        "ping: {} round trips, {} device interrupts",
        rounds() + QUIET_ROUNDS,
        events.interrupts()
    );
    exit_pass()
}

fn pong(region: &Region, events: &'static RegionEvents, index: u32) -> ! {
    let role = Role::Pong;
    let mine = 1u16 << index;
    let inbox = mailbox(role, region.data(), TO_PONG);
    let outbox = mailbox(role, region.data(), TO_PING);

    let mut quiet = QuietWindows::default();
    for round in 1..=rounds() + QUIET_ROUNDS {
        let loud = round <= rounds();
        quiet.round(round, rounds());
        let timeout = if round == 1 {
            STARTUP_TIMEOUT_MS
        } else {
            ROUND_TIMEOUT_MS
        };
        wait::until("pong: waiting for a message", timeout, || {
            inbox.sequence() == round && events.notified() != 0
        });
        let notified = events.take_notified();
        let ping_index = region
            .data()
            .load_acquire_u32(PING_INDEX)
            .unwrap_or(0)
            .wrapping_sub(1);
        let ping_mask = u16::try_from(ping_index)
            .ok()
            .filter(|&ping| ping < 16)
            .map(|ping| 1u16 << ping);
        if ping_mask != Some(notified) || notified & mine != 0 {
            exit_fail_with(format_args!(
                "pong: message {round} notified by {notified:#06x}, ping is client {ping_index}"
            ));
        }
        let message = read(role, &inbox);
        if !message.checksum_ok() {
            exit_fail_with(format_args!(
                "pong: message {round} checksum {:#010x} does not match its payload ({:#010x})",
                message.checksum,
                bulkhead_shmem::fnv1a(message.bytes())
            ));
        }
        if loud {
            println!("pong: got {round} checksum ok");
        }
        let reply = PATTERN.reply(message.bytes());
        let checksum = outbox.post(round, &reply).unwrap_or_else(|error| {
            exit_fail_with(format_args!("pong: posting reply {round}: {error}"))
        });
        region.notify(u32::from(notified));
        if loud {
            println!("pong: replied {round} (checksum {checksum:#010x})");
        }
    }
    quiet.report("pong");
    println!(
        "pong: {} messages answered, {} device interrupts",
        rounds() + QUIET_ROUNDS,
        events.interrupts()
    );
    exit_pass()
}
