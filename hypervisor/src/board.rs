//! The board description: what the firmware's device tree says about the machine.
//!
//! Parsed once at boot from the flattened device tree (the `fdt` crate), into plain values the
//! rest of the hypervisor uses. The device tree comes from firmware, not from a guest; a tree
//! that lacks something Bulkhead needs gives a [`BoardError`] naming it.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use fdt::Fdt;
use fdt::node::FdtNode;

use crate::addr::PhysRange;

/// How PSCI calls reach the firmware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciConduit {
    /// `smc #0` (firmware at EL3): what a hypervisor at EL2 needs.
    Smc,
    /// `hvc #0`: the firmware expects to sit at EL2 itself; unusable from EL2.
    Hvc,
}

/// The GIC architecture version and where its frames are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gic {
    /// GICv2 (GIC-400 and alike): distributor, CPU interface, virtual interface control
    /// (GICH) and virtual CPU interface (GICV), the last two when virtualization is present.
    V2 {
        /// Distributor (GICD).
        distributor: PhysRange,
        /// Physical CPU interface (GICC).
        cpu_interface: PhysRange,
        /// Virtual interface control (GICH).
        hypervisor_interface: Option<PhysRange>,
        /// Virtual CPU interface (GICV).
        virtual_cpu_interface: Option<PhysRange>,
    },
    /// GICv3: distributor and redistributor regions (system-register CPU interface).
    V3 {
        /// Distributor (GICD).
        distributor: PhysRange,
        /// Redistributor regions (GICR), one frame pair per CPU inside them.
        redistributors: Vec<PhysRange>,
    },
}

impl Gic {
    /// The architecture version, 2 or 3.
    pub fn version(&self) -> u8 {
        match self {
            Gic::V2 { .. } => 2,
            Gic::V3 { .. } => 3,
        }
    }

    /// Where the second 4 KiB page of a GICv2 CPU interface frame (GICC or GICV) starting at
    /// `frame` lies: right after the first, or 64 KiB on where the frame is 128 KiB (GIC-400
    /// wired with each page repeated over 64 KiB, as on ZynqMP; the page at +4 KiB is then
    /// the first one again, so GICC_DIR there would write GICC_CTLR).
    pub fn second_page(frame: &PhysRange) -> u64 {
        let step = if frame.size() >= 0x2_0000 {
            0x1_0000
        } else {
            0x1000
        };
        frame.start.as_u64() + step
    }

    /// Every MMIO frame the GIC occupies.
    pub fn frames(&self) -> Vec<PhysRange> {
        match self {
            Gic::V2 {
                distributor,
                cpu_interface,
                hypervisor_interface,
                virtual_cpu_interface,
            } => {
                let mut frames = alloc::vec![*distributor, *cpu_interface];
                frames.extend(hypervisor_interface.iter().copied());
                frames.extend(virtual_cpu_interface.iter().copied());
                frames
            }
            Gic::V3 {
                distributor,
                redistributors,
            } => {
                let mut frames = alloc::vec![*distributor];
                frames.extend(redistributors.iter().copied());
                frames
            }
        }
    }
}

/// One CPU the device tree lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpu {
    /// Affinity value (`reg`), as it appears in MPIDR_EL1 (Aff3..Aff0).
    pub mpidr: u64,
}

/// The kind of UART the console is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartKind {
    /// Arm PrimeCell PL011 (`arm,pl011`).
    Pl011,
    /// Cadence UART (`cdns,uart-r1p12`, `xlnx,xuartps`): the Xilinx Zynq and ZynqMP UARTs.
    Cadence,
}

