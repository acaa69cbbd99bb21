//! The QNX personality end to end: guests on two (or more) devices sharing one registry.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use spin::Mutex;

use super::{MIB, POOL, client, shared_registry};
use crate::addr::{GuestPhysAddr, HostPhysAddr, PAGE_SIZE};
use crate::device::{ClientId, Effect, Effects, MmioDevice, SignalTarget};
use crate::exit::AccessWidth::{self, Byte, Double, Half, Word};
use crate::guest_layout::{SHMEM_WINDOW_SIZE, SHMEM_WINDOWS};
use crate::shmem::qnx::{SIGNATURE, control, factory};
use crate::shmem::{InterruptKind, Policy, QnxShmem, Registry, Rule, Status, Subst};

/// One guest's view of one shmem device.
struct Guest {
    device: Arc<QnxShmem>,
    factory: Box<dyn MmioDevice>,
    window: Box<dyn MmioDevice>,
    intid: u32,
    registry: &'static Mutex<Registry>,
}

fn drain(mut effects: Effects) -> Vec<Effect> {
    effects.drain().collect()
}

/// The effects, with [`Effect::Scrub`] carried out as the partition does (after the unmaps
/// before it) and left in the list.
fn settle(registry: &Mutex<Registry>, partition: u16, effects: Effects) -> Vec<Effect> {
    let effects = drain(effects);
    if effects.contains(&Effect::Scrub) {
        crate::shmem::registry::scrub(registry, partition);
    }
    effects
}

impl Guest {
    fn new(registry: &'static Mutex<Registry>, id: ClientId, policy: Policy) -> Guest {
        Guest::with(QnxShmem::new(
            policy,
            &[],
            id,
            GuestPhysAddr::new(SHMEM_WINDOWS),
            40 + u32::from(id.partition),
            registry,
        ))
    }

    fn with(device: QnxShmem) -> Guest {
        let device = Arc::new(device);
        Guest {
            factory: device.factory_page(),
            window: device.window(),
            intid: device.intid(),
            registry: device.registry(),
            device,
        }
    }

    fn read(&mut self, offset: u64, width: AccessWidth) -> u64 {
        let mut effects = Effects::default();
        let value = self.factory.read(0, offset, width, &mut effects);
        assert_eq!(
            settle(self.registry, self.device.client().partition, effects),
            []
        );
        value
    }

    fn write(&mut self, offset: u64, width: AccessWidth, value: u64) -> Vec<Effect> {
        let mut effects = Effects::default();
        self.factory.write(0, offset, width, value, &mut effects);
        settle(self.registry, self.device.client().partition, effects)
    }

    /// Writes the whole name field, NUL-padded, a word at a time.
    fn set_name(&mut self, name: &str) {
        let mut field = [0u8; 32];
        field[..name.len()].copy_from_slice(name.as_bytes());
        for (i, word) in field.chunks(4).enumerate() {
            let value = u32::from_le_bytes(word.try_into().unwrap());
            self.write(factory::NAME + 4 * i as u64, Word, u64::from(value));
        }
    }

    fn create(&mut self, name: &str, pages: u32) -> Vec<Effect> {
        self.set_name(name);
        self.write(factory::SIZE, Word, u64::from(pages))
    }

    fn find(&mut self, name: &str) -> Vec<Effect> {
        self.set_name(name);
        self.write(factory::FIND, Word, 1)
    }

    fn status(&mut self) -> u32 {
        self.read(factory::STATUS, Word) as u32
    }

    fn size(&mut self) -> u32 {
        self.read(factory::SIZE, Word) as u32
    }

    fn shmem(&mut self) -> u64 {
        self.read(factory::SHMEM, Double)
    }

    /// Reads control register `register` of the region whose control page is at `control`.
    fn control_read(&mut self, control: u64, register: u64) -> (u32, Vec<Effect>) {
        let mut effects = Effects::default();
        let value = self
            .window
            .read(0, control - SHMEM_WINDOWS + register, Word, &mut effects);
        (
            value as u32,
            settle(self.registry, self.device.client().partition, effects),
        )
    }

