//! Host tests of the bridge: configuration space, BAR sizing, placement and moves, windows, INTx and MSI-X.

use alloc::boxed::Box;
use alloc::sync::Arc;
use std::vec::Vec;

use spin::Mutex;

use super::*;
use crate::addr::{GuestPhysAddr, HostPhysAddr};
use crate::device::gic::GicVersion;
use crate::device::{DeviceTable, Effect, Effects};
use crate::exit::AccessWidth::{self, Byte, Double, Half, Word};

pub(crate) const ECAM: u64 = 0x3f00_0000;
pub(crate) const MMIO32: u64 = 0x1000_0000;
pub(crate) const MMIO64: u64 = 0x80_0000_0000;
const HOST: u64 = 0x9000_0000;

/// A partition's view: the bridge's frames in a device table, and the effects accesses left.
pub(crate) struct Harness {
    pub(crate) bridge: PciBridge,
    table: DeviceTable,
    pub(crate) effects: Effects,
}

impl Harness {
    pub(crate) fn new(ram: &[(u64, u64)]) -> Self {
        let bridge = PciBridge::new(GuestPci::QEMU_VIRT, ram);
        let mut table = DeviceTable::new();
        for (base, device) in bridge.mmio_devices(Some(GicVersion::V3)) {
            assert!(table.insert(base, device).is_ok());
        }
        Self {
            bridge,
            table,
            effects: Effects::default(),
        }
    }

    pub(crate) fn read(&mut self, address: u64, width: AccessWidth) -> u64 {
        let address = GuestPhysAddr::new(address);
        self.table
            .read(0, address, width, &mut self.effects)
            .unwrap()
    }

    pub(crate) fn write(&mut self, address: u64, width: AccessWidth, value: u64) {
        let address = GuestPhysAddr::new(address);
        self.table
            .write(0, address, width, value, &mut self.effects)
            .unwrap();
    }

    pub(crate) fn config_read(&mut self, slot: u64, register: u64, width: AccessWidth) -> u64 {
        self.read(ECAM + (slot << 15) + register, width)
    }

    pub(crate) fn config_write(
        &mut self,
        slot: u64,
        register: u64,
        width: AccessWidth,
        value: u64,
    ) {
        self.write(ECAM + (slot << 15) + register, width, value);
    }

    pub(crate) fn take(&mut self) -> Vec<Effect> {
        self.effects.drain().collect()
    }
}

#[derive(Default)]
struct State {
    level: bool,
    vectors: Vec<u16>,
    writes: Vec<(u8, u64, u64)>,
    reads: usize,
}

/// A test function: configurable BARs, pin and MSI-X; its level and signalled vectors are set
/// from outside.
struct Probe {
    bars: [Option<BarSpec>; BAR_COUNT],
    pin: u8,
    msix: Option<MsixSpec>,
    state: Arc<Mutex<State>>,
}

impl PciFunction for Probe {
    fn identity(&self) -> Identity {
        Identity {
            vendor: 0x1234,
            device: 0x5678,
            revision: 2,
            class_code: 0x0c_0330,
            subsystem_vendor: 0xabcd,
            subsystem: 0xef01,
        }
    }
    fn bars(&self) -> [Option<BarSpec>; BAR_COUNT] {
        self.bars
    }
    fn interrupt_pin(&self) -> u8 {
        self.pin
    }
    fn msix(&self) -> Option<MsixSpec> {
        self.msix
    }
    fn bar_read(&mut self, bar: u8, offset: u64, _width: AccessWidth, _c: &mut Context) -> u64 {
        self.state.lock().reads += 1;
        0x5a00 | u64::from(bar) << 12 | offset
    }
    fn bar_write(&mut self, bar: u8, offset: u64, _w: AccessWidth, value: u64, _c: &mut Context) {
        self.state.lock().writes.push((bar, offset, value));
    }
    fn intx_level(&self) -> bool {
        self.state.lock().level
    }
    fn signalled(&mut self, context: &mut Context) {
        for vector in core::mem::take(&mut self.state.lock().vectors) {
            context.signal_vector(vector);
        }
    }
}

fn mmio(size: u64) -> Option<BarSpec> {
    Some(BarSpec {
        size,
        width: BarWidth::Bits32,
        prefetchable: false,
        kind: BarKind::Mmio,
    })
}

