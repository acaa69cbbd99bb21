//! The GICv3 redistributors as the guest sees them: two 64 KiB frames per vCPU, no LPIs.
//!
//! RD_base holds GICR_CTLR, GICR_TYPER, GICR_WAKER and the IDs; SGI_base holds that vCPU's
//! SGI and PPI registers, laid out like the distributor's.

use super::Wakeups;
use super::distributor::{IIDR_VALUE, id_register};
use super::registers::{Array, merge, read_array, write_array};
use super::state::{PRIVATE_INTERRUPTS, State};
use crate::psci;

/// Bytes per vCPU: the RD_base frame and the SGI_base frame, 64 KiB each.
pub(super) const STRIDE: u64 = 0x2_0000;
/// Offset of the SGI_base frame inside a vCPU's redistributor.
const SGI_FRAME: u64 = 0x1_0000;

const IIDR: u64 = 0x0004;
const TYPER_LOW: u64 = 0x0008;
const TYPER_HIGH: u64 = 0x000c;
const WAKER: u64 = 0x0014;
const ID_REGISTERS: u64 = 0xffd0;

/// GICR_TYPER.Last: the last redistributor of the region.
const TYPER_LAST: u32 = 1 << 4;
/// GICR_WAKER.ProcessorSleep (RW) and ChildrenAsleep (RO, follows ProcessorSleep at once).
const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;

/// GICR_PIDR0 names a redistributor; the rest matches the distributor.
const IDS: [u32; 12] = [0x44, 0, 0, 0, 0x93, 0xb4, 0x3b, 0, 0x0d, 0xf0, 0x05, 0xb1];

/// The redistributor (its vCPU) and the offset inside it that `offset` names.
fn split(offset: u64) -> (usize, u64) {
    (
        usize::try_from(offset / STRIDE).unwrap_or(usize::MAX),
        offset % STRIDE,
    )
}

/// GICR_TYPER.Affinity_Value: the vCPU's MPIDR as Aff3.Aff2.Aff1.Aff0.
fn affinity(vcpu: usize) -> u32 {
    let mpidr = psci::virtual_mpidr(vcpu);
    (((mpidr >> 32) & 0xff) << 24 | (mpidr & 0x00ff_ffff)) as u32
}

/// Reads the redistributor word at 4-aligned `offset` (all frames, vCPU 0's first).
pub(super) fn read_word(state: &State, offset: u64) -> u32 {
    let (vcpu, offset) = split(offset);
    let Some(cpu) = state.vcpus.get(vcpu) else {
        return 0;
    };
    match offset {
        IIDR => IIDR_VALUE,
        TYPER_LOW => {
            let last = if vcpu.saturating_add(1) == state.vcpu_count() {
                TYPER_LAST
            } else {
                0
            };
            // Processor_Number in bits 23:8; no LPIs, no DirectLPI, no VLPIs.
            ((vcpu as u32 & 0xffff) << 8) | last
        }
        TYPER_HIGH => affinity(vcpu),
        WAKER if cpu.processor_sleep => WAKER_PROCESSOR_SLEEP | WAKER_CHILDREN_ASLEEP,
        ID_REGISTERS..SGI_FRAME => id_register(&IDS, ID_REGISTERS, offset).unwrap_or(0),
        SGI_FRAME.. => match sgi_array(offset - SGI_FRAME) {
            Some((array, first)) => read_array(state, array, first, vcpu),
            None => 0,
        },
        // GICR_CTLR (RWP, UWP never set), GICR_STATUSR, GICR_PROPBASER/PENDBASER (no LPIs).
        _ => 0,
    }
}

/// The SGI frame's per-interrupt arrays: the distributor's layout, INTIDs 0-31 only.
fn sgi_array(offset: u64) -> Option<(Array, u32)> {
    Array::at(offset)
        .filter(|&(array, first)| first < PRIVATE_INTERRUPTS && array != Array::Targets)
}

/// Writes `value` to the bits `mask` covers of the redistributor word at 4-aligned
/// `offset`, by vCPU `accessor`.
pub(super) fn write_word(
    state: &mut State,
    accessor: usize,
    offset: u64,
    value: u32,
    mask: u32,
) -> Wakeups {
    let (vcpu, offset) = split(offset);
    match offset {
        WAKER => {
            if let Some(cpu) = state.vcpus.get_mut(vcpu) {
                let old = u32::from(cpu.processor_sleep) * WAKER_PROCESSOR_SLEEP;
                cpu.processor_sleep = merge(old, value, mask) & WAKER_PROCESSOR_SLEEP != 0;
            }
            Wakeups::NONE
        }
        SGI_FRAME.. => match sgi_array(offset - SGI_FRAME) {
            Some((array, first)) => write_array(state, array, first, vcpu, accessor, value, mask),
            None => Wakeups::NONE,
        },
        _ => Wakeups::NONE,
    }
}
