//! Device-tree nodes for a partition's PCI: the ECAM host bridge and the GIC's MSI description (GICv3 MBI ranges or a GICv2m frame).
//!
//! The host bridge node is what Linux's `pci-host-ecam-generic` driver and
//! `Documentation/devicetree/bindings/pci/host-generic-pci.yaml` want, shaped like QEMU virt's:
//! bus 0 only, the 32-bit non-prefetchable and 64-bit prefetchable windows in `ranges`, a
//! 4-slot x 4-pin `interrupt-map` (masked on the low two device-number bits and the pin) to
//! level-high SPIs, and `linux,pci-probe-only` (here and in `/chosen`, where kernels before the
//! per-bridge property look) so Linux keeps the firmware BAR addresses.
//!
//! MSI: on GICv3 the GIC node becomes an `msi-controller` with `mbi-ranges = <first count>`
//! (INTIDs: Linux's irq-gic-v3-mbi hands out `first + n` as the SPI's hwirq and uses it as the
//! message data; it also needs GICD_TYPER.MBIS and GICD_SETSPI_NSR from the distributor); on
//! GICv2 a `v2m` child frame with `arm,msi-base-spi`/`arm,msi-num-spis`. The bridge's
//! `msi-parent` points at whichever it is.

use alloc::format;
use alloc::vec::Vec;

use super::GuestPci;
use crate::fdt_writer::{FdtError, FdtWriter};

/// Phandle of the GICv2m frame node (the GIC is 1, the PL011 clock 2).
pub const V2M_PHANDLE: u32 = 3;
/// First interrupt cell: shared peripheral interrupt.
const INTERRUPT_SPI: u32 = 0;
/// Third interrupt cell: level-triggered, active high.
const LEVEL_HIGH: u32 = 4;
/// `ranges` space code: 32-bit memory, non-prefetchable.
const SPACE_MMIO32: u32 = 0x0200_0000;
/// `ranges` space code: 64-bit memory, prefetchable.
const SPACE_MMIO64_PREFETCHABLE: u32 = 0x4300_0000;
/// Slots the interrupt map spells out (it repeats every 4 device numbers).
const MAP_SLOTS: u32 = 4;
/// Largest SPI INTID.
const MAX_SPI_INTID: u32 = 1019;

/// The first INTID of `pci` that is not an SPI (INTx lines, then the MSI range), if any.
pub fn invalid_intid(pci: &GuestPci) -> Option<u32> {
    let is_spi = |intid: u32| (32..=MAX_SPI_INTID).contains(&intid);
    let intx = (0..4).map(|line| pci.intx_first.saturating_add(line));
    let msi = pci.msi.into_iter().flat_map(|(first, count)| {
        let last = first.saturating_add(count.saturating_sub(1));
        [first, if count == 0 { u32::MAX } else { last }]
    });
    intx.chain(msi).find(|&intid| !is_spi(intid))
}

/// The GIC node's `#address-cells`: 2 with PCI (room for a v2m child; the interrupt map's
/// parent unit address then has two cells), else 0.
pub fn gic_address_cells(pci: Option<&GuestPci>) -> u32 {
    if pci.is_some() { 2 } else { 0 }
}

/// Writes, inside the open GIC node (after its `#address-cells`), what MSI needs.
pub fn write_gic_msi(writer: &mut FdtWriter, gic_v3: bool, pci: &GuestPci) -> Result<(), FdtError> {
    writer.property_u32("#size-cells", 2)?;
    writer.property_empty("ranges")?;
    let Some((first, count)) = pci.msi else {
        return Ok(());
    };
    if gic_v3 {
        writer.property_empty("msi-controller")?;
        writer.property_cells("mbi-ranges", &[first, count])?;
        return Ok(());
    }
    let (base, size) = pci.v2m_frame;
    writer.begin_node(&format!("v2m@{base:x}"))?;
    writer.property_string("compatible", "arm,gic-v2m-frame")?;
    writer.property_empty("msi-controller")?;
    writer.property_u64_list("reg", &[base, size])?;
    writer.property_u32("arm,msi-base-spi", first)?;
    writer.property_u32("arm,msi-num-spis", count)?;
    writer.property_u32("phandle", V2M_PHANDLE)?;
    writer.end_node()
}

/// Splits a 64-bit value into two cells, high first.
fn cells64(value: u64) -> [u32; 2] {
    [(value >> 32) as u32, value as u32]
}

