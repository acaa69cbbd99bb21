//! Placement of attached regions in a QNX shmem device's guest-physical window: a control page right before the data pages, first fit, data 2 MiB-aligned when big.

use crate::addr::PAGE_SIZE;

/// Data of regions at least this big starts 2 MiB-aligned (so stage 2 can use blocks).
const BLOCK: u64 = 2 << 20;

/// Finds room for a control page plus `size` data bytes in a window of `window_size` bytes
/// whose occupied spans (`[start, end)` offsets, sorted by start, disjoint) are `occupied`.
/// Returns the control page's offset; the data follows one page later.
pub(crate) fn place(
    occupied: impl IntoIterator<Item = (u64, u64)>,
    size: u64,
    window_size: u64,
) -> Option<u64> {
    let align = if size >= BLOCK { BLOCK } else { PAGE_SIZE };
    let mut cursor = 0u64;
    for (start, end) in occupied
        .into_iter()
        .chain(core::iter::once((window_size, window_size)))
    {
        if let Some(control) = fit(cursor, start, size, align) {
            return Some(control);
        }
        cursor = cursor.max(end);
    }
    None
}

/// The control page offset of a control page + `size` bytes (data aligned to `align`) in
/// the gap `[gap_start, gap_end)`, if it fits.
fn fit(gap_start: u64, gap_end: u64, size: u64, align: u64) -> Option<u64> {
    let data = gap_start.checked_add(PAGE_SIZE)?.checked_add(align - 1)? & !(align - 1);
    let end = data.checked_add(size)?;
    if end <= gap_end {
        data.checked_sub(PAGE_SIZE)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::place;

    const MIB: u64 = 1 << 20;

    #[test]
    fn first_fit_with_big_regions_block_aligned() {
        assert_eq!(place([], 0x4000, 64 * MIB), Some(0));
        assert_eq!(place([], 2 * MIB, 64 * MIB), Some(2 * MIB - 0x1000));
        // A small region fills the hole before an aligned big one.
        let occupied = [(2 * MIB - 0x1000, 4 * MIB)];
        assert_eq!(place(occupied, 0x1000, 64 * MIB), Some(0));
        assert_eq!(place(occupied, 2 * MIB, 64 * MIB), Some(6 * MIB - 0x1000));
        let occupied = [(0, 0x5000), (0x5000, 0x8000)];
        assert_eq!(place(occupied, 0x1000, 64 * MIB), Some(0x8000));
        // A freed hole is reused.
        let occupied = [(0, 0x2000), (0x5000, 0x8000)];
        assert_eq!(place(occupied, 0x1000, 64 * MIB), Some(0x2000));
        assert_eq!(place(occupied, 0x3000, 64 * MIB), Some(0x8000));
    }

    #[test]
    fn full_window_and_huge_sizes() {
        assert_eq!(place([], 64 * MIB, 64 * MIB), None);
        assert_eq!(place([], 62 * MIB, 64 * MIB), Some(2 * MIB - 0x1000));
        assert_eq!(place([], u64::MAX, 64 * MIB), None);
        assert_eq!(place([(0, 64 * MIB)], 0x1000, 64 * MIB), None);
    }
}
