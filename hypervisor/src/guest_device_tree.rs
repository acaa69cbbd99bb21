//! The device tree a partition's guest receives in x0: RAM, vCPUs, PSCI, GIC, timer, console, PCI.
//!
//! The nodes mirror what QEMU's `virt` machine generates (which unmodified Linux arm64 kernels
//! accept), trimmed to what a partition has: no flash, virtio, ITS or PMU; the PCI host bridge
//! and its MSI controller (GICv3 MBI or a GICv2m frame) only when the partition has PCI (see
//! [`crate::pci::device_tree`]). vCPU `i` gets `reg` = the affinity bits of
//! [`crate::psci::virtual_mpidr`], so the tree, PSCI `CPU_ON` and the vCPUs' MPIDR registers
//! agree.

use alloc::format;
use alloc::vec::Vec;
use core::fmt;

use crate::fdt_writer::{FdtError, FdtWriter};
use crate::pci::device_tree as pci_tree;
use crate::psci::virtual_mpidr;

pub use crate::pci::GuestPci;

/// Phandle of the interrupt controller node (the root's `interrupt-parent`).
pub const GIC_PHANDLE: u32 = 1;
/// Phandle of the 24 MHz `apb-pclk` fixed clock that feeds the PL011.
pub const APB_CLOCK_PHANDLE: u32 = 2;
/// The `apb-pclk` frequency (QEMU's value).
const APB_CLOCK_FREQUENCY: u32 = 24_000_000;
/// Size of the PL011 register window.
const PL011_SIZE: u64 = 0x1000;
/// Largest vCPU count a GICv2 can address (8-bit target lists).
const GIC_V2_MAX_VCPUS: usize = 8;
/// Largest vCPU count the MPIDR scheme encodes (Aff0 0-15, Aff1 0-255).
const MAX_VCPUS: usize = 16 * 256;
/// Shared peripheral interrupts are INTIDs 32-1019, so SPI numbers 0-987.
const MAX_SPI: u32 = 987;
/// Bytes of a QNX shmem factory page.
const SHMEM_FACTORY_PAGE: u64 = 0x1000;

/// First interrupt cell: shared peripheral interrupt.
const INTERRUPT_SPI: u32 = 0;
/// First interrupt cell: private peripheral interrupt.
const INTERRUPT_PPI: u32 = 1;
/// Third interrupt cell: level-triggered, active high.
const LEVEL_HIGH: u32 = 4;
/// Architected timer PPIs in the order the binding lists them: secure physical, non-secure
/// physical, virtual, hypervisor physical (INTIDs 29, 30, 27, 26).
const TIMER_PPIS: [u32; 4] = [13, 14, 11, 10];
/// PSCI 0.1 function IDs (QEMU writes the 64-bit PSCI 0.2 IDs here) for guests that only know
/// the plain `arm,psci` binding.
const PSCI_0_1_FUNCTIONS: [(&str, u32); 4] = [
    ("cpu_suspend", 0xc400_0001),
    ("cpu_off", 0x8400_0002),
    ("cpu_on", 0xc400_0003),
    ("migrate", 0xc400_0005),
];

/// The partition's interrupt controller and its guest-physical register windows, each
/// `(base, size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestGic {
    /// GICv3: distributor and one contiguous redistributor region.
    V3 {
        /// GICD window.
        distributor: (u64, u64),
        /// GICR window (one frame pair per vCPU).
        redistributors: (u64, u64),
    },
    /// GICv2: distributor and CPU interface.
    V2 {
        /// GICD window.
        distributor: (u64, u64),
        /// GICC window.
        cpu_interface: (u64, u64),
    },
}

