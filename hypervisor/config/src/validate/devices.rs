//! A VM's devices on its board: default addresses, interrupt controllers, the guest-physical
//! map (RAM and MMIO windows must not overlap) and I/O ports.

use std::ops::RangeInclusive;

use crate::error::{Errors, Location};
use crate::model::{
    Arch, Interrupt, IoApic, MemoryRange, Pl011, Spanned, Uart8250, UartLocation, Vdev,
};
use crate::numbers::{PAGE_SIZE, check_end, check_page_aligned};
use crate::vm::VdevSpec;

/// Where `vdev pl011` sits on aarch64 when `loc` is not given (QEMU virt's UART).
pub const PL011_DEFAULT_BASE: u64 = 0x0900_0000;
/// Where `vdev ser8250` sits on x86_64 when `loc` is not given (COM1).
pub const UART8250_DEFAULT_PORT: u64 = 0x3f8;
/// I/O ports a `ser8250` occupies.
pub const UART8250_PORTS: u64 = 8;
/// Where `vdev ioapic` sits when `loc` is not given (the PC's I/O APIC).
pub const IOAPIC_DEFAULT_BASE: u64 = 0xfec0_0000;
/// Every MMIO vdev occupies one 4 KiB page: the hypervisor traps whole stage-2/EPT pages.
pub const MMIO_WINDOW_SIZE: u64 = PAGE_SIZE;

/// GIC interrupt IDs a vdev may use: the SPIs.
const GIC_SPIS: RangeInclusive<u32> = 32..=1019;
/// Local APIC vectors a vdev may use: 0-31 are CPU exceptions.
const APIC_VECTORS: RangeInclusive<u32> = 32..=255;
/// I/O APIC input pins.
const IOAPIC_PINS: RangeInclusive<u32> = 0..=23;

/// Turns one VM's vdevs into model devices, filling in the architecture's defaults.
pub(crate) fn convert(arch: Arch, specs: &[VdevSpec], errors: &mut Errors) -> Vec<Vdev> {
    let mut vdevs = Vec::with_capacity(specs.len());
    for spec in specs {
        let vdev = match spec {
            VdevSpec::Pl011 { loc, intr, at } => pl011(arch, loc, at, errors).map(|base| {
                Vdev::Pl011(Pl011 {
                    base,
                    intr: intr.clone(),
                    at: at.clone(),
                })
            }),
            VdevSpec::Uart8250 { loc, intr, at } => {
                uart8250(arch, loc, at, errors).map(|location| {
                    Vdev::Uart8250(Uart8250 {
                        location,
                        intr: intr.clone(),
                        at: at.clone(),
                    })
                })
            }
            VdevSpec::IoApic {
                loc,
                parent,
                name,
                at,
            } => {
                if arch == Arch::X86_64 {
                    let base = loc
                        .clone()
                        .unwrap_or_else(|| Spanned::new(IOAPIC_DEFAULT_BASE, at.clone()));
                    Some(Vdev::IoApic(IoApic {
                        base,
                        parent: parent.clone(),
                        name: name.clone(),
                        at: at.clone(),
                    }))
                } else {
                    let message = "vdev ioapic exists only on x86_64 (aarch64 VMs use `gic`)";
                    errors.push(at, message);
                    None
                }
            }
            VdevSpec::Shmem(shmem) => Some(Vdev::Shmem(shmem.clone())),
            VdevSpec::Ivshmem(ivshmem) => Some(Vdev::Ivshmem(ivshmem.clone())),
        };
        vdevs.extend(vdev);
    }
    vdevs
}

/// A `pl011`'s base: `loc`, or QEMU virt's UART address on aarch64.
fn pl011(
    arch: Arch,
    loc: &Option<Spanned<u64>>,
    at: &Location,
    errors: &mut Errors,
) -> Option<Spanned<u64>> {
    match (loc, arch) {
        (Some(loc), _) => Some(loc.clone()),
        (None, Arch::Aarch64) => Some(Spanned::new(PL011_DEFAULT_BASE, at.clone())),
        (None, Arch::X86_64) => {
            errors.push(
                at,
                "vdev pl011 needs `loc ADDR` on x86_64 (there is no default)",
            );
            None
        }
    }
}

