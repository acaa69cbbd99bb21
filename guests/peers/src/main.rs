//! `peers`: three partitions (roles `peer0`, `peer1`, `peer2` from the partition name's
//! suffix) attach the QNX shmem region "party" (MMIO form; the factory page and interrupt come
//! from the device tree or the x86_64 boot information, else PCI, else aarch64's
//! `loc 0x0a000000 intr gic:40`). The same source builds for aarch64 and x86_64
//! (`guests/x86/peers-x86`). Each writes its client
//! index + 1 into the region. Peer0 notifies only peer2 (mask = 1 << peer2's index); peer2
//! must see exactly peer0's bit, acknowledges in memory and notifies peer0 back; peer0 then
//! sets "done". Peer1, never notified by anyone, waits for "done", checks after a grace period
//! that no notify bit reached it, and detaches; peer0 and peer2 must see it go (membership-
//! change interrupt, its active bit clear).
//!
//! Region data: 0x00/0x04/0x08 client index + 1 of peer0/1/2, 0x20 peer2's acknowledgement,
//! 0x24 peer0's "done".

#![no_std]
#![no_main]

use bulkhead_shmem::memory::SharedMemory;
use bulkhead_shmem::pci::Bus;
use bulkhead_shmem::qnx::{QnxShmem, Region, RegionEvents};
use bulkhead_shmem::{exit_fail_with, exit_pass, partition_name, println, wait};

bulkhead_shmem::entry!(main);

/// Roles, by partition-name suffix.
const ROLES: [&str; 3] = ["peer0", "peer1", "peer2"];
/// Region name.
const REGION: &str = "party";
/// Data pages asked for.
const PAGES: u32 = 1;
/// The MMIO form's defaults when nothing describes the device (QEMU virt's layout).
const DEFAULT_LOC: u64 = 0x0a00_0000;
const DEFAULT_INTID: u32 = 40;
/// Time for all three to attach.
const STARTUP_TIMEOUT_MS: u64 = 30_000;
/// Time for each later step.
const STEP_TIMEOUT_MS: u64 = 10_000;
/// Period of the checks for conditions only shared memory shows.
const POLL_MS: u64 = 5;
/// How long peer1 keeps watching for a stray notification after "done".
const GRACE_MS: u64 = 100;
/// Offsets in the region's data.
const INDEX_SLOTS: usize = 0x00;
const ACK: usize = 0x20;
const DONE: usize = 0x24;

fn fail(role: usize, what: core::fmt::Arguments<'_>) -> ! {
    exit_fail_with(format_args!("peer{role}: {what}"))
}

fn read(role: usize, memory: &SharedMemory, offset: usize) -> u32 {
    memory
        .load_acquire_u32(offset)
        .unwrap_or_else(|error| fail(role, format_args!("region too small: {error}")))
}

/// Client index (0-15) of peer `which`, once it has written it.
fn index_of(role: usize, memory: &SharedMemory, which: usize) -> Option<u32> {
    read(role, memory, INDEX_SLOTS + 4 * which)
        .checked_sub(1)
        .filter(|&index| index < 16)
}

fn find_device(role: usize) -> QnxShmem {
    if let Ok(device) = QnxShmem::from_platform(0) {
        return device;
    }
    if let Ok(device) = QnxShmem::pci(&Bus::discover(), 0) {
        return device;
    }
    println!(
        "peer{role}: no shmem device in the device tree or on PCI, using MMIO {DEFAULT_LOC:#x} intr {DEFAULT_INTID}"
    );
    QnxShmem::mmio(DEFAULT_LOC, DEFAULT_INTID)
        .unwrap_or_else(|error| fail(role, format_args!("QNX shmem device: {error}")))
}

fn main() -> ! {
    let name = partition_name().unwrap_or("");
    let Some(role) = ROLES.iter().position(|role| name.ends_with(role)) else {
        exit_fail_with(format_args!(
            "peers: partition name \"{name}\" ends in neither peer0, peer1 nor peer2"
        ))
    };
    if let Err(error) = bulkhead_shmem::init_interrupts() {
        fail(role, format_args!("interrupt set-up: {error}"));
    }
    let device = find_device(role);
    println!(
        "peer{role}: QNX shmem factory page at {:#x} ({}), interrupt {} (vector register {})",
        device.factory_address(),
        device.location(),
        device.interrupt(),
        device.vector()
    );
    let region = device
        .attach(REGION, PAGES)
        .unwrap_or_else(|status| fail(role, format_args!("attach \"{REGION}\": {status}")));
    let events = region
        .watch()
        .unwrap_or_else(|error| fail(role, format_args!("watch: {error}")));
    let index = region.index();
    println!(
        "peer{role}: attached \"{REGION}\" as client {index}, data at {:#x}",
        region.data().address()
    );
    if let Err(error) = region
        .data()
        .store_release_u32(INDEX_SLOTS + 4 * role, index + 1)
    {
        fail(role, format_args!("region too small: {error}"));
    }
    bulkhead_shmem::enable_interrupts();
    match role {
        0 => peer0(&region, events),
        1 => peer1(region, events),
        _ => peer2(&region, events),
    }
}

