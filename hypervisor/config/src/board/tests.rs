//! Unit tests of the board-file parser.

use super::*;
use crate::error::Location;
use std::path::PathBuf;

const BOARD: &str = "\
# QEMU virt, 4 CPUs, 1 GiB
board qemu-virt
arch aarch64
cpus 4
ram 0x40000000,1G
hypervisor 0x40000000,16M
shmem-pool 8M
console pl011 loc 0x09000000
vm ping.qvmconf
vm ../other/pong.qvmconf
";

fn parse(text: &str) -> Result<Board, Errors> {
    parse_board(Path::new("configs/qemu/virt.board"), text)
}

fn errors(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(board) => panic!("expected errors, parsed {board:?}"),
        Err(errors) => errors
            .iter()
            .map(|d| format!("{}: {}", d.line, d.message))
            .collect(),
    }
}

/// `BOARD` with the line starting `keyword` replaced by `line` (or removed when empty).
fn replace(keyword: &str, line: &str) -> String {
    let mut out = String::new();
    for original in BOARD.lines() {
        if original.split_whitespace().next() == Some(keyword) {
            if !line.is_empty() {
                out.push_str(line);
                out.push('\n');
            }
        } else {
            out.push_str(original);
            out.push('\n');
        }
    }
    out
}

#[track_caller]
fn assert_error(text: &str, line: u32, needle: &str) {
    let found = errors(text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].starts_with(&format!("{line}: ")), "{found:#?}");
    assert!(
        found[0].contains(needle),
        "expected `{needle}` in {found:#?}"
    );
}

#[test]
fn board_parses() {
    let board = parse(BOARD).unwrap();
    let at = |line| Location::new("configs/qemu/virt.board", line);
    assert_eq!(board.path, PathBuf::from("configs/qemu/virt.board"));
    assert_eq!(board.name, Spanned::new("qemu-virt".to_string(), at(2)));
    assert_eq!(board.arch, Spanned::new(Arch::Aarch64, at(3)));
    assert_eq!(board.cpus, Spanned::new(4, at(4)));
    assert_eq!(
        board.ram,
        [Spanned::new(
            MemoryRange {
                base: 0x4000_0000,
                size: 1 << 30
            },
            at(5)
        )]
    );
    assert_eq!(
        board.hypervisor.value,
        MemoryRange {
            base: 0x4000_0000,
            size: 16 << 20
        }
    );
    assert_eq!(board.shmem_pool_size(), 8 << 20);
    assert_eq!(
        board.console,
        Some(Spanned::new(Console::Pl011 { base: 0x0900_0000 }, at(8)))
    );
}

#[test]
fn vm_paths_are_relative_to_the_board_file() {
    let board = parse(BOARD).unwrap();
    let paths: Vec<PathBuf> = board.vms.iter().map(|vm| vm.value.clone()).collect();
    assert_eq!(
        paths,
        [
            PathBuf::from("configs/qemu/ping.qvmconf"),
            PathBuf::from("configs/qemu/../other/pong.qvmconf")
        ]
    );
    let board = parse_board(Path::new("x.board"), &replace("vm", "vm /abs/a.qvmconf")).unwrap();
    assert_eq!(board.vms[0].value, PathBuf::from("/abs/a.qvmconf"));
    let board = parse_board(Path::new("x.board"), BOARD).unwrap();
    assert_eq!(board.vms[0].value, PathBuf::from("ping.qvmconf"));
}

#[test]
fn x86_board_with_8250_console_and_no_pool() {
    let text = "board pc\narch x86_64\ncpus 2\nram 0,0x9f000\nram 0x100000,2G\nhypervisor 0x100000,32M\nconsole 8250 port 0x3f8\nvm a\n";
    let board = parse(text).unwrap();
    assert_eq!(board.arch.value, Arch::X86_64);
    assert_eq!(board.ram.len(), 2);
    assert_eq!(board.shmem_pool, None);
    assert_eq!(board.shmem_pool_size(), 0);
    assert_eq!(
        board.console.map(|c| c.value),
        Some(Console::Uart8250 { port: 0x3f8 })
    );
}

#[test]
fn missing_items() {
    let found = errors("# empty\n");
    assert_eq!(
        found,
        [
            "1: missing `board NAME`",
            "1: missing `arch aarch64|x86_64`",
            "1: missing `cpus N`: how many physical CPUs the board has",
            "1: missing `ram BASE,SIZE`: the board's RAM",
            "1: missing `hypervisor BASE,SIZE`: the memory the hypervisor keeps for itself",
            "1: missing `vm PATH`: a board needs at least one VM",
        ]
    );
    // Optional ones are optional.
    let text = replace("console", "");
    assert!(
        parse(&replace("shmem-pool", "").replace("console pl011 loc 0x09000000\n", "")).is_ok()
    );
    assert!(parse(&text).is_ok());
}