/// A `ser8250`'s place: an I/O port on x86_64 (default COM1), an MMIO address on aarch64.
fn uart8250(
    arch: Arch,
    loc: &Option<Spanned<u64>>,
    at: &Location,
    errors: &mut Errors,
) -> Option<Spanned<UartLocation>> {
    match (loc, arch) {
        (Some(loc), Arch::Aarch64) => {
            Some(Spanned::new(UartLocation::Mmio(loc.value), loc.at.clone()))
        }
        (None, Arch::Aarch64) => {
            let message = "vdev ser8250 needs `loc ADDR` on aarch64 (an MMIO address; there \
                           are no I/O ports)";
            errors.push(at, message);
            None
        }
        (loc, Arch::X86_64) => {
            let loc = loc
                .clone()
                .unwrap_or_else(|| Spanned::new(UART8250_DEFAULT_PORT, at.clone()));
            let last = u64::from(u16::MAX).saturating_sub(UART8250_PORTS - 1);
            match u16::try_from(loc.value) {
                Ok(port) if loc.value <= last => {
                    Some(Spanned::new(UartLocation::Port(port), loc.at))
                }
                _ => {
                    let message = format!(
                        "vdev ser8250 port {:#x} is out of range: its {UART8250_PORTS} ports \
                         must lie in 0-0xffff",
                        loc.value
                    );
                    errors.push(&loc.at, message);
                    None
                }
            }
        }
    }
}

/// What kind of controller a name refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ControllerKind {
    Gic,
    Apic,
    IoApic,
}

impl ControllerKind {
    fn numbers(self) -> (RangeInclusive<u32>, &'static str) {
        match self {
            ControllerKind::Gic => (GIC_SPIS, "GIC SPIs"),
            ControllerKind::Apic => (APIC_VECTORS, "local APIC vectors"),
            ControllerKind::IoApic => (IOAPIC_PINS, "I/O APIC pins"),
        }
    }
}

/// Checks every `intr` of one VM: the controller exists, the number is in its range, and no
/// two devices share an interrupt.
pub(crate) fn check_interrupts(arch: Arch, vdevs: &[Vdev], errors: &mut Errors) {
    let builtin = match arch {
        Arch::Aarch64 => ControllerKind::Gic,
        Arch::X86_64 => ControllerKind::Apic,
    };
    let mut controllers: Vec<(String, ControllerKind, Option<&Location>)> =
        vec![(arch.builtin_controller().to_string(), builtin, None)];
    for vdev in vdevs {
        if let Vdev::IoApic(ioapic) = vdev {
            let name = &ioapic.name;
            match controllers.iter().find(|(known, ..)| *known == name.value) {
                Some((_, _, None)) => errors.push(
                    &name.at,
                    format!(
                        "ioapic name `{}` is the name of the built-in controller",
                        name.value
                    ),
                ),
                Some((_, _, Some(first))) => errors.push(
                    &name.at,
                    format!(
                        "ioapic name `{}` is already used at line {}",
                        name.value, first.line
                    ),
                ),
                None => {
                    controllers.push((name.value.clone(), ControllerKind::IoApic, Some(&name.at)))
                }
            }
        }
    }
    let names: Vec<&str> = controllers.iter().map(|(name, ..)| name.as_str()).collect();
    let mut used: Vec<(&Interrupt, &'static str)> = Vec::new();
    for vdev in vdevs {
        let (intr, device) = match vdev {
            Vdev::Pl011(device) => (device.intr.as_ref(), "vdev pl011"),
            Vdev::Uart8250(device) => (device.intr.as_ref(), "vdev ser8250"),
            Vdev::Shmem(device) => (device.mmio.as_ref().map(|mmio| &mmio.intr), "vdev shmem"),
            Vdev::IoApic(ioapic) => {
                let parent = &ioapic.parent;
                if parent.value == ioapic.name.value && parent.value != arch.builtin_controller() {
                    errors.push(
                        &parent.at,
                        format!("ioapic `{}` cannot deliver to itself", parent.value),
                    );
                } else if !names.contains(&parent.value.as_str()) {
                    let message = format!(
                        "unknown interrupt controller `{}` (this VM has: {})",
                        parent.value,
                        names.join(", ")
                    );
                    errors.push(&parent.at, message);
                }
                (None, "vdev ioapic")
            }
            Vdev::Ivshmem(_) => (None, "vdev ivshmem"),
        };
        let Some(intr) = intr else {
            continue;
        };
        let Some((_, kind, _)) = controllers
            .iter()
            .find(|(name, ..)| *name == intr.controller)
        else {
            let message = format!(
                "unknown interrupt controller `{}` (this VM has: {})",
                intr.controller,
                names.join(", ")
            );
            errors.push(&intr.at, message);
            continue;
        };
        let (range, what) = kind.numbers();
        if !range.contains(&intr.number) {
            let message = format!(
                "interrupt {intr} is out of range: {what} are {}-{}",
                range.start(),
                range.end()
            );
            errors.push(&intr.at, message);
        } else if let Some((first, first_device)) = used
            .iter()
            .find(|(other, _)| other.controller == intr.controller && other.number == intr.number)
        {
            let message = format!(
                "interrupt {intr} is already used by {first_device} at line {}",
                first.at.line
            );
            errors.push(&intr.at, message);
        } else {
            used.push((intr, device));
        }
    }
}

/// One thing in a VM's guest-physical address space (or, for `ser8250` on x86, port space).
#[derive(Debug)]
struct Window<'a> {
    range: MemoryRange,
    what: String,
    at: &'a Location,
}