fn memory(size: u64, backed: u64) -> Option<BarSpec> {
    Some(BarSpec {
        size,
        width: BarWidth::Bits64,
        prefetchable: true,
        kind: BarKind::Memory {
            host: HostPhysAddr::new(HOST),
            backed,
        },
    })
}

const MSIX: MsixSpec = MsixSpec {
    vectors: 3,
    table_bar: 1,
    table_offset: 0,
    pba_bar: 1,
    pba_offset: 0x800,
};

/// BAR0 256 B, BAR1 4 KiB (MSI-X when `msix`), BAR2 64-bit 2 MiB with 1.5 MiB of memory.
fn probe(pin: u8, msix: bool) -> (Box<Probe>, Arc<Mutex<State>>) {
    let state = Arc::new(Mutex::new(State::default()));
    let function = Probe {
        bars: [
            mmio(0x100),
            mmio(0x1000),
            memory(0x20_0000, 0x18_0000),
            None,
            None,
            None,
        ],
        pin,
        msix: msix.then_some(MSIX),
        state: state.clone(),
    };
    (Box::new(function), state)
}

fn small(pin: u8) -> (Box<Probe>, Arc<Mutex<State>>) {
    let state = Arc::new(Mutex::new(State::default()));
    let function = Probe {
        bars: [mmio(0x100), None, None, None, None, None],
        pin,
        msix: None,
        state: state.clone(),
    };
    (Box::new(function), state)
}

