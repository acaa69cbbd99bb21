//! The distributor frame (GICD) as the guest sees it, for GICv3 and GICv2.
//!
//! GICv3: affinity routing, a single security state (GICD_CTLR.DS=1), INTIDs 0-31 in the
//! redistributors. GICv2: banked per-CPU registers for INTIDs 0-31, GICD_ITARGETSR, GICD_SGIR.

use super::registers::{Array, merge, read_array, write_array};
use super::state::{PRIVATE_INTERRUPTS, State};
use super::{GicVersion, Wakeups};

/// Size of the distributor frame.
pub(super) const FRAME_SIZE: u64 = 0x1_0000;

const CTLR: u64 = 0x0000;
const TYPER: u64 = 0x0004;
/// GICD_SETSPI_NSR / GICD_CLRSPI_NSR (GICv3 message-based SPIs: an MSI writes the INTID).
const SETSPI_NSR: u64 = 0x0040;
const CLRSPI_NSR: u64 = 0x0048;
/// GICD_TYPER.MBIS: message-based SPIs supported.
const TYPER_MBIS: u32 = 1 << 16;
const IIDR: u64 = 0x0008;
const SGIR: u64 = 0x0f00;
const CPENDSGIR: u64 = 0x0f10;
const SPENDSGIR: u64 = 0x0f20;
const SGI_PENDING_END: u64 = 0x0f30;
const IROUTER: u64 = 0x6000;
const IROUTER_END: u64 = 0x8000;
/// Identification registers of GICv3 (and a GICv2 copy, for software that looks there).
const ID_REGISTERS: u64 = 0xffd0;
/// Identification registers of GICv2, at the end of its 4 KiB register page.
const V2_ID_REGISTERS: u64 = 0x0fd0;

/// GICD_CTLR: EnableGrp0, EnableGrp1(A), ARE (RAO/WI), DS (RAO/WI).
const CTLR_ENABLE_GROUP0: u32 = 1 << 0;
const CTLR_ENABLE_GROUP1: u32 = 1 << 1;
const CTLR_ARE: u32 = 1 << 4;
const CTLR_DS: u32 = 1 << 6;

/// GICD_IIDR / GICR_IIDR: implementer Arm (JEP106 0x43b), product 0x42 ("B"), which no
/// guest driver has a quirk for.
pub(super) const IIDR_VALUE: u32 = 0x4200_043b;

/// PIDR4-7, PIDR0-3, CIDR0-3 of a GICv3 distributor: ArchRev 3 in PIDR2[7:4].
const V3_IDS: [u32; 12] = [0x44, 0, 0, 0, 0x92, 0xb4, 0x3b, 0, 0x0d, 0xf0, 0x05, 0xb1];
/// The same for a GICv2 distributor: ArchRev 2.
const V2_IDS: [u32; 12] = [0x04, 0, 0, 0, 0x90, 0xb4, 0x2b, 0, 0x0d, 0xf0, 0x05, 0xb1];

/// The identification word at `offset` inside a table that starts at `base`.
pub(super) fn id_register(table: &[u32; 12], base: u64, offset: u64) -> Option<u32> {
    let index = usize::try_from(offset.checked_sub(base)? / 4).ok()?;
    table.get(index).copied()
}

/// GICD_TYPER.
fn typer(state: &State) -> u32 {
    let lines = state.spi_lines / 32;
    let cpus = (u32::try_from(state.vcpu_count())
        .unwrap_or(1)
        .saturating_sub(1)
        & 7)
        << 5;
    match state.version {
        // IDbits = 9 (10-bit INTIDs), No1N: no 1-of-N SPI routing; no LPIs; MBIS (SETSPI).
        GicVersion::V3 => lines | cpus | (9 << 19) | (1 << 25) | TYPER_MBIS,
        GicVersion::V2 => lines | cpus,
    }
}

