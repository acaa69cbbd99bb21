//! Fuzz targets for the virtual devices, driven as a guest drives them: the fuzzing
//! partition discovers its PCI functions through ECAM (or ports 0xCF8/0xCFC), attaches
//! regions through its QNX factory pages and then makes random accesses of random widths
//! at random offsets, with a bias toward the registers each target names, beside a peer
//! partition that shares regions and doorbells with it. Between accesses the interrupt
//! controller is exercised as arch code would (list registers flushed and folded back with
//! the guest's changes, WFI, timer, SGIs, x2APIC EOIs).
//!
//! Invariants checked after every access: no panic; no access inside a fixed device window
//! stops the partition (unknown registers read as zero and ignore writes); PSCI calls answer
//! with a status; second-stage mappings are whole pages of shared memory and never placed
//! over a mapping that exists; signals do not loop; BARs of one partition that decode never
//! overlap. At the end of a session, after every partition released its shared memory (what
//! a stop does): no QNX region stays mapped, every run-time region went back to the pool and
//! no start-up region keeps a client.

mod machine;
mod registers;

use hypervisor::addr::GuestPhysAddr;
use hypervisor::device::gic::{GicVersion, ListEntries, ListEntry, LrState};
use hypervisor::exit::{AccessWidth, Action, Exit};
use hypervisor::guest_layout;
use hypervisor::partition::{EXIT_COUNTS_CALL, Partition};

use self::machine::{IOAPIC, IVSHMEM_REGION, MMIO_FACTORY, Machine, Model, PL011, UART_PORT};
use crate::random::Rng;
use crate::{SessionResult, Target, Trace};

/// What a device target concentrates on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Focus {
    QnxFactory,
    QnxControl,
    IvshmemRegisters,
    Msix,
    PciConfig,
    GicDistributor,
    GicRedistributor,
    Pl011,
    Psci,
    Ioapic,
    Uart16550,
    Everything,
}

macro_rules! device_targets {
    ($(($name:literal, $function:ident, $focus:expr, $description:literal)),* $(,)?) => {
        $(
            fn $function(seed: u64, steps: u64, trace: &mut Trace) -> SessionResult {
                session($focus, seed, steps, trace)
            }
        )*

        /// The device targets.
        pub fn targets() -> Vec<Target> {
            vec![$(Target {
                name: $name,
                description: $description,
                session_length: SESSION_ACCESSES,
                session: $function,
            }),*]
        }
    };
}

device_targets![
    (
        "qnx-factory",
        qnx_factory,
        Focus::QnxFactory,
        "QNX factory pages (PCI BAR0 and MMIO): names, sizes, find"
    ),
    (
        "qnx-control",
        qnx_control,
        Focus::QnxControl,
        "QNX control pages: status, index, notify masks, detach"
    ),
    (
        "ivshmem-bar0",
        ivshmem_bar0,
        Focus::IvshmemRegisters,
        "ivshmem BAR0 registers: mask, status, position, doorbells"
    ),
    (
        "msix",
        msix,
        Focus::Msix,
        "MSI-X capability, table and PBA of ivshmem-doorbell"
    ),
    (
        "pci-config",
        pci_config,
        Focus::PciConfig,
        "PCI configuration space through ECAM and 0xCF8/0xCFC, BAR moves"
    ),
    (
        "gic-distributor",
        gic_distributor,
        Focus::GicDistributor,
        "virtual GIC distributor (v2 and v3) with list-register traffic"
    ),
    (
        "gic-redistributor",
        gic_redistributor,
        Focus::GicRedistributor,
        "virtual GICv3 redistributors with list-register traffic"
    ),
    ("pl011", pl011, Focus::Pl011, "virtual PL011"),
    (
        "psci",
        psci,
        Focus::Psci,
        "PSCI and SMCCC calls (HVC/SMC/VMCALL)"
    ),
    (
        "ioapic",
        ioapic,
        Focus::Ioapic,
        "virtual I/O APIC with x2APIC EOIs"
    ),
    (
        "uart16550",
        uart16550,
        Focus::Uart16550,
        "virtual 16550 through port I/O"
    ),
    (
        "guest-mix",
        guest_mix,
        Focus::Everything,
        "every device window of both architectures at once"
    ),
];

/// Accesses per session.
const SESSION_ACCESSES: u64 = 3_000;

/// A fixed window: where a device always answers.
#[derive(Clone, Copy, Debug)]
struct Window {
    name: &'static str,
    base: u64,
    size: u64,
    blocks: &'static [(u64, u64)],
}

/// One BAR as the guest found it.
#[derive(Clone, Copy, Debug)]
struct Bar {
    index: usize,
    size: u64,
    wide: bool,
    address: u64,
}

/// One PCI function as the guest found it.
#[derive(Clone, Debug)]
struct Function {
    slot: u8,
    vendor: u16,
    bars: Vec<Bar>,
    msix_capability: Option<u64>,
}

/// What one access did.
enum Outcome {
    /// A load's value, or a store's completion (0).
    Done(u64),
    /// The address is mapped memory: no trap.
    Memory,
    /// The partition stopped, restarted or turned its vCPU off: the session ends.
    Ended,
}

/// A guest's view: its windows, functions and attached control pages.
struct Guest {
    partition: usize,
    windows: Vec<Window>,
    ecam: (u64, u64),
    mmio32: (u64, u64),
    mmio64: (u64, u64),
    functions: Vec<Function>,
    control_pages: Vec<u64>,
    factories: Vec<u64>,
}