/// What a partition looks like from inside, as far as its device tree tells.
#[derive(Clone, Copy, Debug)]
pub struct GuestPlatform<'a> {
    /// Partition name: `model = "bulkhead,<name>"`.
    pub name: &'a str,
    /// Guest-physical RAM ranges `(base, size)`; one `memory@BASE` node each.
    pub ram: &'a [(u64, u64)],
    /// Number of vCPUs; vCPU `i` has `reg` = `(i / 16) << 8 | i % 16`.
    pub vcpus: usize,
    /// The interrupt controller.
    pub gic: GuestGic,
    /// The console PL011, if any: `(base, SPI number)` as in `interrupts = <0 SPI 4>`.
    pub pl011: Option<(u64, u32)>,
    /// MMIO QNX shared-memory devices (`vdev shmem loc ... intr gic:N`): `(factory page,
    /// SPI number)`, each a `qvm,guest_shm` node with `reg` = the 4 KiB factory page and
    /// `interrupts` = its SPI, level-high (what QNX's Linux driver binds).
    pub shmem: &'a [(u64, u32)],
    /// `/chosen/bootargs`; left out when empty.
    pub bootargs: &'a str,
    /// PSCI conduit, `"hvc"` or `"smc"`.
    pub psci_method: &'a str,
    /// The PCI host bridge and its MSI controller, if the partition has PCI devices.
    pub pci: Option<GuestPci>,
    /// The initial RAM disk as guest-physical `(start, end)` (end exclusive):
    /// `/chosen/linux,initrd-start` and `linux,initrd-end`.
    pub initrd: Option<(u64, u64)>,
}

/// Why a guest tree could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestTreeError {
    /// No RAM range, or a range of size zero or one that wraps the address space.
    InvalidRam,
    /// Zero vCPUs, more than the MPIDR scheme encodes, or more than 8 with a GICv2.
    InvalidVcpuCount(usize),
    /// A PSCI method other than `hvc` or `smc`.
    InvalidPsciMethod,
    /// A PL011 SPI number above 987.
    InvalidSpi(u32),
    /// A PCI INTx or MSI INTID that is not an SPI (32-1019).
    InvalidPciIntid(u32),
    /// The writer refused something (a name with characters a tree cannot hold, ...).
    Fdt(FdtError),
}

impl From<FdtError> for GuestTreeError {
    fn from(error: FdtError) -> Self {
        GuestTreeError::Fdt(error)
    }
}

impl fmt::Display for GuestTreeError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestTreeError::InvalidRam => write!(formatter, "no RAM or an empty/wrapping range"),
            GuestTreeError::InvalidVcpuCount(count) => {
                write!(formatter, "{count} vCPUs not supported by this GIC")
            }
            GuestTreeError::InvalidPsciMethod => write!(formatter, "PSCI method not hvc/smc"),
            GuestTreeError::InvalidSpi(spi) => write!(formatter, "SPI {spi} out of range"),
            GuestTreeError::InvalidPciIntid(intid) => {
                write!(formatter, "PCI interrupt INTID {intid} is not an SPI")
            }
            GuestTreeError::Fdt(error) => write!(formatter, "device tree: {error}"),
        }
    }
}

/// Builds the blob for `platform`.
pub fn build(platform: &GuestPlatform) -> Result<Vec<u8>, GuestTreeError> {
    validate(platform)?;
    let mut writer = FdtWriter::new();
    writer.begin_node("")?;
    writer.property_u32("interrupt-parent", GIC_PHANDLE)?;
    writer.property_string("model", &format!("bulkhead,{}", platform.name))?;
    writer.property_strings("compatible", &["bulkhead,partition", "linux,dummy-virt"])?;
    writer.property_u32("#address-cells", 2)?;
    writer.property_u32("#size-cells", 2)?;

    write_chosen(&mut writer, platform)?;
    for &(base, size) in platform.ram {
        writer.begin_node(&format!("memory@{base:x}"))?;
        writer.property_string("device_type", "memory")?;
        writer.property_u64_list("reg", &[base, size])?;
        writer.end_node()?;
    }
    write_cpus(&mut writer, platform.vcpus)?;
    write_psci(&mut writer, platform.psci_method)?;
    write_gic(&mut writer, platform.gic, platform.pci.as_ref())?;
    write_timer(&mut writer, platform)?;
    if let Some((base, spi)) = platform.pl011 {
        write_pl011(&mut writer, base, spi)?;
    }
    for &(base, spi) in platform.shmem {
        writer.begin_node(&format!("shmem@{base:x}"))?;
        writer.property_string("compatible", "qvm,guest_shm")?;
        writer.property_u64_list("reg", &[base, SHMEM_FACTORY_PAGE])?;
        writer.property_cells("interrupts", &[INTERRUPT_SPI, spi, LEVEL_HIGH])?;
        writer.end_node()?;
    }
    if let Some(pci) = &platform.pci {
        let gic_v3 = matches!(platform.gic, GuestGic::V3 { .. });
        let cells = pci_tree::gic_address_cells(Some(pci));
        pci_tree::write_host_bridge(&mut writer, pci, gic_v3, GIC_PHANDLE, cells)?;
    }
    writer.end_node()?;
    Ok(writer.finish()?)
}

