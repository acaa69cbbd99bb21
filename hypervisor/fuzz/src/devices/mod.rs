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

mod actions;
mod guest;
mod machine;
mod registers;

use hypervisor::device::gic::GicVersion;

use self::actions::step;
use self::guest::Guest;
use self::machine::{IVSHMEM_REGION, Machine, Model};
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
    let mut outcome = Ok(());
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
        let done = match step(actor, &machine, actor_focus, &mut rng, trace) {
            Ok(done) => done,
            Err(message) => {
                // A known finding is counted and ends the session like a stop; any other
                // is the session's result, after the end-of-session checks below.
                match crate::known_stem(&message) {
                    Some(stem) => crate::known(stem),
                    None => outcome = Err(message),
                }
                break;
            }
        };
        if let Some(problem) = machine.take_problems().into_iter().next() {
            outcome = Err(problem);
            break;
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
    // Every session ends with every partition releasing its shared memory and the checks of
    // what that must leave; the registry is reused only when they hold.
    let finished = finish(&machine);
    outcome?;
    finished?;
    machine.recycle();
    Ok(executed.max(1))
}

#[cfg(test)]
mod tests {
    use super::actions::attach;
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
