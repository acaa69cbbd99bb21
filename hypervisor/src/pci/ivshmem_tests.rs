//! Host tests of the ivshmem personality: identity and BARs, registers, and two peers ringing each other over INTx and MSI-X.

use alloc::boxed::Box;
use alloc::sync::Arc;
use std::vec::Vec;

use spin::Mutex;

use super::doorbell::{self, DoorbellBoard, SharedBoard};
use super::ivshmem::{Ivshmem, PeerLink, SharedMemory, Variant};
use super::tests::{Harness, MMIO32, MMIO64};
use crate::addr::{GuestPhysAddr, HostPhysAddr};
use crate::device::{ClientId, Effect, Effects};
use crate::exit::AccessWidth::{Byte, Double, Half, Word};

const REGION_HOST: u64 = 0xa000_0000;
const REGION_SIZE: u64 = 0x30_0000;
/// Partition A's device sits in slot 1, B's in slot 2.
const SLOT_A: u8 = 1;
const SLOT_B: u8 = 2;
/// Register block addresses (BAR0 is each function's first 32-bit BAR).
const REGISTERS: u64 = MMIO32;
const INTR_MASK: u64 = REGISTERS;
const INTR_STATUS: u64 = REGISTERS + 4;
const IV_POSITION: u64 = REGISTERS + 8;
const DOORBELL: u64 = REGISTERS + 12;
const MSIX_TABLE: u64 = MMIO32 + 0x1000;

fn board() -> SharedBoard {
    let mut board = DoorbellBoard::new();
    let memory = SharedMemory {
        host: HostPhysAddr::new(REGION_HOST),
        size: REGION_SIZE,
    };
    board.add_region("pingpong", memory).unwrap();
    Arc::new(Mutex::new(board))
}

fn client(partition: u16) -> ClientId {
    ClientId {
        partition,
        device: 0,
    }
}

/// One partition with one ivshmem device attached to the board's region.
fn partition(board: &SharedBoard, index: u16, slot: u8, variant: Variant) -> Harness {
    let vectors = match variant {
        Variant::Plain => 0,
        Variant::Doorbell { vectors } => vectors,
    };
    let link = doorbell::attach(board, "pingpong", client(index), vectors).unwrap();
    let memory = link.memory();
    let function = Ivshmem::new(variant, memory, Box::new(link)).unwrap();
    let mut harness = Harness::new(&[(0x4000_0000, 0x1000_0000)]);
    harness
        .bridge
        .add_function(slot, Box::new(function))
        .unwrap();
    harness.config_write(u64::from(slot), 4, Half, 2);
    harness.take();
    harness
}

/// Two doorbell peers (A peer 0, B peer 1) with 2 vectors each.
fn pair() -> (SharedBoard, Harness, Harness) {
    let board = board();
    let doorbell = Variant::Doorbell { vectors: 2 };
    let a = partition(&board, 0, SLOT_A, doorbell);
    let b = partition(&board, 1, SLOT_B, doorbell);
    (board, a, b)
}

/// What the lead does with `Effect::Signal`: run the target device's `signalled` in its
/// partition. Returns the effects left for the partitions' GICs, per partition.
fn route(effects: Vec<Effect>, partitions: &mut [(&mut Harness, u8)]) -> Vec<Effect> {
    let mut rest = Vec::new();
    for effect in effects {
        match effect {
            Effect::Signal(target) => {
                let (harness, slot) = &mut partitions[usize::from(target.partition)];
                harness.bridge.signal(*slot, &mut harness.effects);
            }
            other => rest.push(other),
        }
    }
    rest
}