/// Writes the host bridge node. `gic_phandle` and `gic_address_cells` describe the interrupt
/// parent the map points at.
pub fn write_host_bridge(
    writer: &mut FdtWriter,
    pci: &GuestPci,
    gic_v3: bool,
    gic_phandle: u32,
    gic_address_cells: u32,
) -> Result<(), FdtError> {
    writer.begin_node(&format!("pcie@{:x}", pci.ecam.0))?;
    writer.property_string("compatible", "pci-host-ecam-generic")?;
    writer.property_string("device_type", "pci")?;
    writer.property_u32("#address-cells", 3)?;
    writer.property_u32("#size-cells", 2)?;
    writer.property_u32("#interrupt-cells", 1)?;
    writer.property_cells("bus-range", &[0, 0])?;
    writer.property_u32("linux,pci-domain", 0)?;
    writer.property_u32("linux,pci-probe-only", 1)?;
    writer.property_empty("dma-coherent")?;
    writer.property_u64_list("reg", &[pci.ecam.0, pci.ecam.1])?;

    let mut ranges = Vec::new();
    for (space, (base, size)) in [
        (SPACE_MMIO32, pci.mmio32),
        (SPACE_MMIO64_PREFETCHABLE, pci.mmio64),
    ] {
        ranges.push(space);
        ranges.extend(cells64(base)); // PCI address
        ranges.extend(cells64(base)); // CPU address: identity
        ranges.extend(cells64(size));
    }
    writer.property_cells("ranges", &ranges)?;

    if pci.msi.is_some() {
        let parent = if gic_v3 { gic_phandle } else { V2M_PHANDLE };
        writer.property_u32("msi-parent", parent)?;
    }

    writer.property_cells("interrupt-map-mask", &[0x1800, 0, 0, 7])?;
    let mut map = Vec::new();
    for slot in 0..MAP_SLOTS {
        for pin in 1..=4u32 {
            let intid = pci.intx_first.saturating_add((slot + pin - 1) % 4);
            map.extend([slot << 11, 0, 0, pin, gic_phandle]);
            map.extend((0..gic_address_cells).map(|_| 0));
            map.extend([INTERRUPT_SPI, intid.saturating_sub(32), LEVEL_HIGH]);
        }
    }
    writer.property_cells("interrupt-map", &map)?;
    writer.end_node()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_device_tree::{self, GIC_PHANDLE, GuestGic, GuestPlatform, GuestTreeError};
    use std::vec::Vec;

    const RAM: [(u64, u64); 1] = [(0x4000_0000, 0x1000_0000)];

    fn platform(gic: GuestGic, pci: Option<GuestPci>) -> GuestPlatform<'static> {
        GuestPlatform {
            name: "linux0",
            ram: &RAM,
            vcpus: 2,
            gic,
            pl011: Some((0x0900_0000, 1)),
            shmem: &[],
            bootargs: "",
            psci_method: "smc",
            pci,
            initrd: None,
        }
    }

    fn v3() -> GuestGic {
        GuestGic::V3 {
            distributor: (0x0800_0000, 0x1_0000),
            redistributors: (0x080a_0000, 0x4_0000),
        }
    }

    fn v2() -> GuestGic {
        GuestGic::V2 {
            distributor: (0x0800_0000, 0x1_0000),
            cpu_interface: (0x0801_0000, 0x2000),
        }
    }

    fn cells(value: &[u8]) -> Vec<u32> {
        value
            .chunks_exact(4)
            .map(|chunk| u32::from_be_bytes(chunk.try_into().unwrap()))
            .collect()
    }

    fn property(node: &fdt::node::FdtNode, name: &str) -> Vec<u32> {
        cells(node.property(name).unwrap().value)
    }

    #[test]
    fn host_bridge_node() {
        let blob = guest_device_tree::build(&platform(v3(), Some(GuestPci::QEMU_VIRT))).unwrap();
        let tree = fdt::Fdt::new(&blob).unwrap();
        let pci = tree.find_compatible(&["pci-host-ecam-generic"]).unwrap();
        assert_eq!(pci.name, "pcie@3f000000");
        assert_eq!(pci.property("device_type").unwrap().as_str(), Some("pci"));
        assert_eq!(property(&pci, "#address-cells"), [3]);
        assert_eq!(property(&pci, "#size-cells"), [2]);
        assert_eq!(property(&pci, "#interrupt-cells"), [1]);
        assert_eq!(property(&pci, "bus-range"), [0, 0]);
        assert_eq!(property(&pci, "linux,pci-probe-only"), [1]);
        assert!(pci.property("dma-coherent").is_some());
        let reg: Vec<_> = pci
            .reg()
            .unwrap()
            .map(|r| (r.starting_address as u64, r.size))
            .collect();
        assert_eq!(reg, [(0x3f00_0000, Some(0x10_0000))]);
        assert_eq!(
            property(&pci, "ranges"),
            [
                0x0200_0000,
                0,
                0x1000_0000,
                0,
                0x1000_0000,
                0,
                0x2eff_0000, //
                0x4300_0000,
                0x80,
                0,
                0x80,
                0,
                0x80,
                0,
            ]
        );
        assert_eq!(property(&pci, "msi-parent"), [GIC_PHANDLE]);
        assert_eq!(property(&pci, "interrupt-map-mask"), [0x1800, 0, 0, 7]);
        let map = property(&pci, "interrupt-map");
        // 16 entries of child address (3), pin, phandle, parent address (2), SPI specifier (3).
        assert_eq!(map.len(), 16 * 10);
        let entry = |slot: usize, pin: usize| &map[(slot * 4 + pin - 1) * 10..][..10];
        assert_eq!(entry(0, 1), [0, 0, 0, 1, GIC_PHANDLE, 0, 0, 0, 3, 4]);
        assert_eq!(entry(1, 1), [0x800, 0, 0, 1, GIC_PHANDLE, 0, 0, 0, 4, 4]);
        assert_eq!(entry(3, 2), [0x1800, 0, 0, 2, GIC_PHANDLE, 0, 0, 0, 3, 4]);
        for slot in 0..32u8 {
            for pin in 1..=4u8 {
                let e = entry(usize::from(slot % 4), usize::from(pin));
                let intid = GuestPci::QEMU_VIRT.intx_intid(slot, pin).unwrap();
                assert_eq!(e[8] + 32, intid, "slot {slot} pin {pin}");
            }
        }
        assert_eq!(
            property(&tree.find_node("/chosen").unwrap(), "linux,pci-probe-only"),
            [1]
        );
    }

    #[test]
    fn gic_v3_mbi() {
        let blob = guest_device_tree::build(&platform(v3(), Some(GuestPci::QEMU_VIRT))).unwrap();
        let tree = fdt::Fdt::new(&blob).unwrap();
        let gic = tree.find_compatible(&["arm,gic-v3"]).unwrap();
        assert!(gic.property("msi-controller").is_some());
        assert_eq!(property(&gic, "mbi-ranges"), [96, 32]);
        assert_eq!(property(&gic, "#address-cells"), [2]);
        assert_eq!(property(&gic, "#size-cells"), [2]);
        assert!(gic.property("ranges").is_some());
        assert!(tree.find_compatible(&["arm,gic-v2m-frame"]).is_none());
    }

    #[test]
    fn gic_v2_v2m_frame() {
        let blob = guest_device_tree::build(&platform(v2(), Some(GuestPci::QEMU_VIRT))).unwrap();
        let tree = fdt::Fdt::new(&blob).unwrap();
        let gic = tree.find_compatible(&["arm,cortex-a15-gic"]).unwrap();
        assert!(gic.property("msi-controller").is_none());
        let frame = tree.find_compatible(&["arm,gic-v2m-frame"]).unwrap();
        assert_eq!(frame.name, "v2m@8020000");
        assert!(frame.property("msi-controller").is_some());
        let reg: Vec<_> = frame
            .reg()
            .unwrap()
            .map(|r| (r.starting_address as u64, r.size))
            .collect();
        assert_eq!(reg, [(0x0802_0000, Some(0x1000))]);
        assert_eq!(property(&frame, "arm,msi-base-spi"), [96]);
        assert_eq!(property(&frame, "arm,msi-num-spis"), [32]);
        assert_eq!(tree.find_phandle(V2M_PHANDLE).unwrap().name, frame.name);
        let pci = tree.find_node("/pcie@3f000000").unwrap();
        assert_eq!(property(&pci, "msi-parent"), [V2M_PHANDLE]);
    }

    /// The windows build.rs moved around the configuration (here: the QNX seed's MMIO
    /// `vdev shmem` at 0x10000000, and a `loc` on the usual ECAM and MSI frame) are what the
    /// host bridge node, its `ranges` and the v2m frame describe, beside the seed's
    /// `qvm,guest_shm` node.
    #[test]
    fn moved_windows_are_described() {
        let windows = crate::config::GuestWindows {
            pci_ecam: (0x0810_0000, 0x10_0000),
            pci_mmio32: (0x1001_0000, 0x2efe_0000),
            pci_mmio64: (0x90_0000_0000, 0x70_0000_0000),
            msi_frame: (0x0803_0000, 0x1000),
            shmem_windows: 0x60_0000_0000,
        };
        let pci = GuestPci::QEMU_VIRT.placed(&windows);
        let seed = [(0x1000_0000, 8)];
        let mut with_seed = platform(v2(), Some(pci));
        with_seed.shmem = &seed;
        let blob = guest_device_tree::build(&with_seed).unwrap();
        let tree = fdt::Fdt::new(&blob).unwrap();
        let bridge = tree.find_compatible(&["pci-host-ecam-generic"]).unwrap();
        assert_eq!(bridge.name, "pcie@8100000");
        let reg: Vec<_> = bridge
            .reg()
            .unwrap()
            .map(|r| (r.starting_address as u64, r.size))
            .collect();
        assert_eq!(reg, [(0x0810_0000, Some(0x10_0000))]);
        assert_eq!(
            property(&bridge, "ranges"),
            [
                0x0200_0000,
                0,
                0x1001_0000,
                0,
                0x1001_0000,
                0,
                0x2efe_0000, //
                0x4300_0000,
                0x90,
                0,
                0x90,
                0,
                0x70,
                0,
            ]
        );
        let frame = tree.find_compatible(&["arm,gic-v2m-frame"]).unwrap();
        assert_eq!(frame.name, "v2m@8030000");
        let reg: Vec<_> = frame
            .reg()
            .unwrap()
            .map(|r| (r.starting_address as u64, r.size))
            .collect();
        assert_eq!(reg, [(0x0803_0000, Some(0x1000))]);
        let shmem = tree.find_compatible(&["qvm,guest_shm"]).unwrap();
        assert_eq!(shmem.name, "shmem@10000000");
        let reg: Vec<_> = shmem
            .reg()
            .unwrap()
            .map(|r| (r.starting_address as u64, r.size))
            .collect();
        assert_eq!(reg, [(0x1000_0000, Some(0x1000))]);
        assert_eq!(property(&shmem, "interrupts"), [0, 8, 4]);
        // The 32-bit window no longer covers the factory page.
        let (base, size) = pci.mmio32;
        assert!(base >= 0x1000_1000 && base + size <= 0x3f00_0000);
    }

    #[test]
    fn without_msi_or_pci() {
        let mut no_msi = GuestPci::QEMU_VIRT;
        no_msi.msi = None;
        let blob = guest_device_tree::build(&platform(v2(), Some(no_msi))).unwrap();
        let tree = fdt::Fdt::new(&blob).unwrap();
        let pci = tree.find_node("/pcie@3f000000").unwrap();
        assert!(pci.property("msi-parent").is_none());
        assert!(tree.find_compatible(&["arm,gic-v2m-frame"]).is_none());

        let blob = guest_device_tree::build(&platform(v3(), None)).unwrap();
        let tree = fdt::Fdt::new(&blob).unwrap();
        assert!(tree.find_compatible(&["pci-host-ecam-generic"]).is_none());
        let gic = tree.find_compatible(&["arm,gic-v3"]).unwrap();
        assert_eq!(property(&gic, "#address-cells"), [0]);
        assert!(gic.property("msi-controller").is_none());
        assert!(
            tree.find_node("/chosen")
                .unwrap()
                .property("linux,pci-probe-only")
                .is_none()
        );
    }

    #[test]
    fn rejects_non_spi_intids() {
        let mut bad = GuestPci::QEMU_VIRT;
        bad.intx_first = 30;
        assert_eq!(
            guest_device_tree::build(&platform(v3(), Some(bad))),
            Err(GuestTreeError::InvalidPciIntid(30))
        );
        let mut bad = GuestPci::QEMU_VIRT;
        bad.msi = Some((1000, 32));
        assert_eq!(invalid_intid(&bad), Some(1031));
        bad.msi = Some((96, 0));
        assert_eq!(invalid_intid(&bad), Some(u32::MAX));
        assert_eq!(invalid_intid(&GuestPci::QEMU_VIRT), None);
    }
}
