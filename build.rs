//! Build script of the bootable image:
//! - picks the linker script for bare-metal targets;
//! - compiles the system configuration named by `BULKHEAD_CONFIG` (a board file, see
//!   hypervisor/config/README.md) into static tables (`OUT_DIR/system.rs`), embedding each
//!   partition's guest image and the guest-physical windows the validator placed around its
//!   RAM and `loc`s. A bad configuration fails the build with `file:line: message`.
//!   Without `BULKHEAD_CONFIG` the image has no partitions.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bulkhead_config::{Arch, Console, FaultPolicy, System, UartLocation, Vdev};

fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    if target.starts_with("aarch64-unknown-none") {
        println!(
            "cargo:rustc-link-arg=-T{}",
            root.join("boot/aarch64.ld").display()
        );
        // A static PIE: the entry code applies its own R_AARCH64_RELATIVE relocations, so the
        // image runs wherever a loader puts it (boot/src/aarch64.rs).
        println!("cargo:rustc-link-arg=-pie");
        println!("cargo:rustc-link-arg=--no-dynamic-linker");
        println!("cargo:rustc-link-arg=-z");
        println!("cargo:rustc-link-arg=notext");
        println!("cargo:rerun-if-changed=boot/aarch64.ld");
    }
    if target == "x86_64-unknown-none" {
        println!(
            "cargo:rustc-link-arg=-T{}",
            root.join("boot/x86_64.ld").display()
        );
        // The 32-bit entry code uses absolute addresses: link a fixed-address executable.
        println!("cargo:rustc-link-arg=--no-pie");
        println!("cargo:rerun-if-changed=boot/x86_64.ld");
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=BULKHEAD_CONFIG");
    println!("cargo:rerun-if-env-changed=BULKHEAD_GUEST_IMAGES");

    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("system.rs");
    let source = match std::env::var("BULKHEAD_CONFIG") {
        Ok(board) if !board.is_empty() => match configured_system(&root, Path::new(&board)) {
            Ok(source) => source,
            Err(messages) => {
                for message in messages {
                    eprintln!("{message}");
                }
                std::process::exit(1);
            }
        },
        _ => empty_system(),
    };
    if let Err(error) = std::fs::write(&out, source) {
        eprintln!("cannot write {}: {error}", out.display());
        std::process::exit(1);
    }
}

/// A partition's GIC has INTIDs FIRST_SPI..FIRST_SPI + SPI_COUNT as SPIs (kept equal to
/// `hypervisor::guest_layout`).
const FIRST_SPI: u32 = 32;
const SPI_COUNT: u32 = 96;
fn empty_system() -> String {
    "pub static SYSTEM: hypervisor::config::SystemConfig = hypervisor::config::SystemConfig {\n    \
     board: \"none\",\n    source: \"(no configuration: set BULKHEAD_CONFIG or use cargo xtask)\",\n    \
     hypervisor_memory: (0, 0),\n    partitions: &[],\n    regions: &[],\n    shmem_pool: 0,\n    console: None,\n};\n"
        .into()
}