#[test]
fn identity_and_bars() {
    let (_board, mut a, _b) = pair();
    let slot = u64::from(SLOT_A);
    assert_eq!(a.config_read(slot, 0, Word), 0x1110_1af4);
    assert_eq!(a.config_read(slot, 8, Word), 0x0500_0001);
    assert_eq!(a.config_read(slot, 0x2c, Word), 0x1100_1af4);
    assert_eq!(a.config_read(slot, 0x3d, Byte), 1, "INTA");
    assert_eq!(
        a.config_read(slot, 6, Half) & 0x10,
        0x10,
        "MSI-X capability"
    );
    assert_eq!(a.config_read(slot, 0x40, Word), 0x0001_0011, "2 vectors");
    let size = |a: &mut Harness, register| {
        let original = a.config_read(slot, register, Word);
        a.config_write(slot, register, Word, 0xffff_ffff);
        let mask = a.config_read(slot, register, Word);
        a.config_write(slot, register, Word, original);
        mask
    };
    assert_eq!(size(&mut a, 0x10), 0xffff_ff00, "256-byte registers");
    assert_eq!(size(&mut a, 0x14), 0xffff_f000, "4 KiB MSI-X");
    assert_eq!(
        size(&mut a, 0x18),
        0xffc0_000c,
        "4 MiB, 64-bit prefetchable"
    );
    assert_eq!(size(&mut a, 0x1c), 0xffff_ffff);
    // Sizing BAR2 with decoding on unmapped and remapped it; only the region's 3 MiB.
    let map = Effect::MapMemory {
        guest: GuestPhysAddr::new(MMIO64),
        host: HostPhysAddr::new(REGION_HOST),
        size: REGION_SIZE,
    };
    let effects = a.take();
    assert_eq!(effects.last(), Some(&map));
    assert_eq!(
        a.read(MMIO64 + REGION_SIZE, Word),
        0xffff_ffff,
        "past the region"
    );

    let board = board();
    let mut plain = partition(&board, 0, 0, Variant::Plain);
    assert_eq!(plain.config_read(0, 0x3d, Byte), 0, "no pin");
    assert_eq!(plain.config_read(0, 6, Half), 0, "no capabilities");
    assert_eq!(plain.config_read(0, 0x14, Word), 0, "no BAR1");
    assert_eq!(plain.config_read(0, 0x18, Word), 0xc);
    assert_eq!(
        plain.bridge.bar_address(0, 2),
        Some(GuestPhysAddr::new(MMIO64))
    );
}

#[test]
fn registers() {
    let (_board, mut a, mut b) = pair();
    assert_eq!(a.read(IV_POSITION, Word), 0);
    assert_eq!(b.read(IV_POSITION, Word), 1);
    a.write(INTR_MASK, Word, 0xdead_beef);
    assert_eq!(a.read(INTR_MASK, Word), 0xdead_beef);
    a.write(INTR_MASK + 1, Byte, 0x12);
    assert_eq!(
        a.read(INTR_MASK, Word),
        0xdead_12ef,
        "a byte store changes one byte"
    );
    a.write(INTR_MASK, Word, 0);
    a.write(INTR_STATUS, Word, 0x30);
    assert_eq!(a.read(INTR_STATUS, Word), 0x30);
    assert_eq!(a.read(INTR_STATUS, Word), 0, "read clears");
    a.write(INTR_STATUS, Word, 0x1234);
    assert_eq!(a.read(INTR_STATUS + 1, Byte), 0x12);
    assert_eq!(a.read(INTR_STATUS, Word), 0, "any read clears it all");
    assert_eq!(a.read(DOORBELL, Word), 0);
    assert_eq!(a.read(REGISTERS + 0x10, Word), 0);
    assert_eq!(a.read(REGISTERS + 0xfc, Word), 0);
    a.write(REGISTERS + 0x80, Word, 1);
    a.write(IV_POSITION, Word, 7);
    assert_eq!(
        a.read(IV_POSITION, Double),
        0,
        "IVPosition RO, doorbell reads 0"
    );
    assert!(a.take().is_empty());
}

