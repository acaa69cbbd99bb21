//! The region registry: creation, attach/find/detach, memory, notify and status.

use alloc::vec::Vec;

use super::{MIB, POOL, client, range, registry};
use crate::addr::{HostPhysAddr, PAGE_SIZE};
use crate::device::{ClientId, Effect, Effects};
use crate::shmem::{Registry, Signals, Status};

fn listed(signals: &Signals) -> Vec<ClientId> {
    signals.iter().collect()
}

#[test]
fn startup_regions_are_zeroed_and_unique_by_name() {
    let (mut registry, zeroes) = registry(4 * MIB);
    let id = registry.create_at_startup("ping-TEST1", 0x10_0000).unwrap();
    let info = registry.region(id).unwrap();
    assert_eq!(info.name.as_str(), "ping-TEST1");
    assert_eq!(info.base, HostPhysAddr::new(POOL));
    assert_eq!(info.size, 0x10_0000);
    assert!(info.startup);
    assert_eq!(info.active, 0);
    // From the pool, whose memory is zeroed already.
    assert!(zeroes.take().is_empty());
    // The same name and size again: the same region, not zeroed again.
    assert_eq!(registry.create_at_startup("ping-TEST1", 0x10_0000), Ok(id));
    assert!(zeroes.take().is_empty());
    assert_eq!(
        registry.create_at_startup("ping-TEST1", 0x20_0000),
        Err(Status::UnknownFailure)
    );
    assert_eq!(
        registry.create_at_startup("empty", 0),
        Err(Status::UnknownFailure)
    );
    assert_eq!(
        registry.create_at_startup("bad*", 4096),
        Err(Status::IllegalName)
    );
    assert_eq!(
        registry.create_at_startup("", 4096),
        Err(Status::IllegalName)
    );
    assert_eq!(
        registry.create_at_startup("huge", 8 * MIB),
        Err(Status::NoMemory)
    );
    assert_eq!(
        registry.create_at_startup("wraps", u64::MAX),
        Err(Status::UnknownFailure)
    );
    // Sizes round up to whole pages.
    let odd = registry.create_at_startup("odd", 100).unwrap();
    assert_eq!(registry.region(odd).unwrap().size, PAGE_SIZE);
    assert_eq!(registry.lookup("odd"), Some(odd));
    assert_eq!(registry.lookup("even"), None);
}

#[test]
fn first_attach_creates_later_ones_join() {
    let (mut registry, zeroes) = registry(4 * MIB);
    let (a, b) = (client(0, 0), client(1, 0));
    let first = registry.attach("moo", 4, a).unwrap();
    assert_eq!(first.index, 0);
    assert_eq!(first.size, 4 * PAGE_SIZE);
    assert_eq!(first.base, HostPhysAddr::new(POOL));
    assert!(zeroes.take().is_empty());
    // A later attach gets the existing size whatever it asks for.
    let second = registry.attach("moo", 99, b).unwrap();
    assert_eq!(second.index, 1);
    assert_eq!((second.base, second.size), (first.base, first.size));
    assert_eq!(second.region, first.region);
    assert_eq!(registry.attach("moo", 0, b), Ok(second));
    // Attaching again changes nothing.
    assert_eq!(registry.attach("moo", 4, a), Ok(first));
    assert_eq!(registry.find("moo", b), Ok(second));
    assert_eq!(registry.active_mask(first.region), 0b11);
    assert_eq!(registry.holder(first.region, 1), Some(b));
    assert_eq!(registry.holder(first.region, 2), None);
    assert!(!registry.region(first.region).unwrap().startup);
    // Attaching marks nothing by itself; announce does.
    assert!(!registry.pending(first.region, 0));
    assert_eq!(listed(&registry.announce(first.region, 1)), [a]);
    assert!(registry.pending(first.region, 0));
    assert!(!registry.pending(first.region, 1));
    assert!(registry.announce(first.region, 7).is_empty());
}

