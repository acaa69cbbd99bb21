//! Fuzz targets for the qvm configuration language: the board and VM parsers alone, and the
//! validator over whole systems.
//!
//! Inputs start from the project's own configurations (qemu/systems) and are mutated the way
//! people get them wrong: lines dropped, repeated, swapped or moved between files, numbers
//! replaced by edge values in every notation the language has (hex, decimal, K/M/G suffixes,
//! overflowing), keywords exchanged, statements made up from the grammar, stray bytes.
//! Invariants: no panic; parsing is deterministic; every diagnostic names one of the files
//! given, a line that exists in it (0 only for a whole file) and says something. A system
//! the validator accepts is checked for what isolation rests on: partitions' host RAM inside
//! board RAM, apart from each other and from the hypervisor's; each physical CPU in one vCPU
//! at most; in each VM, guest RAM, the windows Bulkhead places, every `loc` and the GIC apart
//! from one another, with room for every `vdev shmem` in the shared-memory windows.

use std::path::{Path, PathBuf};

use bulkhead_config::{
    BOARD_KEYWORDS, Errors, MemoryRange, SHMEM_WINDOW_SIZE, System, VM_KEYWORDS, Vdev,
    fixed_ranges, parse_board, parse_vm, validate,
};

use crate::random::Rng;
use crate::{SessionResult, Target, Trace};

/// The configuration targets.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "config-parse",
            description: "qvm board and VM file parsers on mutated configurations",
            session_length: 500,
            session: parse_session,
        },
        Target {
            name: "config-validate",
            description: "the validator on whole mutated systems (board plus its VMs)",
            session_length: 200,
            session: validate_session,
        },
    ]
}

/// A system from the repository: board text and VM texts.
struct Seed {
    board: &'static str,
    vms: &'static [&'static str],
}

macro_rules! system_file {
    ($path:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../qemu/systems/",
            $path
        ))
    };
}

const SEEDS: &[Seed] = &[
    Seed {
        board: system_file!("demo/board.board"),
        vms: &[
            system_file!("demo/ping.qvmconf"),
            system_file!("demo/pong.qvmconf"),
            system_file!("demo/ivping.qvmconf"),
            system_file!("demo/ivpong.qvmconf"),
        ],
    },
    Seed {
        board: system_file!("peers/board.board"),
        vms: &[
            system_file!("peers/peer0.qvmconf"),
            system_file!("peers/peer1.qvmconf"),
            system_file!("peers/peer2.qvmconf"),
        ],
    },
    Seed {
        board: system_file!("policy/board.board"),
        vms: &[
            system_file!("policy/hello.qvmconf"),
            system_file!("policy/policy.qvmconf"),
        ],
    },
    Seed {
        board: system_file!("seed-shmem-loc/board.board"),
        vms: &[
            system_file!("seed-shmem-loc/seedping.qvmconf"),
            system_file!("seed-shmem-loc/seedpong.qvmconf"),
            system_file!("seed-shmem-loc/ivping.qvmconf"),
            system_file!("seed-shmem-loc/ivpong.qvmconf"),
        ],
    },
    Seed {
        board: system_file!("linux-pair/board.board"),
        vms: &[
            system_file!("linux-pair/linux0.qvmconf"),
            system_file!("linux-pair/linux1.qvmconf"),
        ],
    },
    Seed {
        board: system_file!("x86-shmem-demo/board.board"),
        vms: &[
            system_file!("x86-shmem-demo/ping.qvmconf"),
            system_file!("x86-shmem-demo/pong.qvmconf"),
            system_file!("x86-shmem-demo/ivping.qvmconf"),
            system_file!("x86-shmem-demo/ivpong.qvmconf"),
        ],
    },
];

/// Words the language uses besides the statement keywords.
const WORDS: &[&str] = &[
    "pl011",
    "shmem",
    "ivshmem-plain",
    "ivshmem-doorbell",
    "ser8250",
    "ioapic",
    "loc",
    "intr",
    "gic",
    "apic",
    "name",
    "size",
    "vectors",
    "create",
    "allow",
    "deny",
    "subst",
    "runmask",
    "stop",
    "restart",
    "aarch64",
    "x86_64",
    "qemu-virt",
    "pc",
    "myioapic",
    "*",
    "?",
    "[a-z]",
    ",",
    "\"",
    "#",
    "\\",
];

