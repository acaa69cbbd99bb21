//! Bulkhead's arch-neutral core.
//!
//! Design principles:
//! - Everything here builds and unit-tests on the host; no arch registers, no `unsafe`.
//! - Arch code decodes what the hardware hands over (a device tree, a trap) into the typed values
//!   defined here; the core decides, arch code applies.
//! - Nothing a guest or a firmware table supplies may panic: parsers return `Result`/`Option`.
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        reason = "tests assert by panicking"
    )
)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod addr;
pub mod board;
pub mod bootargs;
pub mod config;
pub mod console;
pub mod console_mux;
pub mod device;
pub mod exit;
pub mod fdt_writer;
pub mod guest_device_tree;
pub mod guest_layout;
pub mod memory;
pub mod paging;
pub mod partition;
pub mod pci;
pub mod psci;
pub mod shmem;
pub mod vcpu;

/// The version printed in the banner.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
