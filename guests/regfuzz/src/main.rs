//! `regfuzz`: fuzzes every trapped register of its partition from inside, beside victim
//! partitions. From a fixed seed (`regfuzz.seed=N` on the command line, default 0x5eed) it
//! makes `regfuzz.accesses=N` (default 20,000) random accesses of random widths and
//! instruction forms ([`access::Form`]: single, sign-extending, pairs, pre/post-index) at
//! random offsets of every device window it finds: the GIC distributor and redistributors
//! (or GICv2m frame), the PL011, PCI ECAM, every BAR of every PCI function (QNX factory
//! page, ivshmem registers and MSI-X table), the MMIO QNX factory page and the control pages
//! of the regions it attaches. Between them it moves BARs, writes region names and sizes to
//! factory pages, notifies with random masks, detaches, rings doorbells, makes PSCI calls
//! through HVC and SMC and (GICv3) writes ICC_SGI1R_EL1. It prints `regfuzz: passed N
//! accesses` every 5,000 accesses and at the end `regfuzz: N accesses reached (M made),
//! seed S`, then `PASS` and powers off.
//!
//! Left out on purpose (each would end or blind the run, not test the hypervisor):
//! - writes that reach the PL011 data register (offsets 0-3): random bytes on the console
//!   could spell the scenario's forbidden markers; every other PL011 register is fuzzed;
//! - PSCI CPU_OFF of the only vCPU, SYSTEM_OFF, SYSTEM_RESET(2), and functions Bulkhead
//!   does not implement: each stops or restarts the partition by design (the host fuzzer's
//!   known finding: PSCI functions the specification defines stop the partition);
//! - unaligned accesses: device memory faults them at stage 1, inside the guest;
//! - the GICv2 CPU interface: not trapped (the virtual CPU interface is mapped);
//! - interrupts stay masked the whole run (nothing here waits for one).
//!
//! Its restriction list (the VM file) lets it attach only `fuzz*` regions, so the victims'
//! regions are out of its reach by policy, and its ivshmem region is its own.

#![no_std]
#![no_main]

mod access;

use access::Form;
use bulkhead_guest::gic::{self as guest_gic};
use bulkhead_guest::platform::{self, GicLayout};
use bulkhead_guest::psci;
use bulkhead_shmem::pci::Bus;
use bulkhead_shmem::qnx::{Location, QnxShmem};
use bulkhead_shmem::{command_line_value, exit_fail_with, exit_pass, println};

bulkhead_guest::entry!(main);

/// Accesses without `regfuzz.accesses=N`.
const DEFAULT_ACCESSES: u64 = 20_000;
/// Seed without `regfuzz.seed=N`.
const DEFAULT_SEED: u64 = 0x5eed;
/// Where control pages may be: Bulkhead's shared-memory windows (start, end).
const SHMEM_WINDOWS: (u64, u64) = (0x60_0000_0000, 0x80_0000_0000);
/// Progress line every this many accesses.
const PROGRESS: u64 = 5_000;

/// SplitMix64: the same seed gives the same run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 { 0 } else { self.next() % bound }
    }

    /// One of `items` (`fallback` when empty).
    fn pick<T: Copy>(&mut self, items: &[T], fallback: T) -> T {
        let index = self.below(items.len() as u64) as usize;
        items.get(index).copied().unwrap_or(fallback)
    }

    fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.below(denominator) < numerator
    }

    /// Edges of every width, single bits, small numbers or uniform bits.
    fn value(&mut self) -> u64 {
        const EDGES: [u64; 12] = [
            0,
            1,
            0x7f,
            0x80,
            0xff,
            0xffff,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_ffff,
            0x1_0000_0000,
            0x8000_0000_0000_0000,
            u64::MAX,
        ];
        match self.below(5) {
            0 => self.pick(&EDGES, 0),
            1 => 1 << self.below(64),
            2 => self.below(0x100),
            _ => self.next(),
        }
    }
}

/// What kind of device a window is (some need care).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Distributor,
    Redistributors,
    MsiFrame,
    Pl011,
    Ecam,
    Factory,
    Bar,
    Control,
}

/// A window of trapped registers.
#[derive(Clone, Copy, Debug)]
struct Window {
    kind: Kind,
    base: usize,
    size: usize,
}

/// At most this many windows (fixed ones, BARs, control pages).
const MAX_WINDOWS: usize = 48;

struct Windows {
    list: [Option<Window>; MAX_WINDOWS],
}