impl UartKind {
    /// The device-tree `compatible` strings of each kind, in the order the kinds are tried.
    const COMPATIBLE: [(UartKind, &'static [&'static str]); 2] = [
        (UartKind::Pl011, &["arm,pl011"]),
        (UartKind::Cadence, &["cdns,uart-r1p12", "xlnx,xuartps"]),
    ];

    /// The kind a device-tree node is compatible with, if Bulkhead has a driver for it.
    fn of_node(node: &FdtNode<'_, '_>) -> Option<UartKind> {
        Self::COMPATIBLE
            .iter()
            .find(|(_, names)| names.iter().any(|name| is_compatible(node, name)))
            .map(|&(kind, _)| kind)
    }

    /// A name for people.
    pub fn name(self) -> &'static str {
        match self {
            UartKind::Pl011 => "PL011",
            UartKind::Cadence => "Cadence UART",
        }
    }
}

/// The console UART.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uart {
    /// Kind of UART.
    pub kind: UartKind,
    /// Its register frame.
    pub registers: PhysRange,
}

/// Everything Bulkhead takes from the device tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Board {
    /// The root node's `model`, else its first `compatible`.
    pub model: String,
    /// RAM banks, sorted by address.
    pub memory: Vec<PhysRange>,
    /// Memory the firmware keeps (`/memreserve/` entries and `/reserved-memory` children).
    pub reserved: Vec<PhysRange>,
    /// CPUs in device-tree order; index = Bulkhead's CPU index.
    pub cpus: Vec<Cpu>,
    /// The console UART: the node `/chosen/stdout-path` names (a path or an alias) when
    /// Bulkhead has a driver for it, else the first enabled PL011.
    pub uart: Option<Uart>,
    /// The interrupt controller.
    pub gic: Option<Gic>,
    /// The PSCI conduit, if the firmware implements PSCI.
    pub psci: Option<PsciConduit>,
    /// `/chosen/bootargs`.
    pub bootargs: String,
}

/// Why a device tree cannot describe a board Bulkhead runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BoardError {
    /// The blob is not a valid flattened device tree.
    InvalidDeviceTree,
    /// A node Bulkhead needs is absent.
    Missing(&'static str),
    /// A node is present but malformed.
    Malformed(&'static str),
}

impl fmt::Display for BoardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BoardError::InvalidDeviceTree => write!(f, "not a valid flattened device tree"),
            BoardError::Missing(what) => write!(f, "device tree has no {what}"),
            BoardError::Malformed(what) => write!(f, "device tree has a malformed {what}"),
        }
    }
}

/// Reads the total size from a flattened device tree header (`totalsize`, big-endian at offset
/// 4), after checking the magic. Lets boot code size the slice before parsing.
pub fn device_tree_size(header: &[u8; 8]) -> Option<usize> {
    let [m0, m1, m2, m3, s0, s1, s2, s3] = *header;
    if u32::from_be_bytes([m0, m1, m2, m3]) != 0xd00d_feed {
        return None;
    }
    usize::try_from(u32::from_be_bytes([s0, s1, s2, s3])).ok()
}

