//! `bulkhead-shmem`: the guest side of Bulkhead's shared memory, for bare-metal test guests on
//! aarch64 and x86_64.
//!
//! - [`pci`]: bus 0's configuration space (ECAM; on x86_64 also ports 0xCF8/0xCFC): find a
//!   device by vendor and device ID, read its BARs (assigned already), enable decoding and bus
//!   mastering, its INTx interrupt and MSI-X table.
//! - [`qnx`]: the QNX `vdev shmem` personality (PCI 1C05:0001 or an MMIO factory page): attach
//!   or find named regions, notify peers by client-index mask, read "notified by" and
//!   active-client bits, detach; [`qnx::RegionEvents`] collects them from the interrupt.
//! - [`ivshmem`]: the QEMU personality (PCI 1af4:1110): peer ID, shared memory (BAR2),
//!   doorbells, INTx or MSI-X interrupts counted in [`ivshmem::DoorbellEvents`].
//! - [`memory`]: bounds-checked volatile access to shared memory, [`mailbox`]: a one-slot
//!   message box in it (sequence number, length, FNV-1a checksum, payload).
//! - [`exchange`]: roles and payload patterns of the two-partition exchange guests.
//! - [`wait`]: sleep until a condition holds, with a timeout from the platform timer that
//!   ends the run with `FAIL`.
//!
//! Design principles:
//! - One crate for both architectures. What differs (the runtime, platform discovery from the
//!   device tree or the boot information, the interrupt controller, PCI configuration access,
//!   the timer) lives in `arch` (one module per architecture with the same items, chosen by
//!   `cfg` in one place); the personalities, the mailbox and the waits are shared, so both
//!   architectures put the same bytes on the wire.
//! - A program written against this crate alone ([`entry!`], [`println!`], [`exit_pass`],
//!   [`init_interrupts`], ...) builds for both architectures unchanged.
//! - Shared memory is never turned into Rust references: another partition writes it at any
//!   time, so every access is volatile through [`memory::SharedMemory`]. Device registers are
//!   read and written one aligned volatile access at a time (one `ldr`/`str` or `mov`).
#![cfg_attr(not(test), no_std)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        reason = "tests fail loudly"
    )
)]

mod arch;
pub mod exchange;
pub mod ivshmem;
pub mod mailbox;
pub mod memory;
pub mod pci;
pub mod qnx;
pub mod wait;

/// The architecture's guest runtime (`bulkhead-guest` on aarch64, `bulkhead-guest-x86` on
/// x86_64), for what only one architecture has.
pub use arch::runtime;
pub use arch::{Interrupt, InterruptError};
pub use arch::{exit_fail, exit_fail_with, exit_pass};

/// Names the guest's `fn main() -> !` (the runtime's `entry!`).
pub use arch::runtime::entry;
/// Prints a line on the partition's console (the runtime's `println!`).
pub use arch::runtime::println;

/// The partition's name: aarch64 `NAME` from the device tree's `model = "bulkhead,NAME"`
/// (elsewhere, e.g. plain QEMU with `-append NAME`, the first word of `/chosen/bootargs`);
/// x86_64 the boot information's name.
pub fn partition_name() -> Option<&'static str> {
    arch::partition_name()
}

/// Whether `/chosen/bootargs` holds `option` as a word after the first (aarch64 plain-QEMU
/// test knobs such as `msix`; a Bulkhead partition's bootargs come from its configuration).
/// Always false on x86_64.
pub fn boot_option(option: &str) -> bool {
    arch::boot_option(option)
}

/// The value of `KEY=VALUE` on the partition's command line (the VM file's `cmdline`; aarch64
/// `/chosen/bootargs`, x86_64 the boot information), the first if given twice.
pub fn command_line_value(key: &str) -> Option<&'static str> {
    arch::command_line()?
        .split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
}

/// Sets up this vCPU's interrupt controller (aarch64 the GIC; x86_64 the IDT and the x2APIC)
/// and the [`wait`] timer. Interrupts stay masked: turn them on with [`enable_interrupts`]
/// once the handlers' state is ready.
pub fn init_interrupts() -> Result<(), InterruptError> {
    arch::init_interrupts()?;
    wait::init()
}

/// This vCPU's VM exits so far, where the hypervisor tells (x86_64: Bulkhead's MSR
/// 0x4000_0100; aarch64: `None`). Read around a quiet exchange, it gives the exits a doorbell
/// round trip costs.
pub fn vm_exits() -> Option<u64> {
    arch::vm_exits()
}

/// Unmasks interrupts on this vCPU.
pub fn enable_interrupts() {
    arch::enable_interrupts()
}

/// 32-bit FNV-1a of `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u32 {
    const OFFSET_BASIS: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u32::from(byte)).wrapping_mul(PRIME)
    })
}

/// The index of the only set bit of `mask`, if exactly one is set (a client-index mask that
/// names one client).
pub fn single_bit(mask: u32) -> Option<u32> {
    (mask.count_ones() == 1).then(|| mask.trailing_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_values() {
        assert_eq!(fnv1a(b""), 0x811c_9dc5);
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn single_bit_names_one_client() {
        assert_eq!(single_bit(0), None);
        assert_eq!(single_bit(0b100), Some(2));
        assert_eq!(single_bit(0b101), None);
    }
}