impl Windows {
    fn add(&mut self, kind: Kind, base: usize, size: usize) {
        if base == 0 || size == 0 {
            return;
        }
        if let Some(slot) = self.list.iter_mut().find(|slot| slot.is_none()) {
            *slot = Some(Window { kind, base, size });
        }
    }

    fn remove_kind(&mut self, kind: Kind) {
        for slot in &mut self.list {
            if slot.is_some_and(|window| window.kind == kind) {
                *slot = None;
            }
        }
    }

    fn count(&self) -> u64 {
        self.list.iter().flatten().count() as u64
    }

    fn pick(&self, rng: &mut Rng) -> Option<Window> {
        let count = self.count();
        let nth = rng.below(count) as usize;
        self.list.iter().flatten().nth(nth).copied()
    }

    fn control_pages(&self) -> impl Iterator<Item = Window> + '_ {
        self.list
            .iter()
            .flatten()
            .copied()
            .filter(|window| window.kind == Kind::Control)
    }
}

/// Everything the run needs to know about its partition.
struct Fuzzer {
    rng: Rng,
    windows: Windows,
    bus: Option<Bus>,
    factories: [Option<QnxShmem>; 2],
    accesses: u64,
}

impl Fuzzer {
    /// One access; fails the run if the base register came back wrong.
    fn access(&mut self, window: Window, offset: usize, write: bool) {
        let form = match self.rng.below(8) {
            0 => Form::SignExtending,
            1 => Form::Pair,
            2 => Form::PostIndex,
            3 => Form::PreIndex,
            _ => Form::Single,
        };
        let bytes = match form {
            Form::Single | Form::SignExtending => 1usize << self.rng.below(4),
            _ => 4usize << self.rng.below(2),
        };
        let span = if form == Form::Pair { 2 * bytes } else { bytes };
        let offset = offset.min(window.size.saturating_sub(span)) & !(span - 1);
        let address = window.base + offset;
        let write = write && form != Form::SignExtending;
        // The PL011 data register prints: left out (see the crate doc). A control page's
        // DETACH is written only by `control`, which forgets the page with it.
        let detaches = window.kind == Kind::Control && offset < 0x10 && offset + span > 0xc;
        if write && ((window.kind == Kind::Pl011 && offset < 4) || detaches) {
            return;
        }
        let value = write.then(|| self.rng.value());
        // SAFETY: `address .. address + span` lies in a window of trapped device registers of
        // this partition (or the data pages of a region it attached), never in its own RAM.
        if let Err(wrong) = unsafe { access::access(form, address, bytes, value) } {
            exit_fail_with(format_args!(
                "regfuzz: access {} ({:?}, {bytes} bytes, {} at {address:#x}): base register \
                 {:#x}, expected {:#x}",
                self.accesses,
                wrong.form,
                if write { "write" } else { "read" },
                wrong.got,
                wrong.expected
            ));
        }
        self.accesses += 1;
    }

    /// A random offset, biased toward the first registers of the window.
    fn offset(&mut self, window: Window) -> usize {
        let limit = if self.rng.chance(3, 4) {
            window.size.min(0x100)
        } else {
            window.size
        };
        self.rng.below(limit as u64) as usize
    }

    fn poke(&mut self) {
        let Some(window) = self.windows.pick(&mut self.rng) else {
            return;
        };
        let offset = self.offset(window);
        let write = self.rng.chance(1, 2);
        self.access(window, offset, write);
    }