impl Board {
    /// Parses the board description from a flattened device tree blob.
    pub fn from_device_tree(blob: &[u8]) -> Result<Board, BoardError> {
        let fdt = Fdt::new(blob).map_err(|_| BoardError::InvalidDeviceTree)?;
        let root = root_node(&fdt).ok_or(BoardError::Missing("root node"))?;
        let model = root
            .property("model")
            .and_then(|p| p.as_str())
            .or_else(|| root.compatible().map(|c| c.first()))
            .unwrap_or("unknown board")
            .into();
        let mut memory = Vec::new();
        for node in root.children() {
            let is_memory = node.name.split('@').next() == Some("memory")
                || node.property("device_type").and_then(|p| p.as_str()) == Some("memory");
            if is_memory && node_enabled(&node) {
                memory.extend(reg_ranges(&node));
            }
        }
        memory.sort();
        if memory.is_empty() {
            return Err(BoardError::Missing("memory node"));
        }
        let mut reserved: Vec<PhysRange> = fdt
            .memory_reservations()
            .filter_map(|r| PhysRange::from_start_size(r.address() as u64, r.size() as u64))
            .collect();
        if let Some(node) = find_path(&fdt, "/reserved-memory") {
            for child in node.children() {
                reserved.extend(reg_ranges(&child));
            }
        }
        reserved.sort();

        let cpus_node = find_path(&fdt, "/cpus").ok_or(BoardError::Missing("/cpus node"))?;
        let mut cpus = Vec::new();
        for node in cpus_node.children() {
            let is_cpu = node.property("device_type").and_then(|p| p.as_str()) == Some("cpu");
            if !is_cpu || !node_enabled(&node) {
                continue;
            }
            let reg = node
                .property("reg")
                .ok_or(BoardError::Malformed("cpu node without reg"))?;
            let mpidr = be_number(reg.value).ok_or(BoardError::Malformed("cpu reg"))?;
            cpus.push(Cpu { mpidr });
        }
        if cpus.is_empty() {
            return Err(BoardError::Missing("cpu node"));
        }

        let stdout = find_path(&fdt, "/chosen")
            .and_then(|chosen| chosen.property("stdout-path"))
            .and_then(|p| p.as_str())
            .map(|path| path.split(':').next().unwrap_or(path))
            .and_then(|path| find_path(&fdt, path))
            .and_then(|node| UartKind::of_node(&node).map(|kind| (node, kind)));
        let first_pl011 = || {
            fdt.all_nodes()
                .find(|node| is_compatible(node, "arm,pl011") && node_enabled(node))
                .map(|node| (node, UartKind::Pl011))
        };
        let uart = stdout.or_else(first_pl011).and_then(|(node, kind)| {
            reg_ranges(&node)
                .first()
                .map(|&registers| Uart { kind, registers })
        });

        let gic = parse_gic(&fdt)?;
        let psci = match find_path(&fdt, "/psci") {
            Some(node) => match node.property("method").and_then(|p| p.as_str()) {
                Some("smc") => Some(PsciConduit::Smc),
                Some("hvc") => Some(PsciConduit::Hvc),
                _ => return Err(BoardError::Malformed("/psci method")),
            },
            None => None,
        };
        let bootargs = find_path(&fdt, "/chosen")
            .and_then(|chosen| chosen.property("bootargs"))
            .and_then(|p| p.as_str())
            .unwrap_or("")
            .into();
        Ok(Board {
            model,
            memory,
            reserved,
            cpus,
            uart,
            gic,
            psci,
            bootargs,
        })
    }

    /// The Bulkhead CPU index of the CPU with affinity `mpidr` (Aff3..Aff0 compared).
    pub fn cpu_index(&self, mpidr: u64) -> Option<usize> {
        const AFFINITY_MASK: u64 = 0xff_00ff_ffff;
        self.cpus
            .iter()
            .position(|cpu| cpu.mpidr & AFFINITY_MASK == mpidr & AFFINITY_MASK)
    }
}

fn parse_gic(fdt: &Fdt<'_>) -> Result<Option<Gic>, BoardError> {
    if let Some(node) = fdt.find_compatible(&["arm,gic-v3"]) {
        let frames = reg_ranges(&node);
        let distributor = *frames.first().ok_or(BoardError::Malformed("GICv3 reg"))?;
        let count = node
            .property("#redistributor-regions")
            .and_then(|p| be_number(p.value))
            .unwrap_or(1);
        let count = usize::try_from(count).map_err(|_| BoardError::Malformed("GICv3 regions"))?;
        let redistributors: Vec<PhysRange> = frames.iter().skip(1).take(count).copied().collect();
        if redistributors.is_empty() {
            return Err(BoardError::Malformed("GICv3 redistributor regions"));
        }
        return Ok(Some(Gic::V3 {
            distributor,
            redistributors,
        }));
    }
    let v2 = [
        "arm,gic-400",
        "arm,cortex-a15-gic",
        "arm,cortex-a9-gic",
        "arm,arm11mp-gic",
    ];
    if let Some(node) = fdt.find_compatible(&v2) {
        let frames = reg_ranges(&node);
        let (Some(&distributor), Some(&cpu_interface)) = (frames.first(), frames.get(1)) else {
            return Err(BoardError::Malformed("GICv2 reg"));
        };
        return Ok(Some(Gic::V2 {
            distributor,
            cpu_interface,
            hypervisor_interface: frames.get(2).copied(),
            virtual_cpu_interface: frames.get(3).copied(),
        }));
    }
    Ok(None)
}

