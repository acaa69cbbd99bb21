//! Splits an access of any width and alignment into the 32-bit registers it touches.
//!
//! Configuration space, the MSI-X table and the ivshmem register block are arrays of 32-bit
//! registers; a guest may still load a byte, store a half-word across two registers or use a
//! 64-bit access. These helpers turn any of those into per-register reads and byte-masked
//! writes so each register file only handles whole registers.

use crate::exit::AccessWidth;

/// The register indices (`offset / 4`) an access touches, first to last.
fn registers(offset: u64, width: AccessWidth) -> core::ops::RangeInclusive<u64> {
    let last_byte = offset.saturating_add(width.bytes() - 1);
    (offset / 4)..=(last_byte / 4)
}

/// Composes a load of `width` at byte `offset` from `register(index)`.
#[inline]
pub(crate) fn read(offset: u64, width: AccessWidth, mut register: impl FnMut(u64) -> u32) -> u64 {
    // The access guests make: one aligned register.
    if width == AccessWidth::Word && offset.is_multiple_of(4) {
        return u64::from(register(offset / 4));
    }
    let mut value = 0u64;
    for index in registers(offset, width) {
        let word = u64::from(register(index));
        let start = index.saturating_mul(4);
        // The register starts at most 7 bytes after or 3 bytes before the access.
        value |= if start >= offset {
            word << (8 * (start - offset))
        } else {
            word >> (8 * (offset - start))
        };
    }
    value & width.mask()
}

/// Splits a store of `value` (`width` at byte `offset`) into `register(index, value, mask)`
/// calls: only the bits set in `mask` are written.
#[inline]
pub(crate) fn write(
    offset: u64,
    width: AccessWidth,
    value: u64,
    mut register: impl FnMut(u64, u32, u32),
) {
    // The access guests make: one aligned register, written whole.
    if width == AccessWidth::Word && offset.is_multiple_of(4) {
        register(offset / 4, value as u32, u32::MAX);
        return;
    }
    let value = value & width.mask();
    let mask = width.mask();
    for index in registers(offset, width) {
        let start = index.saturating_mul(4);
        let (bits, enables) = if start >= offset {
            let shift = 8 * (start - offset);
            (value >> shift, mask >> shift)
        } else {
            let shift = 8 * (offset - start);
            (value << shift, mask << shift)
        };
        register(index, bits as u32, enables as u32);
    }
}

/// `old` with the bits of `mask` replaced by those of `value`.
pub(crate) const fn merge(old: u32, value: u32, mask: u32) -> u32 {
    (old & !mask) | (value & mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    const WORDS: [u32; 3] = [0x4433_2211, 0x8877_6655, 0xccbb_aa99];

    fn load(offset: u64, width: AccessWidth) -> u64 {
        read(offset, width, |index| WORDS[index as usize])
    }

    #[test]
    fn reads_compose_little_endian() {
        assert_eq!(load(0, AccessWidth::Word), 0x4433_2211);
        assert_eq!(load(1, AccessWidth::Byte), 0x22);
        assert_eq!(load(2, AccessWidth::Half), 0x4433);
        assert_eq!(load(3, AccessWidth::Half), 0x5544);
        assert_eq!(load(2, AccessWidth::Word), 0x6655_4433);
        assert_eq!(load(0, AccessWidth::Double), 0x8877_6655_4433_2211);
        assert_eq!(load(3, AccessWidth::Double), 0xbbaa_9988_7766_5544);
    }

    #[test]
    fn writes_split_with_byte_masks() {
        let mut calls = Vec::new();
        write(3, AccessWidth::Half, 0xbeef, |i, v, m| {
            calls.push((i, v, m))
        });
        assert_eq!(calls, [(0, 0xef00_0000, 0xff00_0000), (1, 0xbe, 0xff)]);
        calls.clear();
        write(4, AccessWidth::Double, 0x1122_3344_5566_7788, |i, v, m| {
            calls.push((i, v, m))
        });
        assert_eq!(
            calls,
            [(1, 0x5566_7788, u32::MAX), (2, 0x1122_3344, u32::MAX)]
        );
        assert_eq!(merge(0xaaaa_aaaa, 0x1234_5678, 0x0000_ff00), 0xaaaa_56aa);
    }

    #[test]
    fn huge_offsets_do_not_overflow() {
        assert_eq!(read(u64::MAX, AccessWidth::Double, |_| 0xffff_ffff), 0xff);
        write(u64::MAX - 1, AccessWidth::Double, u64::MAX, |_, _, _| {});
    }
}
