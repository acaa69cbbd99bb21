//! Bulkhead's entry points: what firmware or a boot loader jumps to.
//!
//! Design principles:
//! - Assembly does only what Rust cannot: the image header, a stack, zeroed `.bss`, exception
//!   vectors early, and for secondary CPUs the MMU switch-on before the first Rust call.
//! - Everything after that is Rust in the root package (`bulkhead_primary_main`,
//!   `bulkhead_secondary_main`).
#![no_std]

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