fn width_of(bytes: u64) -> AccessWidth {
    AccessWidth::try_from(bytes).unwrap_or(AccessWidth::Word)
}

impl Guest {
    fn new(machine: &Machine, partition: usize) -> Guest {
        let arm = matches!(machine.model, Model::Gic(_));
        let mut windows = Vec::new();
        let (ecam, mmio32, mmio64) = if arm {
            windows.push(Window {
                name: "gic-distributor",
                base: guest_layout::GIC_DISTRIBUTOR.0,
                size: guest_layout::GIC_DISTRIBUTOR.1,
                blocks: registers::GIC_DISTRIBUTOR,
            });
            if machine.model == Model::Gic(GicVersion::V3) {
                let vcpus = machine
                    .system
                    .partitions
                    .get(partition)
                    .map_or(1, Partition::vcpu_count) as u64;
                windows.push(Window {
                    name: "gic-redistributor",
                    base: guest_layout::GIC_REDISTRIBUTORS,
                    size: guest_layout::GIC_REDISTRIBUTOR_SIZE * vcpus,
                    blocks: registers::GIC_REDISTRIBUTOR,
                });
            }
            windows.push(Window {
                name: "pl011",
                base: PL011,
                size: 0x1000,
                blocks: registers::PL011,
            });
            windows.push(Window {
                name: "qnx-factory-mmio",
                base: MMIO_FACTORY,
                size: 0x1000,
                blocks: registers::QNX_FACTORY,
            });
            (
                guest_layout::PCI_ECAM,
                guest_layout::PCI_MMIO32,
                guest_layout::PCI_MMIO64,
            )
        } else {
            windows.push(Window {
                name: "ioapic",
                base: IOAPIC,
                size: 0x1000,
                blocks: registers::IOAPIC,
            });
            (
                guest_layout::x86::PCI_ECAM,
                guest_layout::x86::PCI_MMIO32,
                guest_layout::PCI_MMIO64,
            )
        };
        windows.push(Window {
            name: "pci-ecam",
            base: ecam.0,
            size: ecam.1,
            blocks: registers::PCI_CONFIG,
        });
        let factories = if arm { vec![MMIO_FACTORY] } else { Vec::new() };
        Guest {
            partition,
            windows,
            ecam,
            mmio32,
            mmio64,
            functions: Vec::new(),
            control_pages: Vec::new(),
            factories,
        }
    }

    fn window(&self, name: &str) -> Option<Window> {
        self.windows
            .iter()
            .copied()
            .find(|window| window.name == name)
    }