/// The path `/chosen/stdout-path` names: the PL011 node.
fn pl011_node_name(base: u64) -> alloc::string::String {
    format!("pl011@{base:x}")
}

fn validate(platform: &GuestPlatform) -> Result<(), GuestTreeError> {
    let ram_valid = !platform.ram.is_empty()
        && platform
            .ram
            .iter()
            .all(|&(base, size)| size != 0 && base.checked_add(size - 1).is_some());
    if !ram_valid {
        return Err(GuestTreeError::InvalidRam);
    }
    let vcpu_limit = match platform.gic {
        GuestGic::V3 { .. } => MAX_VCPUS,
        GuestGic::V2 { .. } => GIC_V2_MAX_VCPUS,
    };
    if platform.vcpus == 0 || platform.vcpus > vcpu_limit {
        return Err(GuestTreeError::InvalidVcpuCount(platform.vcpus));
    }
    if !matches!(platform.psci_method, "hvc" | "smc") {
        return Err(GuestTreeError::InvalidPsciMethod);
    }
    if let Some((_, spi)) = platform.pl011
        && spi > MAX_SPI
    {
        return Err(GuestTreeError::InvalidSpi(spi));
    }
    if let Some(&(_, spi)) = platform.shmem.iter().find(|&&(_, spi)| spi > MAX_SPI) {
        return Err(GuestTreeError::InvalidSpi(spi));
    }
    if let Some(intid) = platform.pci.as_ref().and_then(pci_tree::invalid_intid) {
        return Err(GuestTreeError::InvalidPciIntid(intid));
    }
    Ok(())
}

fn write_chosen(writer: &mut FdtWriter, platform: &GuestPlatform) -> Result<(), FdtError> {
    writer.begin_node("chosen")?;
    if let Some((base, _)) = platform.pl011 {
        writer.property_string("stdout-path", &format!("/{}", pl011_node_name(base)))?;
    }
    if !platform.bootargs.is_empty() {
        writer.property_string("bootargs", platform.bootargs)?;
    }
    if let Some((start, end)) = platform.initrd {
        writer.property_u64("linux,initrd-start", start)?;
        writer.property_u64("linux,initrd-end", end)?;
    }
    if platform.pci.is_some() {
        // Where kernels older than the per-bridge property look for it.
        writer.property_u32("linux,pci-probe-only", 1)?;
    }
    writer.end_node()
}

fn write_cpus(writer: &mut FdtWriter, vcpus: usize) -> Result<(), FdtError> {
    writer.begin_node("cpus")?;
    writer.property_u32("#address-cells", 1)?;
    writer.property_u32("#size-cells", 0)?;
    for index in 0..vcpus {
        // Aff1 and Aff0 only: validate() keeps the index below 4096, so this fits 16 bits.
        let affinity = u32::try_from(virtual_mpidr(index) & 0xffff).unwrap_or(0);
        writer.begin_node(&format!("cpu@{affinity:x}"))?;
        writer.property_string("device_type", "cpu")?;
        writer.property_string("compatible", "arm,armv8")?;
        writer.property_u32("reg", affinity)?;
        writer.property_string("enable-method", "psci")?;
        writer.end_node()?;
    }
    writer.end_node()
}

fn write_psci(writer: &mut FdtWriter, method: &str) -> Result<(), FdtError> {
    writer.begin_node("psci")?;
    writer.property_strings("compatible", &["arm,psci-1.0", "arm,psci-0.2", "arm,psci"])?;
    writer.property_string("method", method)?;
    for (name, function) in PSCI_0_1_FUNCTIONS {
        writer.property_u32(name, function)?;
    }
    writer.end_node()
}