    fn control_write(&mut self, control: u64, register: u64, value: u32) -> Vec<Effect> {
        let mut effects = Effects::default();
        self.window.write(
            0,
            control - SHMEM_WINDOWS + register,
            Word,
            u64::from(value),
            &mut effects,
        );
        settle(self.registry, self.device.client().partition, effects)
    }

    fn signalled(&self) -> Vec<Effect> {
        let mut effects = Effects::default();
        self.device.signalled(&mut effects);
        settle(self.registry, self.device.client().partition, effects)
    }

    fn level(&self, level: bool) -> Effect {
        Effect::SetLevel {
            intid: self.intid,
            level,
        }
    }
}

fn map(guest: u64, host: u64, size: u64) -> Effect {
    Effect::MapMemory {
        guest: GuestPhysAddr::new(guest),
        host: HostPhysAddr::new(host),
        size,
    }
}

fn unmap(guest: u64, size: u64) -> Effect {
    Effect::UnmapMemory {
        guest: GuestPhysAddr::new(guest),
        size,
    }
}

#[test]
fn factory_page_registers() {
    let (registry, _) = shared_registry(MIB);
    let mut guest = Guest::new(registry, client(0, 0), Policy::default());
    assert_eq!(guest.factory.size(), PAGE_SIZE);
    assert_eq!(guest.window.size(), SHMEM_WINDOW_SIZE);
    assert_eq!(guest.read(factory::SIGNATURE, Double), SIGNATURE);
    assert_eq!(guest.read(factory::SIGNATURE, Word), 0x474d_5651);
    assert_eq!(guest.read(factory::SIGNATURE + 4, Word), 0x4d53_4732);
    assert_eq!(guest.read(factory::SIGNATURE + 1, Byte), 0x56);
    assert_eq!(guest.read(factory::VECTOR, Word), 40);
    assert_eq!(guest.status(), 0);
    assert_eq!(guest.shmem(), 0);
    assert_eq!(guest.size(), 0);
    // Read-only registers ignore writes; unknown offsets read 0 and ignore writes.
    assert_eq!(guest.write(factory::SIGNATURE, Double, 0), []);
    assert_eq!(guest.write(factory::VECTOR, Word, 7), []);
    assert_eq!(guest.write(0x800, Double, !0), []);
    assert_eq!(guest.read(factory::SIGNATURE, Double), SIGNATURE);
    assert_eq!(guest.read(factory::VECTOR, Word), 40);
    assert_eq!(guest.read(0x800, Double), 0);
    assert_eq!(guest.read(factory::FIND, Word), 0);
    assert_eq!(guest.read(PAGE_SIZE - 8, Double), 0);
    // Name bytes by every width.
    guest.write(factory::NAME, Byte, u64::from(b'A'));
    guest.write(
        factory::NAME + 1,
        Half,
        u64::from(u16::from_le_bytes(*b"BC")),
    );
    guest.write(
        factory::NAME + 3,
        Word,
        u64::from(u32::from_le_bytes(*b"DEFG")),
    );
    guest.write(factory::NAME + 7, Double, u64::from_le_bytes(*b"HIJKLMNO"));
    assert_eq!(
        guest.read(factory::NAME, Double),
        u64::from_le_bytes(*b"ABCDEFGH")
    );
    assert_eq!(
        guest.read(factory::NAME + 8, Double),
        u64::from_le_bytes(*b"IJKLMNO\0")
    );
    assert_eq!(
        guest.read(factory::NAME + 2, Half),
        u64::from(u16::from_le_bytes(*b"CD"))
    );
    // A double read across size and name.
    assert_eq!(
        guest.read(factory::SIZE, Double),
        u64::from_le_bytes(*b"\0\0\0\0ABCD")
    );
}