    fn in_fixed_window(&self, address: u64) -> Option<&'static str> {
        self.windows
            .iter()
            .find(|window| address >= window.base && address - window.base < window.size)
            .map(|window| window.name)
    }

    /// One MMIO access by vCPU 0; checks that fixed windows never stop the partition.
    fn mmio(
        &mut self,
        machine: &Machine,
        address: u64,
        bytes: u64,
        write: Option<u64>,
        trace: &mut Trace,
    ) -> Result<Outcome, String> {
        let Some(partition) = machine.system.partitions.get(self.partition) else {
            return Ok(Outcome::Ended);
        };
        if machine.is_mapped(self.partition, address, bytes) {
            return Ok(Outcome::Memory);
        }
        let width = width_of(bytes);
        let exit = match write {
            Some(value) => Exit::MmioWrite {
                address: GuestPhysAddr::new(address),
                width,
                value: value & width.mask(),
                syndrome: 0,
            },
            None => Exit::MmioRead {
                address: GuestPhysAddr::new(address),
                width,
                syndrome: 0,
            },
        };
        let who = self.partition;
        trace.note(|| format!("partition {who}: {exit:?}"));
        let action = partition.handle_exit(0, exit, machine);
        match action {
            Action::CompleteRead(value) if write.is_none() => Ok(Outcome::Done(value)),
            Action::Resume if write.is_some() => Ok(Outcome::Done(0)),
            Action::StopPartition => {
                // What the run loop does next: record the stop, release shared memory.
                let _ = partition.handle_stop(0, machine);
                let straddles = self
                    .in_fixed_window(address)
                    .is_some_and(|_| self.in_fixed_window(address + bytes - 1).is_none());
                // An access across a device's end stops the partition by design (reported
                // as straddling); on aarch64 it cannot even happen (unaligned device
                // accesses fault at stage 1).
                if let Some(name) = self.in_fixed_window(address).filter(|_| !straddles) {
                    let reason = partition
                        .stop_reason()
                        .map_or_else(String::new, |reason| format!("{reason}"));
                    return Err(format!(
                        "a {bytes}-byte {} at {address:#x} in the {name} window stopped the \
                         partition: {reason}",
                        if write.is_some() { "write" } else { "read" }
                    ));
                }
                Ok(Outcome::Ended)
            }
            other => Err(format!("{exit:?} answered with {other:?}")),
        }
    }

    fn read(
        &mut self,
        machine: &Machine,
        address: u64,
        bytes: u64,
        trace: &mut Trace,
    ) -> Result<Option<u64>, String> {
        Ok(match self.mmio(machine, address, bytes, None, trace)? {
            Outcome::Done(value) => Some(value),
            Outcome::Memory | Outcome::Ended => None,
        })
    }

    fn write(
        &mut self,
        machine: &Machine,
        address: u64,
        bytes: u64,
        value: u64,
        trace: &mut Trace,
    ) -> Result<bool, String> {
        Ok(!matches!(
            self.mmio(machine, address, bytes, Some(value), trace)?,
            Outcome::Ended
        ))
    }

    fn config_address(&self, slot: u8, function: u8, offset: u64) -> u64 {
        self.ecam.0 + (u64::from(slot) << 15) + (u64::from(function) << 12) + offset
    }

    /// Enumerates bus 0 as firmware-trusting guests do: vendor IDs, BARs sized with
    /// all-ones and restored, memory decoding and bus mastering on, the MSI-X capability.
    fn discover(&mut self, machine: &Machine, trace: &mut Trace) -> Result<(), String> {
        self.functions.clear();
        for slot in 0..32u8 {
            let id_address = self.config_address(slot, 0, 0);
            let Some(id) = self.read(machine, id_address, 4, trace)? else {
                return Ok(());
            };
            if id & 0xffff == 0xffff {
                continue;
            }
            let mut function = Function {
                slot,
                vendor: id as u16,
                bars: Vec::new(),
                msix_capability: None,
            };
            let mut index = 0;
            while index < 6 {
                let at = self.config_address(slot, 0, 0x10 + 4 * index as u64);
                let original = self.read(machine, at, 4, trace)?.unwrap_or(0);
                self.write(machine, at, 4, 0xffff_ffff, trace)?;
                let sized = self.read(machine, at, 4, trace)?.unwrap_or(0);
                self.write(machine, at, 4, original, trace)?;
                let wide = original & 0b110 == 0b100;
                let mut size_mask = sized & !0xf;
                let mut address = original & !0xf;
                if wide {
                    let upper_at = at + 4;
                    let upper = self.read(machine, upper_at, 4, trace)?.unwrap_or(0);
                    self.write(machine, upper_at, 4, 0xffff_ffff, trace)?;
                    let upper_sized = self.read(machine, upper_at, 4, trace)?.unwrap_or(0);
                    self.write(machine, upper_at, 4, upper, trace)?;
                    size_mask |= upper_sized << 32;
                    address |= upper << 32;
                } else if size_mask != 0 {
                    size_mask |= 0xffff_ffff_0000_0000;
                }
                if size_mask != 0 && original & 1 == 0 {
                    function.bars.push(Bar {
                        index,
                        size: (!size_mask).wrapping_add(1),
                        wide,
                        address,
                    });
                }
                index += if wide { 2 } else { 1 };
            }
            // Capabilities: find MSI-X (ID 0x11).
            let status = self
                .read(machine, self.config_address(slot, 0, 0x04), 4, trace)?
                .unwrap_or(0);
            if status & (1 << 20) != 0 {
                let mut pointer = self
                    .read(machine, self.config_address(slot, 0, 0x34), 1, trace)?
                    .unwrap_or(0)
                    & 0xfc;
                for _ in 0..16 {
                    if pointer < 0x40 {
                        break;
                    }
                    let header = self
                        .read(machine, self.config_address(slot, 0, pointer), 2, trace)?
                        .unwrap_or(0);
                    if header & 0xff == 0x11 {
                        function.msix_capability = Some(pointer);
                    }
                    pointer = (header >> 8) & 0xfc;
                }
            }
            let command = self.config_address(slot, 0, 0x04);
            self.write(machine, command, 2, 0x0006, trace)?;
            self.functions.push(function);
        }
        Ok(())
    }

    /// Re-reads where every BAR is now (after configuration writes moved them).
    fn refresh_bars(&mut self, machine: &Machine, trace: &mut Trace) -> Result<(), String> {
        let mut functions = std::mem::take(&mut self.functions);
        for function in &mut functions {
            for bar in &mut function.bars {
                let at = self.config_address(function.slot, 0, 0x10 + 4 * bar.index as u64);
                let low = self.read(machine, at, 4, trace)?.unwrap_or(0) & !0xf;
                let high = if bar.wide {
                    self.read(machine, at + 4, 4, trace)?.unwrap_or(0) << 32
                } else {
                    0
                };
                bar.address = low | high;
            }
        }
        self.functions = functions;
        Ok(())
    }

    fn in_pci_window(&self, start: u64, size: u64) -> bool {
        let inside = |(base, length): (u64, u64)| {
            start >= base
                && start
                    .checked_add(size)
                    .is_some_and(|end| end <= base + length)
        };
        inside(self.mmio32) || inside(self.mmio64)
    }

    /// BARs of functions with memory decoding on that lie in the PCI windows must not
    /// overlap one another.
    fn check_bars(&mut self, machine: &Machine, trace: &mut Trace) -> Result<(), String> {
        self.refresh_bars(machine, trace)?;
        let mut decoding = Vec::new();
        let functions = self.functions.clone();
        for function in &functions {
            let command = self
                .read(
                    machine,
                    self.config_address(function.slot, 0, 0x04),
                    2,
                    trace,
                )?
                .unwrap_or(0);
            if command & 0x2 == 0 {
                continue;
            }
            for bar in &function.bars {
                if bar.size > 0 && self.in_pci_window(bar.address, bar.size) {
                    decoding.push((function.slot, bar.index, bar.address, bar.size));
                }
            }
        }
        for (position, a) in decoding.iter().enumerate() {
            for b in decoding.iter().skip(position + 1) {
                if a.2 < b.2 + b.3 && b.2 < a.2 + a.3 {
                    return Err(format!(
                        "two BARs decode at one address: partition {}: slot {} BAR{} at \
                         {:#x}+{:#x} and slot {} BAR{} at {:#x}+{:#x}",
                        self.partition, a.0, a.1, a.2, a.3, b.0, b.1, b.2, b.3
                    ));
                }
            }
        }
        Ok(())
    }

    fn bar_of(&self, vendor: u16, index: usize, rng: &mut Rng) -> Option<(u64, u64)> {
        let candidates: Vec<(u64, u64)> = self
            .functions
            .iter()
            .filter(|function| function.vendor == vendor)
            .filter_map(|function| function.bars.iter().find(|bar| bar.index == index))
            .map(|bar| (bar.address, bar.size))
            .collect();
        rng.pick(&candidates).copied()
    }
}