#[test]
fn attach_and_find_errors() {
    let (mut registry, _) = registry(64 * PAGE_SIZE);
    let a = client(0, 0);
    assert_eq!(registry.find("absent", a), Err(Status::DoesNotExist));
    assert_eq!(registry.attach("absent", 0, a), Err(Status::DoesNotExist));
    assert_eq!(registry.attach("bad?", 1, a), Err(Status::IllegalName));
    assert_eq!(registry.find("bad?", a), Err(Status::IllegalName));
    assert_eq!(
        registry.attach(&"x".repeat(32), 1, a),
        Err(Status::IllegalName)
    );
    assert_eq!(registry.attach("big", 65, a), Err(Status::NoMemory));
    assert_eq!(registry.attach("huge", u32::MAX, a), Err(Status::NoMemory));
    assert_eq!(registry.lookup("big"), None);
    registry.attach("all", 64, a).unwrap();
    assert_eq!(registry.attach("one", 1, a), Err(Status::NoMemory));
    assert_eq!(registry.free_bytes(), 0);
}

#[test]
fn sixteen_clients_at_most() {
    let (mut registry, _) = registry(MIB);
    for partition in 0..16 {
        let attachment = registry.attach("full", 1, client(partition, 0)).unwrap();
        assert_eq!(attachment.index, partition as u8);
    }
    assert_eq!(
        registry.attach("full", 1, client(16, 0)),
        Err(Status::ClientMax)
    );
    assert_eq!(registry.find("full", client(0, 1)), Err(Status::ClientMax));
    // A member is still let back in, and a freed slot is reused.
    assert_eq!(registry.attach("full", 1, client(3, 0)).unwrap().index, 3);
    let region = registry.lookup("full").unwrap();
    assert_eq!(registry.active_mask(region), 0xffff);
    let _ = registry.detach(region, 5);
    assert_eq!(registry.attach("full", 1, client(16, 0)).unwrap().index, 5);
}

#[test]
fn big_regions_are_block_aligned() {
    let mut registry = registry_at(POOL + PAGE_SIZE, 8 * MIB);
    let big = registry.attach("big", 512, client(0, 0)).unwrap();
    assert_eq!(big.base, HostPhysAddr::new(POOL + 2 * MIB));
    let small = registry.attach("small", 1, client(0, 0)).unwrap();
    assert_eq!(small.base, HostPhysAddr::new(POOL + PAGE_SIZE));
    // Without aligned room left, a big region still fits page-aligned.
    let mut registry = registry_at(POOL + PAGE_SIZE, 2 * MIB + PAGE_SIZE);
    let big = registry.attach("big", 512, client(0, 0)).unwrap();
    assert_eq!(big.base, HostPhysAddr::new(POOL + PAGE_SIZE));
}

fn registry_at(start: u64, size: u64) -> Registry {
    let (_, zeroes) = super::registry(0);
    Registry::new(range(start, size), zeroes)
}

#[test]
fn unaligned_pool_shrinks_to_whole_pages() {
    let (_, zeroes) = registry(0);
    let registry = Registry::new(range(POOL + 1, 3 * PAGE_SIZE), zeroes);
    assert_eq!(registry.free_bytes(), 2 * PAGE_SIZE);
    let registry = Registry::new(range(POOL + 1, 10), zeroes);
    assert_eq!(registry.free_bytes(), 0);
    let registry = Registry::new(range(u64::MAX - 10, 10), zeroes);
    assert_eq!(registry.free_bytes(), 0);
}