fn root_node<'b, 'a>(fdt: &'b Fdt<'a>) -> Option<FdtNode<'b, 'a>> {
    fdt.all_nodes().next()
}

/// The node at `path` (`/axi/serial@ff000000`; a component without a unit address matches a
/// node with one, as in `/memory`), or the node an alias names (`serial0`).
///
/// Written here rather than using `Fdt::find_node`: fdt 0.1.5's path walk loses its place on
/// the NOP tokens a device tree carries after firmware edited it (QEMU's `-dtb` of the ZCU102
/// hid `/chosen` and `/aliases`, and an alias lookup hit an assertion), while walking
/// `children()` reads such a tree correctly.
fn find_path<'b, 'a>(fdt: &'b Fdt<'a>, path: &str) -> Option<FdtNode<'b, 'a>> {
    let Some(relative) = path.strip_prefix('/') else {
        let aliases = find_path(fdt, "/aliases")?;
        let target = aliases.property(path)?.as_str()?;
        return if target.starts_with('/') {
            find_path(fdt, target)
        } else {
            None
        };
    };
    let mut node = root_node(fdt)?;
    for component in relative.split('/').filter(|c| !c.is_empty()) {
        let matches = |name: &str| {
            name == component
                || (!component.contains('@') && name.split('@').next() == Some(component))
        };
        node = node.children().find(|child| matches(child.name))?;
    }
    Some(node)
}

fn node_enabled(node: &FdtNode<'_, '_>) -> bool {
    matches!(
        node.property("status").and_then(|p| p.as_str()),
        None | Some("okay") | Some("ok")
    )
}

fn is_compatible(node: &FdtNode<'_, '_>, compatible: &str) -> bool {
    node.compatible()
        .is_some_and(|c| c.all().any(|c| c == compatible))
}

fn reg_ranges(node: &FdtNode<'_, '_>) -> Vec<PhysRange> {
    node.reg()
        .into_iter()
        .flatten()
        .filter_map(|region| {
            let size = region.size? as u64;
            PhysRange::from_start_size(region.starting_address as u64, size)
        })
        .filter(|range| !range.is_empty())
        .collect()
}