/// Waits until peer `which` has left (its active bit clear), through the membership-change
/// interrupt.
fn wait_for_detach(role: usize, events: &'static RegionEvents, which: u32) {
    let before = events.membership_changes();
    let what = if role == 0 {
        "peer0: waiting for peer1 to detach"
    } else {
        "peer2: waiting for peer1 to detach"
    };
    wait::until(what, STEP_TIMEOUT_MS, || {
        events.active() & (1 << which) == 0
    });
    if events.membership_changes() == before {
        fail(
            role,
            format_args!("peer1's active bit cleared without a membership change"),
        );
    }
    println!(
        "peer{role}: saw peer1 detach (active clients {:#06x})",
        events.active()
    );
}

fn peer0(region: &Region, events: &'static RegionEvents) -> ! {
    let memory = region.data();
    wait::polling(
        "peer0: waiting for peer1 and peer2 to attach",
        STARTUP_TIMEOUT_MS,
        POLL_MS,
        || index_of(0, &memory, 1).is_some() && index_of(0, &memory, 2).is_some(),
    );
    let (Some(peer1), Some(peer2)) = (index_of(0, &memory, 1), index_of(0, &memory, 2)) else {
        fail(0, format_args!("peer indices vanished"))
    };
    println!("peer0: peer1 is client {peer1}, peer2 is client {peer2}");
    let mask = 1u32 << peer2;
    region.notify(mask);
    println!("peer0: notified only peer2 (mask {mask:#06x})");

    wait::until(
        "peer0: waiting for peer2's acknowledgement",
        STEP_TIMEOUT_MS,
        || events.notified() & (1 << peer2) != 0,
    );
    if read(0, &memory, ACK) != 1 {
        fail(0, format_args!("peer2 notified without acknowledging"));
    }
    let notified = events.take_notified();
    println!("peer0: peer2 acknowledged (notified by {notified:#06x})");
    if let Err(error) = memory.store_release_u32(DONE, 1) {
        fail(0, format_args!("{error}"));
    }
    println!("peer0: done flag set");

    wait_for_detach(0, events, peer1);
    exit_pass()
}

fn peer1(region: Region, events: &'static RegionEvents) -> ! {
    let memory = region.data();
    // Nobody notifies peer1, so it looks at memory periodically for "done".
    wait::polling(
        "peer1: waiting for the done flag",
        STARTUP_TIMEOUT_MS + STEP_TIMEOUT_MS,
        POLL_MS,
        || read(1, &memory, DONE) == 1,
    );
    wait::sleep_ms(GRACE_MS);
    events.poll();
    let notified = events.notified();
    if notified != 0 {
        fail(
            1,
            format_args!("notified by {notified:#06x} although nobody notified peer1"),
        );
    }
    println!(
        "peer1: not notified (ok), {} membership changes seen",
        events.membership_changes()
    );
    region.detach();
    println!("peer1: detached");
    exit_pass()
}

fn peer2(region: &Region, events: &'static RegionEvents) -> ! {
    let memory = region.data();
    wait::until(
        "peer2: waiting for peer0's notification",
        STARTUP_TIMEOUT_MS,
        || events.notified() != 0,
    );
    let notified = events.take_notified();
    let Some(peer0) = index_of(2, &memory, 0) else {
        fail(
            2,
            format_args!("notified by {notified:#06x} before peer0 wrote its index"),
        )
    };
    if u32::from(notified) != 1 << peer0 {
        fail(
            2,
            format_args!("notified by {notified:#06x}, expected only peer0 (client {peer0})"),
        );
    }
    println!("peer2: notified by peer0 (mask {notified:#06x})");
    let Some(peer1) = index_of(2, &memory, 1) else {
        fail(2, format_args!("peer1's index is not in the region"))
    };
    if let Err(error) = memory.store_release_u32(ACK, 1) {
        fail(2, format_args!("{error}"));
    }
    region.notify(1 << peer0);
    println!("peer2: acknowledged to peer0");

    wait_for_detach(2, events, peer1);
    exit_pass()
}