#[test]
fn position_is_minus_one_until_attached() {
    struct Detached;
    impl PeerLink for Detached {
        fn position(&self) -> Option<u16> {
            None
        }
        fn ring(&self, _peer: u16, _vector: u16, _effects: &mut Effects) -> bool {
            false
        }
        fn take_rung(&self) -> u64 {
            0
        }
    }
    let memory = SharedMemory {
        host: HostPhysAddr::new(REGION_HOST),
        size: 0x1000,
    };
    let function = Ivshmem::new(Variant::Doorbell { vectors: 1 }, memory, Box::new(Detached));
    let mut pci = Harness::new(&[]);
    pci.bridge
        .add_function(0, Box::new(function.unwrap()))
        .unwrap();
    pci.config_write(0, 4, Half, 2);
    assert_eq!(pci.read(IV_POSITION, Word), 0xffff_ffff);
    // Bad shapes are refused.
    let link = || Box::new(Detached);
    let doorbell = |vectors| Variant::Doorbell { vectors };
    assert!(Ivshmem::new(doorbell(0), memory, link()).is_err());
    assert!(Ivshmem::new(doorbell(65), memory, link()).is_err());
    let odd = SharedMemory {
        host: HostPhysAddr::new(REGION_HOST),
        size: 0x1800,
    };
    assert!(Ivshmem::new(Variant::Plain, odd, link()).is_err());
}

#[test]
fn doorbells_over_intx() {
    let (_board, mut a, mut b) = pair();
    let intid_b = 35 + u32::from(SLOT_B) % 4;
    // A rings B's vector 0: the board records it and asks for B's device to be signalled.
    a.write(DOORBELL, Word, 1 << 16);
    let effects = a.take();
    assert_eq!(effects, [Effect::Signal(client(1))]);
    assert!(route(effects, &mut [(&mut a, SLOT_A), (&mut b, SLOT_B)]).is_empty());
    // IntrMask is 0: IntrStatus is set, the line stays low.
    assert!(b.take().is_empty());
    assert_eq!(b.config_read(2, 6, Half) & 0x8, 0);
    b.write(INTR_MASK, Word, 1);
    assert_eq!(
        b.take(),
        [Effect::SetLevel {
            intid: intid_b,
            level: true
        }]
    );
    assert_eq!(b.config_read(2, 6, Half) & 0x8, 0x8, "status bit 3");
    // uio_pci_generic masks through INTx Disable; status bit 3 stays.
    b.config_write(2, 4, Half, 0x402);
    assert_eq!(
        b.take(),
        [Effect::SetLevel {
            intid: intid_b,
            level: false
        }]
    );
    assert_eq!(b.config_read(2, 6, Half) & 0x8, 0x8);
    assert_eq!(b.read(INTR_STATUS, Word), 1);
    assert_eq!(b.config_read(2, 6, Half) & 0x8, 0, "acknowledged");
    b.config_write(2, 4, Half, 0x2);
    assert!(b.take().is_empty());
    // B rings A back; A unmasked first.
    a.write(INTR_MASK, Word, 0xffff_ffff);
    b.write(DOORBELL, Word, 1);
    let effects = b.take();
    assert_eq!(effects, [Effect::Signal(client(0))]);
    route(effects, &mut [(&mut a, SLOT_A), (&mut b, SLOT_B)]);
    let intid_a = 35 + u32::from(SLOT_A) % 4;
    assert_eq!(
        a.take(),
        [Effect::SetLevel {
            intid: intid_a,
            level: true
        }]
    );
    assert_eq!(a.read(INTR_STATUS, Word), 1);
    assert_eq!(
        a.take(),
        [Effect::SetLevel {
            intid: intid_a,
            level: false
        }]
    );
}

