//! The fuzzing guest's view of its partition: the fixed device windows, the PCI functions
//! it enumerated (BARs, MSI-X capability), the control pages it attached; one access at a
//! time through `Partition::handle_exit`, and the checks that need that view (a fixed window
//! never stops the partition, decoding BARs never overlap).

use hypervisor::addr::GuestPhysAddr;
use hypervisor::device::gic::GicVersion;
use hypervisor::exit::{AccessWidth, Action, Exit};
use hypervisor::guest_layout;
use hypervisor::partition::Partition;

use super::machine::{IOAPIC, MMIO_FACTORY, Machine, Model, PL011};
use super::registers;
use crate::Trace;
use crate::random::Rng;

/// A fixed window: where a device always answers.
#[derive(Clone, Copy, Debug)]
pub(super) struct Window {
    pub(super) name: &'static str,
    pub(super) base: u64,
    pub(super) size: u64,
    pub(super) blocks: &'static [(u64, u64)],
}

/// One BAR as the guest found it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bar {
    pub(super) index: usize,
    pub(super) size: u64,
    pub(super) wide: bool,
    pub(super) address: u64,
}

/// One PCI function as the guest found it.
#[derive(Clone, Debug)]
pub(super) struct Function {
    pub(super) slot: u8,
    pub(super) vendor: u16,
    pub(super) bars: Vec<Bar>,
    pub(super) msix_capability: Option<u64>,
}

/// What one access did.
pub(super) enum Outcome {
    /// A load's value, or a store's completion (0).
    Done(u64),
    /// The address is mapped memory: no trap.
    Memory,
    /// The partition stopped, restarted or turned its vCPU off: the session ends.
    Ended,
}

/// A guest's view: its windows, functions and attached control pages.
pub(super) struct Guest {
    pub(super) partition: usize,
    pub(super) windows: Vec<Window>,
    pub(super) ecam: (u64, u64),
    pub(super) mmio32: (u64, u64),
    pub(super) mmio64: (u64, u64),
    pub(super) functions: Vec<Function>,
    pub(super) control_pages: Vec<u64>,
    pub(super) factories: Vec<u64>,
}

pub(super) fn width_of(bytes: u64) -> AccessWidth {
    AccessWidth::try_from(bytes).unwrap_or(AccessWidth::Word)
}

impl Guest {
    pub(super) fn new(machine: &Machine, partition: usize) -> Guest {
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

    pub(super) fn window(&self, name: &str) -> Option<Window> {
        self.windows
            .iter()
            .copied()
            .find(|window| window.name == name)
    }

    pub(super) fn in_fixed_window(&self, address: u64) -> Option<&'static str> {
        self.windows
            .iter()
            .find(|window| address >= window.base && address - window.base < window.size)
            .map(|window| window.name)
    }

    /// One MMIO access by vCPU 0; checks that fixed windows never stop the partition.
    pub(super) fn mmio(
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

    pub(super) fn read(
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

    pub(super) fn write(
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

    pub(super) fn config_address(&self, slot: u8, function: u8, offset: u64) -> u64 {
        self.ecam.0 + (u64::from(slot) << 15) + (u64::from(function) << 12) + offset
    }

    /// Enumerates bus 0 as firmware-trusting guests do: vendor IDs, BARs sized with
    /// all-ones and restored, memory decoding and bus mastering on, the MSI-X capability.
    pub(super) fn discover(&mut self, machine: &Machine, trace: &mut Trace) -> Result<(), String> {
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
    pub(super) fn refresh_bars(
        &mut self,
        machine: &Machine,
        trace: &mut Trace,
    ) -> Result<(), String> {
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

    pub(super) fn in_pci_window(&self, start: u64, size: u64) -> bool {
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
    pub(super) fn check_bars(
        &mut self,
        machine: &Machine,
        trace: &mut Trace,
    ) -> Result<(), String> {
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

    pub(super) fn bar_of(&self, vendor: u16, index: usize, rng: &mut Rng) -> Option<(u64, u64)> {
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
