//! Bulkhead's entry points: what firmware or a boot loader jumps to.
//!
//! Design principles:
//! - Assembly does only what Rust cannot: the image header, a stack, zeroed `.bss`, exception
//!   vectors early, and for secondary CPUs the MMU switch-on before the first Rust call (on
//!   x86_64 also the mode switches: 32-bit protected mode or real mode to long mode).
//! - Everything after that is Rust in the root package (`bulkhead_primary_main`,
//!   `bulkhead_secondary_main`, `bulkhead_x86_primary_main`, `bulkhead_x86_secondary_main`).
//! - What the boot loader hands over is normalised here (x86_64: the Multiboot2 information
//!   into a `BootInfo`, whether GRUB or Bulkhead's UEFI loader wrote it).
//! - What a boot loader must know about the image (`x86_64_handoff`) is stated once, here, and
//!   compiled into both the image and the UEFI loader.
#![no_std]

#[cfg(all(target_arch = "x86_64", target_os = "none"))]
extern crate alloc;

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub mod x86_64;
pub mod x86_64_handoff;
