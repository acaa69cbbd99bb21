//! What the partition looks like: read once from the device tree the loader passed in x0,
//! with QEMU `virt` defaults for everything the tree does not say (or when there is none).
//!
//! Every value lives in an atomic initialised to its default, so it can be read at any time
//! from any vCPU; vCPU 0 overwrites them from the device tree before the guest's `main`.

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

use fdt::Fdt;
use fdt::node::FdtNode;

use crate::psci::Conduit;

/// PL011 console when the device tree names none.
pub const DEFAULT_CONSOLE: usize = 0x0900_0000;
/// GIC distributor (v2 and v3) when the device tree names none.
pub const DEFAULT_GIC_DISTRIBUTOR: usize = 0x0800_0000;
/// GICv3 redistributors (0x20000 apart, one per vCPU) when the device tree names none.
pub const DEFAULT_GIC_REDISTRIBUTORS: usize = 0x080a_0000;
/// GICv2 CPU interface, used when the device tree names a GICv2 without its `reg`.
pub const DEFAULT_GIC_CPU_INTERFACE: usize = 0x0801_0000;

/// Lowest address a device tree is accepted at (RAM base of the virt layout).
const DEVICE_TREE_LOWEST: usize = 0x4000_0000;
/// End of the identity map: a device tree must lie below.
const DEVICE_TREE_END: usize = 0x1_0000_0000;
/// Largest device tree accepted (QEMU's is 1 MiB, unpacked).
const DEVICE_TREE_MAX_SIZE: usize = 0x20_0000;
/// Flattened device tree magic (big-endian in the blob).
const DEVICE_TREE_MAGIC: u32 = 0xd00d_feed;

/// Which GIC the partition has, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicLayout {
    /// GICv2: memory-mapped distributor and CPU interface.
    V2 {
        /// GICD base.
        distributor: usize,
        /// GICC base.
        cpu_interface: usize,
    },
    /// GICv3: distributor, redistributor frames, CPU interface in ICC_* system registers.
    V3 {
        /// GICD base.
        distributor: usize,
        /// First redistributor frame.
        redistributors: usize,
    },
}

static DEVICE_TREE_ADDRESS: AtomicUsize = AtomicUsize::new(0);
static DEVICE_TREE_SIZE: AtomicUsize = AtomicUsize::new(0);
static CONSOLE: AtomicUsize = AtomicUsize::new(DEFAULT_CONSOLE);
static GIC_VERSION: AtomicU8 = AtomicU8::new(3);
static GIC_DISTRIBUTOR: AtomicUsize = AtomicUsize::new(DEFAULT_GIC_DISTRIBUTOR);
/// Redistributors (v3) or CPU interface (v2).
static GIC_SECOND: AtomicUsize = AtomicUsize::new(DEFAULT_GIC_REDISTRIBUTORS);
static PSCI_SMC: AtomicBool = AtomicBool::new(false);
static RAM_BASE: AtomicU64 = AtomicU64::new(0);
static RAM_SIZE: AtomicU64 = AtomicU64::new(0);

/// Base of the PL011 used as console.
pub fn console_base() -> usize {
    CONSOLE.load(Ordering::Relaxed)
}

/// The GIC and its addresses.
pub fn gic() -> GicLayout {
    let distributor = GIC_DISTRIBUTOR.load(Ordering::Relaxed);
    let second = GIC_SECOND.load(Ordering::Relaxed);
    if GIC_VERSION.load(Ordering::Relaxed) == 2 {
        GicLayout::V2 {
            distributor,
            cpu_interface: second,
        }
    } else {
        GicLayout::V3 {
            distributor,
            redistributors: second,
        }
    }
}

/// How PSCI is called (the device tree's `/psci` `method`; HVC by default).
pub fn psci_conduit() -> Conduit {
    if PSCI_SMC.load(Ordering::Relaxed) {
        Conduit::Smc
    } else {
        Conduit::Hvc
    }
}

/// The first RAM range of the device tree's memory node: (base, size).
pub fn ram() -> Option<(u64, u64)> {
    let size = RAM_SIZE.load(Ordering::Relaxed);
    (size != 0).then(|| (RAM_BASE.load(Ordering::Relaxed), size))
}

