//! What the fuzzing guest does in one step: factory-page attaches, control-page notifies and
//! detaches, doorbells, MSI-X and configuration writes, register pokes, PSCI calls, port I/O,
//! and the interrupt traffic arch code causes between exits; each checks what it can see.

use hypervisor::device::gic::{GicVersion, ListEntries, ListEntry, LrState};
use hypervisor::exit::{Action, Exit};
use hypervisor::partition::{EXIT_COUNTS_CALL, Partition};

use super::Focus;
use super::guest::{Guest, width_of};
use super::machine::{Machine, Model, UART_PORT};
use super::registers;
use crate::Trace;
use crate::random::Rng;

/// Names a guest might write to a factory page: allowed, refused by the list, substituted,
/// illegal (globs, empty, unterminated, non-printable), start-up regions of both partitions.
pub(super) fn region_name(rng: &mut Rng) -> Vec<u8> {
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
pub(super) fn notify_mask(rng: &mut Rng) -> u64 {
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
pub(super) fn attach(
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
pub(super) fn call(
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
        // CPU_SUSPEND: the run loop returns SUCCESS in x0 once the vCPU has waited.
        Action::Standby if psci && function & 0xbfff_ffff == 0x8400_0001 => Ok(true),
        Action::Standby => Err(format!(
            "call {function:#x} answered with Standby, which only CPU_SUSPEND may get"
        )),
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
pub(super) fn interrupts(guest: &Guest, machine: &Machine, rng: &mut Rng, trace: &mut Trace) {
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
pub(super) fn port(
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
pub(super) fn register_value(guest: &Guest, rng: &mut Rng) -> u64 {
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
pub(super) fn poke(
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
pub(super) fn step(
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