#[test]
fn two_guests_share_a_region_end_to_end() {
    let (registry, zeroes) = shared_registry(MIB);
    let (a_id, b_id) = (client(0, 0), client(1, 0));
    let mut a = Guest::new(registry, a_id, Policy::default());
    let mut b = Guest::new(registry, b_id, Policy::default());
    let control = SHMEM_WINDOWS;
    let data = SHMEM_WINDOWS + PAGE_SIZE;

    // A creates TEST1 with 4 pages: its data pages are mapped after the control page.
    assert_eq!(
        a.create("TEST1", 4),
        [map(data, POOL, 4 * PAGE_SIZE), a.level(false)]
    );
    assert!(
        zeroes.take().is_empty(),
        "the pool's memory is zeroed already"
    );
    assert_eq!(a.status(), 0);
    assert_eq!(a.size(), 4);
    assert_eq!(a.shmem(), control);
    assert_eq!(a.control_read(control, control::INDEX).0, 0);

    // B attaches with size 0 and reads back 4; A is told about the new member.
    assert_eq!(
        b.create("TEST1", 0),
        [
            map(data, POOL, 4 * PAGE_SIZE),
            Effect::Signal(a_id),
            b.level(false)
        ]
    );
    assert_eq!(b.status(), 0);
    assert_eq!(b.size(), 4);
    assert_eq!(b.shmem(), control);
    assert_eq!(b.control_read(control, control::INDEX).0, 1);
    assert_eq!(a.signalled(), [a.level(true)]);
    let (status, effects) = a.control_read(control, control::STATUS);
    assert_eq!(status, 0b11 << 16);
    assert_eq!(effects, [a.level(false)]);

    // A notifies B (~0: everyone but A); A's own line is not touched (nothing of A's
    // changed).
    assert_eq!(
        a.control_write(control, control::NOTIFY, !0),
        [Effect::Signal(b_id)]
    );
    assert_eq!(b.signalled(), [b.level(true)]);
    assert!(b.device.interrupt_pending());
    let (status, effects) = b.control_read(control, control::STATUS);
    assert_eq!(status, 0b11 << 16 | 1 << 0);
    assert_eq!(effects, [b.level(false)]);
    // The second read has nothing new.
    assert_eq!(b.control_read(control, control::STATUS).0, 0b11 << 16);
    assert!(!b.device.interrupt_pending());
    // Notifying oneself or an empty slot is ignored: no signal, B's line untouched.
    assert_eq!(b.control_write(control, control::NOTIFY, 0b1110), []);
    assert_eq!(
        b.control_write(control, control::STATUS, 5),
        [b.level(false)]
    );

    // B detaches: its data pages go, A sees the membership change.
    assert_eq!(
        b.control_write(control, control::DETACH, 0),
        [
            Effect::Signal(a_id),
            unmap(data, 4 * PAGE_SIZE),
            b.level(false)
        ]
    );
    // B's control page is gone: reads 0, writes ignored.
    assert_eq!(b.control_read(control, control::STATUS), (0, vec![]));
    assert_eq!(b.control_read(control, control::INDEX), (0, vec![]));
    assert_eq!(b.control_write(control, control::NOTIFY, !0), []);
    assert_eq!(a.signalled(), [a.level(true)]);
    assert_eq!(a.control_read(control, control::STATUS).0, 1 << 16);

    // A, the last client, detaches: the run-time region is unmapped, then zeroed (outside
    // the registry's lock) and freed.
    assert_eq!(
        a.control_write(control, control::DETACH, 1),
        [unmap(data, 4 * PAGE_SIZE), Effect::Scrub, a.level(false)]
    );
    assert_eq!(zeroes.take(), [super::range(POOL, 4 * PAGE_SIZE)]);
    assert_eq!(registry.lock().lookup("TEST1"), None);
    assert_eq!(registry.lock().free_bytes(), MIB);
}

