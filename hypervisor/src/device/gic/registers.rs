//! The per-interrupt register arrays shared by GICD and the GICv3 SGI frame; access splitting.
//!
//! The arrays are IGROUPR, IS/ICENABLER, IS/ICPENDR, IS/ICACTIVER, IPRIORITYR, ITARGETSR and
//! ICFGR.
//!
//! Every register is handled as 32-bit words: a read assembles words, a write hands each
//! word a value and a mask of the bits the access covers, so byte writes to IPRIORITYR or
//! ITARGETSR and 64-bit accesses to GICD_IROUTER or GICR_TYPER need no special cases.

use super::Wakeups;
use super::state::State;
use crate::exit::AccessWidth;

/// Which per-interrupt array a register offset falls in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Array {
    /// IGROUPR: one bit, group 1.
    Group,
    /// ISENABLER: one bit, write 1 to enable.
    SetEnable,
    /// ICENABLER: one bit, write 1 to disable.
    ClearEnable,
    /// ISPENDR: one bit, write 1 to pend.
    SetPending,
    /// ICPENDR: one bit, write 1 to clear pending.
    ClearPending,
    /// ISACTIVER: one bit, write 1 to activate.
    SetActive,
    /// ICACTIVER: one bit, write 1 to deactivate.
    ClearActive,
    /// IPRIORITYR: one byte.
    Priority,
    /// ITARGETSR (GICv2): one byte, a vCPU mask.
    Targets,
    /// ICFGR: two bits, bit 1 = edge-triggered.
    Config,
}

impl Array {
    /// The array a 4-aligned `offset` (distributor layout, also the SGI frame's) falls in,
    /// and the first INTID its word covers.
    pub(super) fn at(offset: u64) -> Option<(Array, u32)> {
        let (array, base) = match offset {
            0x080..0x100 => (Array::Group, 0x080),
            0x100..0x180 => (Array::SetEnable, 0x100),
            0x180..0x200 => (Array::ClearEnable, 0x180),
            0x200..0x280 => (Array::SetPending, 0x200),
            0x280..0x300 => (Array::ClearPending, 0x280),
            0x300..0x380 => (Array::SetActive, 0x300),
            0x380..0x400 => (Array::ClearActive, 0x380),
            0x400..0x800 => (Array::Priority, 0x400),
            0x800..0xc00 => (Array::Targets, 0x800),
            0xc00..0xd00 => (Array::Config, 0xc00),
            _ => return None,
        };
        let first = (offset - base) * 8 / u64::from(array.bits_per_interrupt());
        Some((array, u32::try_from(first).ok()?))
    }

    /// Width of one interrupt's field.
    pub(super) const fn bits_per_interrupt(self) -> u32 {
        match self {
            Array::Priority | Array::Targets => 8,
            Array::Config => 2,
            _ => 1,
        }
    }
}

/// One word of an array: the fields of the interrupts from `first`, as vCPU `bank` sees
/// them; absent interrupts read as zero.
pub(super) fn read_array(state: &State, array: Array, first: u32, bank: usize) -> u32 {
    let width = array.bits_per_interrupt();
    let mut word = 0u32;
    for index in 0..32 / width {
        let Some(intid) = first.checked_add(index) else {
            break;
        };
        let Some(irq) = state.irq(bank, intid) else {
            continue;
        };
        let field = match array {
            Array::Group => u32::from(irq.group1),
            Array::SetEnable | Array::ClearEnable => u32::from(irq.enabled),
            Array::SetPending | Array::ClearPending => u32::from(irq.visible_pending()),
            Array::SetActive | Array::ClearActive => u32::from(irq.visible_active()),
            Array::Priority => u32::from(irq.priority),
            Array::Targets => u32::from(state.targets(bank, intid)),
            Array::Config => u32::from(irq.edge) << 1,
        };
        word |= field << (index * width);
    }
    word
}

