//! The boot information page Bulkhead writes into guest RAM (its address arrives in RDI):
//! `0x00` magic `BULKHEAD` (u64), `0x08` RAM bytes (u64), `0x10` vCPU index (u64), `0x18`
//! name length (u64, at most 64), `0x20` the partition's name (UTF-8, no NUL).

use core::sync::atomic::{AtomicU64, Ordering};

/// The magic value at offset 0.
pub const MAGIC: u64 = u64::from_le_bytes(*b"BULKHEAD");
const NAME_CAPACITY: usize = 64;

static ADDRESS: AtomicU64 = AtomicU64::new(0);

pub(crate) fn set_address(address: u64) {
    ADDRESS.store(address, Ordering::Relaxed);
}

fn word(index: u64) -> Option<u64> {
    let address = ADDRESS.load(Ordering::Relaxed);
    if address == 0 || !address.is_multiple_of(8) {
        return None;
    }
    let pointer = address.checked_add(index * 8)? as *const u64;
    // SAFETY: the hypervisor passed this address of a page in our identity-mapped RAM; the
    // reads stay inside its first 0x60 bytes.
    Some(unsafe { pointer.read_volatile() })
}

/// Whether the hypervisor passed boot information.
pub fn present() -> bool {
    word(0) == Some(MAGIC)
}

/// The partition's RAM in bytes.
pub fn ram_size() -> Option<u64> {
    present().then(|| word(1)).flatten()
}

/// This vCPU's index in its partition.
pub fn vcpu_index() -> Option<u64> {
    present().then(|| word(2)).flatten()
}

/// The partition's name (`system NAME`), or `"?"`.
pub fn name() -> &'static str {
    let (Some(length), Some(address)) = (
        present().then(|| word(3)).flatten(),
        Some(ADDRESS.load(Ordering::Relaxed)),
    ) else {
        return "?";
    };
    let length = usize::try_from(length).unwrap_or(0).min(NAME_CAPACITY);
    // SAFETY: the name lies in the boot information page (offset 0x20, at most 64 bytes),
    // which the hypervisor wrote before entry and nobody changes afterwards.
    let bytes = unsafe { core::slice::from_raw_parts((address + 0x20) as *const u8, length) };
    core::str::from_utf8(bytes).unwrap_or("?")
}