#[test]
fn refusals_and_errors_set_the_status() {
    let (registry, _) = shared_registry(16 * PAGE_SIZE);
    let policy = Policy::new(vec![Rule::allow("test*")], Vec::new());
    let mut guest = Guest::new(registry, client(0, 0), policy);
    let level = guest.level(false);

    // Refused by the restriction list: status 5, nothing created.
    assert_eq!(guest.create("pluto", 1), [level]);
    assert_eq!(guest.status(), Status::NoPermission.code());
    assert_eq!(guest.shmem(), 0);
    assert_eq!(guest.size(), 0);
    assert_eq!(registry.lock().lookup("pluto"), None);
    assert_eq!(registry.lock().free_bytes(), 16 * PAGE_SIZE);

    // Illegal names: glob characters, empty, unterminated.
    assert_eq!(guest.create("test*", 1), [level]);
    assert_eq!(guest.status(), 4);
    guest.create("", 1);
    assert_eq!(guest.status(), 4);
    for offset in (0..32).step_by(8) {
        guest.write(
            factory::NAME + offset,
            Double,
            u64::from_le_bytes(*b"testtest"),
        );
    }
    guest.write(factory::SIZE, Word, 1);
    assert_eq!(guest.status(), 4);

    // Find of an absent region; an attach that cannot create.
    assert_eq!(guest.find("test-absent"), [level]);
    assert_eq!(guest.status(), Status::DoesNotExist.code());
    guest.create("test-absent", 0);
    assert_eq!(guest.status(), 6);

    // The pool is exhausted.
    guest.create("test-big", 17);
    assert_eq!(guest.status(), Status::NoMemory.code());
    guest.create("test-fits", 16);
    assert_eq!(guest.status(), 0);
    guest.create("test-more", 1);
    assert_eq!(guest.status(), 2);
    assert_eq!(guest.shmem(), 0);

    // A success after errors shows the region again.
    guest.find("test-fits");
    assert_eq!(guest.status(), 0);
    assert_eq!(guest.shmem(), SHMEM_WINDOWS);
    assert_eq!(guest.size(), 16);
}

#[test]
fn seventeenth_client_is_refused() {
    let (registry, _) = shared_registry(MIB);
    let mut guests: Vec<Guest> = (0..17)
        .map(|p| Guest::new(registry, client(p, 0), Policy::default()))
        .collect();
    for guest in &mut guests[..16] {
        guest.create("crowd", 1);
        assert_eq!(guest.status(), 0);
    }
    let last = &mut guests[16];
    assert_eq!(last.create("crowd", 1), [last.level(false)]);
    assert_eq!(last.status(), Status::ClientMax.code());
    assert_eq!(last.shmem(), 0);
    // Everyone before was told about each newcomer.
    assert_eq!(guests[0].signalled(), [guests[0].level(true)]);
    assert_eq!(
        guests[0].control_read(SHMEM_WINDOWS, control::STATUS).0,
        0xffff << 16
    );
}

#[test]
fn find_and_reattach() {
    let (registry, _) = shared_registry(MIB);
    let mut a = Guest::new(registry, client(0, 0), Policy::default());
    let mut b = Guest::new(registry, client(1, 0), Policy::default());
    a.create("ring", 2);
    let effects = b.find("ring");
    assert!(effects.contains(&map(SHMEM_WINDOWS + PAGE_SIZE, POOL, 2 * PAGE_SIZE)));
    assert_eq!((b.status(), b.size()), (0, 2));
    // Attaching again gives the same control page and maps nothing new.
    assert_eq!(b.create("ring", 8), [b.level(false)]);
    assert_eq!((b.status(), b.size(), b.shmem()), (0, 2, SHMEM_WINDOWS));
    assert_eq!(b.find("ring"), [b.level(false)]);
}