#[test]
fn detach_tells_the_others_and_frees_the_last() {
    let (mut registry, zeroes) = registry(MIB);
    let (a, b, c) = (client(0, 0), client(1, 0), client(2, 3));
    let first = registry.attach("moo", 2, a).unwrap();
    registry.attach("moo", 0, b).unwrap();
    registry.attach("moo", 0, c).unwrap();
    let region = first.region;
    zeroes.take();
    assert_eq!(listed(&registry.detach(region, 1)), [a, c]);
    assert!(registry.pending(region, 0));
    assert!(registry.pending(region, 2));
    // The status read acknowledges the change and shows who is left.
    assert_eq!(registry.take_status(region, 0), 0b101 << 16);
    assert!(!registry.pending(region, 0));
    // Detaching an empty or impossible slot does nothing.
    assert!(registry.detach(region, 1).is_empty());
    assert!(registry.detach(region, 200).is_empty());
    assert_eq!(listed(&registry.detach(region, 2)), [a]);
    assert!(zeroes.take().is_empty());
    assert_eq!(registry.free_bytes(), MIB - 2 * PAGE_SIZE);
    // The last client leaves: the id goes stale, the memory waits to be zeroed (not in
    // the pool meanwhile), then is zeroed outside the lock and returned.
    assert!(registry.detach(region, 0).is_empty());
    assert!(registry.has_dirty(0));
    assert!(!registry.has_dirty(1));
    assert!(zeroes.take().is_empty());
    assert_eq!(registry.free_bytes(), MIB - 2 * PAGE_SIZE);
    let registry = spin::Mutex::new(registry);
    // Only the releasing partition's scrub takes it (it alone knows its mapping is gone).
    crate::shmem::registry::scrub(&registry, 1);
    assert!(zeroes.take().is_empty());
    crate::shmem::registry::scrub(&registry, 0);
    let mut registry = registry.into_inner();
    assert!(!registry.has_dirty(0));
    assert_eq!(zeroes.take(), [range(POOL, 2 * PAGE_SIZE)]);
    assert_eq!(registry.free_bytes(), MIB);
    assert_eq!(registry.region(region), None);
    assert_eq!(registry.lookup("moo"), None);
    assert_eq!(registry.holder(region, 0), None);
    assert_eq!(registry.active_mask(region), 0);
    assert_eq!(registry.take_status(region, 0), 0);
    assert!(registry.notify(region, 0, !0).is_empty());
    // A new region of the same name is a new region; the stale id does not name it.
    let again = registry.attach("moo", 1, b).unwrap();
    assert_ne!(again.region, region);
    assert_eq!(registry.holder(region, 0), None);
    assert!(registry.detach(region, 0).is_empty());
    assert_eq!(registry.holder(again.region, 0), Some(b));
}

#[test]
fn startup_regions_outlive_their_clients() {
    let (mut registry, zeroes) = registry(MIB);
    let id = registry.create_at_startup("TEST1", 4 * PAGE_SIZE).unwrap();
    zeroes.take();
    let attachment = registry.attach("TEST1", 1, client(0, 0)).unwrap();
    assert_eq!(attachment.region, id);
    assert_eq!(attachment.size, 4 * PAGE_SIZE);
    assert!(registry.detach(id, 0).is_empty());
    assert!(zeroes.take().is_empty());
    assert_eq!(registry.region(id).unwrap().active, 0);
    assert_eq!(registry.find("TEST1", client(1, 0)).unwrap().region, id);
}

#[test]
fn notify_sets_notified_by_bits() {
    let (mut registry, _) = registry(MIB);
    let clients: Vec<ClientId> = (0..4).map(|p| client(p, 0)).collect();
    for &c in &clients {
        registry.attach("ring", 1, c).unwrap();
    }
    let region = registry.lookup("ring").unwrap();
    let _ = registry.detach(region, 2);
    for index in [0, 1, 3] {
        let _ = registry.take_status(region, index);
    }
    // ~0: everyone but me; the empty slot 2 is ignored.
    assert_eq!(
        listed(&registry.notify(region, 0, !0)),
        [clients[1], clients[3]]
    );
    assert!(!registry.pending(region, 0));
    assert!(registry.pending(region, 1));
    // Selective; the sender's own bit, empty slots and bits above 15 are ignored.
    assert_eq!(
        listed(&registry.notify(region, 3, 0b1111 | 0xffff_0000)),
        [clients[0], clients[1]]
    );
    assert!(registry.notify(region, 1, 0b10).is_empty());
    assert!(registry.notify(region, 1, 0).is_empty());
    assert!(registry.notify(region, 1, 1 << 2).is_empty());
    // A sender that is not attached is ignored.
    assert!(registry.notify(region, 2, !0).is_empty());
    assert!(registry.notify(region, 40, !0).is_empty());
    let active = 0b1011 << 16;
    assert_eq!(registry.take_status(region, 1), active | 1 << 0 | 1 << 3);
    assert_eq!(registry.take_status(region, 1), active);
    assert_eq!(registry.take_status(region, 0), active | 1 << 3);
    assert_eq!(registry.take_status(region, 3), active | 1 << 0);
    assert_eq!(registry.take_status(region, 2), 0);
    assert!(!registry.pending(region, 1));
}