/// A number in one of the language's notations, often at an edge.
fn number(rng: &mut Rng) -> String {
    let value = rng.value();
    match rng.below(8) {
        0 => format!("{value}"),
        1 => format!("{}K", value & 0xf_ffff),
        2 => format!("{}M", value & 0xfff),
        3 => format!("{}G", value & 0xff),
        4 => format!("0x{value:x}"),
        5 => format!("0x{:x}", value & !0xfff),
        6 => String::from("0x1_0000_0000_0000_0000"),
        _ => format!("0x{:x}", (rng.below(0x200) << 20)),
    }
}

/// A statement made up from the grammar's pieces.
fn statement(rng: &mut Rng) -> String {
    let keyword = if rng.chance(1, 2) {
        rng.pick(VM_KEYWORDS).copied().unwrap_or("vdev")
    } else {
        rng.pick(BOARD_KEYWORDS).copied().unwrap_or("vm")
    };
    let mut line = String::from(keyword);
    for _ in 0..rng.below(6) {
        line.push(' ');
        match rng.below(4) {
            0 => line.push_str(&number(rng)),
            1 => {
                line.push_str(&number(rng));
                line.push(',');
                line.push_str(&number(rng));
            }
            2 => {
                let word = rng.pick(WORDS).copied().unwrap_or("shmem");
                line.push_str(word);
                if rng.chance(1, 4) {
                    line.push(':');
                    line.push_str(&number(rng));
                }
            }
            _ => line.push_str(rng.pick(VM_KEYWORDS).copied().unwrap_or("ram")),
        }
    }
    line
}

/// Replaces one whitespace-separated token of `line`.
fn replace_token(rng: &mut Rng, line: &str) -> String {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    if tokens.is_empty() {
        return statement(rng);
    }
    let target = rng.index(tokens.len());
    let replacement = match rng.below(4) {
        0 => number(rng),
        1 => rng.pick(WORDS).copied().unwrap_or("x").to_owned(),
        2 => rng.pick(VM_KEYWORDS).copied().unwrap_or("x").to_owned(),
        _ => format!("{},{}", number(rng), number(rng)),
    };
    let indent = if line.starts_with(char::is_whitespace) {
        "    "
    } else {
        ""
    };
    let mut out = String::from(indent);
    for (index, token) in tokens.iter().enumerate() {
        if index > 0 {
            out.push(' ');
        }
        out.push_str(if index == target { &replacement } else { token });
    }
    out
}

/// Mutates `text` a few times; `others` lends lines from other files.
fn mutate(rng: &mut Rng, text: &str, others: &[&str]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for _ in 0..1 + rng.below(4) {
        let at = rng.index(lines.len().max(1));
        match rng.below(9) {
            0 if !lines.is_empty() => {
                lines.remove(at.min(lines.len() - 1));
            }
            1 => {
                if let Some(line) = lines.get(at).cloned() {
                    lines.insert(at, line);
                }
            }
            2 => {
                let other = rng.index(lines.len().max(1));
                if at < lines.len() && other < lines.len() {
                    lines.swap(at, other);
                }
            }
            3 | 4 => {
                if let Some(line) = lines.get_mut(at) {
                    *line = replace_token(rng, line);
                }
            }
            5 => lines.insert(at.min(lines.len()), statement(rng)),
            6 => {
                let borrowed = rng
                    .pick(others)
                    .and_then(|other| {
                        let other_lines: Vec<&str> = other.lines().collect();
                        rng.pick(&other_lines).map(|line| (*line).to_owned())
                    })
                    .unwrap_or_default();
                lines.insert(at.min(lines.len()), borrowed);
            }
            7 => {
                if let Some(line) = lines.get_mut(at) {
                    let mut bytes = line.clone().into_bytes();
                    let position = rng.index(bytes.len() + 1);
                    let byte = match rng.below(4) {
                        0 => b'"',
                        1 => b'#',
                        2 => b'\t',
                        _ => rng.byte() & 0x7f,
                    };
                    bytes.insert(position, byte);
                    *line = String::from_utf8_lossy(&bytes).into_owned();
                }
            }
            _ => {
                if let Some(line) = lines.get_mut(at) {
                    let cut = rng.index(line.len() + 1);
                    if line.is_char_boundary(cut) {
                        line.truncate(cut);
                    }
                }
            }
        }
    }
    let mut out = lines.join(if rng.chance(1, 16) { "\r\n" } else { "\n" });
    if rng.chance(3, 4) {
        out.push('\n');
    }
    out
}