    /// Writes a name and a size (or find) to a factory page, raw, and keeps the control
    /// page of what it attached.
    fn factory(&mut self) {
        let which = self.rng.below(2) as usize;
        let Some(factory) = self.factories.get(which).copied().flatten() else {
            return;
        };
        // The PCI factory page is wherever its BAR0 is now (BAR moves): a stale address could
        // now be another BAR's registers, read as if they were the factory page.
        let base = match factory.location() {
            Location::Mmio => factory.factory_address() as usize,
            Location::Pci(slot) => {
                let (window, window_size) = bulkhead_shmem::pci::DEFAULT_MMIO32;
                match self
                    .bus
                    .and_then(|bus| bus.device(slot))
                    .and_then(|device| device.bar(0))
                {
                    Some(bar)
                        if bar.address >= window
                            && bar.address + 0x1000 <= window + window_size =>
                    {
                        bar.address as usize
                    }
                    _ => return,
                }
            }
        };
        const NAMES: [&[u8]; 8] = [
            b"fuzz0",
            b"fuzz1",
            b"fuzzA",
            b"pingpong",
            b"ivpingpong",
            b"fuzz*",
            b"",
            b"fuzzyfuzzyfuzzyfuzzyfuzzyfuzzyfu",
        ];
        let mut name = [0u8; 32];
        match self.rng.below(4) {
            0 => name
                .iter_mut()
                .for_each(|byte| *byte = self.rng.next() as u8),
            _ => {
                let chosen = self.rng.pick(&NAMES, b"fuzz0");
                name.iter_mut()
                    .zip(chosen)
                    .for_each(|(slot, byte)| *slot = *byte);
            }
        }
        for (index, chunk) in name.chunks(4).enumerate() {
            let word = chunk
                .iter()
                .rev()
                .fold(0u32, |word, byte| (word << 8) | u32::from(*byte));
            // SAFETY: the name field of this partition's factory page.
            unsafe { bulkhead_guest::mmio::write32(base + 0x1c + 4 * index, word) };
            self.accesses += 1;
        }
        let pages = match self.rng.below(4) {
            0 => self.rng.value() as u32,
            _ => 1 + self.rng.below(4) as u32,
        };
        let register = if self.rng.chance(1, 4) { 0x3c } else { 0x18 };
        // SAFETY: SIZE or FIND of the factory page, then STATUS and SHMEM.
        let (status, control) = unsafe {
            bulkhead_guest::mmio::write32(base + register, pages);
            let status = bulkhead_guest::mmio::read32(base + 0x14);
            let low = bulkhead_guest::mmio::read32(base + 0x08);
            let high = bulkhead_guest::mmio::read32(base + 0x0c);
            (status, (u64::from(high) << 32) | u64::from(low))
        };
        self.accesses += 4;
        let known = self
            .windows
            .control_pages()
            .any(|w| w.base == control as usize);
        // Control pages lie in the shared-memory windows Bulkhead places from 0x60_0000_0000
        // (hypervisor/src/guest_layout.rs; the runtime's identity map covers them).
        let in_windows = (SHMEM_WINDOWS.0..SHMEM_WINDOWS.1).contains(&control);
        if status == 0 && in_windows && !known {
            self.windows.add(Kind::Control, control as usize, 0x1000);
        }
    }

    /// Notify with a random mask, read status, or detach one attached region.
    fn control(&mut self) {
        let pages: [Option<Window>; MAX_WINDOWS] = {
            let mut pages = [None; MAX_WINDOWS];
            pages
                .iter_mut()
                .zip(self.windows.control_pages())
                .for_each(|(slot, page)| *slot = Some(page));
            pages
        };
        let count = pages.iter().flatten().count() as u64;
        let Some(page) = pages
            .iter()
            .flatten()
            .nth(self.rng.below(count) as usize)
            .copied()
        else {
            return;
        };
        match self.rng.below(4) {
            0 => {
                // SAFETY: DETACH of a control page this partition attached; its data pages are
                // unmapped, and the window is forgotten with it.
                unsafe { bulkhead_guest::mmio::write32(page.base + 0xc, self.rng.next() as u32) };
                for slot in &mut self.windows.list {
                    if slot.is_some_and(|w| w.base == page.base) {
                        *slot = None;
                    }
                }
            }
            1 => {
                // SAFETY: STATUS of an attached control page.
                let _ = unsafe { bulkhead_guest::mmio::read32(page.base) };
            }
            _ => {
                let mask = match self.rng.below(4) {
                    0 => u32::MAX,
                    1 => 1 << self.rng.below(16),
                    _ => self.rng.next() as u32,
                };
                // SAFETY: NOTIFY of an attached control page.
                unsafe { bulkhead_guest::mmio::write32(page.base + 0x8, mask) };
            }
        }
        self.accesses += 1;
    }

