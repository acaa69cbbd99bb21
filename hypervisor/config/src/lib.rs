//! Parser and validator for the qvm-syntax system configuration (see README).
//!
//! Design principles:
//! - One board file plus one file per VM, written in QNX qvm syntax; the language is
//!   described in this crate's README.md, which is kept accurate to the code.
//! - Every mistake is a `file:line: message` naming the offending token's line; all errors
//!   of a configuration are collected, not just the first.
//! - Two stages: `parse_board`/`parse_vm` check one file's syntax (pure, no I/O);
//!   `validate` checks the files against each other and fills in what the board decides
//!   (default addresses, physical CPUs, host RAM placement). `load_system` does both from disk.
//! - The result is plain owned data that remembers where each item came from, for build.rs
//!   to turn into static tables. No panics: std only, no `unwrap`, no indexing.
#![forbid(unsafe_code)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod board;
mod error;
mod lexer;
mod model;
mod names;
mod numbers;
mod validate;
mod vm;

use std::path::{Path, PathBuf};

pub use board::{BOARD_KEYWORDS, CPUS_MAX, parse_board};
pub use error::{Diagnostic, Errors, Location};
pub use model::{
    Arch, Board, Console, Create, FaultPolicy, GuestLayout, Image, Interrupt, IoApic, Ivshmem,
    MemoryRange, Pl011, RamRegion, Region, Rule, Shmem, ShmemMmio, Spanned, Subst, System,
    Uart8250, UartLocation, Vcpu, Vdev, Vm,
};
pub use names::NAME_MAX;
pub use numbers::{LARGE_PAGE_SIZE, PAGE_SIZE};
pub use validate::{
    AARCH64_ADDRESS_SPACE, AARCH64_GIC_CPU_INTERFACE, AARCH64_GIC_DISTRIBUTOR,
    AARCH64_GIC_REDISTRIBUTOR_SIZE, AARCH64_GIC_REDISTRIBUTORS, IOAPIC_DEFAULT_BASE,
    MMIO_WINDOW_SIZE, PL011_DEFAULT_BASE, SHMEM_WINDOW_SIZE, UART8250_DEFAULT_PORT, WindowKind,
    WindowRule, fixed_ranges, validate, window_rules,
};
pub use vm::{CpuSpec, IVSHMEM_VECTORS_MAX, RamSpec, VM_KEYWORDS, VdevSpec, VmFile, parse_vm};

/// Finds the image a VM's `load PATH` names.
pub trait ImageResolver {
    /// `load` is the path exactly as written. `Err(reason)` becomes
    /// `image `PATH` does not exist: reason` at the `load` line.
    fn resolve(&self, load: &str) -> Result<PathBuf, String>;
}

impl<F> ImageResolver for F
where
    F: Fn(&str) -> Result<PathBuf, String>,
{
    fn resolve(&self, load: &str) -> Result<PathBuf, String> {
        self(load)
    }
}

/// Reads the board file at `board_path` and every VM file it lists (paths relative to the
/// board file's directory), then validates them. A file that cannot be read is an error at
/// the line that names it (the board file itself: at line 0, printed as `file: message`).
pub fn load_system(board_path: &Path, resolver: &dyn ImageResolver) -> Result<System, Errors> {
    let text = std::fs::read_to_string(board_path).map_err(|error| {
        let mut errors = Errors::new();
        errors.push(
            &Location::new(board_path, 0),
            format!("cannot read board file: {error}"),
        );
        errors
    })?;
    let board = parse_board(board_path, &text)?;
    let mut errors = Errors::new();
    let mut vms = Vec::with_capacity(board.vms.len());
    for vm_path in &board.vms {
        match std::fs::read_to_string(&vm_path.value) {
            Ok(text) => match parse_vm(&vm_path.value, &text) {
                Ok(vm) => vms.push(vm),
                Err(vm_errors) => errors.extend(vm_errors),
            },
            Err(error) => {
                let message = format!("cannot read VM file `{}`: {error}", vm_path.value.display());
                errors.push(&vm_path.at, message);
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    validate(board, vms, resolver)
}
