//! Bulkhead's aarch64 support: everything that touches EL2 system registers.
//!
//! Design principles:
//! - Pure logic (translation tables, syndrome decoding) builds and tests on the host; modules
//!   that touch registers are compiled for aarch64 only.
//! - `unsafe` stays in small functions with a `// SAFETY:` line each; callers get safe APIs.
//! - The core never sees a register: arch code hands it decoded values and applies its answers.
#![no_std]
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

pub mod decode;
pub mod esr;
pub mod list_register;
pub mod paging;

#[cfg(target_arch = "aarch64")]
pub mod cadence_uart;
#[cfg(target_arch = "aarch64")]
pub mod console_uart;
#[cfg(target_arch = "aarch64")]
pub mod cpu;
#[cfg(target_arch = "aarch64")]
pub mod exception;
#[cfg(target_arch = "aarch64")]
pub mod gic;
#[cfg(target_arch = "aarch64")]
pub mod mmu;
#[cfg(target_arch = "aarch64")]
pub mod pl011;
#[cfg(target_arch = "aarch64")]
pub mod power;
#[cfg(target_arch = "aarch64")]
pub mod psci;
#[cfg(target_arch = "aarch64")]
pub mod vcpu;
