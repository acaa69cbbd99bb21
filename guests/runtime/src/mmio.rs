//! Volatile 32-bit accesses to device registers.

/// Reads the 32-bit device register at `address`.
///
/// # Safety
/// `address` must be a 4-byte aligned device register that is mapped (the identity map
/// covers 0..4 GiB and the shared-memory windows) and safe to read: reading it may have side
/// effects on the device.
pub unsafe fn read32(address: usize) -> u32 {
    // SAFETY: the caller guarantees a mapped, aligned, readable register.
    unsafe { core::ptr::read_volatile(address as *const u32) }
}

/// Writes the 32-bit device register at `address`.
///
/// # Safety
/// `address` must be a 4-byte aligned device register that is mapped and whose write has no
/// effect on memory the program uses.
pub unsafe fn write32(address: usize, value: u32) {
    // SAFETY: the caller guarantees a mapped, aligned register that is not program memory.
    unsafe { core::ptr::write_volatile(address as *mut u32, value) }
}
