//! A VM's guest-physical layout: what the architecture fixes, what the VM file places (RAM,
//! every `loc`), and the windows Bulkhead places by itself around both (PCI ECAM, PCI 32- and
//! 64-bit windows, the MSI frame, the shared-memory windows).
//!
//! The rules (README.md, "Guest-physical layout"):
//! - What the file places may not overlap what the architecture fixes (aarch64: the GIC;
//!   x86_64: Bulkhead's windows, which do not move there yet): an error at the file's line
//!   naming both ranges. Windows that do not move may not overlap one another either (x86_64:
//!   more than two `vdev shmem` reach the PCI 64-bit window): an error at the last
//!   `vdev shmem`.
//! - Each movable window, in [`window_rules`] order, keeps its usual place (QEMU virt's) when
//!   nothing is there; else, if it may shrink, the largest free part of that place that is
//!   still large enough; else the lowest free place of its full size in its area; else, if it
//!   may shrink, the largest free range of its area that is large enough. Windows placed
//!   earlier count as taken for later ones. A window that finds no room is an error naming
//!   what took its usual place.

use super::memory::RangeSet;
use crate::error::{Errors, Location};
use crate::model::{Arch, GuestLayout, MemoryRange};
use crate::numbers::format_size;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Bytes of one QNX shared-memory window (the control page and data pages of what one
/// `vdev shmem` attached); a VM's windows lie back to back in file order.
pub const SHMEM_WINDOW_SIZE: u64 = 64 * GIB;

/// An aarch64 VM's guest-physical address space: 1 TiB, the smallest stage-2 input size the
/// hypervisor sets up (40 bits).
pub const AARCH64_ADDRESS_SPACE: u64 = 1 << 40;

/// aarch64: the GIC distributor, where QEMU virt has it.
pub const AARCH64_GIC_DISTRIBUTOR: MemoryRange = range(0x0800_0000, 64 * KIB);
/// aarch64: the GICv2 CPU interface (the hardware's virtual CPU interface is mapped here).
pub const AARCH64_GIC_CPU_INTERFACE: MemoryRange = range(0x0801_0000, 8 * KIB);
/// aarch64: the first GICv3 redistributor; vCPU `i` has 128 KiB from here + `i` * 128 KiB.
pub const AARCH64_GIC_REDISTRIBUTORS: u64 = 0x080a_0000;
/// aarch64: bytes of one GICv3 redistributor (RD_base and SGI_base frames).
pub const AARCH64_GIC_REDISTRIBUTOR_SIZE: u64 = 128 * KIB;

/// Where an aarch64 VM's windows below 4 GiB may go: from the GIC (QEMU virt's first device)
/// up; the first 128 MiB (QEMU virt's flash) are left to the configuration.
const AARCH64_LOW_AREA: MemoryRange = range(0x0800_0000, 4 * GIB - 0x0800_0000);
/// Where an aarch64 VM's 64-bit windows may go: above 4 GiB, inside the address space.
const AARCH64_HIGH_AREA: MemoryRange = range(4 * GIB, AARCH64_ADDRESS_SPACE - 4 * GIB);

const fn range(base: u64, size: u64) -> MemoryRange {
    MemoryRange { base, size }
}

/// Which of Bulkhead's windows a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// PCI configuration space.
    PciEcam,
    /// The GICv2m MSI frame.
    MsiFrame,
    /// The PCI 32-bit memory window.
    PciMmio32,
    /// The QNX shared-memory windows.
    ShmemWindows,
    /// The PCI 64-bit prefetchable window.
    PciMmio64,
}

/// One of Bulkhead's own windows and where it may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowRule {
    /// Which window.
    pub kind: WindowKind,
    /// For messages: `the PCI 32-bit window`.
    pub name: &'static str,
    /// Its usual place (QEMU virt's); an empty range for a window the VM does not have.
    pub usual: MemoryRange,
    /// The least size it may shrink to (its full size when it may not shrink).
    pub least: u64,
    /// Alignment of its base and size.
    pub align: u64,
    /// Where it may lie.
    pub area: MemoryRange,
    /// False: it stays at its usual place and what overlaps it is refused.
    pub movable: bool,
}