/// Names a guest might write to a factory page: allowed, refused by the list, substituted,
/// illegal (globs, empty, unterminated, non-printable), start-up regions of both partitions.
fn region_name(rng: &mut Rng) -> Vec<u8> {
    const NAMES: &[&str] = &[
        "fuzzA",
        "shared",
        "fuzzrun0",
        "fuzzrun1",
        "fuzzrun2",
        "fuzzrun3",
        "fuzznope",
        "sub1",
        "ivfuzz",
        "pluto",
        "fuzz*",
        "a?b",
        "",
        "fuzz_very_long_name_of_31_bytes",
    ];
    match rng.below(8) {
        0 => (0..rng.below(33)).map(|_| rng.byte()).collect(),
        1 => vec![b'f'; 32],
        2 => format!("fuzzrun{}", rng.below(64)).into_bytes(),
        _ => rng
            .pick(NAMES)
            .copied()
            .unwrap_or("fuzzA")
            .as_bytes()
            .to_vec(),
    }
}

/// A notify mask: one peer, everyone (~0), empty, or random.
fn notify_mask(rng: &mut Rng) -> u64 {
    match rng.below(5) {
        0 => 0xffff_ffff,
        1 => 1 << rng.below(16),
        2 => 0,
        3 => rng.below(4),
        _ => rng.value(),
    }
}

/// Attaches (or finds) a region through a factory page as a driver does: name, then size or
/// find, then status and the control page's address.
fn attach(
    guest: &mut Guest,
    machine: &Machine,
    rng: &mut Rng,
    trace: &mut Trace,
) -> Result<u64, String> {
    let mut factories = guest.factories.clone();
    if let Some((address, _)) = guest.bar_of(0x1c05, 0, rng) {
        factories.push(address);
    }
    let Some(&factory) = rng.pick(&factories) else {
        return Ok(0);
    };
    let mut name = region_name(rng);
    if rng.chance(7, 8) {
        name.resize(32, 0);
    }
    let mut done = 0;
    for (index, chunk) in name.chunks(4).take(8).enumerate() {
        let mut word = [0u8; 4];
        word.iter_mut()
            .zip(chunk)
            .for_each(|(slot, byte)| *slot = *byte);
        if !guest.write(
            machine,
            factory + 0x1c + 4 * index as u64,
            4,
            u64::from(u32::from_le_bytes(word)),
            trace,
        )? {
            return Ok(done);
        }
        done += 1;
    }
    let pages = match rng.below(6) {
        0 => rng.value(),
        1 => 0,
        _ => 1 + rng.below(4),
    };
    let register = if rng.chance(1, 4) { 0x3c } else { 0x18 };
    if !guest.write(machine, factory + register, 4, pages, trace)? {
        return Ok(done + 1);
    }
    let status = guest.read(machine, factory + 0x14, 4, trace)?.unwrap_or(1);
    let control = guest.read(machine, factory + 0x08, 8, trace)?.unwrap_or(0);
    if status == 0 && control != 0 && !guest.control_pages.contains(&control) {
        // A fresh attachment: my index is a client index, and the active clients include me.
        let index = guest.read(machine, control + 0x4, 4, trace)?;
        let active = guest.read(machine, control, 4, trace)?;
        if let (Some(index), Some(active)) = (index, active)
            && (index >= 16 || active >> 16 & (1 << index) == 0)
        {
            return Err(format!(
                "partition {}: attached at control page {control:#x} as index {index}, but the \
                 status {active:#x} does not show it active",
                guest.partition
            ));
        }
        guest.control_pages.push(control);
        return Ok(done + 6);
    }
    Ok(done + 4)
}