#[test]
fn doorbells_over_msix() {
    let (_board, mut a, mut b) = pair();
    b.config_write(2, 0x42, Half, 0x8000);
    for vector in 0..2u64 {
        b.write(MSIX_TABLE + vector * 16, Word, 0x0802_0040);
        b.write(MSIX_TABLE + vector * 16 + 8, Word, 96 + vector);
        b.write(MSIX_TABLE + vector * 16 + 12, Word, 0);
    }
    b.write(INTR_MASK, Word, 1);
    assert!(b.take().is_empty());
    a.write(DOORBELL, Word, (1 << 16) | 1);
    let effects = a.take();
    route(effects, &mut [(&mut a, SLOT_A), (&mut b, SLOT_B)]);
    assert_eq!(b.take(), [Effect::Raise { intid: 97 }]);
    assert_eq!(b.read(INTR_STATUS, Word), 0, "MSI-X, not INTx");
    // Two vectors rung before B's device runs arrive as two messages.
    a.write(DOORBELL, Word, 1 << 16);
    a.write(DOORBELL, Word, (1 << 16) | 1);
    let effects = a.take();
    assert_eq!(effects.len(), 2);
    route(effects, &mut [(&mut a, SLOT_A), (&mut b, SLOT_B)]);
    assert_eq!(
        b.take(),
        [Effect::Raise { intid: 96 }, Effect::Raise { intid: 97 }]
    );
    // A masked vector waits in the PBA.
    b.write(MSIX_TABLE + 12, Word, 1);
    a.write(DOORBELL, Word, 1 << 16);
    let effects = a.take();
    route(effects, &mut [(&mut a, SLOT_A), (&mut b, SLOT_B)]);
    assert!(b.take().is_empty());
    assert_eq!(b.read(MSIX_TABLE + 0x800, Word), 1);
    b.write(MSIX_TABLE + 12, Word, 0);
    assert_eq!(b.take(), [Effect::Raise { intid: 96 }]);
}

#[test]
fn absent_peers_and_vectors_are_ignored() {
    let board = board();
    let mut a = partition(&board, 0, SLOT_A, Variant::Doorbell { vectors: 4 });
    let mut b = partition(&board, 1, SLOT_B, Variant::Doorbell { vectors: 2 });
    let mut plain = partition(&board, 2, 3, Variant::Plain);
    for value in [
        5 << 16,
        (1 << 16) | 2,
        (1 << 16) | 0xffff,
        2 << 16,
        u64::from(u32::MAX),
    ] {
        a.write(DOORBELL, Word, value);
    }
    assert!(a.take().is_empty());
    // A plain device neither rings nor is rung.
    plain.write(DOORBELL, Word, 0);
    assert!(plain.take().is_empty());
    assert_eq!(plain.read(IV_POSITION, Word), 2);
    // B may ring A's vector 3 (A has 4), and itself.
    b.write(DOORBELL, Word, 3);
    b.write(DOORBELL, Word, 1 << 16);
    assert_eq!(
        b.take(),
        [Effect::Signal(client(0)), Effect::Signal(client(1))]
    );
}

#[test]
fn garbage_to_ivshmem_never_panics() {
    let (_board, mut a, mut b) = pair();
    let mut seed = 0x0dd_ba11_u64;
    for round in 0..5_000u64 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let width = [Byte, Half, Word, Double][(seed >> 60) as usize % 4];
        let offset = (seed >> 20) % 0x1ff8;
        let value = if round % 5 == 0 { u64::MAX } else { seed };
        if round % 2 == 0 {
            a.write(MMIO32 + offset, width, value);
        } else {
            a.read(MMIO32 + offset, width);
        }
        let effects = a.take();
        route(effects, &mut [(&mut a, SLOT_A), (&mut b, SLOT_B)]);
        b.take();
    }
}

#[test]
fn reset_restores_power_on_state() {
    let (_board, mut a, mut b) = pair();
    let slot = u64::from(SLOT_B);
    b.write(INTR_MASK, Word, 1);
    a.write(DOORBELL, Word, 1 << 16);
    let effects = a.take();
    route(effects, &mut [(&mut a, SLOT_A), (&mut b, SLOT_B)]);
    b.config_write(slot, 0x10, Word, MMIO32 + 0x8000);
    b.config_write(slot, 0x42, Half, 0x4000);
    b.take();
    assert_eq!(
        b.bridge.bar_address(SLOT_B, 0),
        Some(GuestPhysAddr::new(MMIO32 + 0x8000))
    );
    // A ring that arrives just before the restart is forgotten.
    a.write(DOORBELL, Word, 1 << 16);
    b.bridge.reset(&mut b.effects);
    let unmap = Effect::UnmapMemory {
        guest: GuestPhysAddr::new(MMIO64),
        size: REGION_SIZE,
    };
    let intid = 35 + u32::from(SLOT_B) % 4;
    assert_eq!(
        b.take(),
        [
            unmap,
            Effect::SetLevel {
                intid,
                level: false
            }
        ]
    );
    assert_eq!(
        b.config_read(slot, 4, Word),
        0x0010_0000,
        "no decoding, no INTx status, capabilities"
    );
    assert_eq!(
        b.bridge.bar_address(SLOT_B, 0),
        Some(GuestPhysAddr::new(MMIO32))
    );
    assert_eq!(
        b.config_read(slot, 0x40, Word),
        0x0001_0011,
        "MSI-X off, unmasked"
    );
    b.config_write(slot, 4, Half, 2);
    assert_eq!(b.read(INTR_MASK, Word), 0);
    assert_eq!(b.read(MSIX_TABLE + 12, Word), 1, "vectors masked again");
    route(a.take(), &mut [(&mut a, SLOT_A), (&mut b, SLOT_B)]);
    assert_eq!(b.read(INTR_STATUS, Word), 0);
}