/// Bulkhead's windows of a VM of `arch` with `shmem_devices` `vdev shmem`s, in the order they
/// are placed.
pub fn window_rules(arch: Arch, shmem_devices: u64) -> [WindowRule; 5] {
    let shmem_bytes = shmem_devices.saturating_mul(SHMEM_WINDOW_SIZE);
    match arch {
        Arch::Aarch64 => [
            WindowRule {
                kind: WindowKind::PciEcam,
                name: "the PCI ECAM",
                usual: range(0x3f00_0000, MIB),
                least: MIB,
                align: MIB,
                area: AARCH64_LOW_AREA,
                movable: true,
            },
            WindowRule {
                kind: WindowKind::MsiFrame,
                name: "the GICv2m MSI frame",
                usual: range(0x0802_0000, 4 * KIB),
                least: 4 * KIB,
                align: 64 * KIB,
                area: AARCH64_LOW_AREA,
                movable: true,
            },
            WindowRule {
                kind: WindowKind::PciMmio32,
                name: "the PCI 32-bit window",
                usual: range(0x1000_0000, 0x2eff_0000),
                least: 16 * MIB,
                align: 64 * KIB,
                area: AARCH64_LOW_AREA,
                movable: true,
            },
            WindowRule {
                kind: WindowKind::ShmemWindows,
                name: "the shared-memory windows",
                usual: range(0x60_0000_0000, shmem_bytes),
                least: shmem_bytes,
                align: GIB,
                area: AARCH64_HIGH_AREA,
                movable: true,
            },
            WindowRule {
                kind: WindowKind::PciMmio64,
                name: "the PCI 64-bit window",
                usual: range(0x80_0000_0000, 0x80_0000_0000),
                least: 4 * GIB,
                align: GIB,
                area: AARCH64_HIGH_AREA,
                movable: true,
            },
        ],
        // The x86 guests' boot information could describe moved windows, but nothing on x86
        // has been tried with them elsewhere yet: they stay, and what overlaps them is refused.
        Arch::X86_64 => {
            let fixed = |kind, name, usual: MemoryRange| WindowRule {
                kind,
                name,
                usual,
                least: usual.size,
                align: 4 * KIB,
                area: usual,
                movable: false,
            };
            [
                fixed(WindowKind::PciEcam, "the PCI ECAM", range(0xe000_0000, MIB)),
                fixed(WindowKind::MsiFrame, "the MSI frame", range(0, 0)),
                fixed(
                    WindowKind::PciMmio32,
                    "the PCI 32-bit window",
                    range(0xc000_0000, 0x2000_0000),
                ),
                fixed(
                    WindowKind::ShmemWindows,
                    "the shared-memory windows",
                    range(0x60_0000_0000, shmem_bytes),
                ),
                fixed(
                    WindowKind::PciMmio64,
                    "the PCI 64-bit window",
                    range(0x80_0000_0000, 0x80_0000_0000),
                ),
            ]
        }
    }
}

/// What the architecture fixes in every VM with `vcpus` vCPUs (besides unmovable windows).
pub fn fixed_ranges(arch: Arch, vcpus: usize) -> Vec<(&'static str, MemoryRange)> {
    match arch {
        Arch::Aarch64 => {
            let redistributors = AARCH64_GIC_REDISTRIBUTOR_SIZE
                .saturating_mul(u64::try_from(vcpus.max(1)).unwrap_or(u64::MAX));
            vec![
                ("the GIC distributor", AARCH64_GIC_DISTRIBUTOR),
                ("the GICv2 CPU interface", AARCH64_GIC_CPU_INTERFACE),
                (
                    "the GICv3 redistributors",
                    range(AARCH64_GIC_REDISTRIBUTORS, redistributors),
                ),
            ]
        }
        Arch::X86_64 => Vec::new(),
    }
}

/// Something the VM file places in guest-physical space.
#[derive(Debug, Clone)]
pub(crate) struct Placed<'a> {
    /// Its range.
    pub range: MemoryRange,
    /// For messages: `vdev shmem`, `ram`.
    pub what: String,
    /// The line that placed it.
    pub at: &'a Location,
}

/// `base`-`end` with an exclusive end, as the layout messages write ranges.
fn span(range: &MemoryRange) -> String {
    format!("{:#x}-{:#x}", range.base, range.end())
}