#[test]
fn regions_are_placed_first_fit_in_the_window() {
    let (registry, _) = shared_registry(16 * MIB);
    let mut guest = Guest::new(registry, client(0, 0), Policy::default());
    let w = SHMEM_WINDOWS;
    assert_eq!(
        guest.create("one", 2)[0],
        map(w + PAGE_SIZE, POOL, 2 * PAGE_SIZE)
    );
    assert_eq!(guest.shmem(), w);
    // A 2 MiB region gets 2 MiB-aligned data, on host and guest side.
    assert_eq!(
        guest.create("big", 512)[0],
        map(w + 2 * MIB, POOL + 2 * MIB, 2 * MIB)
    );
    assert_eq!(guest.shmem(), w + 2 * MIB - PAGE_SIZE);
    // A small one fills the hole after the first.
    assert_eq!(
        guest.create("two", 1)[0],
        map(w + 4 * PAGE_SIZE, POOL + 2 * PAGE_SIZE, PAGE_SIZE)
    );
    assert_eq!(guest.shmem(), w + 3 * PAGE_SIZE);
    // Each control page answers for its own region.
    assert_eq!(
        guest.control_read(w + 3 * PAGE_SIZE, control::STATUS).0,
        1 << 16
    );
    // Detaching the first frees its span for the next.
    let effects = guest.control_write(w, control::DETACH, 0);
    assert!(effects.contains(&unmap(w + PAGE_SIZE, 2 * PAGE_SIZE)));
    assert_eq!(
        guest.create("three", 1)[0],
        map(w + PAGE_SIZE, POOL, PAGE_SIZE)
    );
    assert_eq!(guest.shmem(), w);
    // Bytes of the window that are not control registers read 0.
    assert_eq!(guest.control_read(w, 0x10).0, 0);
    assert_eq!(guest.control_read(w + 3 * PAGE_SIZE, 0xffc).0, 0);
    assert_eq!(guest.control_read(w + 10 * MIB, 0).0, 0);
}

#[test]
fn a_region_too_big_for_the_window_is_refused() {
    let (registry, zeroes) = shared_registry(SHMEM_WINDOW_SIZE + MIB);
    let mut guest = Guest::new(registry, client(0, 0), Policy::default());
    let pages = u32::try_from(SHMEM_WINDOW_SIZE / PAGE_SIZE).unwrap();
    // Attached in the registry, then refused for want of window room: detached again, and
    // the memory it took is scrubbed back into the pool.
    assert_eq!(
        guest.create("whole", pages),
        [Effect::Scrub, guest.level(false)]
    );
    assert_eq!(guest.status(), Status::NoMemory.code());
    assert_eq!(registry.lock().lookup("whole"), None);
    assert_eq!(registry.lock().free_bytes(), SHMEM_WINDOW_SIZE + MIB);
    // Zeroed once, when it went back to the pool (the pool's memory was zeroed already).
    assert_eq!(zeroes.take().len(), 1);
}

#[test]
fn subst_and_startup_creates() {
    let (registry, _) = shared_registry(MIB);
    let creates = [(String::from("foomem"), 2 * PAGE_SIZE)];
    let policy = Policy::new(
        vec![Rule::deny("secret*")],
        vec![Subst::new("foo", "guest0")],
    );
    let device = QnxShmem::new(
        policy,
        &creates,
        client(0, 0),
        GuestPhysAddr::new(SHMEM_WINDOWS),
        40,
        registry,
    );
    assert_eq!(device.create_startup_regions(), Ok(()));
    let id = registry.lock().lookup("guest0mem").unwrap();
    assert!(registry.lock().region(id).unwrap().startup);
    let mut guest = Guest::with(device);
    // The guest uses its own name for it; not attached until it asks.
    assert_eq!(registry.lock().active_mask(id), 0);
    guest.create("foomem", 0);
    assert_eq!((guest.status(), guest.size()), (0, 2));
    assert_eq!(registry.lock().active_mask(id), 1);
    // Another device with another subst sees another region.
    let policy = Policy::new(Vec::new(), vec![Subst::new("", "guest1")]);
    let mut other = Guest::new(registry, client(1, 0), policy);
    other.create("mem", 1);
    assert!(registry.lock().lookup("guest1mem").is_some());
    // Detaching does not free a start-up region.
    guest.control_write(SHMEM_WINDOWS, control::DETACH, 0);
    assert!(registry.lock().region(id).is_some());
    // A create whose size conflicts is reported with its name.
    let creates = [(String::from("guest0mem"), PAGE_SIZE)];
    let clash = QnxShmem::new(
        Policy::default(),
        &creates,
        client(2, 0),
        GuestPhysAddr::new(SHMEM_WINDOWS),
        40,
        registry,
    );
    assert_eq!(
        clash.create_startup_regions(),
        Err((String::from("guest0mem"), Status::UnknownFailure))
    );
}

