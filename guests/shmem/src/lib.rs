//! `bulkhead-shmem`: the guest side of Bulkhead's shared memory, for bare-metal test guests.
//!
//! - [`pci`]: the virtual host bridge's configuration space (ECAM): find a device by vendor and
//!   device ID, read its BARs (firmware assigned them), enable decoding and bus mastering, its
//!   INTx INTID and MSI-X table.
//! - [`qnx`]: the QNX `vdev shmem` personality (PCI 1C05:0001 or an MMIO factory page): attach
//!   or find named regions, notify peers by client-index mask, read "notified by" and
//!   active-client bits, detach; [`qnx::RegionEvents`] collects them from the interrupt.
//! - [`ivshmem`]: the QEMU personality (PCI 1af4:1110): peer ID, shared memory (BAR2),
//!   doorbells, INTx or MSI-X interrupts counted in [`ivshmem::DoorbellEvents`].
//! - [`memory`]: bounds-checked volatile access to shared memory, [`mailbox`]: a one-slot
//!   message box in it (sequence number, length, FNV-1a checksum, payload).
//! - [`exchange`]: roles and payload patterns of the two-partition exchange guests.
//! - [`wait`]: WFI until a condition holds, with a timeout from the virtual timer that ends the
//!   run with `FAIL`.
//!
//! Shared memory is never turned into Rust references: another partition writes it at any
//! time, so every access is volatile through [`memory::SharedMemory`].

#![no_std]

pub mod exchange;
pub mod ivshmem;
pub mod mailbox;
pub mod memory;
pub mod pci;
pub mod qnx;
pub mod wait;

use bulkhead_guest::platform;

/// The partition's name: `NAME` from the device tree's `model = "bulkhead,NAME"`. Elsewhere
/// (plain QEMU, `-append NAME`): the first word of `/chosen/bootargs`.
pub fn partition_name() -> Option<&'static str> {
    if let Some(name) = platform::model().and_then(|model| model.strip_prefix("bulkhead,")) {
        return Some(name);
    }
    bootargs().and_then(|args| args.split_whitespace().next())
}

/// Whether `/chosen/bootargs` holds `option` as a word after the first (plain-QEMU test knobs
/// such as `msix`; a Bulkhead partition's bootargs come from its configuration).
pub fn boot_option(option: &str) -> bool {
    bootargs().is_some_and(|args| args.split_whitespace().skip(1).any(|word| word == option))
}

fn bootargs() -> Option<&'static str> {
    let tree = platform::device_tree()?;
    tree.find_node("/chosen")?.property("bootargs")?.as_str()
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