    /// Moves a BAR (random value, another BAR's place, or back), turns decoding on and off,
    /// then reads every BAR again so later accesses follow the moves.
    fn move_bar(&mut self) {
        let Some(bus) = self.bus else { return };
        let slot = self.rng.below(4) as u8;
        let Some(device) = bus.device(slot) else {
            return;
        };
        let offset = match self.rng.below(8) {
            0 => 0x04,
            1 => 0x3c,
            _ => 0x10 + 4 * self.rng.below(6) as usize,
        };
        let value = match self.rng.below(4) {
            0 => self.rng.value() as u32,
            1 => 0x1000_0000 + ((self.rng.below(0x100) as u32) << 12),
            2 => {
                let other = self
                    .windows
                    .list
                    .iter()
                    .flatten()
                    .filter(|w| w.kind == Kind::Bar)
                    .count() as u64;
                self.windows
                    .list
                    .iter()
                    .flatten()
                    .filter(|w| w.kind == Kind::Bar)
                    .nth(self.rng.below(other) as usize)
                    .map_or(0, |w| w.base as u32)
            }
            _ => 0xffff_ffff,
        };
        let value = if offset == 0x04 { value | 0x6 } else { value };
        device.write32(offset, value);
        self.accesses += 1;
        // Decoding back on, now and then, so BARs keep answering.
        if self.rng.chance(1, 2) {
            device.write32(0x04, 0x6);
            self.accesses += 1;
        }
        self.refresh_bars();
    }

    fn refresh_bars(&mut self) {
        self.windows.remove_kind(Kind::Bar);
        let Some(bus) = self.bus else { return };
        for slot in 0..4u8 {
            let Some(device) = bus.device(slot) else {
                continue;
            };
            let sizes: [usize; 3] = match device.vendor_id() {
                0x1c05 => [0x1000, 0, 0],
                0x1af4 => [0x100, 0x1000, 0],
                _ => [0, 0, 0],
            };
            for (index, size) in sizes.iter().enumerate() {
                // Only BARs inside the 32-bit PCI window: a BAR the guest moved elsewhere
                // does not decode, and its value could name RAM or another device.
                let (window, window_size) = bulkhead_shmem::pci::DEFAULT_MMIO32;
                if let Some(bar) = device.bar(index)
                    && bar.address >= window
                    && bar.address + *size as u64 <= window + window_size
                {
                    self.windows.add(Kind::Bar, bar.address as usize, *size);
                }
            }
        }
    }

    /// A PSCI (or SMCCC) call Bulkhead answers, through HVC or SMC, with random arguments.
    fn call(&mut self) {
        // CPU_SUSPEND is left out: Bulkhead treats it as WFI, and with interrupts masked
        // and the GIC fuzzed nothing may ever wake the vCPU (a guest's own hang).
        const FUNCTIONS: [u32; 8] = [
            0x8400_0000,
            0x8400_0003,
            0xc400_0003,
            0x8400_0004,
            0xc400_0004,
            0x8400_0006,
            0x8400_000a,
            0xc600_0001,
        ];
        let function = self.rng.pick(&FUNCTIONS, 0x8400_0000);
        let mut arguments = [0u64; 3];
        for argument in &mut arguments {
            *argument = match self.rng.below(3) {
                0 => self.rng.below(4),
                1 => 0x8000_0000 | self.rng.below(4),
                _ => self.rng.value(),
            };
        }
        // CPU_ON must not start a vCPU in this partition's RAM at a random place: it has one
        // vCPU, so every target is refused (ALREADY_ON or INVALID_PARAMETERS) anyway.
        let _ = if self.rng.chance(1, 2) {
            psci::call(function, arguments[0], arguments[1], arguments[2])
        } else {
            other_conduit(function, arguments)
        };
        self.accesses += 1;
    }

    /// GICv3: a write to ICC_SGI1R_EL1 (trapped: Bulkhead delivers SGIs inside the
    /// partition) with a random target list, affinity, INTID and routing mode; with
    /// interrupts masked the SGIs to itself stay pending.
    fn send_sgi(&mut self) {
        if !matches!(platform::gic(), GicLayout::V3 { .. }) {
            return self.poke();
        }
        let value = if self.rng.chance(3, 4) {
            // TargetList (bits 15:0), INTID (27:24), IRM (40), Aff1/2/3 mostly 0.
            self.rng.below(1 << 16)
                | (self.rng.below(16) << 24)
                | (self.rng.below(2) << 40)
                | if self.rng.chance(1, 8) {
                    self.rng.value() & 0x00ff_00ff_00ff_0000
                } else {
                    0
                }
        } else {
            self.rng.value()
        };
        // SAFETY: an SGI request changes no memory; the SGIs it makes pending in this
        // partition stay masked (DAIF.I is set for the whole run).
        unsafe {
            core::arch::asm!("msr icc_sgi1r_el1, {}", "isb", in(reg) value, options(nostack))
        };
        self.accesses += 1;
    }

    fn step(&mut self) {
        match self.rng.below(100) {
            0..=66 => self.poke(),
            67..=69 => self.send_sgi(),
            70..=79 => self.factory(),
            80..=87 => self.control(),
            88..=92 => self.move_bar(),
            _ => self.call(),
        }
    }
}

