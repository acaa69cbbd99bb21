//! Port I/O: `in` and `out` of bytes and dwords.

use core::arch::asm;

/// Reads a byte from `port`.
///
/// # Safety
/// The port must belong to a device of the partition whose read has no effect on memory the
/// program uses (reads may change the device's state).
pub unsafe fn in8(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the caller vouches for the port; IN touches no memory.
    unsafe { asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack)) };
    value
}

/// Writes a byte to `port`.
///
/// # Safety
/// As for [`in8`], for a write.
pub unsafe fn out8(port: u16, value: u8) {
    // SAFETY: the caller vouches for the port; OUT touches no memory.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack)) };
}

/// Reads a dword from `port`.
///
/// # Safety
/// As for [`in8`].
pub unsafe fn in32(port: u16) -> u32 {
    let value: u32;
    // SAFETY: the caller vouches for the port; IN touches no memory.
    unsafe { asm!("in eax, dx", in("dx") port, out("eax") value, options(nomem, nostack)) };
    value
}

/// Writes a dword to `port`.
///
/// # Safety
/// As for [`in8`], for a write.
pub unsafe fn out32(port: u16, value: u32) {
    // SAFETY: the caller vouches for the port; OUT touches no memory.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack)) };
}