/// The device tree's guest-physical address, if the loader passed a valid one.
pub fn device_tree_address() -> Option<usize> {
    let address = DEVICE_TREE_ADDRESS.load(Ordering::Acquire);
    (address != 0).then_some(address)
}

/// The parsed device tree, if the loader passed a valid one.
pub fn device_tree() -> Option<Fdt<'static>> {
    let address = device_tree_address()?;
    let size = DEVICE_TREE_SIZE.load(Ordering::Relaxed);
    // SAFETY: `init` checked that [address, address + size) lies in identity-mapped RAM and
    // holds a device tree of that total size; nothing in the guest writes to it.
    let blob = unsafe { core::slice::from_raw_parts(address as *const u8, size) };
    Fdt::new(blob).ok()
}

/// Total size of the blob at `address`, if it looks like a device tree we can read.
fn check_device_tree(address: usize) -> Option<usize> {
    let in_window = |end: usize| address >= DEVICE_TREE_LOWEST && end <= DEVICE_TREE_END;
    if !address.is_multiple_of(8) || !in_window(address.checked_add(8)?) {
        return None;
    }
    // SAFETY: the 8-byte header start is aligned and inside identity-mapped RAM (checked).
    let (magic, total) = unsafe {
        let header = address as *const u32;
        (
            u32::from_be(header.read_volatile()),
            u32::from_be(header.add(1).read_volatile()) as usize,
        )
    };
    let fits = total <= DEVICE_TREE_MAX_SIZE && in_window(address.checked_add(total)?);
    (magic == DEVICE_TREE_MAGIC && fits).then_some(total)
}

/// First `reg` entry of a node: (address, size).
fn first_reg(node: FdtNode<'_, '_>) -> Option<(usize, Option<usize>)> {
    let region = node.reg()?.next()?;
    Some((region.starting_address as usize, region.size))
}

fn is_pl011(node: FdtNode<'_, '_>) -> bool {
    node.compatible()
        .is_some_and(|compatible| compatible.all().any(|name| name == "arm,pl011"))
}

fn find_console(tree: &Fdt<'_>) -> Option<usize> {
    let from_chosen = tree
        .find_node("/chosen")
        .and_then(|chosen| chosen.property("stdout-path"))
        .and_then(|path| path.as_str())
        .and_then(|path| path.split(':').next())
        .and_then(|path| tree.find_node(path))
        .filter(|node| is_pl011(*node));
    let node = from_chosen.or_else(|| tree.find_compatible(&["arm,pl011"]))?;
    first_reg(node).map(|(address, _)| address)
}

fn find_gic(tree: &Fdt<'_>) -> Option<GicLayout> {
    if let Some(node) = tree.find_compatible(&["arm,gic-v3"]) {
        let mut regs = node.reg()?;
        let distributor = regs.next()?.starting_address as usize;
        let redistributors = regs.next().map_or(DEFAULT_GIC_REDISTRIBUTORS, |region| {
            region.starting_address as usize
        });
        return Some(GicLayout::V3 {
            distributor,
            redistributors,
        });
    }
    let node = tree.find_compatible(&[
        "arm,cortex-a15-gic",
        "arm,gic-400",
        "arm,cortex-a9-gic",
        "arm,cortex-a7-gic",
    ])?;
    let mut regs = node.reg()?;
    let distributor = regs.next()?.starting_address as usize;
    let cpu_interface = regs.next().map_or(DEFAULT_GIC_CPU_INTERFACE, |region| {
        region.starting_address as usize
    });
    Some(GicLayout::V2 {
        distributor,
        cpu_interface,
    })
}

fn find_psci_smc(tree: &Fdt<'_>) -> Option<bool> {
    let node = tree.find_compatible(&["arm,psci-1.0", "arm,psci-0.2", "arm,psci"])?;
    Some(node.property("method")?.as_str()? == "smc")
}