/// A big-endian property value of one or two cells.
fn be_number(bytes: &[u8]) -> Option<u64> {
    match bytes.len() {
        4 => Some(u64::from(u32::from_be_bytes(bytes.try_into().ok()?))),
        8 => Some(u64::from_be_bytes(bytes.try_into().ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GICV3_SMP4: &[u8] = include_bytes!("../tests/fixtures/qemu-virt-gicv3-smp4.dtb");
    const GICV2_SMP2: &[u8] = include_bytes!("../tests/fixtures/qemu-virt-gicv2-smp2.dtb");

    fn range(start: u64, size: u64) -> PhysRange {
        PhysRange::from_start_size(start, size).unwrap()
    }

    #[test]
    fn qemu_virt_gicv3_board() {
        let board = Board::from_device_tree(GICV3_SMP4).unwrap();
        assert_eq!(board.memory, [range(0x4000_0000, 512 << 20)]);
        assert_eq!(
            board.cpus.iter().map(|c| c.mpidr).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert_eq!(
            board.uart,
            Some(Uart {
                kind: UartKind::Pl011,
                registers: range(0x0900_0000, 0x1000)
            })
        );
        assert_eq!(
            board.gic,
            Some(Gic::V3 {
                distributor: range(0x0800_0000, 0x1_0000),
                redistributors: alloc::vec![range(0x080a_0000, 0xf6_0000)],
            })
        );
        assert_eq!(board.psci, Some(PsciConduit::Smc));
        assert_eq!(board.gic.as_ref().map(Gic::version), Some(3));
        assert_eq!(board.model, "linux,dummy-virt");
    }

    #[test]
    fn qemu_virt_gicv2_board() {
        let board = Board::from_device_tree(GICV2_SMP2).unwrap();
        assert_eq!(board.memory, [range(0x4000_0000, 1 << 30)]);
        assert_eq!(board.cpus.len(), 2);
        assert_eq!(
            board.gic,
            Some(Gic::V2 {
                distributor: range(0x0800_0000, 0x1_0000),
                cpu_interface: range(0x0801_0000, 0x1_0000),
                hypervisor_interface: Some(range(0x0803_0000, 0x1_0000)),
                virtual_cpu_interface: Some(range(0x0804_0000, 0x1_0000)),
            })
        );
        assert_eq!(board.gic.as_ref().map(|g| g.frames().len()), Some(4));
    }

    #[test]
    fn cpu_index_ignores_non_affinity_bits() {
        let board = Board::from_device_tree(GICV3_SMP4).unwrap();
        // MPIDR_EL1 as read on a CPU has bit 31 (RES1) set.
        assert_eq!(board.cpu_index(0x8000_0002), Some(2));
        assert_eq!(board.cpu_index(0x8000_0007), None);
    }

    #[test]
    fn header_size() {
        let header: [u8; 8] = GICV3_SMP4[..8].try_into().unwrap();
        assert_eq!(device_tree_size(&header), Some(GICV3_SMP4.len()));
        assert_eq!(device_tree_size(&[0; 8]), None);
    }

    /// A device tree shaped like the ZynqMP ZCU102's as QEMU hands it over (`xlnx-zcu102`
    /// with the board DTB): RAM at 0, a GIC-400, two Cadence UARTs and `stdout-path` naming
    /// an alias with options. `extra_pl011` adds a PL011 that is not the console.
    fn zynqmp_like(stdout_path: Option<&str>, extra_pl011: bool) -> Vec<u8> {
        let mut w = crate::fdt_writer::FdtWriter::new();
        w.begin_node("").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_u32("#size-cells", 2).unwrap();
        w.property_string("model", "ZynqMP-like test board")
            .unwrap();
        w.begin_node("chosen").unwrap();
        if let Some(path) = stdout_path {
            w.property_string("stdout-path", path).unwrap();
        }
        w.end_node().unwrap();
        w.begin_node("aliases").unwrap();
        w.property_string("serial0", "/axi/serial@ff000000")
            .unwrap();
        w.property_string("serial1", "/axi/serial@ff010000")
            .unwrap();
        w.end_node().unwrap();
        w.begin_node("memory@0").unwrap();
        w.property_string("device_type", "memory").unwrap();
        w.property_u64_list("reg", &[0, 0x8000_0000]).unwrap();
        w.end_node().unwrap();
        w.begin_node("cpus").unwrap();
        w.property_u32("#address-cells", 1).unwrap();
        w.property_u32("#size-cells", 0).unwrap();
        for cpu in 0..4u32 {
            w.begin_node(&alloc::format!("cpu@{cpu}")).unwrap();
            w.property_string("device_type", "cpu").unwrap();
            w.property_u32("reg", cpu).unwrap();
            w.end_node().unwrap();
        }
        w.end_node().unwrap();
        w.begin_node("psci").unwrap();
        w.property_string("method", "smc").unwrap();
        w.end_node().unwrap();
        w.begin_node("axi").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_u32("#size-cells", 2).unwrap();
        w.begin_node("interrupt-controller@f9010000").unwrap();
        w.property_string("compatible", "arm,gic-400").unwrap();
        let gic = [
            0xf901_0000,
            0x1_0000,
            0xf902_0000,
            0x2_0000,
            0xf904_0000,
            0x2_0000,
        ];
        w.property_u64_list("reg", &[gic[0], gic[1], gic[2], gic[3], gic[4], gic[5]])
            .unwrap();
        w.end_node().unwrap();
        for base in [0xff00_0000u64, 0xff01_0000] {
            w.begin_node(&alloc::format!("serial@{base:x}")).unwrap();
            w.property_strings("compatible", &["xlnx,zynqmp-uart", "cdns,uart-r1p12"])
                .unwrap();
            w.property_u64_list("reg", &[base, 0x1000]).unwrap();
            w.end_node().unwrap();
        }
        if extra_pl011 {
            w.begin_node("serial@9000000").unwrap();
            w.property_string("compatible", "arm,pl011").unwrap();
            w.property_u64_list("reg", &[0x900_0000, 0x1000]).unwrap();
            w.end_node().unwrap();
        }
        w.end_node().unwrap();
        w.end_node().unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn stdout_path_alias_picks_the_cadence_uart() {
        let board = Board::from_device_tree(&zynqmp_like(Some("serial1:115200n8"), true)).unwrap();
        assert_eq!(
            board.uart,
            Some(Uart {
                kind: UartKind::Cadence,
                registers: range(0xff01_0000, 0x1000)
            })
        );
        assert_eq!(board.memory, [range(0, 0x8000_0000)]);
        assert_eq!(board.cpus.len(), 4);
        assert!(matches!(board.gic, Some(Gic::V2 { .. })));
    }

    #[test]
    fn stdout_path_as_a_full_path() {
        let blob = zynqmp_like(Some("/axi/serial@ff000000"), true);
        let board = Board::from_device_tree(&blob).unwrap();
        assert_eq!(
            board.uart.map(|u| u.registers.start.as_u64()),
            Some(0xff00_0000)
        );
    }

    #[test]
    fn without_a_usable_stdout_path_the_first_pl011_is_the_console() {
        for stdout in [None, Some("serial7"), Some("/psci")] {
            let board = Board::from_device_tree(&zynqmp_like(stdout, true)).unwrap();
            assert_eq!(
                board.uart,
                Some(Uart {
                    kind: UartKind::Pl011,
                    registers: range(0x900_0000, 0x1000)
                }),
                "stdout-path {stdout:?}"
            );
        }
        // No stdout-path and no PL011: no console (a Cadence UART is used only when chosen).
        let board = Board::from_device_tree(&zynqmp_like(None, false)).unwrap();
        assert_eq!(board.uart, None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(
            Board::from_device_tree(&[0u8; 64]),
            Err(BoardError::InvalidDeviceTree)
        );
        assert_eq!(
            Board::from_device_tree(&[]),
            Err(BoardError::InvalidDeviceTree)
        );
    }

    /// A real board's device tree after QEMU edited it (xlnx-zcu102 with Debian's
    /// zynqmp-zcu102-rev1.0.dtb), when one is at hand: not part of the repository (it is
    /// Linux's), so the test only runs where `BULKHEAD_ZCU102_DTB` names it.
    #[test]
    fn zcu102_device_tree_from_qemu() {
        let Some(path) = std::env::var_os("BULKHEAD_ZCU102_DTB") else {
            return;
        };
        let blob = std::fs::read(path).unwrap();
        let board = Board::from_device_tree(&blob).unwrap();
        assert_eq!(
            board.uart,
            Some(Uart {
                kind: UartKind::Cadence,
                registers: range(0xff00_0000, 0x1000)
            })
        );
        assert_eq!(board.cpus.len(), 4);
        assert_eq!(board.psci, Some(PsciConduit::Smc));
        assert!(matches!(board.gic, Some(Gic::V2 { .. })));
    }
}