/// A PSCI or SMCCC call with plausible and random arguments; returns whether the partition
/// still runs. A PSCI call must answer with a status or a value, never leave x0 unchanged,
/// and a function the PSCI specification defines must not stop the partition (except the
/// ones that turn it off or reset it).
fn call(
    guest: &Guest,
    machine: &Machine,
    rng: &mut Rng,
    trace: &mut Trace,
) -> Result<bool, String> {
    const FUNCTIONS: &[u64] = &[
        0x8400_0000,
        0x8400_0001,
        0xc400_0001,
        0x8400_0003,
        0xc400_0003,
        0x8400_0004,
        0xc400_0004,
        0x8400_0006,
        0x8400_000a,
        EXIT_COUNTS_CALL,
    ];
    // Defined by PSCI 1.1 but not answered (MIGRATE, MIGRATE_INFO_UP_CPU, CPU_FREEZE,
    // CPU_DEFAULT_SUSPEND, NODE_HW_STATE, SYSTEM_SUSPEND, STAT_RESIDENCY, STAT_COUNT,
    // MEM_PROTECT, MEM_PROTECT_CHECK_RANGE) and SMCCC calls: rarer, as they end the session.
    const RARE: &[u64] = &[
        0x8400_0005,
        0xc400_0005,
        0x8400_0007,
        0xc400_0007,
        0x8400_000b,
        0xc400_000c,
        0xc400_000d,
        0xc400_000e,
        0xc400_0010,
        0xc400_0011,
        0x8400_0013,
        0xc400_0014,
        0x8000_0000,
        0x8000_0001,
    ];
    // Calls that end the session by design (CPU_OFF of vCPU 0, SYSTEM_OFF, SYSTEM_RESET,
    // SYSTEM_RESET2) are rarer still.
    const ENDING: &[u64] = &[0x8400_0002, 0x8400_0008, 0x8400_0009, 0xc400_0012];
    let function = match rng.below(400) {
        0 => rng.pick(ENDING).copied().unwrap_or(0),
        1..=4 => rng.pick(RARE).copied().unwrap_or(0),
        5..=12 => rng.value(),
        _ => rng.pick(FUNCTIONS).copied().unwrap_or(0),
    };
    let mut arguments = [0u64; 4];
    for argument in &mut arguments {
        *argument = match rng.below(4) {
            0 => 0x8000_0000 | rng.below(4),
            1 => rng.below(4),
            2 => 0x4020_0000 + (rng.below(0x100) << 12),
            _ => rng.value(),
        };
    }
    let Some(partition) = machine.system.partitions.get(guest.partition) else {
        return Ok(false);
    };
    let exit = Exit::Hypercall {
        function,
        arguments,
    };
    trace.note(|| format!("partition {}: {exit:?}", guest.partition));
    let action = partition.handle_exit(0, exit, machine);
    let psci = matches!(function, 0x8400_0000..=0x8400_001f | 0xc400_0000..=0xc400_001f);
    match action {
        Action::ReturnValues(values) => {
            if psci && values[0] == function {
                return Err(format!(
                    "PSCI call {function:#x} answered with x0 unchanged"
                ));
            }
            Ok(true)
        }
        Action::Idle if psci && function & 0xbfff_ffff == 0x8400_0001 => {
            crate::known("PSCI CPU_SUSPEND returns with x0 unchanged");
            Ok(true)
        }
        Action::Idle if psci => Err(format!(
            "PSCI call {function:#x} answered with Idle: x0 keeps the function ID"
        )),
        Action::Resume | Action::Idle => Ok(true),
        Action::RestartPartition => {
            partition.restart_from(machine);
            Ok(true)
        }
        Action::StopPartition => {
            let _ = partition.handle_stop(0, machine);
            let turns_off = ENDING.contains(&function) || function == 0x8400_0012;
            if psci && !turns_off {
                let reason = partition
                    .stop_reason()
                    .map_or_else(String::new, |r| format!("{r}"));
                return Err(format!(
                    "a PSCI function the specification defines stops the partition: {function:#x} ({reason})"
                ));
            }
            Ok(false)
        }
        _ => Ok(false),
    }
}

/// What arch code does between exits: list registers flushed, the guest acknowledging,
/// ending or leaving them, folded back; WFI, timer and SGIs; x2APIC EOIs and posted vectors.
fn interrupts(guest: &Guest, machine: &Machine, rng: &mut Rng, trace: &mut Trace) {
    let Some(partition) = machine.system.partitions.get(guest.partition) else {
        return;
    };
    match machine.model {
        Model::Gic(version) => match rng.below(6) {
            0..=2 => {
                let mut entries = ListEntries::new();
                let slots = 1 + rng.index(4);
                partition.flush_interrupts(0, slots, &mut entries, machine);
                let folded: Vec<ListEntry> = entries
                    .as_slice()
                    .iter()
                    .map(|entry| ListEntry {
                        state: match rng.below(4) {
                            0 => LrState::Invalid,
                            1 => LrState::Active,
                            2 => LrState::PendingActive,
                            _ => entry.state,
                        },
                        ..*entry
                    })
                    .collect();
                trace.note(|| format!("flush {slots} -> fold {folded:?}"));
                partition.fold_interrupts(0, &folded, machine);
            }
            3 => {
                trace.note(|| String::from("virtual timer fired"));
                partition.virtual_timer_fired(0);
            }
            4 if version == GicVersion::V3 => {
                let value = if rng.chance(1, 2) {
                    (rng.below(16) << 24) | rng.below(4) | (rng.below(2) << 40)
                } else {
                    rng.value()
                };
                trace.note(|| format!("ICC_SGI1R_EL1 = {value:#x}"));
                let _ = partition.handle_exit(0, Exit::SendSoftwareInterrupt { value }, machine);
            }
            _ => {
                trace.note(|| String::from("WFI"));
                let _ = partition.handle_exit(0, Exit::WaitForInterrupt, machine);
            }
        },
        Model::Apic => {
            if let Some(bus) = partition.apic_bus() {
                let posted = bus.take_posted(0);
                let vector = if rng.chance(1, 2) {
                    posted
                        .iter()
                        .enumerate()
                        .find(|(_, word)| **word != 0)
                        .map_or(0, |(index, word)| {
                            index as u8 * 64 + word.trailing_zeros() as u8
                        })
                } else {
                    rng.byte()
                };
                trace.note(|| format!("EOI vector {vector}"));
                partition.end_of_interrupt(0, vector, machine);
            }
        }
    }
}