/// Reads the distributor word at 4-aligned `offset` for vCPU `accessor`.
pub(super) fn read_word(state: &State, accessor: usize, offset: u64) -> u32 {
    let v3 = state.version == GicVersion::V3;
    match offset {
        CTLR => {
            let enables = (u32::from(state.group0_enabled) * CTLR_ENABLE_GROUP0)
                | (u32::from(state.group1_enabled) * CTLR_ENABLE_GROUP1);
            if v3 {
                enables | CTLR_ARE | CTLR_DS
            } else {
                enables
            }
        }
        TYPER => typer(state),
        IIDR => IIDR_VALUE,
        CPENDSGIR..SGI_PENDING_END if !v3 => {
            let first = ((offset - CPENDSGIR) % 0x10) as u32;
            (0..4).fold(0, |word, lane| {
                let sources = state
                    .irq(accessor, first + lane)
                    .map_or(0, |irq| irq.visible_sources());
                word | (u32::from(sources) << (lane * 8))
            })
        }
        IROUTER..IROUTER_END if v3 => {
            let intid = ((offset - IROUTER) / 8) as u32;
            let router = state.spi(intid).map_or(0, |spi| spi.router);
            (router >> ((offset & 4) * 8)) as u32
        }
        ID_REGISTERS.. => {
            let table = if v3 { &V3_IDS } else { &V2_IDS };
            id_register(table, ID_REGISTERS, offset).unwrap_or(0)
        }
        V2_ID_REGISTERS..0x1000 if !v3 => {
            id_register(&V2_IDS, V2_ID_REGISTERS, offset).unwrap_or(0)
        }
        _ => match Array::at(offset) {
            Some((array, first)) if bank_visible(state, array, first) => {
                read_array(state, array, first, accessor)
            }
            _ => 0,
        },
    }
}

/// Whether the distributor shows this array word: GICv3 keeps INTIDs 0-31 in the
/// redistributors and has no ITARGETSR with affinity routing.
fn bank_visible(state: &State, array: Array, first: u32) -> bool {
    match state.version {
        GicVersion::V3 => first >= PRIVATE_INTERRUPTS && array != Array::Targets,
        GicVersion::V2 => true,
    }
}

/// Writes `value` to the bits `mask` covers of the distributor word at 4-aligned `offset`,
/// by vCPU `accessor`.
pub(super) fn write_word(
    state: &mut State,
    accessor: usize,
    offset: u64,
    value: u32,
    mask: u32,
) -> Wakeups {
    let v3 = state.version == GicVersion::V3;
    match offset {
        CTLR => {
            let ctlr = merge(read_word(state, accessor, CTLR), value, mask);
            state.set_group_enables(
                ctlr & CTLR_ENABLE_GROUP0 != 0,
                ctlr & CTLR_ENABLE_GROUP1 != 0,
            )
        }
        SGIR if !v3 && mask == u32::MAX => write_sgir(state, accessor, value),
        // Message-based SPIs: only SPIs (INTIDs from 32) this distributor has; others ignored.
        SETSPI_NSR | CLRSPI_NSR if v3 => {
            let intid = value & mask & 0x3ff;
            if state.spi(intid).is_none() {
                return Wakeups::NONE;
            }
            if offset == SETSPI_NSR {
                state.set_pending(0, intid, accessor)
            } else {
                state.clear_pending(0, intid)
            }
        }
        CPENDSGIR..SGI_PENDING_END if !v3 => {
            let first = ((offset - CPENDSGIR) % 0x10) as u32;
            let set = offset >= SPENDSGIR;
            (0..4).fold(Wakeups::NONE, |wake, lane| {
                let written = ((value & mask) >> (lane * 8)) as u8;
                wake | state.change_sgi_sources(accessor, first + lane, written, set)
            })
        }
        IROUTER..IROUTER_END if v3 => {
            let intid = ((offset - IROUTER) / 8) as u32;
            let Some(router) = state.spi(intid).map(|spi| spi.router) else {
                return Wakeups::NONE;
            };
            let shift = (offset & 4) * 8;
            let router =
                (router & !(u64::from(mask) << shift)) | (u64::from(value & mask) << shift);
            state.set_router(intid, router)
        }
        _ => match Array::at(offset) {
            Some((array, first)) if bank_visible(state, array, first) => {
                write_array(state, array, first, accessor, accessor, value, mask)
            }
            _ => Wakeups::NONE,
        },
    }
}

/// GICD_SGIR (GICv2): TargetListFilter 0 = the CPUTargetList, 1 = all but the requester,
/// 2 = the requester only (3 is reserved); SGIINTID in bits 3:0.
fn write_sgir(state: &mut State, from: usize, value: u32) -> Wakeups {
    let count = state.vcpu_count();
    if from >= count {
        return Wakeups::NONE;
    }
    let intid = value & 0xf;
    let list = ((value >> 16) & 0xff) as usize;
    let targets = |vcpu: usize| match (value >> 24) & 0b11 {
        0 => (list >> vcpu) & 1 != 0,
        1 => vcpu != from,
        2 => vcpu == from,
        _ => false,
    };
    (0..count)
        .filter(|&vcpu| targets(vcpu))
        .fold(Wakeups::NONE, |wake, vcpu| {
            wake | state.set_pending(vcpu, intid, from)
        })
}