/// Every diagnostic must name a file it was given and a line of it.
fn check_diagnostics(errors: &Errors, files: &[(&Path, &str)]) -> Result<(), String> {
    for diagnostic in errors.iter() {
        // A board may name one VM file twice (each gets its own text here): the longest.
        let Some(lines) = files
            .iter()
            .filter(|(path, _)| *path == diagnostic.file)
            .map(|(_, text)| text.lines().count().max(1) as u32)
            .max()
        else {
            return Err(format!("a diagnostic names a file not given: {diagnostic}"));
        };
        if diagnostic.line > lines {
            return Err(format!(
                "a diagnostic names line {} of a {lines}-line file: {diagnostic}",
                diagnostic.line
            ));
        }
        if diagnostic.message.trim().is_empty() {
            return Err(format!(
                "an empty diagnostic at {}",
                diagnostic.file.display()
            ));
        }
    }
    Ok(())
}

/// What isolation rests on, in a system the validator accepted.
fn check_system(system: &System) -> Result<(), String> {
    let board = &system.board;
    let hypervisor = board.hypervisor.value;
    let mut host: Vec<(String, MemoryRange)> = Vec::new();
    let mut cpus: Vec<u32> = Vec::new();
    for vm in &system.vms {
        for ram in &vm.ram {
            let range = ram.host();
            if !board
                .ram
                .iter()
                .any(|board_ram| board_ram.value.contains(&range))
            {
                return Err(format!(
                    "{}: host RAM {range} outside the board's RAM",
                    vm.name
                ));
            }
            if range.overlaps(&hypervisor) {
                return Err(format!(
                    "{}: host RAM {range} overlaps the hypervisor's",
                    vm.name
                ));
            }
            if let Some((other, _)) = host.iter().find(|(_, other)| other.overlaps(&range)) {
                return Err(format!("{}: host RAM {range} overlaps {other}'s", vm.name));
            }
            host.push((vm.name.clone(), range));
        }
        for vcpu in &vm.vcpus {
            if vcpu.physical_cpu >= board.cpus.value || cpus.contains(&vcpu.physical_cpu) {
                return Err(format!(
                    "{}: physical CPU {} given twice or beyond the board's {}",
                    vm.name, vcpu.physical_cpu, board.cpus.value
                ));
            }
            cpus.push(vcpu.physical_cpu);
        }
        // The guest-physical map: RAM, windows, `loc`s, and the GIC, all apart.
        let mut guest: Vec<(String, MemoryRange)> = vm
            .ram
            .iter()
            .map(|ram| (String::from("RAM"), ram.guest()))
            .collect();
        let layout = &vm.layout;
        for (name, range) in [
            ("the PCI ECAM", layout.pci_ecam),
            ("the PCI 32-bit window", layout.pci_mmio32),
            ("the PCI 64-bit window", layout.pci_mmio64),
            ("the MSI frame", layout.msi_frame),
            ("the shared-memory windows", layout.shmem_windows),
        ] {
            if range.size > 0 {
                guest.push((String::from(name), range));
            }
        }
        let mut shmem_devices = 0u64;
        for vdev in &vm.vdevs {
            let placed = match vdev {
                Vdev::Pl011(pl011) => Some(("a vdev pl011", pl011.base.value, 0x1000)),
                Vdev::IoApic(ioapic) => Some(("a vdev ioapic", ioapic.base.value, 0x1000)),
                Vdev::Shmem(shmem) => {
                    shmem_devices += 1;
                    shmem
                        .mmio
                        .as_ref()
                        .map(|mmio| ("an MMIO vdev shmem", mmio.base.value, 0x1000))
                }
                _ => None,
            };
            if let Some((name, base, size)) = placed
                && base != 0
            {
                guest.push((String::from(name), MemoryRange { base, size }));
            }
        }
        if layout.shmem_windows.size < shmem_devices.saturating_mul(SHMEM_WINDOW_SIZE) {
            return Err(format!(
                "{}: {shmem_devices} vdev shmem but shared-memory windows of {:#x} bytes",
                vm.name, layout.shmem_windows.size
            ));
        }
        let fixed = fixed_ranges(board.arch.value, vm.vcpus.len());
        for (index, (name, range)) in guest.iter().enumerate() {
            let clash = guest
                .iter()
                .skip(index + 1)
                .map(|(other, other_range)| (other.as_str(), *other_range))
                .chain(
                    fixed
                        .iter()
                        .map(|(other, other_range)| (*other, *other_range)),
                )
                .find(|(_, other_range)| other_range.size > 0 && other_range.overlaps(range));
            if let Some((other, other_range)) = clash {
                return Err(format!(
                    "{}: {name} at {range} overlaps {other} at {other_range}",
                    vm.name
                ));
            }
        }
    }
    for free in &system.free_ram {
        if free.overlaps(&hypervisor) || host.iter().any(|(_, range)| range.overlaps(free)) {
            return Err(format!(
                "free RAM {free} overlaps a partition's or the hypervisor's"
            ));
        }
    }
    Ok(())
}