/// Issue 9: once B has programmed an MSI-X vector (MSI-X on, function and vector unmasked),
/// A's fast-lane ring names B's interrupt directly (no signal through B's bridge); while
/// anything masks it, or after B's reset, the ring takes the slow way (pending bit, signal)
/// and B's MSI-X table decides, as before.
#[test]
fn fast_rings_follow_the_receivers_msix_routes() {
    use crate::fast::{FastTarget, MsiRoute, Ring};
    let (_board, mut a, mut b) = pair();
    let fast = a.bridge.enable_fast_lane();
    let ring = |value: u32| match fast.find(DOORBELL, 4) {
        Some(FastTarget::Doorbell(doorbell)) => doorbell.ring(value),
        _ => panic!("A's doorbell register is not on the fast lane"),
    };
    let slow = Some(Ring::Signal(client(1)));
    assert_eq!(ring(1 << 16), slow, "B's MSI-X is off");
    // Drain that ring the slow way (B takes it on INTx: IntrStatus).
    route(
        alloc::vec![Effect::Signal(client(1))],
        &mut [(&mut a, SLOT_A), (&mut b, SLOT_B)],
    );
    b.take();
    b.read(INTR_STATUS, Word);

    b.config_write(2, 0x42, Half, 0x8000);
    for vector in 0..2u64 {
        b.write(MSIX_TABLE + vector * 16, Word, 0x0802_0040);
        b.write(MSIX_TABLE + vector * 16 + 8, Word, 96 + vector);
        b.write(MSIX_TABLE + vector * 16 + 12, Word, 0);
    }
    assert!(b.take().is_empty());
    let direct = |intid| {
        Some(Ring::Deliver {
            partition: 1,
            route: MsiRoute::Spi(intid),
        })
    };
    assert_eq!(ring((1 << 16) | 1), direct(97));
    assert_eq!(ring(1 << 16), direct(96));
    assert_eq!(ring((1 << 16) | 2), None, "B has two vectors");
    assert_eq!(ring(5 << 16), None, "no peer 5");

    // Vector 0 masked: the slow way, and B's PBA keeps it until unmasked.
    b.write(MSIX_TABLE + 12, Word, 1);
    assert_eq!(ring(1 << 16), slow);
    assert_eq!(ring((1 << 16) | 1), direct(97));
    route(
        alloc::vec![Effect::Signal(client(1))],
        &mut [(&mut a, SLOT_A), (&mut b, SLOT_B)],
    );
    assert!(b.take().is_empty());
    assert_eq!(b.read(MSIX_TABLE + 0x800, Word), 1);
    b.write(MSIX_TABLE + 12, Word, 0);
    assert_eq!(b.take(), [Effect::Raise { intid: 96 }]);
    assert_eq!(ring(1 << 16), direct(96));

    // The function mask, then B's reset: the slow way again.
    b.config_write(2, 0x42, Half, 0xc000);
    assert_eq!(ring((1 << 16) | 1), slow);
    b.config_write(2, 0x42, Half, 0x8000);
    assert_eq!(ring((1 << 16) | 1), direct(97));
    b.bridge.reset(&mut b.effects);
    assert_eq!(ring((1 << 16) | 1), slow);
}
