//! Volatile accesses to device registers. Each compiles to one plain `mov` (what the
//! hypervisor's MMIO decoder expects; never string instructions on registers).

/// Reads the 32-bit device register at `address`.
///
/// # Safety
/// `address` must be a 4-byte aligned device register inside the identity map (0..1 TiB) that
/// is safe to read: reading it may have side effects on the device.
pub unsafe fn read32(address: usize) -> u32 {
    // SAFETY: the caller guarantees a mapped, aligned, readable register.
    unsafe { core::ptr::read_volatile(address as *const u32) }
}

/// Reads the 64-bit device register at `address`.
///
/// # Safety
/// As for [`read32`], 8-byte aligned.
pub unsafe fn read64(address: usize) -> u64 {
    // SAFETY: the caller guarantees a mapped, aligned, readable register.
    unsafe { core::ptr::read_volatile(address as *const u64) }
}

/// Writes the 32-bit device register at `address`.
///
/// # Safety
/// `address` must be a 4-byte aligned device register inside the identity map whose write has
/// no effect on memory the program uses.
pub unsafe fn write32(address: usize, value: u32) {
    // SAFETY: the caller guarantees a mapped, aligned register that is not program memory.
    unsafe { core::ptr::write_volatile(address as *mut u32, value) }
}