fn find_ram(tree: &Fdt<'_>) -> Option<(usize, usize)> {
    let node = tree.find_node("/memory").or_else(|| {
        tree.all_nodes().find(|node| {
            node.property("device_type")
                .and_then(|kind| kind.as_str())
                .is_some_and(|kind| kind == "memory")
        })
    })?;
    let (base, size) = first_reg(node)?;
    Some((base, size?))
}

/// Without a GIC in the device tree: the default GICv3 layout, unless the distributor at the
/// default address identifies itself as a GICv1/v2 in GICD_PIDR2 (offset 0xfe8 on those; on
/// a GICv3 that offset is reserved and reads as zero).
fn probe_gic() -> GicLayout {
    const GICV2_PIDR2: usize = 0xfe8;
    // SAFETY: the default distributor's first 4 KiB page is present in both GIC layouts of the
    // virt platform, and an ID register read has no side effects.
    let pidr2 = unsafe { crate::mmio::read32(DEFAULT_GIC_DISTRIBUTOR + GICV2_PIDR2) };
    match (pidr2 >> 4) & 0xf {
        1 | 2 => GicLayout::V2 {
            distributor: DEFAULT_GIC_DISTRIBUTOR,
            cpu_interface: DEFAULT_GIC_CPU_INTERFACE,
        },
        _ => GicLayout::V3 {
            distributor: DEFAULT_GIC_DISTRIBUTOR,
            redistributors: DEFAULT_GIC_REDISTRIBUTORS,
        },
    }
}

fn set_gic(layout: GicLayout) {
    let (version, distributor, second) = match layout {
        GicLayout::V2 {
            distributor,
            cpu_interface,
        } => (2, distributor, cpu_interface),
        GicLayout::V3 {
            distributor,
            redistributors,
        } => (3, distributor, redistributors),
    };
    GIC_VERSION.store(version, Ordering::Relaxed);
    GIC_DISTRIBUTOR.store(distributor, Ordering::Relaxed);
    GIC_SECOND.store(second, Ordering::Relaxed);
}

/// Reads the device tree at `address` (0: none) into the platform values. vCPU 0 only,
/// before any other vCPU runs.
pub(crate) fn init(address: usize) {
    if let Some(size) = check_device_tree(address) {
        DEVICE_TREE_SIZE.store(size, Ordering::Relaxed);
        DEVICE_TREE_ADDRESS.store(address, Ordering::Release);
    }
    let Some(tree) = device_tree() else {
        DEVICE_TREE_ADDRESS.store(0, Ordering::Release);
        set_gic(probe_gic());
        return;
    };
    if let Some(console) = find_console(&tree) {
        CONSOLE.store(console, Ordering::Relaxed);
    }
    set_gic(find_gic(&tree).unwrap_or_else(probe_gic));
    if let Some(smc) = find_psci_smc(&tree) {
        PSCI_SMC.store(smc, Ordering::Relaxed);
    }
    if let Some((base, size)) = find_ram(&tree) {
        RAM_BASE.store(base as u64, Ordering::Relaxed);
        RAM_SIZE.store(size as u64, Ordering::Relaxed);
    }
}

/// The root node's `model`, else its first `compatible`.
pub fn model() -> Option<&'static str> {
    let tree = device_tree()?;
    let root = tree.find_node("/")?;
    root.property("model")
        .and_then(|model| model.as_str())
        .or_else(|| root.compatible().map(|compatible| compatible.first()))
}

/// `/chosen/bootargs`, if the device tree has them.
pub fn bootargs() -> Option<&'static str> {
    let tree = device_tree()?;
    tree.find_node("/chosen")?.property("bootargs")?.as_str()
}

/// How many times Bulkhead restarted this partition: `bulkhead.restarts=N` in the bootargs.
pub fn restarts() -> Option<u32> {
    bootargs()?
        .split_whitespace()
        .find_map(|word| word.strip_prefix("bulkhead.restarts="))?
        .parse()
        .ok()
}

/// Number of `cpu` nodes under `/cpus`.
pub fn cpu_count() -> Option<usize> {
    let tree = device_tree()?;
    let cpus = tree.find_node("/cpus")?;
    Some(
        cpus.children()
            .filter(|node| node.name.split('@').next() == Some("cpu"))
            .count(),
    )
}