#[test]
fn odd_widths_reach_the_right_registers() {
    let (registry, _) = shared_registry(4 * MIB);
    let mut a = Guest::new(registry, client(0, 0), Policy::default());
    let mut b = Guest::new(registry, client(1, 0), Policy::default());
    a.create("wide", 1);
    // A double store at 0x38 holds name bytes 28..32 and the find register.
    b.set_name("wide");
    b.write(factory::NAME + 28, Word, 0);
    b.write(0x38, Double, 0xdead_0000_0000);
    assert_eq!(b.status(), 0);
    assert_eq!(
        b.read(factory::NAME, Word),
        u64::from(u32::from_le_bytes(*b"wide"))
    );
    // A byte store into size creates with that byte's pages.
    b.set_name("bytes");
    b.write(factory::SIZE + 1, Byte, 1);
    assert_eq!((b.status(), b.size()), (0, 256));
    // A byte-wide notify; a half-wide status read takes the status.
    let control = SHMEM_WINDOWS;
    let mut effects = Effects::default();
    b.window.write(0, control::NOTIFY, Byte, 1, &mut effects);
    assert!(drain(effects).contains(&Effect::Signal(client(0, 0))));
    let mut effects = Effects::default();
    assert_eq!(
        a.window.read(0, control::STATUS, Half, &mut effects),
        1 << 1
    );
    assert_eq!(
        a.window.read(0, control::STATUS + 2, Half, &mut effects),
        0b11
    );
    // A double read at 0 gives status and index together.
    let mut effects = Effects::default();
    assert_eq!(
        b.window.read(0, control::STATUS, Double, &mut effects),
        (0b11 << 16) | (1 << 32)
    );
    // A double store at 8 notifies and detaches.
    let mut effects = Effects::default();
    b.window.write(0, control::NOTIFY, Double, 1, &mut effects);
    let effects = drain(effects);
    assert!(effects.contains(&Effect::Signal(client(0, 0))));
    assert!(effects.contains(&unmap(control + PAGE_SIZE, PAGE_SIZE)));
    let wide = registry.lock().lookup("wide").unwrap();
    assert_eq!(registry.lock().active_mask(wide), 1);
}

#[test]
fn detach_all_behind_the_device_is_noticed() {
    let (registry, _) = shared_registry(MIB);
    let mut a = Guest::new(registry, client(0, 0), Policy::default());
    let mut b = Guest::new(registry, client(1, 0), Policy::default());
    a.create("ring", 1);
    b.create("ring", 1);
    a.signalled();
    a.control_read(SHMEM_WINDOWS, control::STATUS);
    let signals = registry.lock().detach_all(1);
    assert_eq!(signals.iter().collect::<Vec<_>>(), [client(0, 0)]);
    // B's next access drops the stale mapping instead of acting for someone else.
    assert_eq!(
        b.control_read(SHMEM_WINDOWS, control::STATUS),
        (0, vec![unmap(SHMEM_WINDOWS + PAGE_SIZE, PAGE_SIZE)])
    );
    assert_eq!(a.signalled(), [a.level(true)]);
    // A newcomer may now take slot 1; B's old view cannot touch it.
    let mut c = Guest::new(registry, client(2, 0), Policy::default());
    c.create("ring", 1);
    assert_eq!(c.control_read(SHMEM_WINDOWS, control::INDEX).0, 1);
    assert_eq!(b.control_write(SHMEM_WINDOWS, control::DETACH, 0), []);
    let ring = registry.lock().lookup("ring").unwrap();
    assert_eq!(registry.lock().active_mask(ring), 0b11);
}