/// Checks a VM's guest-physical map: MMIO windows page-aligned, nothing overlapping (RAM with
/// RAM or devices, devices with devices), and `ser8250` port ranges apart.
pub(crate) fn check_guest_map(
    ram: &[(MemoryRange, &Location)],
    vdevs: &[Vdev],
    errors: &mut Errors,
) {
    let mut memory: Vec<Window<'_>> = ram
        .iter()
        .map(|(range, at)| Window {
            range: *range,
            what: format!("ram {range}"),
            at,
        })
        .collect();
    let mut ports: Vec<Window<'_>> = Vec::new();
    for vdev in vdevs {
        let (base, kind) = match vdev {
            Vdev::Pl011(device) => (&device.base, "pl011"),
            Vdev::IoApic(device) => (&device.base, "ioapic"),
            Vdev::Shmem(device) => match &device.mmio {
                Some(mmio) => (&mmio.base, "shmem"),
                None => continue,
            },
            Vdev::Uart8250(device) => match device.location.value {
                UartLocation::Mmio(address) => {
                    let at = &device.location.at;
                    if let Some(window) = mmio_window(address, "ser8250", at, errors) {
                        memory.push(window);
                    }
                    continue;
                }
                UartLocation::Port(port) => {
                    ports.push(Window {
                        range: MemoryRange {
                            base: u64::from(port),
                            size: UART8250_PORTS,
                        },
                        what: format!("vdev ser8250 at port {port:#x}"),
                        at: &device.location.at,
                    });
                    continue;
                }
            },
            Vdev::Ivshmem(_) => continue,
        };
        if let Some(window) = mmio_window(base.value, kind, &base.at, errors) {
            memory.push(window);
        }
    }
    report_overlaps(&memory, "guest-physical", errors);
    report_overlaps(&ports, "I/O port", errors);
}

fn mmio_window<'a>(
    base: u64,
    kind: &str,
    at: &'a Location,
    errors: &mut Errors,
) -> Option<Window<'a>> {
    let what = format!("vdev {kind} loc");
    let checked = match check_page_aligned(base, &what) {
        Err(message) => Some(format!("{message} (the hypervisor traps whole pages)")),
        Ok(()) => check_end(base, MMIO_WINDOW_SIZE, &what).err(),
    };
    if let Some(message) = checked {
        errors.push(at, message);
        return None;
    }
    let range = MemoryRange {
        base,
        size: MMIO_WINDOW_SIZE,
    };
    Some(Window {
        range,
        what: format!("vdev {kind} at {base:#x}"),
        at,
    })
}

/// Reports each overlapping pair once, at whichever was written later.
fn report_overlaps(windows: &[Window<'_>], space: &str, errors: &mut Errors) {
    for (index, window) in windows.iter().enumerate() {
        for other in windows.iter().skip(index.saturating_add(1)) {
            if !window.range.overlaps(&other.range) {
                continue;
            }
            let (later, earlier) = if other.at.line >= window.at.line {
                (other, window)
            } else {
                (window, other)
            };
            let message = format!(
                "{space} {} overlaps {} (line {})",
                later.what, earlier.what, earlier.at.line
            );
            errors.push(later.at, message);
        }
    }
}