fn write_gic(
    writer: &mut FdtWriter,
    gic: GuestGic,
    pci: Option<&GuestPci>,
) -> Result<(), FdtError> {
    let (compatible, distributor, second) = match gic {
        GuestGic::V3 {
            distributor,
            redistributors,
        } => ("arm,gic-v3", distributor, redistributors),
        GuestGic::V2 {
            distributor,
            cpu_interface,
        } => ("arm,cortex-a15-gic", distributor, cpu_interface),
    };
    writer.begin_node(&format!("intc@{:x}", distributor.0))?;
    writer.property_u32("phandle", GIC_PHANDLE)?;
    writer.property_string("compatible", compatible)?;
    writer.property_u64_list("reg", &[distributor.0, distributor.1, second.0, second.1])?;
    if let GuestGic::V3 { .. } = gic {
        writer.property_u32("#redistributor-regions", 1)?;
    }
    writer.property_u32("#interrupt-cells", 3)?;
    writer.property_empty("interrupt-controller")?;
    // Interrupt-map parsers read the controller's #address-cells: 0 for a node without
    // children; with PCI 2, as QEMU's (a v2m frame may be a child).
    writer.property_u32("#address-cells", pci_tree::gic_address_cells(pci))?;
    if let Some(pci) = pci {
        pci_tree::write_gic_msi(writer, matches!(gic, GuestGic::V3 { .. }), pci)?;
    }
    writer.end_node()
}

fn write_timer(writer: &mut FdtWriter, platform: &GuestPlatform) -> Result<(), FdtError> {
    // GICv2 PPIs carry the mask of CPUs they reach in bits 15:8 of the flags (QEMU writes
    // `(1 << smp_cpus) - 1`); validate() keeps a GICv2 partition at 8 vCPUs or fewer.
    let flags = match platform.gic {
        GuestGic::V3 { .. } => LEVEL_HIGH,
        GuestGic::V2 { .. } => {
            let cpu_mask = (1u32 << platform.vcpus.min(GIC_V2_MAX_VCPUS)) - 1;
            (cpu_mask << 8) | LEVEL_HIGH
        }
    };
    let interrupts: Vec<u32> = TIMER_PPIS
        .iter()
        .flat_map(|&ppi| [INTERRUPT_PPI, ppi, flags])
        .collect();
    writer.begin_node("timer")?;
    writer.property_strings("compatible", &["arm,armv8-timer", "arm,armv7-timer"])?;
    writer.property_cells("interrupts", &interrupts)?;
    writer.property_empty("always-on")?;
    writer.end_node()
}

