//! Bulkhead's arch-neutral core.
//!
//! Design principles:
//! - Everything here builds and unit-tests on the host; no arch registers, no `unsafe`.
//! - Arch code decodes what the hardware hands over (a device tree, a trap) into the typed values
//!   defined here; the core decides, arch code applies.
//! - Nothing a guest or a firmware table supplies may panic: parsers return `Result`/`Option`.
//!
//! The contract with an architecture backend ([`vcpu`]), all of it:
//! - per vCPU, [`vcpu::VcpuBackend`]: `run` (enter the guest until it exits, keeping the
//!   virtual interrupt controller's state in step, and return the decoded [`exit::Exit`]),
//!   `complete` (finish that exit with the core's [`exit::Action`]), `idle` (WFI/HLT outside
//!   the guest), `start` (reset to an entry point), `wait`, `halt`;
//! - shared by all CPUs, [`partition::Platform`]: `kick` a CPU (post-then-kick of a virtual
//!   interrupt), `map_memory` / `unmap_memory` in a partition's second stage, `signal` a
//!   device of another partition, `deliver` a doorbell's interrupt in another partition;
//! - from the bootable image, [`vcpu::PartitionHost`]: `reload` a partition's memory for a
//!   restart, `partition_stopped`.
//!
//! [`vcpu::run_vcpu`] is the one run loop; the fault policy ([`partition::Partition`]'s
//! `fault`), stop and restart (whole partition, from any vCPU) are decided there.
//!
//! Optionally, a backend may offer an exit to the [`fast`] lane before the run loop sees it:
//! [`partition::Partition::fast_call`] (pure PSCI queries) and
//! [`partition::Partition::fast_mmio`] (published reserved and doorbell registers) answer
//! it without any lock, or say no and the exit takes the run loop as usual; a backend that
//! answers an interrupt exit itself (fold, count, flush) first asks
//! [`partition::Partition::fast_lane_open`]. aarch64 does all of this from its exit vector;
//! x86 asks `fast_mmio` for MMIO exits inside its backends' run loops.
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
pub mod fast;
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