fn map(guest: u64, size: u64) -> Effect {
    Effect::MapMemory {
        guest: GuestPhysAddr::new(guest),
        host: HostPhysAddr::new(HOST),
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
fn header_round_trips() {
    let mut pci = Harness::new(&[]);
    pci.bridge.add_function(1, probe(1, true).0).unwrap();
    assert_eq!(pci.config_read(1, 0, Word), 0x5678_1234);
    assert_eq!(pci.config_read(1, 2, Half), 0x5678);
    assert_eq!(pci.config_read(1, 0, Double), 0x0010_0000_5678_1234);
    assert_eq!(pci.config_read(1, 8, Word), 0x0c03_3002);
    assert_eq!(pci.config_read(1, 0xe, Byte), 0, "header type 0");
    assert_eq!(pci.config_read(1, 0x2c, Word), 0xef01_abcd);
    assert_eq!(pci.config_read(1, 0x34, Byte), 0x40);
    assert_eq!(pci.config_read(1, 0x3d, Byte), 1);
    assert_eq!(pci.config_read(1, 0x30, Word), 0, "no expansion ROM");
    // Read-only fields ignore writes; Interrupt Line and Cache Line Size are scratch.
    pci.config_write(1, 0, Word, 0);
    pci.config_write(1, 8, Word, 0);
    pci.config_write(1, 0x3c, Half, 0xff2a);
    pci.config_write(1, 0xc, Word, 0xffff_ff10);
    assert_eq!(pci.config_read(1, 0, Word), 0x5678_1234);
    assert_eq!(pci.config_read(1, 8, Word), 0x0c03_3002);
    assert_eq!(pci.config_read(1, 0x3c, Half), 0x012a);
    assert_eq!(pci.config_read(1, 0xc, Word), 0x10);
    // Past the capability: zero; PCIe extended space: all-ones.
    assert_eq!(pci.config_read(1, 0x80, Word), 0);
    assert_eq!(pci.config_read(1, 0x100, Word), 0xffff_ffff);
    assert_eq!(pci.config_read(1, 0xffc, Word), 0xffff_ffff);
    assert!(pci.take().is_empty());
}

#[test]
fn absent_devices_functions_and_buses_read_all_ones() {
    let mut pci = Harness::new(&[]);
    pci.bridge.add_function(0, small(0).0).unwrap();
    assert_eq!(pci.config_read(0, 0, Word), 0x5678_1234);
    assert_eq!(pci.config_read(2, 0, Word), 0xffff_ffff);
    assert_eq!(pci.config_read(31, 0, Half), 0xffff);
    assert_eq!(pci.read(ECAM + (1 << 12), Word), 0xffff_ffff, "function 1");
    pci.config_write(2, 4, Word, 0xffff_ffff);
    // A function without capabilities: no pointer, no status bit, zeroes past the header.
    assert_eq!(pci.config_read(0, 0x34, Byte), 0);
    assert_eq!(pci.config_read(0, 0x40, Word), 0);
    assert_eq!(pci.config_read(0, 4, Word), 0);
    assert!(pci.take().is_empty());
}

#[test]
fn command_and_status_bits() {
    let mut pci = Harness::new(&[]);
    pci.bridge.add_function(1, small(1).0).unwrap();
    pci.config_write(1, 4, Word, 0xffff_ffff);
    // Memory, Bus Master and INTx Disable stick; I/O and the rest read 0; Status is read-only.
    assert_eq!(pci.config_read(1, 4, Word), 0x0000_0406);
    pci.config_write(1, 5, Byte, 0);
    assert_eq!(pci.config_read(1, 4, Half), 0x0006);
    pci.config_write(1, 4, Byte, 0);
    assert_eq!(pci.config_read(1, 4, Half), 0);
    let (function, _) = probe(0, true);
    pci.bridge.add_function(2, function).unwrap();
    assert_eq!(pci.config_read(2, 6, Half), 0x0010, "capabilities list");
}

#[test]
fn firmware_placement() {
    let mut pci = Harness::new(&[]);
    pci.bridge.add_function(0, probe(1, false).0).unwrap();
    pci.bridge.add_function(3, small(1).0).unwrap();
    let address = |pci: &Harness, slot, bar| pci.bridge.bar_address(slot, bar).map(|a| a.as_u64());
    assert_eq!(address(&pci, 0, 0), Some(MMIO32));
    assert_eq!(address(&pci, 0, 1), Some(MMIO32 + 0x1000));
    assert_eq!(address(&pci, 0, 2), Some(MMIO64));
    assert_eq!(address(&pci, 0, 3), None);
    assert_eq!(address(&pci, 3, 0), Some(MMIO32 + 0x2000));
    assert_eq!(pci.config_read(0, 0x10, Word), MMIO32);
    assert_eq!(
        pci.config_read(0, 0x18, Word),
        0xc,
        "64-bit prefetchable, low half"
    );
    assert_eq!(pci.config_read(0, 0x1c, Word), 0x80);
    assert_eq!(pci.config_read(0, 0x20, Word), 0, "no BAR4");
    assert_eq!(pci.config_read(0, 4, Half), 0, "decoding off after reset");
    // RAM at the start of the 32-bit window pushes BARs past it.
    let pci = Harness::new(&[(MMIO32, 0x10_0000)]);
    pci.bridge.add_function(0, small(0).0).unwrap();
    assert_eq!(address(&pci, 0, 0), Some(MMIO32 + 0x10_0000));
}

#[test]
fn sizing_32_bit_bars() {
    let mut pci = Harness::new(&[]);
    pci.bridge.add_function(0, probe(1, false).0).unwrap();
    for (register, mask) in [(0x10, 0xffff_ff00), (0x14, 0xffff_f000)] {
        let original = pci.config_read(0, register, Word);
        pci.config_write(0, register, Word, 0xffff_ffff);
        assert_eq!(pci.config_read(0, register, Word), mask);
        pci.config_write(0, register, Word, original);
        assert_eq!(pci.config_read(0, register, Word), original);
    }
    // Unused BAR registers size to 0 (not implemented).
    pci.config_write(0, 0x20, Word, 0xffff_ffff);
    assert_eq!(pci.config_read(0, 0x20, Word), 0);
    assert!(pci.take().is_empty(), "no effects with decoding off");
}

#[test]
fn sizing_64_bit_bar_with_decoding_on() {
    let mut pci = Harness::new(&[]);
    pci.bridge.add_function(0, probe(1, false).0).unwrap();
    pci.config_write(0, 4, Half, 2);
    assert_eq!(pci.take(), [map(MMIO64, 0x18_0000)]);
    pci.config_write(0, 0x18, Word, 0xffff_ffff);
    assert_eq!(pci.take(), [unmap(MMIO64, 0x18_0000)]);
    assert_eq!(pci.config_read(0, 0x18, Word), 0xffe0_000c);
    assert_eq!(pci.bridge.bar_address(0, 2), None, "being sized");
    pci.config_write(0, 0x18, Word, 0xc);
    assert_eq!(pci.take(), [map(MMIO64, 0x18_0000)]);
    pci.config_write(0, 0x1c, Word, 0xffff_ffff);
    assert_eq!(pci.config_read(0, 0x1c, Word), 0xffff_ffff);
    assert_eq!(pci.take(), [unmap(MMIO64, 0x18_0000)]);
    pci.config_write(0, 0x1c, Word, 0x80);
    assert_eq!(pci.take(), [map(MMIO64, 0x18_0000)]);
    pci.config_write(0, 4, Half, 0);
    assert_eq!(pci.take(), [unmap(MMIO64, 0x18_0000)]);
}

#[test]
fn bar_moves_accepted() {
    let mut pci = Harness::new(&[]);
    pci.bridge.add_function(0, probe(1, false).0).unwrap();
    pci.bridge.add_function(1, small(1).0).unwrap();
    pci.config_write(0, 4, Half, 2);
    pci.config_write(1, 4, Half, 2);
    pci.take();
    // 64-bit BAR within the 64-bit window: one dword.
    pci.config_write(0, 0x18, Word, 0x4000_000c);
    assert_eq!(
        pci.take(),
        [
            unmap(MMIO64, 0x18_0000),
            map(MMIO64 + 0x4000_0000, 0x18_0000)
        ]
    );
    // Into the 32-bit window with one 64-bit store (low dword first, then high).
    pci.config_write(0, 0x18, Double, 0x1040_000c);
    assert_eq!(
        pci.take(),
        [
            unmap(MMIO64 + 0x4000_0000, 0x18_0000),
            map(0x1040_0000, 0x18_0000)
        ]
    );
    assert_eq!(pci.config_read(0, 0x18, Double), 0x1040_000c);
    // A trapped BAR: served at the new place, master abort at the old one.
    pci.config_write(1, 0x10, Word, MMIO32 + 0x3000);
    assert!(pci.take().is_empty());
    assert_eq!(pci.read(MMIO32 + 0x3010, Word), 0x5a10);
    assert_eq!(pci.read(MMIO32 + 0x2010, Word), 0xffff_ffff);
}

#[test]
fn bar_moves_refused() {
    let ram = [(0x2000_0000, 0x100_0000), (0x4000_0000, 0x1000_0000)];
    let mut pci = Harness::new(&ram);
    pci.bridge.add_function(0, probe(1, false).0).unwrap();
    pci.bridge.add_function(1, small(1).0).unwrap();
    pci.config_write(0, 4, Half, 2);
    pci.take();
    let refused = [
        (1, 0x10, 0x2000_0000, "onto RAM"),
        (1, 0x10, 0x20ff_ff00, "partly onto RAM"),
        (1, 0x10, MMIO32 + 0x1000, "onto another BAR"),
        (0, 0x14, MMIO32, "onto a smaller BAR"),
        (1, 0x10, 0x0900_0000, "below the windows"),
        (1, 0x10, 0x3eff_ff00, "past the 32-bit window"),
        (1, 0x10, ECAM, "onto the ECAM"),
        (0, 0x18, 0x0, "64-bit BAR leaving both windows"),
        (0, 0x1c, 0x200, "64-bit BAR above the 64-bit window"),
        (0, 0x1c, 0x0, "64-bit BAR to address 0"),
    ];
    for (slot, register, value, why) in refused {
        let before = pci.config_read(slot, register, Word);
        pci.config_write(slot, register, Word, value);
        assert_eq!(pci.config_read(slot, register, Word), before, "{why}");
        assert!(pci.take().is_empty(), "{why}");
    }
    assert_eq!(
        pci.bridge.bar_address(0, 2),
        Some(GuestPhysAddr::new(MMIO64))
    );
    // A 64-bit BAR moved onto RAM through a 64-bit store.
    pci.config_write(0, 0x18, Double, 0x2000_000c);
    assert_eq!(pci.config_read(0, 0x18, Double), 0x80_0000_000c);
    assert!(pci.take().is_empty());
}

fn bar_at(pci: &Harness, bar: usize) -> u64 {
    pci.bridge
        .bar_address(0, bar)
        .map_or(0, |address| address.as_u64())
}

#[test]
fn one_store_never_leaves_two_bars_on_one_address() {
    let mut pci = Harness::new(&[(0x2000_0000, 0x100_0000)]);
    pci.bridge.add_function(0, probe(1, false).0).unwrap();
    pci.config_write(0, 4, Half, 2);
    pci.take();
    let bar0 = bar_at(&pci, 0);
    let bar1 = bar_at(&pci, 1);
    assert_ne!(bar0, bar1);
    // One 8-byte store: BAR0 onto BAR1's place, BAR1 onto RAM (refused). BAR1 goes back
    // where it was, so BAR0's move is refused too.
    let value = (0x2000_0000u64 << 32) | bar1;
    pci.config_write(0, 0x10, Double, value);
    assert_eq!(bar_at(&pci, 0), bar0);
    assert_eq!(bar_at(&pci, 1), bar1);
    // Both BARs still answer at their own places.
    assert_eq!(pci.read(bar0 + 0x10, Word), 0x5a10);
    assert_eq!(pci.read(bar1 + 0x10, Word), 0x5a00 | 1 << 12 | 0x10);
    // BAR0 onto BAR1's place while BAR1 moves away (allowed): both end up apart.
    let away = MMIO32 + 0x10_0000;
    pci.config_write(0, 0x10, Double, (away << 32) | bar1);
    let (moved0, moved1) = (bar_at(&pci, 0), bar_at(&pci, 1));
    assert_ne!(moved0, moved1);
    assert_eq!((moved0, moved1), (bar1, away));
}

#[test]
fn windows_master_abort() {
    let mut pci = Harness::new(&[]);
    let (function, state) = probe(1, false);
    pci.bridge.add_function(0, function).unwrap();
    // Decoding off: nothing answers.
    assert_eq!(pci.read(MMIO32 + 4, Word), 0xffff_ffff);
    pci.write(MMIO32 + 4, Word, 1);
    assert_eq!(state.lock().reads, 0);
    assert!(state.lock().writes.is_empty());
    pci.config_write(0, 4, Half, 2);
    pci.take();
    assert_eq!(pci.read(MMIO32 + 4, Word), 0x5a04);
    assert_eq!(
        pci.read(MMIO32 + 0x1008, Byte),
        0x08,
        "BAR1, masked to the width"
    );
    pci.write(MMIO32 + 8, Half, 0x1_beef);
    assert_eq!(state.lock().writes, [(0, 8, 0xbeef)]);
    // Gaps, straddles, memory past its backing, the rest of the 64-bit window.
    assert_eq!(pci.read(MMIO32 + 0x100, Word), 0xffff_ffff);
    assert_eq!(pci.read(MMIO32 + 0xfe, Word), 0xffff_ffff);
    assert_eq!(pci.read(MMIO64 + 0x19_0000, Double), u64::MAX);
    pci.write(MMIO64 + 0x19_0000, Double, 0);
    assert_eq!(pci.read(MMIO64 + 0x100_0000, Word), 0xffff_ffff);
    assert_eq!(pci.read(MMIO32 + 0x2eef_fffc, Word), 0xffff_ffff);
    assert_eq!(state.lock().writes.len(), 1);
    assert!(pci.take().is_empty());
}

#[test]
fn intx_level_status_and_disable() {
    let mut pci = Harness::new(&[]);
    let (function, state) = small(1);
    pci.bridge.add_function(1, function).unwrap();
    let intid = GuestPci::QEMU_VIRT.intx_intid(1, 1).unwrap();
    assert_eq!(intid, 36);
    state.lock().level = true;
    pci.bridge.signal(1, &mut pci.effects);
    assert_eq!(pci.take(), [Effect::SetLevel { intid, level: true }]);
    assert_eq!(pci.config_read(1, 6, Half) & 0x8, 0x8);
    // INTx Disable masks the line but not status bit 3.
    pci.config_write(1, 4, Half, 0x400);
    assert_eq!(
        pci.take(),
        [Effect::SetLevel {
            intid,
            level: false
        }]
    );
    assert_eq!(pci.config_read(1, 4, Word), 0x0008_0400);
    pci.config_write(1, 4, Half, 0);
    assert_eq!(pci.take(), [Effect::SetLevel { intid, level: true }]);
    // Slot 5 pin A shares the INTID: wired-OR.
    let (other, other_state) = small(1);
    pci.bridge.add_function(5, other).unwrap();
    other_state.lock().level = true;
    pci.bridge.signal(5, &mut pci.effects);
    state.lock().level = false;
    pci.bridge.signal(1, &mut pci.effects);
    assert!(pci.take().is_empty());
    other_state.lock().level = false;
    pci.bridge.signal(5, &mut pci.effects);
    assert_eq!(
        pci.take(),
        [Effect::SetLevel {
            intid,
            level: false
        }]
    );
    assert_eq!(pci.config_read(1, 6, Half) & 0x8, 0);
    // Swizzle and pins.
    let layout = GuestPci::QEMU_VIRT;
    assert_eq!(layout.intx_intid(0, 1), Some(35));
    assert_eq!(layout.intx_intid(3, 2), Some(35));
    assert_eq!(layout.intx_intid(2, 4), Some(36));
    assert_eq!(layout.intx_intid(2, 0), None);
    assert_eq!(layout.intx_intid(2, 5), None);
    pci.bridge.signal(30, &mut pci.effects);
    assert!(pci.take().is_empty());
}

#[test]
fn msix_table_pba_and_delivery() {
    let mut pci = Harness::new(&[]);
    let (function, state) = probe(1, true);
    pci.bridge.add_function(0, function).unwrap();
    pci.config_write(0, 4, Half, 2);
    pci.take();
    let table = MMIO32 + 0x1000;
    let pba = table + 0x800;
    assert_eq!(pci.config_read(0, 0x40, Word), 0x0002_0011);
    assert_eq!(pci.config_read(0, 0x44, Word), 0x1);
    assert_eq!(pci.config_read(0, 0x48, Word), 0x801);
    assert_eq!(pci.read(table + 12, Word), 1, "vectors start masked");
    for (vector, data) in [(0u64, 100u64), (1, 200), (2, 101)] {
        pci.write(table + vector * 16, Double, 0x0800_0043);
        pci.write(table + vector * 16 + 8, Word, data);
    }
    assert_eq!(
        pci.read(table, Double),
        0x0800_0040,
        "address bits 1:0 read 0"
    );
    assert_eq!(pci.read(table + 8, Word), 100);
    let signal = |pci: &mut Harness, vector| {
        state.lock().vectors.push(vector);
        pci.bridge.signal(0, &mut pci.effects);
        pci.take()
    };
    assert!(signal(&mut pci, 0).is_empty(), "MSI-X disabled");
    assert_eq!(pci.read(pba, Double), 0);
    // Enabled and function-masked: pending.
    pci.config_write(0, 0x42, Half, 0xc000);
    assert_eq!(pci.config_read(0, 0x42, Half), 0xc002);
    assert!(signal(&mut pci, 0).is_empty());
    assert_eq!(pci.read(pba, Double), 1);
    pci.write(pba, Double, 0);
    assert_eq!(pci.read(pba, Double), 1, "PBA is read-only");
    pci.config_write(0, 0x42, Half, 0x8000);
    assert!(pci.take().is_empty(), "vector 0 itself still masked");
    pci.write(table + 12, Word, 0);
    assert_eq!(pci.take(), [Effect::Raise { intid: 100 }]);
    assert_eq!(pci.read(pba, Double), 0);
    assert_eq!(signal(&mut pci, 0), [Effect::Raise { intid: 100 }]);
    // Data outside the MSI INTIDs and vectors the function lacks are dropped.
    pci.write(table + 16 + 12, Word, 0);
    assert!(signal(&mut pci, 1).is_empty());
    assert!(signal(&mut pci, 3).is_empty());
    assert_eq!(pci.read(pba, Double), 0);
    // INTx is off while MSI-X is enabled.
    state.lock().level = true;
    assert!(signal(&mut pci, 9).is_empty());
    assert_eq!(pci.config_read(0, 6, Half) & 0x8, 0x8);
    pci.config_write(0, 0x43, Byte, 0);
    assert_eq!(
        pci.take(),
        [Effect::SetLevel {
            intid: 35,
            level: true
        }]
    );
    // Table and PBA accesses never reach the function.
    assert!(state.lock().writes.is_empty());
    assert_eq!(state.lock().reads, 0);
}

#[test]
fn add_function_validates() {
    let pci = Harness::new(&[]);
    let with = |bars: [Option<BarSpec>; BAR_COUNT], pin: u8, msix: Option<MsixSpec>| {
        let state = Arc::new(Mutex::new(State::default()));
        Box::new(Probe {
            bars,
            pin,
            msix,
            state,
        })
    };
    let none = [None; BAR_COUNT];
    let bridge = &pci.bridge;
    assert_eq!(
        bridge.add_function(32, with(none, 0, None)),
        Err(PciError::SlotOutOfRange(32))
    );
    assert_eq!(
        bridge.add_function(0, with(none, 5, None)),
        Err(PciError::InvalidPin(5))
    );
    let mut bars = none;
    bars[1] = mmio(0x300);
    assert_eq!(
        bridge.add_function(0, with(bars, 0, None)),
        Err(PciError::InvalidBar(1))
    );
    bars[1] = mmio(8);
    assert_eq!(
        bridge.add_function(0, with(bars, 0, None)),
        Err(PciError::InvalidBar(1))
    );
    let mut bars = none;
    bars[5] = memory(0x1000, 0x1000);
    assert_eq!(
        bridge.add_function(0, with(bars, 0, None)),
        Err(PciError::InvalidBar(5))
    );
    bars = none;
    bars[0] = memory(0x1000, 0x2000);
    assert_eq!(
        bridge.add_function(0, with(bars, 0, None)),
        Err(PciError::InvalidBar(0))
    );
    bars[0] = memory(0x1000, 0x1000);
    bars[1] = mmio(0x100);
    assert_eq!(
        bridge.add_function(0, with(bars, 0, None)),
        Err(PciError::InvalidBar(0))
    );
    bars = none;
    bars[0] = mmio(0x1000);
    let mut msix = MSIX;
    msix.table_bar = 0;
    msix.pba_bar = 0;
    msix.pba_offset = 0x10;
    assert_eq!(
        bridge.add_function(0, with(bars, 0, Some(msix))),
        Err(PciError::InvalidMsix)
    );
    assert_eq!(
        bridge.add_function(0, with(bars, 0, Some(MSIX))),
        Err(PciError::InvalidMsix)
    );
    bars[0] = memory(0x40_0000_0000, 0x1000);
    bars[2] = memory(0x40_0000_0000, 0x1000);
    bars[4] = memory(0x40_0000_0000, 0x1000);
    assert_eq!(
        bridge.add_function(0, with(bars, 0, None)),
        Err(PciError::NoRoom(4))
    );
    assert_eq!(
        bridge.bar_address(0, 0),
        None,
        "a refused function leaves its slot empty"
    );
    bridge.add_function(0, with(none, 0, None)).unwrap();
    assert_eq!(
        bridge.add_function(0, with(none, 0, None)),
        Err(PciError::SlotTaken(0))
    );
}

#[test]
fn garbage_never_panics() {
    let mut pci = Harness::new(&[(0x1000_0000, 0x1000)]);
    pci.bridge.add_function(0, probe(1, true).0).unwrap();
    pci.bridge.add_function(7, small(4).0).unwrap();
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let bases = [(ECAM, 0x10_0000), (MMIO32, 0x2_0000), (MMIO64, 0x40_0000)];
    for round in 0..20_000 {
        let (base, span) = bases[(next() % 3) as usize];
        let width = [Byte, Half, Word, Double][(next() % 4) as usize];
        // Config space of the two slots most of the time, anywhere in the frame otherwise.
        let offset = match next() % 4 {
            0 => next() % (span - 8),
            1 if base == ECAM => (7 << 15) | (next() % 0xff8),
            _ => next() % 0x2000,
        };
        let value = if round % 3 == 0 { u64::MAX } else { next() };
        if next() % 2 == 0 {
            pci.write(base + offset, width, value);
        } else {
            pci.read(base + offset, width);
        }
        if round % 97 == 0 {
            pci.bridge.signal((next() % 40) as u8, &mut pci.effects);
        }
    }
    // Whatever happened, decoding BARs never overlap RAM, the ECAM or each other.
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for slot in [0u8, 7] {
        for bar in 0..BAR_COUNT {
            if let Some(address) = pci.bridge.bar_address(slot, bar) {
                ranges.push((address.as_u64(), [0x100, 0x1000, 0x20_0000][bar.min(2)]));
            }
        }
    }
    let inside =
        |a: u64, size: u64, (base, window): (u64, u64)| base <= a && a + size <= base + window;
    for (i, &(a, a_size)) in ranges.iter().enumerate() {
        let layout = GuestPci::QEMU_VIRT;
        assert!(
            inside(a, a_size, layout.mmio32) || inside(a, a_size, layout.mmio64),
            "{a:#x}"
        );
        assert!(
            a >= 0x1000_1000 || a + a_size <= 0x1000_0000,
            "{a:#x} on RAM"
        );
        for &(b, b_size) in &ranges[i + 1..] {
            assert!(
                a + a_size <= b || b + b_size <= a,
                "{a:#x} and {b:#x} overlap"
            );
        }
    }
}

#[test]
fn x86_config_ports_interrupt_line_and_msi_messages() {
    use crate::device::port::PortTable;
    let layout = GuestPci::X86;
    let bridge = PciBridge::new(layout, &[(0, 0x100_0000)]);
    let mut ports = PortTable::new();
    assert!(ports.insert(0xcf8, bridge.config_ports()).is_ok());
    let mut table = DeviceTable::new();
    for (base, device) in bridge.mmio_devices(None) {
        assert!(table.insert(base, device).is_ok());
    }
    let (function, state) = probe(1, true);
    bridge.add_function(2, function).unwrap();
    let mut effects = Effects::default();
    let address = |register: u64| 0x8000_0000 | (2 << 11) | register;
    let mut config_read = |ports: &mut PortTable, register: u64, width, offset: u16| {
        ports
            .write(0, 0xcf8, Word, address(register), &mut effects)
            .unwrap();
        ports.read(0, 0xcfc + offset, width, &mut effects).unwrap()
    };
    // Identity through CONFIG_ADDRESS/CONFIG_DATA, also by byte and word.
    assert_eq!(config_read(&mut ports, 0, Word, 0), 0x5678_1234);
    assert_eq!(config_read(&mut ports, 0, Half, 2), 0x5678);
    assert_eq!(config_read(&mut ports, 0, Byte, 1), 0x12);
    // Interrupt Line = the I/O APIC pin of slot 2 INTA (16 + (2 + 1 - 1) % 4), pin 1.
    assert_eq!(config_read(&mut ports, 0x3c, Half, 0), 0x0112);
    // CONFIG_ADDRESS reads back; disabled or another bus: all ones; narrow 0xcf8 is not it.
    let mut effects = Effects::default();
    assert_eq!(ports.read(0, 0xcf8, Word, &mut effects), Ok(address(0x3c)));
    ports
        .write(0, 0xcf8, Word, 0x0001_0000, &mut effects)
        .unwrap();
    assert_eq!(ports.read(0, 0xcfc, Word, &mut effects), Ok(0xffff_ffff));
    ports
        .write(0, 0xcf8, Word, 0x8001_0000, &mut effects)
        .unwrap();
    assert_eq!(ports.read(0, 0xcfc, Word, &mut effects), Ok(0xffff_ffff));
    ports.write(0, 0xcfb, Byte, 0x12, &mut effects).unwrap();
    assert_eq!(ports.read(0, 0xcf8, Word, &mut effects), Ok(0x8001_0000));
    // Memory decoding on and MSI-X enabled through the ports; an x86 message leaves as is.
    let mut config_write = |register: u64, width, value| {
        ports
            .write(0, 0xcf8, Word, address(register & !3), &mut effects)
            .unwrap();
        ports
            .write(0, 0xcfc + (register as u16 & 3), width, value, &mut effects)
            .unwrap();
    };
    config_write(4, Half, 2);
    config_write(0x42, Half, 0x8000);
    let msix_table = layout.mmio32.0 + 0x1000;
    let mut effects = Effects::default();
    let mut write = |at: u64, width, value| {
        table
            .write(0, GuestPhysAddr::new(at), width, value, &mut effects)
            .unwrap();
    };
    write(msix_table, Double, 0xfee0_1000);
    write(msix_table + 8, Word, 0x45);
    write(msix_table + 12, Word, 0);
    state.lock().vectors.push(0);
    bridge.signal(2, &mut effects);
    assert_eq!(
        effects.drain().collect::<Vec<_>>(),
        [Effect::Message {
            address: 0xfee0_1000,
            data: 0x45
        }]
    );
}