/// One port access (x86): the 16550 or the PCI configuration ports.
fn port(
    guest: &Guest,
    machine: &Machine,
    focus: Focus,
    rng: &mut Rng,
    trace: &mut Trace,
) -> Result<bool, String> {
    let Some(partition) = machine.system.partitions.get(guest.partition) else {
        return Ok(false);
    };
    let (port, bytes, value) = if focus == Focus::Uart16550 || rng.chance(1, 2) {
        let bytes = if rng.chance(7, 8) {
            1
        } else {
            1 << rng.below(3)
        };
        (UART_PORT + rng.below(8) as u16, bytes, rng.value())
    } else if rng.chance(1, 2) {
        let slot = guest.functions.first().map_or(0, |function| function.slot);
        let slot = if rng.chance(3, 4) {
            u64::from(slot)
        } else {
            rng.below(32)
        };
        let address = 0x8000_0000 | (slot << 11) | (rng.below(2) << 8) | (rng.below(0x40) << 2);
        (
            0xcf8,
            4,
            if rng.chance(7, 8) {
                address
            } else {
                rng.value()
            },
        )
    } else {
        let bytes = 1 << rng.below(3);
        (0xcfc + rng.below(4) as u16, bytes, rng.value())
    };
    let width = width_of(bytes);
    let exit = if rng.chance(1, 2) {
        Exit::PortRead { port, width }
    } else {
        Exit::PortWrite {
            port,
            width,
            value: value & width.mask(),
        }
    };
    trace.note(|| format!("partition {}: {exit:?}", guest.partition));
    match partition.handle_exit(0, exit, machine) {
        Action::StopPartition => {
            let _ = partition.handle_stop(0, machine);
            // An access across the end of a port device stops the partition by design.
            let end = if port >= 0xcf8 { 0xd00 } else { UART_PORT + 8 };
            if u64::from(port) + bytes > u64::from(end) {
                return Ok(false);
            }
            Err(format!("{exit:?} stopped the partition"))
        }
        _ => Ok(true),
    }
}

/// A value for a register write: often what a driver writes (small numbers, masks,
/// addresses in the PCI windows, the address of another BAR), otherwise random.
fn register_value(guest: &Guest, rng: &mut Rng) -> u64 {
    match rng.below(8) {
        0 => {
            let bars: Vec<u64> = guest
                .functions
                .iter()
                .flat_map(|function| function.bars.iter().map(|bar| bar.address))
                .collect();
            rng.pick(&bars).copied().unwrap_or(0) | rng.below(2) << 2
        }
        1 => guest.mmio32.0 + (rng.below(guest.mmio32.1 >> 12) << 12),
        2 => guest.mmio64.0 + (rng.below(0x1000) << 20),
        _ => rng.value(),
    }
}

/// A random access somewhere in `window` (base, size) biased to `blocks`.
fn poke(
    guest: &mut Guest,
    machine: &Machine,
    base: u64,
    size: u64,
    blocks: &[(u64, u64)],
    rng: &mut Rng,
    trace: &mut Trace,
) -> Result<bool, String> {
    let bytes = registers::width(rng);
    let offset = registers::offset(rng, blocks, size);
    let offset = registers::align(rng, offset, bytes);
    let address = base.wrapping_add(offset);
    if rng.chance(1, 2) {
        Ok(guest.read(machine, address, bytes, trace)?.is_some()
            || !machine
                .system
                .partitions
                .get(guest.partition)
                .is_some_and(Partition::is_stopped))
    } else {
        let value = register_value(guest, rng);
        guest.write(machine, address, bytes, value, trace)
    }
}