/// The conduit the device tree does not name (HVC and SMC both trap to Bulkhead).
fn other_conduit(function: u32, arguments: [u64; 3]) -> i64 {
    let mut result = u64::from(function);
    match platform::psci_conduit() {
        // SAFETY: a PSCI call changes only the registers declared clobbered.
        psci::Conduit::Hvc => unsafe {
            core::arch::asm!(
                "smc #0",
                inout("x0") result, inout("x1") arguments[0] => _, inout("x2") arguments[1] => _,
                inout("x3") arguments[2] => _, out("x4") _, out("x5") _, out("x6") _,
                out("x7") _, out("x8") _, out("x9") _, out("x10") _, out("x11") _,
                out("x12") _, out("x13") _, out("x14") _, out("x15") _, out("x16") _,
                out("x17") _, options(nostack)
            )
        },
        // SAFETY: as above.
        psci::Conduit::Smc => unsafe {
            core::arch::asm!(
                "hvc #0",
                inout("x0") result, inout("x1") arguments[0] => _, inout("x2") arguments[1] => _,
                inout("x3") arguments[2] => _, out("x4") _, out("x5") _, out("x6") _,
                out("x7") _, out("x8") _, out("x9") _, out("x10") _, out("x11") _,
                out("x12") _, out("x13") _, out("x14") _, out("x15") _, out("x16") _,
                out("x17") _, options(nostack)
            )
        },
    }
    result as i64
}

fn number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn main() -> ! {
    let seed = command_line_value("regfuzz.seed")
        .and_then(number)
        .unwrap_or(DEFAULT_SEED);
    let budget = command_line_value("regfuzz.accesses")
        .and_then(number)
        .unwrap_or(DEFAULT_ACCESSES);
    let mut fuzzer = Fuzzer {
        rng: Rng(seed),
        windows: Windows {
            list: [None; MAX_WINDOWS],
        },
        bus: Bus::discover_ecam(),
        factories: [QnxShmem::from_platform(0).ok(), None],
        accesses: 0,
    };
    match platform::gic() {
        GicLayout::V3 {
            distributor,
            redistributors,
        } => {
            fuzzer.windows.add(Kind::Distributor, distributor, 0x1_0000);
            fuzzer
                .windows
                .add(Kind::Redistributors, redistributors, 0x2_0000);
        }
        GicLayout::V2 { distributor, .. } => {
            fuzzer.windows.add(Kind::Distributor, distributor, 0x1_0000);
            fuzzer.windows.add(
                Kind::MsiFrame,
                bulkhead_shmem::ivshmem::msi_address() as usize & !0xfff,
                0x1000,
            );
        }
    }
    fuzzer
        .windows
        .add(Kind::Pl011, platform::console_base(), 0x1000);
    if let Some(bus) = fuzzer.bus {
        fuzzer.windows.add(Kind::Ecam, bus_base(&bus), 0x10_0000);
        for slot in 0..4u8 {
            if let Some(device) = bus.device(slot) {
                device.enable_memory();
                device.enable_bus_master();
                if device.vendor_id() == 0x1c05
                    && let Ok(factory) = QnxShmem::from_pci(device)
                {
                    fuzzer.factories[1] = Some(factory);
                }
            }
        }
    }
    if let Some(factory) = fuzzer.factories[0] {
        fuzzer
            .windows
            .add(Kind::Factory, factory.factory_address() as usize, 0x1000);
    }
    fuzzer.refresh_bars();
    println!(
        "regfuzz: seed {seed:#x}, {budget} accesses over {} windows ({})",
        fuzzer.windows.count(),
        guest_gic::version()
    );
    let mut next_progress = PROGRESS;
    while fuzzer.accesses < budget {
        fuzzer.step();
        if fuzzer.accesses >= next_progress {
            println!("regfuzz: passed {next_progress} accesses");
            next_progress += PROGRESS;
        }
    }
    println!(
        "regfuzz: {budget} accesses reached ({} made), seed {seed:#x}",
        fuzzer.accesses
    );
    exit_pass()
}

/// The ECAM base of `bus` (bus 0, slot 0, function 0).
fn bus_base(bus: &Bus) -> usize {
    match bus.mechanism() {
        bulkhead_shmem::pci::Mechanism::Ecam(base) => base,
        #[allow(unreachable_patterns, reason = "x86 port mechanism")]
        _ => 0,
    }
}