fn pick_seed(rng: &mut Rng) -> &'static Seed {
    const FALLBACK: &Seed = &Seed {
        board: "",
        vms: &[],
    };
    rng.pick(SEEDS).unwrap_or(FALLBACK)
}

fn parse_session(seed: u64, steps: u64, trace: &mut Trace) -> SessionResult {
    let mut rng = Rng::new(seed);
    for _ in 0..steps {
        let system = pick_seed(&mut rng);
        let board_text = mutate(&mut rng, system.board, system.vms);
        let vm_source = rng.pick(system.vms).copied().unwrap_or("");
        let vm_text = mutate(&mut rng, vm_source, &[system.board]);
        trace.note(|| format!("board:\n{board_text}\nvm:\n{vm_text}"));
        let board_path = Path::new("fuzz/board.board");
        let vm_path = Path::new("fuzz/vm.qvmconf");
        let board = parse_board(board_path, &board_text);
        if parse_board(board_path, &board_text) != board {
            return Err(String::from("the board parser is not deterministic"));
        }
        if let Err(errors) = &board {
            check_diagnostics(errors, &[(board_path, &board_text)])?;
        }
        let vm = parse_vm(vm_path, &vm_text);
        if parse_vm(vm_path, &vm_text) != vm {
            return Err(String::from("the VM parser is not deterministic"));
        }
        if let Err(errors) = &vm {
            check_diagnostics(errors, &[(vm_path, &vm_text)])?;
        }
    }
    Ok(steps)
}

fn validate_session(seed: u64, steps: u64, trace: &mut Trace) -> SessionResult {
    let mut rng = Rng::new(seed);
    let mut executed = 0;
    for _ in 0..steps {
        let system = pick_seed(&mut rng);
        let board_text = if rng.chance(1, 3) {
            system.board.to_owned()
        } else {
            mutate(&mut rng, system.board, &[])
        };
        let board_path = PathBuf::from("fuzz/board.board");
        let Ok(board) = parse_board(&board_path, &board_text) else {
            continue;
        };
        // One VM file per `vm` line, in order, each mutated a little or not at all.
        let mut texts = Vec::new();
        for (index, vm_path) in board.vms.iter().enumerate() {
            let source = system
                .vms
                .get(index)
                .or_else(|| rng.pick(system.vms))
                .copied()
                .unwrap_or("");
            let text = if rng.chance(1, 2) {
                source.to_owned()
            } else {
                mutate(&mut rng, source, system.vms)
            };
            texts.push((vm_path.value.clone(), text));
        }
        let mut vms = Vec::new();
        for (path, text) in &texts {
            if let Ok(vm) = parse_vm(path, text) {
                vms.push(vm);
            }
        }
        if vms.len() != texts.len() {
            continue;
        }
        trace.note(|| {
            let mut shown = format!("board:\n{board_text}\n");
            for (path, text) in &texts {
                shown.push_str(&format!("{}:\n{text}\n", path.display()));
            }
            shown
        });
        let missing = rng.chance(1, 16);
        let resolver = move |load: &str| -> Result<PathBuf, String> {
            if missing {
                Err(String::from("not built"))
            } else {
                Ok(PathBuf::from(load))
            }
        };
        executed += 1;
        match validate(board, vms, &resolver) {
            Ok(system) => check_system(&system)?,
            Err(errors) => {
                let mut files: Vec<(&Path, &str)> = vec![(board_path.as_path(), &board_text)];
                files.extend(
                    texts
                        .iter()
                        .map(|(path, text)| (path.as_path(), text.as_str())),
                );
                check_diagnostics(&errors, &files)?;
            }
        }
    }
    Ok(executed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_systems_parse_and_validate() {
        for system in SEEDS {
            let board = parse_board(Path::new("b.board"), system.board).unwrap();
            let vms = board
                .vms
                .iter()
                .zip(system.vms)
                .map(|(path, text)| parse_vm(&path.value, text).unwrap())
                .collect();
            let resolver = |load: &str| -> Result<PathBuf, String> { Ok(PathBuf::from(load)) };
            let system = validate(board, vms, &resolver).unwrap();
            check_system(&system).unwrap();
        }
    }
}