/// One step of the guest; returns the accesses made (0: the partition ended).
fn step(
    guest: &mut Guest,
    machine: &Machine,
    focus: Focus,
    rng: &mut Rng,
    trace: &mut Trace,
) -> Result<u64, String> {
    let arm = matches!(machine.model, Model::Gic(_));
    // Some of every session goes anywhere, so devices meet each other's effects.
    let focus = if focus == Focus::Everything || rng.chance(1, 5) {
        let all: &[Focus] = if arm {
            &[
                Focus::QnxFactory,
                Focus::QnxControl,
                Focus::IvshmemRegisters,
                Focus::Msix,
                Focus::PciConfig,
                Focus::GicDistributor,
                Focus::GicRedistributor,
                Focus::Pl011,
                Focus::Psci,
            ]
        } else {
            &[
                Focus::QnxFactory,
                Focus::QnxControl,
                Focus::IvshmemRegisters,
                Focus::Msix,
                Focus::PciConfig,
                Focus::Ioapic,
                Focus::Uart16550,
                Focus::Psci,
            ]
        };
        rng.pick(all).copied().unwrap_or(focus)
    } else {
        focus
    };
    if rng.chance(1, 8) {
        interrupts(guest, machine, rng, trace);
    }
    let alive = |running: bool| Ok(u64::from(running));
    match focus {
        Focus::QnxFactory => {
            if rng.chance(1, 2) {
                return attach(guest, machine, rng, trace);
            }
            let mut factories = guest.factories.clone();
            if let Some((address, _)) = guest.bar_of(0x1c05, 0, rng) {
                factories.push(address);
            }
            let Some(&base) = rng.pick(&factories) else {
                return Ok(1);
            };
            alive(poke(
                guest,
                machine,
                base,
                0x1000,
                registers::QNX_FACTORY,
                rng,
                trace,
            )?)
        }
        Focus::QnxControl => {
            if guest.control_pages.is_empty() || rng.chance(1, 10) {
                return attach(guest, machine, rng, trace);
            }
            let index = rng.index(guest.control_pages.len());
            let page = guest.control_pages.get(index).copied().unwrap_or(0);
            match rng.below(6) {
                0 | 1 => {
                    let mask = notify_mask(rng);
                    alive(guest.write(machine, page + 0x8, 4, mask, trace)?)
                }
                2 => alive(guest.read(machine, page, 4, trace)?.is_some()),
                3 if rng.chance(1, 3) => {
                    guest.control_pages.swap_remove(index);
                    alive(guest.write(machine, page + 0xc, 4, rng.value(), trace)?)
                }
                _ => {
                    // Anything but a detach (that one forgets the page, above).
                    let bytes = registers::width(rng);
                    let offset = registers::offset(rng, registers::QNX_CONTROL, 0x1000);
                    let offset = offset & !(bytes - 1);
                    let detaches = offset < 0x10 && offset + bytes > 0xc;
                    if rng.chance(1, 2) || detaches {
                        alive(guest.read(machine, page + offset, bytes, trace)?.is_some())
                    } else {
                        let value = notify_mask(rng);
                        alive(guest.write(machine, page + offset, bytes, value, trace)?)
                    }
                }
            }
        }
        Focus::IvshmemRegisters => {
            let Some((base, size)) = guest.bar_of(0x1af4, 0, rng) else {
                return Ok(1);
            };
            if rng.chance(1, 8) {
                // IVPosition: my peer ID (below 16), or -1 before attaching.
                if let Some(position) = guest.read(machine, base + 0x8, 4, trace)?
                    && position >= 16
                    && position != 0xffff_ffff
                    && guest.in_pci_window(base, 0x100)
                {
                    return Err(format!(
                        "partition {}: ivshmem IVPosition reads {position:#x}",
                        guest.partition
                    ));
                }
                return Ok(1);
            }
            if rng.chance(1, 3) {
                let value = (rng.below(3) << 16) | rng.below(3);
                let value = if rng.chance(7, 8) { value } else { rng.value() };
                return alive(guest.write(machine, base + 0xc, 4, value, trace)?);
            }
            alive(poke(
                guest,
                machine,
                base,
                size.max(0x100),
                registers::IVSHMEM,
                rng,
                trace,
            )?)
        }
        Focus::Msix => {
            let function = guest
                .functions
                .iter()
                .find(|function| function.msix_capability.is_some())
                .cloned();
            let Some(function) = function else {
                return Ok(1);
            };
            if rng.chance(1, 4)
                && let Some(capability) = function.msix_capability
            {
                // Message control: enable (bit 15) and function mask (bit 14).
                let control = (rng.below(4) << 14) | (rng.value() & 0x7ff);
                let at = guest.config_address(function.slot, 0, capability + 2);
                return alive(guest.write(machine, at, 2, control, trace)?);
            }
            if rng.chance(1, 4)
                && let Some((base, _)) = guest.bar_of(0x1af4, 0, rng)
            {
                let value = rng.below(3) << 16 | rng.below(3);
                return alive(guest.write(machine, base + 0xc, 4, value, trace)?);
            }
            let Some((base, size)) = guest.bar_of(0x1af4, 1, rng) else {
                return Ok(1);
            };
            alive(poke(
                guest,
                machine,
                base,
                size.max(0x1000),
                registers::MSIX,
                rng,
                trace,
            )?)
        }
        Focus::PciConfig => {
            if !arm && rng.chance(1, 3) {
                return alive(port(guest, machine, focus, rng, trace)?);
            }
            let slot = match guest.functions.get(rng.index(guest.functions.len())) {
                Some(function) if rng.chance(7, 8) => function.slot,
                _ => rng.below(32) as u8,
            };
            let function = if rng.chance(7, 8) {
                0
            } else {
                rng.below(8) as u8
            };
            let base = guest.config_address(slot, function, 0);
            let running = poke(
                guest,
                machine,
                base,
                0x1000,
                registers::PCI_CONFIG,
                rng,
                trace,
            )?;
            guest.check_bars(machine, trace)?;
            alive(running)
        }
        Focus::GicDistributor | Focus::GicRedistributor | Focus::Pl011 => {
            let name = match focus {
                Focus::GicDistributor => "gic-distributor",
                Focus::GicRedistributor => "gic-redistributor",
                _ => "pl011",
            };
            let Some(window) = guest
                .window(name)
                .or_else(|| guest.window("gic-distributor"))
            else {
                return Ok(1);
            };
            alive(poke(
                guest,
                machine,
                window.base,
                window.size,
                window.blocks,
                rng,
                trace,
            )?)
        }
        Focus::Ioapic => {
            let Some(window) = guest.window("ioapic") else {
                return Ok(1);
            };
            if rng.chance(1, 2) {
                // Select a redirection entry, then read or write it through IOWIN.
                let index = if rng.chance(7, 8) {
                    rng.below(0x40)
                } else {
                    rng.value()
                };
                guest.write(machine, window.base, 4, index, trace)?;
            }
            alive(poke(
                guest,
                machine,
                window.base,
                window.size,
                window.blocks,
                rng,
                trace,
            )?)
        }
        Focus::Uart16550 => alive(port(guest, machine, focus, rng, trace)?),
        Focus::Psci => alive(call(guest, machine, rng, trace)?),
        Focus::Everything => Ok(1),
    }
}