#[test]
fn notify_into_signals_what_notify_lists() {
    let (mut registry, _) = registry(MIB);
    let clients: Vec<ClientId> = (0..4).map(|p| client(p, 0)).collect();
    for &c in &clients {
        registry.attach("bell", 1, c).unwrap();
    }
    let region = registry.lookup("bell").unwrap();
    let _ = registry.detach(region, 2);
    for (from, mask) in [
        (0, !0),
        (3, 0b1111 | 0xffff_0000),
        (1, 0b10),
        (2, !0),
        (40, !0),
    ] {
        let listed = listed(&registry.notify(region, from, mask));
        let mut effects = Effects::default();
        registry.notify_into(region, from, mask, &mut effects);
        let signalled: Vec<ClientId> = effects
            .drain()
            .map(|effect| match effect {
                Effect::Signal(client) => client,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(signalled, listed, "from {from} mask {mask:#x}");
    }
    // Both recorded the senders' bits alike (each notify above ran twice).
    assert_eq!(
        registry.take_status(region, 1),
        0b1011 << 16 | 1 << 0 | 1 << 3
    );
}

#[test]
fn detach_all_removes_a_partition_everywhere() {
    let (mut registry, zeroes) = registry(MIB);
    let startup = registry.create_at_startup("kept", PAGE_SIZE).unwrap();
    let (gone, gone2, stays) = (client(1, 0), client(1, 1), client(2, 0));
    registry.attach("kept", 0, gone).unwrap();
    registry.attach("kept", 0, stays).unwrap();
    let shared = registry.attach("shared", 1, gone).unwrap().region;
    registry.attach("shared", 1, gone2).unwrap();
    registry.attach("shared", 1, stays).unwrap();
    let alone = registry.attach("alone", 1, gone2).unwrap().region;
    zeroes.take();
    assert_eq!(listed(&registry.detach_all(1)), [stays]);
    assert_eq!(registry.active_mask(startup), 0b10);
    assert_eq!(registry.active_mask(shared), 0b100);
    assert!(registry.pending(shared, 2));
    assert_eq!(registry.region(alone), None);
    assert!(zeroes.take().is_empty());
    let registry = spin::Mutex::new(registry);
    crate::shmem::registry::scrub(&registry, 1);
    let mut registry = registry.into_inner();
    assert_eq!(zeroes.take().len(), 1);
    assert!(registry.region(startup).is_some());
    assert!(registry.detach_all(1).is_empty());
    assert!(registry.detach_all(9).is_empty());
}

#[test]
fn many_peers_spill_beyond_sixteen_signals() {
    let (mut registry, _) = registry(MIB);
    let leaving = client(0, 0);
    for region in 0..3u16 {
        let name = alloc::format!("r{region}");
        registry.attach(&name, 1, leaving).unwrap();
        for peer in 1..16u16 {
            registry
                .attach(&name, 1, client(region * 16 + peer, 0))
                .unwrap();
        }
    }
    // The same peer twice is listed once.
    registry.attach("r0", 1, leaving).unwrap();
    let signals = registry.detach_all(0);
    assert_eq!(signals.len(), 45);
    let mut all = listed(&signals);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 45);
    let mut again = Signals::new();
    again.extend(&signals);
    again.push(client(1, 0));
    assert_eq!(again.len(), 45);
    assert!(again.contains(client(47, 0)));
    assert!(!again.contains(leaving));
}

/// The coalescing rule README states: notifies from one sender before the receiver reads its
/// status show as one bit (and keep its line asserted); nothing is lost across reads.
#[test]
fn notifies_coalesce_per_sender_until_read_and_are_never_lost() {
    let (mut registry, _) = registry(MIB);
    let (a, b, c) = (client(0, 0), client(1, 0), client(2, 0));
    for who in [a, b, c] {
        registry.attach("bell", 1, who).unwrap();
    }
    let region = registry.lookup("bell").unwrap();
    for index in 0..3 {
        let _ = registry.take_status(region, index);
    }
    let active = 0b111 << 16;
    for _ in 0..5 {
        assert_eq!(listed(&registry.notify(region, 0, 1 << 1)), [b]);
    }
    assert!(registry.pending(region, 1));
    assert_eq!(
        registry.take_status(region, 1),
        active | 1 << 0,
        "five notifies, one bit"
    );
    assert!(!registry.pending(region, 1));
    // Two senders before a read: both bits; a notify after the read: seen again.
    let _ = registry.notify(region, 0, 1 << 1);
    let _ = registry.notify(region, 2, 1 << 1);
    assert_eq!(registry.take_status(region, 1), active | 1 << 0 | 1 << 2);
    for round in 0..100 {
        let _ = registry.notify(region, 2, 1 << 1);
        assert!(registry.pending(region, 1), "round {round}");
        assert_eq!(
            registry.take_status(region, 1),
            active | 1 << 2,
            "round {round}"
        );
    }
}
