//! Checks a board and its VM files against each other and produces the [`System`].
//!
//! Board RAM and the hypervisor's reserve, VM names, physical CPUs, each VM's guest-physical
//! map and interrupts, images, host RAM placement, and shared-memory regions. All errors are
//! collected; nothing is returned unless there are none.

mod cpus;
mod devices;
mod layout;
mod memory;
mod shmem;
#[cfg(test)]
mod tests;

pub use devices::{
    IOAPIC_DEFAULT_BASE, MMIO_WINDOW_SIZE, PL011_DEFAULT_BASE, UART8250_DEFAULT_PORT,
};
pub use layout::{
    AARCH64_ADDRESS_SPACE, AARCH64_GIC_CPU_INTERFACE, AARCH64_GIC_DISTRIBUTOR,
    AARCH64_GIC_REDISTRIBUTOR_SIZE, AARCH64_GIC_REDISTRIBUTORS, SHMEM_WINDOW_SIZE, WindowKind,
    WindowRule, fixed_ranges, window_rules,
};

use crate::ImageResolver;
use crate::error::{Errors, Location};
use crate::model::{
    Arch, Board, Console, GuestLayout, Image, MemoryRange, RamRegion, System, UartLocation, Vdev,
    Vm,
};
use crate::numbers::PAGE_SIZE;
use crate::vm::VmFile;
use memory::RamRequest;

/// Validates `board` with its `vms` (in the board's `vm` order) and resolves images with
/// `resolver`. Returns every error found, or the complete system.
pub fn validate(
    board: Board,
    vms: Vec<VmFile>,
    resolver: &dyn ImageResolver,
) -> Result<System, Errors> {
    let mut errors = Errors::new();
    let arch = board.arch.value;
    let board_ram = memory::check_board_ram(&board, &mut errors);
    check_console(&board, &board_ram, &mut errors);
    if vms.is_empty() {
        errors.push(&board.name.at, "the board lists no VMs (`vm PATH`)");
    }
    check_names(&vms, &mut errors);
    let vcpus = cpus::assign(&board, &vms, &mut errors);

    let mut requests = Vec::new();
    let mut vdevs = Vec::with_capacity(vms.len());
    let mut images = Vec::with_capacity(vms.len());
    let mut layouts = Vec::with_capacity(vms.len());
    for (index, vm) in vms.iter().enumerate() {
        let vm_requests = guest_ram(arch, index, vm);
        let devices = devices::convert(arch, &vm.vdevs, &mut errors);
        devices::check_interrupts(arch, &devices, &mut errors);
        let ram: Vec<(MemoryRange, &Location)> = vm_requests
            .iter()
            .map(|request| {
                let range = MemoryRange {
                    base: request.guest_base,
                    size: request.size,
                };
                (range, &request.at)
            })
            .collect();
        devices::check_guest_map(&ram, &devices, &mut errors);
        let vcpu_count = vcpus.get(index).map_or(0, Vec::len);
        layouts.push(guest_layout(
            arch,
            vcpu_count,
            &ram,
            &devices,
            &vm.name.at,
            &mut errors,
        ));
        let load = &vm.load;
        let image = match resolver.resolve(&load.value) {
            Ok(path) => Some(Image {
                load: load.value.clone(),
                path,
                at: load.at.clone(),
            }),
            Err(reason) => {
                let message = format!("image `{}` does not exist: {reason}", load.value);
                errors.push(&load.at, message);
                None
            }
        };
        let initrd = vm
            .initrd
            .as_ref()
            .and_then(|initrd| match resolver.resolve(&initrd.value) {
                _ if arch == Arch::X86_64 => {
                    let message =
                        "`initrd` is only supported on aarch64 (the x86_64 loader has none)";
                    errors.push(&initrd.at, message);
                    None
                }
                Ok(path) => Some(Image {
                    load: initrd.value.clone(),
                    path,
                    at: initrd.at.clone(),
                }),
                Err(reason) => {
                    let message = format!("initrd `{}` does not exist: {reason}", initrd.value);
                    errors.push(&initrd.at, message);
                    None
                }
            });
        images.push(image.map(|image| (image, initrd)));
        requests.extend(vm_requests);
        vdevs.push(devices);
    }

    let vm_names: Vec<&str> = vms.iter().map(|vm| vm.name.value.as_str()).collect();
    let (host_bases, free) =
        memory::place_ram(&board, &board_ram, &requests, &vm_names, &mut errors);
    let regions = shmem::regions(&board, vdevs.iter().flatten(), free.total(), &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }

    let mut ram_regions = requests.into_iter().zip(host_bases).peekable();
    let mut system_vms = Vec::with_capacity(vms.len());
    for (index, ((((vm, vcpus), vdevs), image), layout)) in vms
        .into_iter()
        .zip(vcpus)
        .zip(vdevs)
        .zip(images)
        .zip(layouts)
        .enumerate()
    {
        let mut ram = Vec::new();
        while let Some((request, host_base)) =
            ram_regions.next_if(|(request, _)| request.vm == index)
        {
            ram.push(RamRegion {
                guest_base: request.guest_base,
                size: request.size,
                host_base,
                pinned: request.host_base.is_some(),
                at: request.at,
            });
        }
        let Some((image, initrd)) = image else {
            continue;
        };
        system_vms.push(Vm {
            name: vm.name.value,
            at: vm.name.at,
            path: vm.path,
            ram,
            vcpus,
            image,
            initrd,
            cmdline: vm.cmdline.map(|cmdline| cmdline.value),
            fault_policy: vm.fault_policy,
            vdevs,
            layout,
        });
    }
    Ok(System {
        board,
        vms: system_vms,
        regions,
        free_ram: free.ranges().to_vec(),
    })
}