fn write_pl011(writer: &mut FdtWriter, base: u64, spi: u32) -> Result<(), FdtError> {
    writer.begin_node("apb-pclk")?;
    writer.property_u32("phandle", APB_CLOCK_PHANDLE)?;
    writer.property_string("compatible", "fixed-clock")?;
    writer.property_u32("#clock-cells", 0)?;
    writer.property_u32("clock-frequency", APB_CLOCK_FREQUENCY)?;
    writer.property_string("clock-output-names", "clk24mhz")?;
    writer.end_node()?;

    writer.begin_node(&pl011_node_name(base))?;
    writer.property_strings("compatible", &["arm,pl011", "arm,primecell"])?;
    writer.property_u64_list("reg", &[base, PL011_SIZE])?;
    writer.property_cells("interrupts", &[INTERRUPT_SPI, spi, LEVEL_HIGH])?;
    writer.property_cells("clocks", &[APB_CLOCK_PHANDLE, APB_CLOCK_PHANDLE])?;
    writer.property_strings("clock-names", &["uartclk", "apb_pclk"])?;
    writer.end_node()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;
    use std::vec::Vec;

    const RAM: [(u64, u64); 2] = [(0x4000_0000, 0x1000_0000), (0x1_0000_0000, 0x20_0000)];

    fn platform(gic: GuestGic, vcpus: usize) -> GuestPlatform<'static> {
        GuestPlatform {
            name: "linux0",
            ram: &RAM,
            vcpus,
            gic,
            pl011: Some((0x0900_0000, 1)),
            shmem: &[],
            bootargs: "console=ttyAMA0 earlycon",
            psci_method: "hvc",
            pci: None,
            initrd: None,
        }
    }

    fn v3() -> GuestGic {
        GuestGic::V3 {
            distributor: (0x0800_0000, 0x1_0000),
            redistributors: (0x080a_0000, 0xf6_0000),
        }
    }

    fn v2() -> GuestGic {
        GuestGic::V2 {
            distributor: (0x0800_0000, 0x1_0000),
            cpu_interface: (0x0801_0000, 0x1_0000),
        }
    }

    fn cells(value: &[u8]) -> Vec<u32> {
        value
            .chunks_exact(4)
            .map(|chunk| u32::from_be_bytes(chunk.try_into().unwrap()))
            .collect()
    }

    fn strings(value: &[u8]) -> Vec<&str> {
        let value = value.strip_suffix(&[0]).unwrap();
        value
            .split(|&byte| byte == 0)
            .map(|piece| core::str::from_utf8(piece).unwrap())
            .collect()
    }

    fn regs(node: fdt::node::FdtNode) -> Vec<(usize, Option<usize>)> {
        node.reg()
            .unwrap()
            .map(|region| (region.starting_address as usize, region.size))
            .collect()
    }

    #[test]
    fn root_and_chosen() {
        let blob = build(&platform(v3(), 2)).unwrap();
        let tree = fdt::Fdt::new(&blob).unwrap();
        let root = tree.root();
        assert_eq!(root.model(), "bulkhead,linux0");
        let compatible: Vec<&str> = root.compatible().all().collect();
        assert_eq!(compatible, ["bulkhead,partition", "linux,dummy-virt"]);
        let sizes = root.cell_sizes();
        assert_eq!((sizes.address_cells, sizes.size_cells), (2, 2));
        let parent = tree.find_node("/").unwrap().interrupt_parent().unwrap();
        assert_eq!(parent.name, "intc@8000000");

        let chosen = tree.chosen();
        assert_eq!(chosen.bootargs(), Some("console=ttyAMA0 earlycon"));
        let stdout = chosen.stdout().unwrap();
        assert_eq!(stdout.name, "pl011@9000000");
        assert_eq!(
            stdout.compatible().unwrap().all().collect::<Vec<_>>(),
            ["arm,pl011", "arm,primecell"]
        );
        assert_eq!(tree.memory_reservations().count(), 0);
    }

    #[test]
    fn one_memory_node_per_range() {
        let blob = build(&platform(v3(), 1)).unwrap();
        let tree = fdt::Fdt::new(&blob).unwrap();
        let memory: Vec<_> = tree
            .all_nodes()
            .filter(|node| node.property("device_type").and_then(|p| p.as_str()) == Some("memory"))
            .collect();
        assert_eq!(memory.len(), 2);
        assert_eq!(memory[0].name, "memory@40000000");
        assert_eq!(memory[1].name, "memory@100000000");
        assert_eq!(regs(memory[0]), [(0x4000_0000, Some(0x1000_0000))]);
        assert_eq!(regs(memory[1]), [(0x1_0000_0000, Some(0x20_0000))]);
    }

    #[test]
    fn cpus_carry_mpidr_affinity() {
        let blob = build(&platform(v3(), 18)).unwrap();
        let tree = fdt::Fdt::new(&blob).unwrap();
        let cpus = tree.find_node("/cpus").unwrap();
        let sizes = cpus.cell_sizes();
        assert_eq!((sizes.address_cells, sizes.size_cells), (1, 0));
        let ids: Vec<usize> = tree.cpus().map(|cpu| cpu.ids().first()).collect();
        assert_eq!(ids.len(), 18);
        for (index, &id) in ids.iter().enumerate() {
            assert_eq!(id, ((index / 16) << 8) | (index % 16));
            assert_eq!(id as u64, virtual_mpidr(index) & 0xff_00ff_ffff);
        }
        let cpu17 = tree.find_node("/cpus/cpu@101").unwrap();
        assert_eq!(cpu17.property("reg").unwrap().as_usize(), Some(0x101));
        for cpu in tree.cpus() {
            assert_eq!(cpu.property("device_type").unwrap().as_str(), Some("cpu"));
            assert_eq!(
                cpu.property("compatible").unwrap().as_str(),
                Some("arm,armv8")
            );
            assert_eq!(
                cpu.property("enable-method").unwrap().as_str(),
                Some("psci")
            );
        }
    }

    #[test]
    fn psci_node() {
        let mut smc = platform(v3(), 1);
        smc.psci_method = "smc";
        for (platform, method) in [(platform(v3(), 1), "hvc"), (smc, "smc")] {
            let blob = build(&platform).unwrap();
            let tree = fdt::Fdt::new(&blob).unwrap();
            let psci = tree.find_node("/psci").unwrap();
            assert_eq!(psci.property("method").unwrap().as_str(), Some(method));
            assert_eq!(
                psci.compatible().unwrap().all().collect::<Vec<_>>(),
                ["arm,psci-1.0", "arm,psci-0.2", "arm,psci"]
            );
            assert_eq!(
                psci.property("cpu_on").unwrap().as_usize(),
                Some(0xc400_0003)
            );
        }
    }

    #[test]
    fn gic_v3_node() {
        let blob = build(&platform(v3(), 4)).unwrap();
        let tree = fdt::Fdt::new(&blob).unwrap();
        let gic = tree.find_compatible(&["arm,gic-v3"]).unwrap();
        assert_eq!(gic.name, "intc@8000000");
        assert_eq!(
            regs(gic),
            [
                (0x0800_0000, Some(0x1_0000)),
                (0x080a_0000, Some(0xf6_0000))
            ]
        );
        assert_eq!(gic.interrupt_cells(), Some(3));
        assert!(gic.property("interrupt-controller").is_some());
        assert_eq!(
            gic.property("#redistributor-regions").unwrap().as_usize(),
            Some(1)
        );
        assert_eq!(tree.find_phandle(GIC_PHANDLE).unwrap().name, "intc@8000000");
    }

    #[test]
    fn gic_v2_node() {
        let blob = build(&platform(v2(), 2)).unwrap();
        let tree = fdt::Fdt::new(&blob).unwrap();
        let gic = tree.find_compatible(&["arm,cortex-a15-gic"]).unwrap();
        assert_eq!(gic.name, "intc@8000000");
        assert_eq!(
            regs(gic),
            [(0x0800_0000, Some(0x1_0000)), (0x0801_0000, Some(0x1_0000))]
        );
        assert_eq!(gic.interrupt_cells(), Some(3));
        assert!(gic.property("#redistributor-regions").is_none());
        assert_eq!(tree.find_phandle(GIC_PHANDLE).unwrap().name, gic.name);
    }

    #[test]
    fn timer_interrupts_match_qemu() {
        for (gic, vcpus, flags) in [(v3(), 2, 0x4), (v2(), 2, 0x304), (v2(), 8, 0xff04)] {
            let blob = build(&platform(gic, vcpus)).unwrap();
            let tree = fdt::Fdt::new(&blob).unwrap();
            let timer = tree.find_node("/timer").unwrap();
            assert_eq!(
                timer.compatible().unwrap().first(),
                "arm,armv8-timer",
                "{gic:?}"
            );
            assert!(timer.property("always-on").is_some());
            assert_eq!(
                cells(timer.property("interrupts").unwrap().value),
                [1, 13, flags, 1, 14, flags, 1, 11, flags, 1, 10, flags],
                "{gic:?} {vcpus}"
            );
        }
    }

    #[test]
    fn uart_and_clock() {
        let mut with_uart = platform(v3(), 1);
        with_uart.pl011 = Some((0x1c09_0000, 5));
        let blob = build(&with_uart).unwrap();
        let tree = fdt::Fdt::new(&blob).unwrap();
        let uart = tree.chosen().stdout().unwrap();
        assert_eq!(uart.name, "pl011@1c090000");
        assert_eq!(regs(uart), [(0x1c09_0000, Some(0x1000))]);
        assert_eq!(cells(uart.property("interrupts").unwrap().value), [0, 5, 4]);
        // No interrupt-parent of its own: it inherits the root's, the GIC.
        assert!(uart.property("interrupt-parent").is_none());
        let clocks = cells(uart.property("clocks").unwrap().value);
        assert_eq!(clocks, [APB_CLOCK_PHANDLE, APB_CLOCK_PHANDLE]);
        assert_eq!(
            strings(uart.property("clock-names").unwrap().value),
            ["uartclk", "apb_pclk"]
        );
        let clock = tree.find_phandle(APB_CLOCK_PHANDLE).unwrap();
        assert_eq!(clock.name, "apb-pclk");
        assert_eq!(clock.compatible().unwrap().first(), "fixed-clock");
        assert_eq!(
            clock.property("clock-frequency").unwrap().as_usize(),
            Some(24_000_000)
        );
        assert_eq!(clock.property("#clock-cells").unwrap().as_usize(), Some(0));
        assert_eq!(
            clock.property("clock-output-names").unwrap().as_str(),
            Some("clk24mhz")
        );
    }

    #[test]
    fn initrd_in_chosen() {
        let mut with_initrd = platform(v3(), 1);
        with_initrd.initrd = Some((0x4300_0000, 0x4312_3456));
        let blob = build(&with_initrd).unwrap();
        let tree = fdt::Fdt::new(&blob).unwrap();
        let chosen = tree.find_node("/chosen").unwrap();
        let value = |name: &str| {
            let bytes = chosen.property(name).unwrap().value;
            u64::from_be_bytes(bytes.try_into().unwrap())
        };
        assert_eq!(value("linux,initrd-start"), 0x4300_0000);
        assert_eq!(value("linux,initrd-end"), 0x4312_3456);
        let without = build(&platform(v3(), 1)).unwrap();
        let tree = fdt::Fdt::new(&without).unwrap();
        let chosen = tree.find_node("/chosen").unwrap();
        assert!(chosen.property("linux,initrd-start").is_none());
    }

    #[test]
    fn without_uart_or_bootargs() {
        let mut bare = platform(v2(), 1);
        bare.pl011 = None;
        bare.bootargs = "";
        let blob = build(&bare).unwrap();
        let tree = fdt::Fdt::new(&blob).unwrap();
        let chosen = tree.find_node("/chosen").unwrap();
        assert_eq!(chosen.properties().count(), 0);
        assert!(tree.find_node("/apb-pclk").is_none());
        assert!(tree.find_compatible(&["arm,pl011"]).is_none());
    }

    #[test]
    fn phandles_are_unique() {
        let blob = build(&platform(v3(), 2)).unwrap();
        let tree = fdt::Fdt::new(&blob).unwrap();
        let mut phandles: Vec<usize> = tree
            .all_nodes()
            .filter_map(|node| node.property("phandle").and_then(|p| p.as_usize()))
            .collect();
        assert_eq!(phandles.len(), 2);
        phandles.sort_unstable();
        phandles.dedup();
        assert_eq!(phandles.len(), 2);
    }

    #[test]
    fn rejects_bad_platforms() {
        let mut bad = platform(v3(), 1);
        bad.ram = &[];
        assert_eq!(build(&bad), Err(GuestTreeError::InvalidRam));
        bad.ram = &[(0x4000_0000, 0)];
        assert_eq!(build(&bad), Err(GuestTreeError::InvalidRam));
        bad.ram = &[(u64::MAX - 0xfff, 0x2000)];
        assert_eq!(build(&bad), Err(GuestTreeError::InvalidRam));

        assert_eq!(
            build(&platform(v3(), 0)),
            Err(GuestTreeError::InvalidVcpuCount(0))
        );
        assert_eq!(
            build(&platform(v2(), 9)),
            Err(GuestTreeError::InvalidVcpuCount(9))
        );
        assert_eq!(
            build(&platform(v3(), 4097)),
            Err(GuestTreeError::InvalidVcpuCount(4097))
        );

        let mut bad = platform(v3(), 1);
        bad.psci_method = "svc";
        assert_eq!(build(&bad), Err(GuestTreeError::InvalidPsciMethod));

        let mut bad = platform(v3(), 1);
        bad.pl011 = Some((0x0900_0000, 988));
        assert_eq!(build(&bad), Err(GuestTreeError::InvalidSpi(988)));

        let mut bad = platform(v3(), 1);
        bad.bootargs = "a\0b";
        assert_eq!(build(&bad), Err(GuestTreeError::Fdt(FdtError::NulInString)));
        let message = String::from("device tree: NUL byte inside a string value");
        assert_eq!(std::format!("{}", build(&bad).unwrap_err()), message);
    }

    #[test]
    fn mmio_shmem_devices_are_guest_shm_nodes() {
        let mut with_shmem = platform(
            GuestGic::V3 {
                distributor: (0x0800_0000, 0x1_0000),
                redistributors: (0x080a_0000, 0x2_0000),
            },
            1,
        );
        with_shmem.shmem = &[(0x0a00_0000, 8), (0x0a00_1000, 9)];
        let blob = build(&with_shmem).unwrap();
        let tree = fdt::Fdt::new(&blob).unwrap();
        let nodes: Vec<_> = tree
            .all_nodes()
            .filter(|node| {
                node.compatible()
                    .is_some_and(|c| c.all().any(|name| name == "qvm,guest_shm"))
            })
            .collect();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].name, "shmem@a000000");
        let reg: Vec<_> = nodes[0]
            .reg()
            .unwrap()
            .map(|r| (r.starting_address as u64, r.size))
            .collect();
        assert_eq!(reg, [(0x0a00_0000, Some(0x1000))]);
        let interrupts = nodes[1].property("interrupts").unwrap().value;
        assert_eq!(interrupts, [0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 4]);
        let mut bad = with_shmem;
        bad.shmem = &[(0x0a00_0000, 988)];
        assert_eq!(build(&bad), Err(GuestTreeError::InvalidSpi(988)));
    }
}
