//! Building a partition's shared-memory devices (QNX `vdev shmem`, QEMU `ivshmem-*`) and its
//! virtual PCI bus from the configuration, and linking the virtual timers to the GIC.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use super::SharedMemorySystem;
use crate::addr::GuestPhysAddr;
use crate::config::PartitionConfig;
use crate::device::gic::{GicVersion, VirtualGic};
use crate::device::{ClientId, DeviceTable, InterruptLines, SignalTarget};
use crate::guest_layout;
use crate::pci::doorbell;
use crate::pci::ivshmem::{Ivshmem, Variant};
use crate::pci::{GuestPci, PciBridge};
use crate::shmem::qnx_pci::QnxPciFunction;
use crate::shmem::{Policy, QnxShmem, Rule, Subst};

/// A partition's shared-memory devices as built from its configuration.
pub(super) struct SharedDevices {
    /// Signal targets by [`ClientId::device`].
    pub(super) targets: Vec<Arc<dyn SignalTarget>>,
    /// Devices that hold attachments to give up when the partition stops or restarts.
    pub(super) releasers: Vec<Arc<dyn SignalTarget>>,
    /// Configured devices that could not be set up, each named (the boot fails on them).
    pub(super) problems: Vec<String>,
}

/// Registers `device` at `base`, or records why it could not be (it overlaps another).
pub(super) fn place(
    devices: &mut DeviceTable,
    base: GuestPhysAddr,
    device: Box<dyn crate::device::MmioDevice>,
    problems: &mut Vec<String>,
) {
    let size = device.size();
    if let Err(refused) = devices.insert(base, device) {
        let taken = devices
            .describe()
            .find(|&(other, _, other_size)| {
                base.as_u64() < other.as_u64().saturating_add(other_size)
                    && other.as_u64() < base.as_u64().saturating_add(size)
            })
            .map_or(
                String::from("nothing (an empty or wrapping range)"),
                |(other, what, other_size)| {
                    alloc::format!(
                        "{what} at {:#x}-{:#x}",
                        other.as_u64(),
                        other.as_u64().saturating_add(other_size)
                    )
                },
            );
        problems.push(alloc::format!(
            "{} at {:#x}-{:#x} overlaps {taken}",
            refused.name(),
            base.as_u64(),
            base.as_u64().saturating_add(size)
        ));
    }
}

/// Builds the partition's virtual PCI bus (always present, so guests may probe it) with its
/// PCI shared-memory functions, and its QNX MMIO shmem devices; registers their frames.
pub(super) fn shared_memory_devices(
    index: usize,
    config: &'static PartitionConfig,
    layout: GuestPci,
    lines: Arc<dyn InterruptLines>,
    gic_version: Option<GicVersion>,
    shared: Option<&'static SharedMemorySystem>,
    devices: &mut DeviceTable,
) -> (SharedDevices, PciBridge) {
    let ram: Vec<(u64, u64)> = config.ram.iter().map(|r| (r.guest_base, r.size)).collect();
    let bridge = PciBridge::new(layout, &ram);
    // Lines are set under the devices' own locks (see `InterruptLines`).
    bridge.set_lines(lines.clone());
    let mut built = SharedDevices {
        targets: Vec::new(),
        releasers: Vec::new(),
        problems: Vec::new(),
    };
    for (base, frame) in bridge.mmio_devices(gic_version) {
        place(devices, base, frame, &mut built.problems);
    }
    let Some(shared) = shared else {
        return (built, bridge);
    };
    let partition = u16::try_from(index).unwrap_or(u16::MAX);
    let mut slot: u8 = 1;
    for (n, shmem) in config.shmem.iter().enumerate() {
        let client = ClientId {
            partition,
            device: u16::try_from(built.targets.len()).unwrap_or(u16::MAX),
        };
        let rules = shmem
            .rules
            .iter()
            .map(|&(allow, glob)| {
                if allow {
                    Rule::allow(glob)
                } else {
                    Rule::deny(glob)
                }
            })
            .collect();
        let substs = shmem
            .substs
            .iter()
            .map(|&(old, new)| Subst::new(old, new))
            .collect();
        let creates: Vec<(String, u64)> = shmem
            .creates
            .iter()
            .map(|&(name, _, size)| (String::from(name), size))
            .collect();
        let window = GuestPhysAddr::new(
            config
                .windows
                .shmem_windows
                .saturating_add((n as u64).saturating_mul(guest_layout::SHMEM_WINDOW_SIZE)),
        );
        let intid = match shmem.mmio {
            Some((_, intid)) => intid,
            None => layout.intx_intid(slot, 1).unwrap_or(0),
        };
        let device = QnxShmem::new(
            Policy::new(rules, substs),
            &creates,
            client,
            window,
            intid,
            shared.registry,
        )
        .with_lines(lines.clone());
        let device = match shmem.mmio {
            Some((loc, _)) => {
                let device = Arc::new(device);
                // The configuration build refuses overlapping devices; should one get here,
                // the boot fails naming it.
                place(
                    devices,
                    GuestPhysAddr::new(loc),
                    device.factory_page(),
                    &mut built.problems,
                );
                built.targets.push(device.clone());
                device
            }
            None => {
                let (function, device) = QnxPciFunction::new(device);
                if let Err(error) = bridge.add_function(slot, Box::new(function)) {
                    built
                        .problems
                        .push(alloc::format!("vdev shmem (PCI slot {slot}): {error}"));
                }
                built.targets.push(bridge.signal_target(slot));
                slot = slot.saturating_add(1);
                device
            }
        };
        place(devices, window, device.window(), &mut built.problems);
        built.releasers.push(device);
    }
    for ivshmem in config.ivshmem {
        let client = ClientId {
            partition,
            device: u16::try_from(built.targets.len()).unwrap_or(u16::MAX),
        };
        let vectors = u16::try_from(ivshmem.vectors).unwrap_or(u16::MAX);
        let variant = if vectors == 0 {
            Variant::Plain
        } else {
            Variant::Doorbell { vectors }
        };
        let added = doorbell::attach(&shared.board, ivshmem.name, client, vectors)
            .map_err(|_| "no such ivshmem region or no free peer ID")
            .and_then(|link| {
                let memory = link.memory();
                Ivshmem::new(variant, memory, Box::new(link)).map_err(|_| "bad ivshmem region")
            })
            .and_then(|function| {
                bridge
                    .add_function(slot, Box::new(function))
                    .map_err(|_| "no PCI slot")
            });
        if let Err(reason) = added {
            built
                .problems
                .push(alloc::format!("vdev ivshmem {}: {reason}", ivshmem.name));
        }
        built.targets.push(bridge.signal_target(slot));
        slot = slot.saturating_add(1);
    }
    (built, bridge)
}

/// Links each vCPU's virtual timer PPI to the physical one (HW = 1 in the list register).
pub(super) fn link_timers(gic: &VirtualGic, vcpus: usize) {
    let intid = guest_layout::VIRTUAL_TIMER_INTID;
    for vcpu in 0..vcpus {
        gic.link_hardware(intid, vcpu, intid);
    }
}