/// Places the windows Bulkhead adds to one VM around its `ram`s and `loc`s (see
/// [`layout`]).
fn guest_layout(
    arch: Arch,
    vcpus: usize,
    ram: &[(MemoryRange, &Location)],
    vdevs: &[Vdev],
    system: &Location,
    errors: &mut Errors,
) -> GuestLayout {
    let mut placed: Vec<layout::Placed<'_>> = ram
        .iter()
        .map(|(range, at)| layout::Placed {
            range: *range,
            what: "ram".to_string(),
            at,
        })
        .collect();
    let mut shmem_count = 0u64;
    let mut last_shmem = None;
    for vdev in vdevs {
        let (base, what) = match vdev {
            Vdev::Pl011(device) => (&device.base, "vdev pl011"),
            Vdev::IoApic(device) => (&device.base, "vdev ioapic"),
            Vdev::Shmem(device) => {
                shmem_count = shmem_count.saturating_add(1);
                last_shmem = Some(&device.at);
                match &device.mmio {
                    Some(mmio) => (&mmio.base, "vdev shmem"),
                    None => continue,
                }
            }
            Vdev::Uart8250(device) => match device.location.value {
                UartLocation::Mmio(address) => {
                    placed.push(layout::Placed {
                        range: MemoryRange {
                            base: address,
                            size: MMIO_WINDOW_SIZE,
                        },
                        what: "vdev ser8250".to_string(),
                        at: &device.location.at,
                    });
                    continue;
                }
                UartLocation::Port(_) => continue,
            },
            Vdev::Ivshmem(_) => continue,
        };
        placed.push(layout::Placed {
            range: MemoryRange {
                base: base.value,
                size: MMIO_WINDOW_SIZE,
            },
            what: what.to_string(),
            at: &base.at,
        });
    }
    layout::place(
        arch,
        vcpus,
        &placed,
        (shmem_count, last_shmem),
        system,
        errors,
    )
}

/// A VM's `ram` lines with guest bases filled in: a `ram` without GPA starts at the
/// architecture's default if it is the first, otherwise right after the previous `ram`.
fn guest_ram(arch: Arch, vm: usize, file: &VmFile) -> Vec<RamRequest> {
    let mut next = arch.default_ram_base();
    file.ram
        .iter()
        .map(|ram| {
            let guest_base = ram.guest_base.unwrap_or(next);
            next = guest_base.saturating_add(ram.size);
            RamRequest {
                vm,
                guest_base,
                size: ram.size,
                host_base: ram.host_base,
                at: ram.at.clone(),
            }
        })
        .collect()
}

/// VM names are unique across the system.
fn check_names(vms: &[VmFile], errors: &mut Errors) {
    for (index, vm) in vms.iter().enumerate() {
        if let Some(first) = vms
            .iter()
            .take(index)
            .find(|other| other.name.value == vm.name.value)
        {
            let message = format!(
                "VM name `{}` is already used at {}",
                vm.name.value, first.name.at
            );
            errors.push(&vm.name.at, message);
        }
    }
}

/// The hypervisor's console suits the architecture and is not in RAM.
fn check_console(board: &Board, board_ram: &memory::RangeSet, errors: &mut Errors) {
    let Some(console) = &board.console else {
        return;
    };
    match console.value {
        Console::Uart8250 { .. } if board.arch.value == Arch::Aarch64 => {
            let message = "`console 8250 port N` needs I/O ports, which aarch64 does not have; \
                           use `console pl011 loc ADDR` or `console cadence loc ADDR`";
            errors.push(&console.at, message);
        }
        Console::Pl011 { base } | Console::Cadence { base } => {
            let kind = if matches!(console.value, Console::Cadence { .. }) {
                "cadence"
            } else {
                "pl011"
            };
            if board.arch.value != Arch::Aarch64 {
                let message = format!(
                    "`console {kind} loc ADDR` is an aarch64 console; x86_64 uses `console 8250 port N`"
                );
                errors.push(&console.at, message);
            }
            let page = MemoryRange {
                base: base - base % PAGE_SIZE,
                size: PAGE_SIZE,
            };
            if board_ram.ranges().iter().any(|ram| ram.overlaps(&page)) {
                errors.push(
                    &console.at,
                    format!("console {kind} at {base:#x} lies inside board RAM"),
                );
            }
        }
        Console::Uart8250 { .. } => {}
    }
}