/// A write of `value` to the bits of one array word that `mask` covers, by vCPU
/// `accessor`, to the interrupts from `first` as vCPU `bank` sees them.
pub(super) fn write_array(
    state: &mut State,
    array: Array,
    first: u32,
    bank: usize,
    accessor: usize,
    value: u32,
    mask: u32,
) -> Wakeups {
    let width = array.bits_per_interrupt();
    let field_mask = u32::MAX >> (32 - width);
    let mut wake = Wakeups::NONE;
    for index in 0..32 / width {
        let shift = index * width;
        if (mask >> shift) & field_mask == 0 {
            continue;
        }
        let Some(intid) = first.checked_add(index) else {
            break;
        };
        let field = (value >> shift) & field_mask;
        let set = field != 0;
        wake |= match array {
            Array::Group => state.set_group(bank, intid, set),
            Array::SetEnable if set => state.set_enabled(bank, intid, true),
            Array::ClearEnable if set => state.set_enabled(bank, intid, false),
            // GICv2 SGIs are pended and cleared only through SPENDSGIR / CPENDSGIR.
            Array::SetPending if set && !state.is_v2_sgi(intid) => {
                state.set_pending(bank, intid, accessor)
            }
            Array::ClearPending if set && !state.is_v2_sgi(intid) => {
                state.clear_pending(bank, intid)
            }
            Array::SetActive if set => state.set_active(bank, intid, true, accessor),
            Array::ClearActive if set => state.set_active(bank, intid, false, accessor),
            Array::Priority => state.set_priority(bank, intid, field as u8),
            Array::Targets => state.set_targets(intid, field as u8),
            Array::Config => state.set_edge(bank, intid, field & 0b10 != 0),
            _ => Wakeups::NONE,
        };
    }
    wake
}

/// A guest load of `width` at `offset`, assembled from the 32-bit words `word` reads.
/// Unaligned accesses read as zero.
pub(super) fn read_access(
    offset: u64,
    width: AccessWidth,
    mut word: impl FnMut(u64) -> u32,
) -> u64 {
    if !offset.is_multiple_of(width.bytes()) {
        return 0;
    }
    match width {
        AccessWidth::Double => {
            u64::from(word(offset)) | (u64::from(word(offset.wrapping_add(4))) << 32)
        }
        _ => {
            let lane = (offset & 3) * 8;
            (u64::from(word(offset & !3)) >> lane) & width.mask()
        }
    }
}

/// A guest store of `width` at `offset`, handed to `word` as (word offset, value, mask of
/// the bits written). Unaligned accesses are ignored.
pub(super) fn write_access(
    offset: u64,
    width: AccessWidth,
    value: u64,
    mut word: impl FnMut(u64, u32, u32),
) {
    if !offset.is_multiple_of(width.bytes()) {
        return;
    }
    match width {
        AccessWidth::Double => {
            word(offset, value as u32, u32::MAX);
            word(offset.wrapping_add(4), (value >> 32) as u32, u32::MAX);
        }
        _ => {
            let lane = (offset & 3) * 8;
            let mask = (width.mask() << lane) as u32;
            word(offset & !3, ((value & width.mask()) << lane) as u32, mask);
        }
    }
}

/// Merges a masked write into a register value.
pub(super) const fn merge(old: u32, value: u32, mask: u32) -> u32 {
    (old & !mask) | (value & mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn array_offsets() {
        assert_eq!(Array::at(0x080), Some((Array::Group, 0)));
        assert_eq!(Array::at(0x104), Some((Array::SetEnable, 32)));
        assert_eq!(Array::at(0x420), Some((Array::Priority, 32)));
        assert_eq!(Array::at(0x7fc), Some((Array::Priority, 1020)));
        assert_eq!(Array::at(0x808), Some((Array::Targets, 8)));
        assert_eq!(Array::at(0xc04), Some((Array::Config, 16)));
        assert_eq!(Array::at(0xcfc), Some((Array::Config, 1008)));
        assert_eq!(Array::at(0xd00), None);
        assert_eq!(Array::at(0x07c), None);
    }

    #[test]
    fn width_splitting() {
        let words = |offset: u64| (offset as u32) << 8 | 0xaa;
        assert_eq!(read_access(0x10, AccessWidth::Word, words), 0x10aa);
        assert_eq!(read_access(0x11, AccessWidth::Byte, words), 0x10);
        assert_eq!(read_access(0x12, AccessWidth::Half, words), 0);
        assert_eq!(read_access(0x13, AccessWidth::Half, words), 0, "unaligned");
        assert_eq!(
            read_access(0x10, AccessWidth::Double, words),
            0x14aa_0000_10aa
        );
        let mut seen = Vec::new();
        write_access(0x22, AccessWidth::Byte, 0x1ff, |o, v, m| {
            seen.push((o, v, m))
        });
        write_access(0x22, AccessWidth::Half, 0xbeef, |o, v, m| {
            seen.push((o, v, m))
        });
        write_access(0x08, AccessWidth::Double, 0x1_0000_0002, |o, v, m| {
            seen.push((o, v, m))
        });
        write_access(0x09, AccessWidth::Word, 1, |o, v, m| seen.push((o, v, m)));
        assert_eq!(
            seen,
            [
                (0x20, 0x00ff_0000, 0x00ff_0000),
                (0x20, 0xbeef_0000, 0xffff_0000),
                (0x08, 2, u32::MAX),
                (0x0c, 1, u32::MAX),
            ]
        );
        assert_eq!(merge(0x1234, 0xff00, 0x0f00), 0x1f34);
    }
}