/// After every partition released its shared memory: no QNX region mapped, the pool whole,
/// no start-up region with a client.
fn finish(machine: &Machine) -> Result<(), String> {
    for partition in &machine.system.partitions {
        partition.release_shared_memory(machine);
    }
    if let Some(problem) = machine.take_problems().into_iter().next() {
        return Err(problem);
    }
    let registry = machine.shared.registry.lock();
    let ivshmem = registry
        .lookup(IVSHMEM_REGION.0)
        .and_then(|id| registry.region(id))
        .map(|info| (info.base.as_u64(), info.size));
    for mapping in machine.mappings() {
        let is_ivshmem = ivshmem.is_some_and(|(base, size)| {
            mapping.host >= base && mapping.host + mapping.size <= base + size
        });
        if !is_ivshmem {
            return Err(format!(
                "partition {} keeps {:#x} bytes of a QNX region mapped at {:#x} after \
                 releasing its shared memory",
                mapping.partition, mapping.size, mapping.guest
            ));
        }
    }
    if registry.free_bytes() != machine.free_at_start {
        return Err(format!(
            "the run-time pool has {:#x} bytes free after every partition released its \
             shared memory, {:#x} before the session",
            registry.free_bytes(),
            machine.free_at_start
        ));
    }
    for (name, _) in machine::STARTUP_REGIONS {
        if let Some(info) = registry.lookup(name).and_then(|id| registry.region(id))
            && info.active != 0
        {
            return Err(format!(
                "start-up region {name} keeps clients {:#x} after every partition released it",
                info.active
            ));
        }
    }
    Ok(())
}

fn choose_model(focus: Focus, rng: &mut Rng) -> Model {
    let gic = |rng: &mut Rng| {
        if rng.chance(1, 2) {
            Model::Gic(GicVersion::V3)
        } else {
            Model::Gic(GicVersion::V2)
        }
    };
    match focus {
        Focus::Ioapic | Focus::Uart16550 => Model::Apic,
        Focus::GicRedistributor => Model::Gic(GicVersion::V3),
        Focus::GicDistributor | Focus::Pl011 => gic(rng),
        _ if rng.chance(1, 3) => Model::Apic,
        _ => gic(rng),
    }
}

fn session(focus: Focus, seed: u64, steps: u64, trace: &mut Trace) -> SessionResult {
    let mut rng = Rng::new(seed);
    let model = choose_model(focus, &mut rng);
    trace.note(|| format!("machine: {model:?}"));
    let machine = Machine::new(model)?;
    let mut guest = Guest::new(&machine, 0);
    let mut peer = Guest::new(&machine, 1);
    guest.discover(&machine, trace)?;
    peer.discover(&machine, trace)?;
    let mut executed = 0;
    while executed < steps {
        // The peer acts now and then: attaches, notifies, rings doorbells.
        let (actor, actor_focus) = if rng.chance(1, 10) {
            let focus = *rng
                .pick(&[
                    Focus::QnxFactory,
                    Focus::QnxControl,
                    Focus::IvshmemRegisters,
                ])
                .unwrap_or(&Focus::QnxControl);
            (&mut peer, focus)
        } else {
            (&mut guest, focus)
        };
        let done = step(actor, &machine, actor_focus, &mut rng, trace)?;
        if let Some(problem) = machine.take_problems().into_iter().next() {
            return Err(problem);
        }
        if done == 0 {
            trace.note(|| String::from("session ends: the partition stopped"));
            break;
        }
        executed += done;
        if let Some(stopped) = machine.system.partitions.iter().find(|p| p.is_stopped()) {
            trace.note(|| {
                format!(
                    "session ends: {} stopped: {:?}",
                    stopped.name(),
                    stopped.stop_reason()
                )
            });
            break;
        }
    }
    finish(&machine)?;
    machine.recycle();
    Ok(executed.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_finds_its_devices_on_both_architectures() {
        for model in [
            Model::Gic(GicVersion::V3),
            Model::Gic(GicVersion::V2),
            Model::Apic,
        ] {
            let machine = Machine::new(model).unwrap();
            let mut guest = Guest::new(&machine, 0);
            guest.discover(&machine, &mut Trace::off()).unwrap();
            let vendors: Vec<u16> = guest.functions.iter().map(|f| f.vendor).collect();
            assert!(vendors.contains(&0x1c05), "{model:?}: {vendors:x?}");
            assert!(vendors.contains(&0x1af4), "{model:?}: {vendors:x?}");
            let ivshmem = guest.functions.iter().find(|f| f.vendor == 0x1af4).unwrap();
            assert!(ivshmem.msix_capability.is_some(), "{model:?}");
            assert_eq!(
                ivshmem.bars.iter().map(|bar| bar.index).collect::<Vec<_>>(),
                [0, 1, 2]
            );
            let mut rng = Rng::new(1);
            let control = attach_until_attached(&mut guest, &machine, &mut rng);
            assert!(control.is_some(), "{model:?}: no attach succeeded");
            finish(&machine).unwrap();
            machine.recycle();
        }
    }

    fn attach_until_attached(guest: &mut Guest, machine: &Machine, rng: &mut Rng) -> Option<u64> {
        for _ in 0..200 {
            attach(guest, machine, rng, &mut Trace::off()).unwrap();
            if let Some(page) = guest.control_pages.first() {
                return Some(*page);
            }
        }
        None
    }
}