/// Where one VM's windows go (see the module's rules). `shmem` is the number of `vdev shmem`
/// and the line of the last one; `system` is the VM's `system` line. Problems are recorded in
/// `errors`; the layout returned then holds usual places for the windows that found no room.
pub(crate) fn place(
    arch: Arch,
    vcpus: usize,
    placed: &[Placed<'_>],
    shmem: (u64, Option<&Location>),
    system: &Location,
    errors: &mut Errors,
) -> GuestLayout {
    let rules = window_rules(arch, shmem.0);
    let mut fixed = fixed_ranges(arch, vcpus);
    fixed.extend(
        rules
            .iter()
            .filter(|rule| !rule.movable && rule.usual.size > 0)
            .map(|rule| (rule.name, rule.usual)),
    );
    // Windows that do not move (x86_64) must not overlap one another: only the shared-memory
    // windows grow (64 GiB per `vdev shmem`), so that is reported at the last `vdev shmem`.
    let unmovable: Vec<&WindowRule> = rules
        .iter()
        .filter(|rule| !rule.movable && rule.usual.size > 0)
        .collect();
    for (index, window) in unmovable.iter().enumerate() {
        for other in unmovable.iter().skip(index + 1) {
            if window.usual.overlaps(&other.usual) {
                let message = format!(
                    "{} ({}, {} per vdev shmem) would overlap {} ({}), and {arch} windows do \
                     not move: use fewer vdev shmem",
                    window.name,
                    span(&window.usual),
                    format_size(SHMEM_WINDOW_SIZE),
                    other.name,
                    span(&other.usual),
                );
                errors.push(shmem.1.unwrap_or(system), message);
            }
        }
    }
    for item in placed {
        for (name, range) in &fixed {
            if item.range.overlaps(range) {
                let message = format!(
                    "guest-physical {} overlaps {name} ({}), which every {arch} partition has \
                     at that address (move this {} outside that range)",
                    span(&item.range),
                    span(range),
                    item.what
                );
                errors.push(item.at, message);
            }
        }
    }
    let mut taken: Vec<MemoryRange> = fixed.iter().map(|(_, range)| *range).collect();
    taken.extend(placed.iter().map(|item| item.range));
    let mut layout = GuestLayout {
        pci_ecam: range(0, 0),
        pci_mmio32: range(0, 0),
        pci_mmio64: range(0, 0),
        msi_frame: range(0, 0),
        shmem_windows: range(0, 0),
    };
    for rule in &rules {
        let window = if !rule.movable || rule.usual.size == 0 {
            rule.usual
        } else {
            match choose(rule, &taken) {
                Some(window) => window,
                None => {
                    report_no_room(rule, placed, shmem.1.unwrap_or(system), errors);
                    rule.usual
                }
            }
        };
        if window.size > 0 && rule.movable {
            taken.push(window);
        }
        let slot = match rule.kind {
            WindowKind::PciEcam => &mut layout.pci_ecam,
            WindowKind::MsiFrame => &mut layout.msi_frame,
            WindowKind::PciMmio32 => &mut layout.pci_mmio32,
            WindowKind::ShmemWindows => &mut layout.shmem_windows,
            WindowKind::PciMmio64 => &mut layout.pci_mmio64,
        };
        *slot = window;
    }
    layout
}

/// Where `rule`'s window goes when `taken` is occupied, if anywhere.
fn choose(rule: &WindowRule, taken: &[MemoryRange]) -> Option<MemoryRange> {
    let mut free = RangeSet::union([rule.area]);
    for range in taken {
        free.remove(range);
    }
    if free.contains(&rule.usual) {
        return Some(rule.usual);
    }
    let shrinks = rule.least < rule.usual.size;
    let largest_within = |bounds: &MemoryRange| {
        free.ranges()
            .iter()
            .filter_map(|gap| {
                let base = gap
                    .base
                    .max(bounds.base)
                    .checked_next_multiple_of(rule.align)?;
                let end = gap.end().min(bounds.end());
                let size = end.checked_sub(base)?;
                let size = size - size % rule.align;
                (size >= rule.least).then_some(range(base, size.min(rule.usual.size)))
            })
            .max_by_key(|window| (window.size, u64::MAX - window.base))
    };
    if shrinks && let Some(window) = largest_within(&rule.usual) {
        return Some(window);
    }
    if let Some(base) = free.first_fit(rule.usual.size, rule.align) {
        return Some(range(base, rule.usual.size));
    }
    if shrinks {
        return largest_within(&rule.area);
    }
    None
}

/// Records that `rule`'s window found no room, at the line of what took its usual place (or
/// at `fallback`).
fn report_no_room(
    rule: &WindowRule,
    placed: &[Placed<'_>],
    fallback: &Location,
    errors: &mut Errors,
) {
    let culprit = placed.iter().find(|item| item.range.overlaps(&rule.usual));
    let (at, cause) = match culprit {
        Some(item) => (
            item.at,
            format!(
                "its usual place {} holds this {} ({})",
                span(&rule.usual),
                item.what,
                span(&item.range)
            ),
        ),
        None => (
            fallback,
            format!(
                "its usual place {} is taken by other windows or the GIC",
                span(&rule.usual)
            ),
        ),
    };
    let message = format!(
        "no room for {} (at least {}, {}-aligned, in {}): {cause}, and nothing else free \
         there is large enough; leave {} free in that range",
        rule.name,
        format_size(rule.least),
        format_size(rule.align),
        span(&rule.area),
        format_size(rule.least),
    );
    errors.push(at, message);
}

#[cfg(test)]
mod tests;