#[test]
fn duplicates() {
    for keyword in [
        "board",
        "arch",
        "cpus",
        "hypervisor",
        "shmem-pool",
        "console",
    ] {
        let line = BOARD.lines().find(|l| l.starts_with(keyword)).unwrap();
        let text = format!("{BOARD}{line}\n");
        let first = BOARD.lines().position(|l| l.starts_with(keyword)).unwrap() + 1;
        assert_error(
            &text,
            11,
            &format!("duplicate `{keyword}` (first given at line {first})"),
        );
    }
    // Several `ram` and `vm` lines are fine.
    assert!(parse(&format!("{BOARD}ram 0x100000000,1G\nvm third.qvmconf\n")).is_ok());
}

#[test]
fn bad_values() {
    assert_error(
        &replace("arch", "arch riscv64"),
        3,
        "unknown arch `riscv64` (arches: aarch64, x86_64)",
    );
    assert_error(
        &replace("cpus", "cpus 0"),
        4,
        "`cpus 0`: a board has 1 to 4096 CPUs",
    );
    assert_error(
        &replace("cpus", "cpus 5000"),
        4,
        "a board has 1 to 4096 CPUs",
    );
    assert_error(&replace("cpus", "cpus four"), 4, "`four` is not a number");
    assert_error(
        &replace("board", "board qemu virt"),
        2,
        "unexpected `virt` after `board qemu`",
    );
    assert_error(
        &replace("board", "board qemu/virt"),
        2,
        "board name `qemu/virt` holds `/`",
    );
    assert_error(&format!("{BOARD}vm\n"), 11, "`vm` needs a value: `vm PATH`");
}

#[test]
fn ram_and_reserve_syntax() {
    assert_error(
        &replace("ram", "ram 0x40000000"),
        5,
        "board ram: expected BASE,SIZE, found `0x40000000`",
    );
    assert_error(
        &replace("ram", "ram 0x40000800,1G"),
        5,
        "board ram base 0x40000800 is not 4 KiB page-aligned",
    );
    assert_error(
        &replace("ram", "ram 0x40000000,0x1001"),
        5,
        "board ram size 0x1001 is not a multiple of the 4 KiB page size",
    );
    assert_error(
        &replace("ram", "ram 0x40000000,0"),
        5,
        "board ram size must not be zero",
    );
    assert_error(
        &replace("ram", "ram 0xfffffffff0000000,1G"),
        5,
        "overflows the 64-bit address space",
    );
    assert_error(
        &replace("ram", "ram 0x40000000,99999999999999999999"),
        5,
        "too large",
    );
    assert_error(
        &replace("hypervisor", "hypervisor 0x40000000,1.5M"),
        6,
        "hypervisor reserve size: `1.5M` is not a size",
    );
}

#[test]
fn shmem_pool() {
    let board = parse(&replace("shmem-pool", "shmem-pool 0")).unwrap();
    assert_eq!(board.shmem_pool_size(), 0);
    assert_error(
        &replace("shmem-pool", "shmem-pool 6000"),
        7,
        "shmem-pool size 0x1770 is not a multiple of the 4 KiB page size",
    );
    assert_error(
        &replace("shmem-pool", "shmem-pool lots"),
        7,
        "shmem-pool: `lots` is not a size",
    );
}

#[test]
fn console_forms() {
    let expected = "`console pl011 loc ADDR`, `console cadence loc ADDR` or `console 8250 port N`";
    assert_error(&replace("console", "console"), 8, expected);
    assert_error(
        &replace("console", "console virtio"),
        8,
        "unknown console `virtio`",
    );
    assert_error(
        &replace("console", "console pl011"),
        8,
        "console pl011 needs `loc`",
    );
    assert_error(
        &replace("console", "console pl011 port 0x3f8"),
        8,
        "unknown option `port` for console pl011 (options: loc)",
    );
    assert_error(
        &replace("console", "console 8250 port 0x10000"),
        8,
        "console port 0x10000 is not an I/O port",
    );
    assert_error(
        &replace("console", "console pl011 loc 1 loc 2"),
        8,
        "duplicate option `loc` of console pl011",
    );
    assert_error(
        &replace("console", "console cadence"),
        8,
        "console cadence needs `loc`",
    );
    assert_error(
        &replace("console", "console pl011 loc here"),
        8,
        "console loc: `here` is not a number",
    );
}

#[test]
fn unknown_keyword_lists_board_keywords() {
    assert_error(
        &format!("{BOARD}memory 1G\n"),
        11,
        "unknown keyword `memory` in a board file (keywords: board, arch, cpus, ram, hypervisor, shmem-pool, console, vm)",
    );
    // VM keywords do not belong in a board file.
    assert_error(
        &format!("{BOARD}vdev pl011\n"),
        11,
        "unknown keyword `vdev` in a board file",
    );
}

#[test]
fn cadence_console() {
    let board = parse(&replace("console", "console cadence loc 0xff000000")).unwrap();
    assert_eq!(
        board.console.map(|c| c.value),
        Some(Console::Cadence { base: 0xff00_0000 })
    );
}