#[test]
fn reset_detaches_everything() {
    let (registry, _) = shared_registry(MIB);
    let mut a = Guest::new(registry, client(0, 0), Policy::default());
    let mut b = Guest::new(registry, client(1, 0), Policy::default());
    a.create("one", 1);
    a.create("two", 1);
    b.create("one", 1);
    let mut effects = Effects::default();
    a.device.reset(&mut effects);
    let effects = drain(effects);
    assert!(effects.contains(&Effect::Signal(client(1, 0))));
    assert!(effects.contains(&unmap(SHMEM_WINDOWS + PAGE_SIZE, PAGE_SIZE)));
    assert!(effects.contains(&unmap(SHMEM_WINDOWS + 3 * PAGE_SIZE, PAGE_SIZE)));
    assert_eq!(effects.last(), Some(&a.level(false)));
    assert_eq!((a.status(), a.shmem(), a.size()), (0, 0, 0));
    assert_eq!(a.read(factory::NAME, Double), 0);
    assert_eq!(registry.lock().lookup("two"), None);
    let one = registry.lock().lookup("one").unwrap();
    assert_eq!(registry.lock().active_mask(one), 0b10);
}

#[test]
fn edge_interrupts_and_masking() {
    let (registry, _) = shared_registry(MIB);
    let mut a = Guest::with(
        QnxShmem::new(
            Policy::default(),
            &[],
            client(0, 0),
            GuestPhysAddr::new(SHMEM_WINDOWS),
            50,
            registry,
        )
        .with_interrupt_kind(InterruptKind::Edge),
    );
    let mut b = Guest::new(registry, client(1, 0), Policy::default());
    assert_eq!(
        a.create("edge", 1),
        [map(SHMEM_WINDOWS + PAGE_SIZE, POOL, PAGE_SIZE)]
    );
    b.create("edge", 1);
    assert_eq!(a.signalled(), [Effect::Raise { intid: 50 }]);
    assert_eq!(
        a.control_read(SHMEM_WINDOWS, control::STATUS),
        (0b11 << 16, vec![])
    );
    assert_eq!(a.signalled(), []);

    // Masking holds a level line low while something is pending.
    b.control_write(SHMEM_WINDOWS, control::NOTIFY, 1);
    let mut effects = Effects::default();
    a.device.set_interrupt_masked(true, &mut effects);
    assert_eq!(drain(effects), []);
    assert!(a.device.interrupt_pending());
    let mut effects = Effects::default();
    a.device.set_interrupt_masked(false, &mut effects);
    assert_eq!(drain(effects), [Effect::Raise { intid: 50 }]);

    let mut effects = Effects::default();
    b.device.set_interrupt_masked(true, &mut effects);
    a.control_write(SHMEM_WINDOWS, control::NOTIFY, !0);
    assert_eq!(b.signalled(), [b.level(false)]);
    assert!(b.device.interrupt_pending());
    let mut effects = Effects::default();
    b.device.set_interrupt_masked(false, &mut effects);
    assert_eq!(drain(effects), [b.level(true)]);
}

#[test]
fn any_access_anywhere_is_harmless() {
    let (registry, _) = shared_registry(MIB);
    let mut a = Guest::new(registry, client(0, 0), Policy::default());
    let mut b = Guest::new(registry, client(1, 0), Policy::default());
    b.create("peer", 1);
    let widths = [Byte, Half, Word, Double];
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        seed
    };
    for _ in 0..20_000 {
        let (r, value) = (next(), next());
        let width = widths[(r % 4) as usize];
        let mut effects = Effects::default();
        match (r >> 2) % 4 {
            0 => {
                let offset = (r >> 8) % (factory::END + 8);
                a.factory.write(0, offset, width, value % 64, &mut effects);
            }
            1 => {
                let offset = (r >> 8) % (PAGE_SIZE - 7);
                a.factory.read(0, offset, width, &mut effects);
            }
            2 => {
                let offset = (r >> 8) % (4 * PAGE_SIZE);
                a.window.write(0, offset, width, value, &mut effects);
            }
            _ => {
                let offset = (r >> 8) % (SHMEM_WINDOW_SIZE - 7);
                a.window.read(0, offset, width, &mut effects);
            }
        }
        let _ = drain(effects);
    }
    assert_eq!(a.read(factory::SIGNATURE, Double), SIGNATURE);
}