/// Resolves `load PATH`: a file as written (relative to the repository), or a guest crate
/// directory whose image xtask built into `BULKHEAD_GUEST_IMAGES/<dir name>.bin`.
fn resolve(root: &Path, load: &str) -> Result<PathBuf, String> {
    let path = root.join(load);
    if path.is_file() {
        return Ok(path);
    }
    let name = Path::new(load)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let images = std::env::var("BULKHEAD_GUEST_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("guests/target/images"));
    let image = images.join(format!("{name}.bin"));
    if image.is_file() {
        return Ok(image);
    }
    if path.join("Cargo.toml").is_file() {
        Err(format!(
            "guest `{load}` is not built (no {}); `cargo xtask build` builds guests",
            image.display()
        ))
    } else {
        Err(format!(
            "no file {} and no built guest {}",
            path.display(),
            image.display()
        ))
    }
}

fn configured_system(root: &Path, board: &Path) -> Result<String, Vec<String>> {
    let board = if board.is_absolute() {
        board.to_path_buf()
    } else {
        root.join(board)
    };
    let resolver = |load: &str| resolve(root, load);
    let system = bulkhead_config::load_system(&board, &resolver).map_err(|errors| {
        errors
            .to_string()
            .lines()
            .map(String::from)
            .collect::<Vec<_>>()
    })?;
    println!("cargo:rerun-if-changed={}", board.display());
    generate(&system, &board)
}

fn generate(system: &System, board_path: &Path) -> Result<String, Vec<String>> {
    let mut errors = Vec::new();
    let arch = system.board.arch.value;
    let target_arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if target_arch != arch.name() && !target_arch.is_empty() {
        errors.push(format!(
            "{}: a board for arch {arch} cannot be built into an image for {target_arch}",
            system.board.arch.at
        ));
    }
    let hypervisor = &system.board.hypervisor.value;
    let mut code = String::new();
    let _ = writeln!(
        code,
        "pub static SYSTEM: hypervisor::config::SystemConfig = hypervisor::config::SystemConfig {{"
    );
    let _ = writeln!(code, "    board: {:?},", system.board.name.value);
    let _ = writeln!(code, "    source: {:?},", board_path.display().to_string());
    let _ = writeln!(
        code,
        "    hypervisor_memory: ({:#x}, {:#x}),",
        hypervisor.base, hypervisor.size
    );
    let _ = writeln!(code, "    partitions: &[");
    for vm in &system.vms {
        println!("cargo:rerun-if-changed={}", vm.path.display());
        println!("cargo:rerun-if-changed={}", vm.image.path.display());
        if let Some(initrd) = &vm.initrd {
            println!("cargo:rerun-if-changed={}", initrd.path.display());
        }
        let mut pl011 = None;
        let mut pl011_interrupt: Option<u32> = None;
        let mut uart8250: Option<u16> = None;
        // x86_64: one I/O APIC per VM, (base, name, line), whichever line declares it.
        let mut ioapic: Option<(u64, String, String)> = None;
        for vdev in &vm.vdevs {
            if let Vdev::IoApic(device) = vdev {
                match &ioapic {
                    Some((_, _, first)) => errors.push(format!(
                        "{}: a VM has at most one vdev ioapic (the first is at {first})",
                        device.at
                    )),
                    None => {
                        ioapic = Some((
                            device.base.value,
                            device.name.value.clone(),
                            device.at.to_string(),
                        ))
                    }
                }
            }
        }
        let mut shmem: Vec<String> = Vec::new();
        let mut ivshmem: Vec<String> = Vec::new();
        for vdev in &vm.vdevs {
            match vdev {
                Vdev::Pl011(uart) if arch != Arch::Aarch64 => errors.push(format!(
                    "{}: vdev pl011 is aarch64-only (x86_64 partitions use vdev ser8250)",
                    uart.at
                )),
                Vdev::Pl011(uart) => {
                    pl011 = Some(uart.base.value);
                    if let Some(intr) = &uart.intr {
                        if intr.number >= FIRST_SPI + SPI_COUNT {
                            errors.push(format!(
                                "{}: gic:{} is beyond the {SPI_COUNT} SPIs a partition's GIC has (INTIDs {FIRST_SPI}..{})",
                                intr.at,
                                intr.number,
                                FIRST_SPI + SPI_COUNT - 1
                            ));
                        }
                        pl011_interrupt = Some(intr.number);
                    }
                }
                Vdev::Uart8250(device) => match (arch, device.location.value) {
                    (Arch::X86_64, UartLocation::Port(port)) => {
                        if device.intr.is_some() {
                            errors.push(format!(
                                "{}: vdev ser8250 has no interrupt on x86_64 yet (leave out intr)",
                                device.at
                            ));
                        }
                        uart8250 = Some(port);
                    }
                    (Arch::X86_64, UartLocation::Mmio(_)) => errors.push(format!(
                        "{}: vdev ser8250 on x86_64 sits at an I/O port (loc 0x3f8)",
                        device.location.at
                    )),
                    (Arch::Aarch64, _) => errors.push(format!(
                        "{}: vdev ser8250 is not available on aarch64 yet",
                        device.at
                    )),
                },
                // Collected above (the validator refuses it on aarch64).
                Vdev::IoApic(_) => {}
                Vdev::Shmem(device) => {
                    let rules: Vec<String> = device
                        .rules
                        .iter()
                        .map(|r| format!("({}, {:?})", r.allow, r.glob))
                        .collect();
                    let substs: Vec<String> = device
                        .substs
                        .iter()
                        .map(|r| format!("({:?}, {:?})", r.old, r.new))
                        .collect();
                    let creates: Vec<String> = device
                        .creates
                        .iter()
                        .map(|c| format!("({:?}, {:?}, {:#x})", c.name, c.host_name, c.size))
                        .collect();
                    let mmio = match &device.mmio {
                        Some(mmio) if arch == Arch::X86_64 => {
                            let ioapic_name = ioapic.as_ref().map(|(_, name, _)| name.as_str());
                            if ioapic_name != Some(mmio.intr.controller.as_str()) {
                                errors.push(format!(
                                    "{}: on x86_64 a vdev shmem's `intr` names a pin of the VM's vdev ioapic (intr {}:PIN)",
                                    mmio.intr.at,
                                    ioapic_name.unwrap_or("IOAPIC-NAME")
                                ));
                            }
                            format!("Some(({:#x}, {}))", mmio.base.value, mmio.intr.number)
                        }
                        Some(mmio) => {
                            if mmio.intr.number >= FIRST_SPI + SPI_COUNT {
                                errors.push(format!(
                                    "{}: gic:{} is beyond the partition GIC's INTIDs {FIRST_SPI}..{}",
                                    mmio.intr.at,
                                    mmio.intr.number,
                                    FIRST_SPI + SPI_COUNT - 1
                                ));
                            }
                            format!("Some(({:#x}, {}))", mmio.base.value, mmio.intr.number)
                        }
                        None => "None".into(),
                    };
                    shmem.push(format!(
                        "hypervisor::config::ShmemConfig {{ rules: &[{}], substs: &[{}], creates: &[{}], mmio: {mmio} }}",
                        rules.join(", "),
                        substs.join(", "),
                        creates.join(", ")
                    ));
                }
                Vdev::Ivshmem(device) => ivshmem.push(format!(
                    "hypervisor::config::IvshmemConfig {{ name: {:?}, size: {:#x}, vectors: {} }}",
                    device.name.value,
                    device.size.value,
                    device.doorbell_vectors.unwrap_or(0)
                )),
            }
        }
        let ram: Vec<String> = vm
            .ram
            .iter()
            .map(|r| {
                format!(
                    "hypervisor::config::RamConfig {{ guest_base: {:#x}, host_base: {:#x}, size: {:#x} }}",
                    r.guest_base, r.host_base, r.size
                )
            })
            .collect();
        let vcpus: Vec<String> = vm
            .vcpus
            .iter()
            .map(|v| v.physical_cpu.to_string())
            .collect();
        let policy = match vm.fault_policy {
            FaultPolicy::Stop => "Stop",
            FaultPolicy::Restart => "Restart",
        };
        let _ = writeln!(code, "        hypervisor::config::PartitionConfig {{");
        let _ = writeln!(code, "            name: {:?},", vm.name);
        let _ = writeln!(code, "            ram: &[{}],", ram.join(", "));
        let _ = writeln!(code, "            vcpus: &[{}],", vcpus.join(", "));
        let _ = writeln!(
            code,
            "            image: include_bytes!({:?}),",
            vm.image.path.display().to_string()
        );
        let _ = writeln!(code, "            image_path: {:?},", vm.image.load);
        match &vm.initrd {
            Some(initrd) => {
                let _ = writeln!(
                    code,
                    "            initrd: Some(include_bytes!({:?})),",
                    initrd.path.display().to_string()
                );
            }
            None => {
                let _ = writeln!(code, "            initrd: None,");
            }
        }
        let _ = writeln!(code, "            cmdline: {:?},", vm.cmdline);
        let _ = writeln!(
            code,
            "            fault_policy: hypervisor::config::FaultPolicy::{policy},"
        );
        let _ = writeln!(code, "            pl011: {pl011:?},");
        let _ = writeln!(code, "            pl011_interrupt: {pl011_interrupt:?},");
        let _ = writeln!(code, "            uart8250: {uart8250:?},");
        let ioapic_base = ioapic.as_ref().map(|(base, _, _)| *base);
        let _ = writeln!(code, "            ioapic: {ioapic_base:?},");
        let _ = writeln!(code, "            shmem: &[{}],", shmem.join(", "));
        let _ = writeln!(code, "            ivshmem: &[{}],", ivshmem.join(", "));
        let layout = &vm.layout;
        let pair = |range: &bulkhead_config::MemoryRange| {
            format!("({:#x}, {:#x})", range.base, range.size)
        };
        let _ = writeln!(
            code,
            "            windows: hypervisor::config::GuestWindows {{ pci_ecam: {}, pci_mmio32: {}, pci_mmio64: {}, msi_frame: {}, shmem_windows: {:#x} }},",
            pair(&layout.pci_ecam),
            pair(&layout.pci_mmio32),
            pair(&layout.pci_mmio64),
            pair(&layout.msi_frame),
            layout.shmem_windows.base
        );
        let _ = writeln!(code, "        }},");
    }
    let _ = writeln!(code, "    ],");
    let regions: Vec<String> = system
        .regions
        .iter()
        .map(|r| format!("({:?}, {:#x})", r.name, r.size))
        .collect();
    let _ = writeln!(code, "    regions: &[{}],", regions.join(", "));
    let _ = writeln!(
        code,
        "    shmem_pool: {:#x},",
        system.board.shmem_pool_size()
    );
    let console = match system.board.console.as_ref().map(|console| console.value) {
        None => "None".to_string(),
        Some(Console::Pl011 { base }) => {
            format!("Some(hypervisor::config::ConsoleConfig::Pl011 {{ base: {base:#x} }})")
        }
        Some(Console::Cadence { base }) => {
            format!("Some(hypervisor::config::ConsoleConfig::Cadence {{ base: {base:#x} }})")
        }
        Some(Console::Uart8250 { port }) => {
            format!("Some(hypervisor::config::ConsoleConfig::Uart8250 {{ port: {port:#x} }})")
        }
    };
    let _ = writeln!(code, "    console: {console},");
    let _ = writeln!(code, "}};");
    if errors.is_empty() {
        Ok(code)
    } else {
        Err(errors)
    }
}
