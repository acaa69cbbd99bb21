//! Shared memory as a guest-physical range read and written only through volatile accesses,
//! bounds-checked, with the barriers a producer/consumer protocol between partitions needs.

use core::fmt;
use core::sync::atomic::{Ordering, fence};

/// An access outside the range, or a misaligned word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfBounds {
    /// Byte offset asked for.
    pub offset: usize,
    /// Bytes asked for.
    pub len: usize,
}

impl fmt::Display for OutOfBounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} bytes at offset {:#x} are outside shared memory or misaligned",
            self.len, self.offset
        )
    }
}

/// A range of shared memory (identity-mapped: address = guest-physical address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedMemory {
    base: usize,
    len: usize,
}

impl SharedMemory {
    /// The `len` bytes at guest-physical `base`.
    ///
    /// # Safety
    /// The range must stay mapped (Normal memory, identity map) while this value or a copy is
    /// used, and no Rust object may live in it: other partitions and devices write it at will.
    pub const unsafe fn new(base: usize, len: usize) -> Self {
        Self { base, len }
    }

    /// Guest-physical address of the first byte.
    pub fn address(&self) -> u64 {
        self.base as u64
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Raw pointer to the first byte (for code that does its own volatile accesses).
    pub fn as_ptr(&self) -> *mut u8 {
        self.base as *mut u8
    }

    /// The address of `len` bytes at `offset`, if inside and `align`-aligned.
    fn checked(&self, offset: usize, len: usize, align: usize) -> Result<usize, OutOfBounds> {
        let error = OutOfBounds { offset, len };
        let end = offset.checked_add(len).ok_or(error)?;
        if end > self.len || !offset.is_multiple_of(align) {
            return Err(error);
        }
        Ok(self.base + offset)
    }

    /// Reads the 32-bit word at `offset` (4-byte aligned).
    pub fn read_u32(&self, offset: usize) -> Result<u32, OutOfBounds> {
        let address = self.checked(offset, 4, 4)?;
        // SAFETY: inside the mapped range `new` was given, aligned; volatile because other
        // partitions write it.
        Ok(unsafe { core::ptr::read_volatile(address as *const u32) })
    }

    /// Writes the 32-bit word at `offset` (4-byte aligned).
    pub fn write_u32(&self, offset: usize, value: u32) -> Result<(), OutOfBounds> {
        let address = self.checked(offset, 4, 4)?;
        // SAFETY: inside the mapped range, aligned, and no Rust object lives there.
        unsafe { core::ptr::write_volatile(address as *mut u32, value) };
        Ok(())
    }

    /// Reads `buffer.len()` bytes from `offset`.
    pub fn read_bytes(&self, offset: usize, buffer: &mut [u8]) -> Result<(), OutOfBounds> {
        let address = self.checked(offset, buffer.len(), 1)?;
        for (index, byte) in buffer.iter_mut().enumerate() {
            // SAFETY: `address + index` lies inside the checked range.
            *byte = unsafe { core::ptr::read_volatile((address + index) as *const u8) };
        }
        Ok(())
    }

    /// Writes `bytes` at `offset`.
    pub fn write_bytes(&self, offset: usize, bytes: &[u8]) -> Result<(), OutOfBounds> {
        let address = self.checked(offset, bytes.len(), 1)?;
        for (index, &byte) in bytes.iter().enumerate() {
            // SAFETY: `address + index` lies inside the checked range; no Rust object there.
            unsafe { core::ptr::write_volatile((address + index) as *mut u8, byte) };
        }
        Ok(())
    }

    /// Writes the word at `offset` after every earlier write of this vCPU (a release store:
    /// a reader that sees it with [`load_acquire_u32`](Self::load_acquire_u32) sees them too).
    pub fn store_release_u32(&self, offset: usize, value: u32) -> Result<(), OutOfBounds> {
        fence(Ordering::SeqCst);
        self.write_u32(offset, value)
    }

    /// Reads the word at `offset` before any later read of this vCPU (an acquire load).
    pub fn load_acquire_u32(&self, offset: usize) -> Result<u32, OutOfBounds> {
        let value = self.read_u32(offset)?;
        fence(Ordering::SeqCst);
        Ok(value)
    }
}

/// Completes this vCPU's earlier memory writes (aarch64 DSB ISH, x86_64 MFENCE) before what
/// follows, typically a doorbell or notify register write that makes another partition look at
/// shared memory.
pub fn complete_writes() {
    crate::arch::complete_writes()
}
