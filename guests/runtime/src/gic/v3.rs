//! GICv3: distributor and redistributor registers, CPU interface through ICC_* system
//! registers.

use core::arch::asm;
use core::sync::atomic::{AtomicUsize, Ordering};

use super::{DEFAULT_PRIORITY, GicError, priority_register};
use crate::cpu::{self, MAX_VCPUS};
use crate::mmio;

const GICD_CTLR: usize = 0x0000;
const GICD_TYPER: usize = 0x0004;
const GICD_IGROUPR: usize = 0x0080;
const GICD_ISENABLER: usize = 0x0100;
const GICD_ICENABLER: usize = 0x0180;
const GICD_IPRIORITYR: usize = 0x0400;
const GICD_IROUTER: usize = 0x6000;
/// GICD_CTLR: register write pending.
const GICD_CTLR_RWP: u32 = 1 << 31;
/// GICD_CTLR as Linux sets it: ARE_NS | EnableGrp1A | EnableGrp1 (with DS=1: ARE | Grp1 | Grp0).
const GICD_CTLR_ENABLE: u32 = (1 << 4) | (1 << 1) | 1;

const GICR_CTLR: usize = 0x0000;
const GICR_TYPER_LOW: usize = 0x0008;
const GICR_TYPER_AFFINITY: usize = 0x000c;
const GICR_WAKER: usize = 0x0014;
/// GICR_CTLR: register write pending.
const GICR_CTLR_RWP: u32 = 1 << 3;
/// GICR_TYPER: virtual LPIs supported (the frame has two more 64 KiB pages).
const GICR_TYPER_VLPIS: u32 = 1 << 1;
/// GICR_TYPER: the last frame of the region.
const GICR_TYPER_LAST: u32 = 1 << 4;
const GICR_WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const GICR_WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
/// SGI/PPI registers: the second 64 KiB page of a redistributor frame.
const SGI_FRAME: usize = 0x1_0000;
const GICR_IGROUPR0: usize = SGI_FRAME + 0x0080;
const GICR_ISENABLER0: usize = SGI_FRAME + 0x0100;
const GICR_ICENABLER0: usize = SGI_FRAME + 0x0180;
const GICR_IPRIORITYR: usize = SGI_FRAME + 0x0400;

/// Redistributor frames scanned at most.
const MAX_FRAMES: usize = 64;
/// Polls of a busy bit before giving up on it (the GIC is then broken; carry on).
const MAX_POLLS: usize = 1_000_000;

/// Each vCPU's redistributor frame, found by `init_cpu` (0: not yet).
static REDISTRIBUTOR: [AtomicUsize; MAX_VCPUS] = [const { AtomicUsize::new(0) }; MAX_VCPUS];

fn read(address: usize) -> u32 {
    // SAFETY: addresses are GIC distributor/redistributor registers from the platform
    // description plus offsets inside their frames; GIC register reads have no side effects
    // that matter to memory safety.
    unsafe { mmio::read32(address) }
}

fn write(address: usize, value: u32) {
    // SAFETY: as for `read`: GIC registers, which never alias program memory.
    unsafe { mmio::write32(address, value) }
}

fn wait_while_set(address: usize, bit: u32) {
    for _ in 0..MAX_POLLS {
        if read(address) & bit == 0 {
            return;
        }
        crate::cpu::relax();
    }
}

/// Number of INTIDs the distributor implements (SGIs and PPIs included), at most 1020.
fn interrupt_lines(distributor: usize) -> u32 {
    let lines = 32 * ((read(distributor + GICD_TYPER) & 0x1f) + 1);
    lines.min(1020)
}

pub(super) fn init_distributor(distributor: usize) {
    write(distributor + GICD_CTLR, 0);
    wait_while_set(distributor + GICD_CTLR, GICD_CTLR_RWP);
    let lines = interrupt_lines(distributor) as usize;
    for first in (32..lines).step_by(32) {
        let register = first / 32 * 4;
        write(distributor + GICD_ICENABLER + register, u32::MAX);
        write(distributor + GICD_IGROUPR + register, u32::MAX);
    }
    let priorities = u32::from_ne_bytes([DEFAULT_PRIORITY; 4]);
    for first in (32..lines).step_by(4) {
        write(distributor + GICD_IPRIORITYR + first, priorities);
    }
    wait_while_set(distributor + GICD_CTLR, GICD_CTLR_RWP);
    write(distributor + GICD_CTLR, GICD_CTLR_ENABLE);
    wait_while_set(distributor + GICD_CTLR, GICD_CTLR_RWP);
}

/// This vCPU's redistributor: the frame whose GICR_TYPER affinity is this vCPU's MPIDR
/// affinity; if none says so, frame number = vCPU index.
fn find_redistributor(redistributors: usize) -> Option<usize> {
    let affinity = cpu::affinity();
    let wanted = ((affinity >> 8) & 0xff00_0000) as u32 | (affinity & 0x00ff_ffff) as u32;
    let mut frame = redistributors;
    for _ in 0..MAX_FRAMES {
        if read(frame + GICR_TYPER_AFFINITY) == wanted {
            return Some(frame);
        }
        let typer = read(frame + GICR_TYPER_LOW);
        if typer & GICR_TYPER_LAST != 0 {
            break;
        }
        frame += if typer & GICR_TYPER_VLPIS != 0 {
            0x4_0000
        } else {
            0x2_0000
        };
    }
    None
}

pub(super) fn init_cpu(redistributors: usize) -> Result<(), GicError> {
    let frame = find_redistributor(redistributors).ok_or(GicError::NoRedistributor)?;
    if let Some(slot) = REDISTRIBUTOR.get(cpu::current_index()) {
        slot.store(frame, Ordering::Relaxed);
    }
    let waker = read(frame + GICR_WAKER);
    write(frame + GICR_WAKER, waker & !GICR_WAKER_PROCESSOR_SLEEP);
    wait_while_set(frame + GICR_WAKER, GICR_WAKER_CHILDREN_ASLEEP);

    write(frame + GICR_ICENABLER0, u32::MAX);
    wait_while_set(frame + GICR_CTLR, GICR_CTLR_RWP);
    write(frame + GICR_IGROUPR0, u32::MAX);
    let priorities = u32::from_ne_bytes([DEFAULT_PRIORITY; 4]);
    for first in (0..32).step_by(4) {
        write(frame + GICR_IPRIORITYR + first, priorities);
    }

    // SAFETY: ICC_SRE_EL1.SRE selects the system-register CPU interface for this vCPU; the
    // runtime never uses the memory-mapped one on a GICv3.
    let sre: u64 = unsafe {
        let mut sre: u64;
        asm!("mrs {}, icc_sre_el1", out(reg) sre, options(nomem, nostack));
        asm!("msr icc_sre_el1, {}", "isb", in(reg) sre | 1, options(nomem, nostack));
        asm!("mrs {}, icc_sre_el1", out(reg) sre, options(nomem, nostack));
        sre
    };
    if sre & 1 == 0 {
        return Err(GicError::NoSystemRegisters);
    }
    // SAFETY: unmasks all priorities, no preemption groups, EOI also deactivates, and enables
    // Group 1 delivery: the CPU-interface set-up the rest of the runtime assumes.
    unsafe {
        asm!(
            "msr icc_pmr_el1, {pmr}",
            "msr icc_bpr1_el1, xzr",
            "msr icc_ctlr_el1, xzr",
            "msr icc_igrpen1_el1, {one}",
            "isb",
            pmr = in(reg) 0xffu64,
            one = in(reg) 1u64,
            options(nomem, nostack)
        );
    }
    Ok(())
}

fn current_redistributor() -> Result<usize, GicError> {
    REDISTRIBUTOR
        .get(cpu::current_index())
        .map(|slot| slot.load(Ordering::Relaxed))
        .filter(|&frame| frame != 0)
        .ok_or(GicError::NoRedistributor)
}

pub(super) fn enable(distributor: usize, intid: u32) -> Result<(), GicError> {
    let bit = 1u32 << (intid % 32);
    if intid < 32 {
        let frame = current_redistributor()?;
        write(frame + GICR_ISENABLER0, bit);
        return Ok(());
    }
    if intid >= interrupt_lines(distributor) {
        return Err(GicError::InvalidIntid(intid));
    }
    let register = intid as usize / 32 * 4;
    let group = read(distributor + GICD_IGROUPR + register);
    write(distributor + GICD_IGROUPR + register, group | bit);
    let (offset, shift, mask) = priority_register(intid);
    let priority = read(distributor + GICD_IPRIORITYR + offset);
    write(
        distributor + GICD_IPRIORITYR + offset,
        (priority & !mask) | (u32::from(DEFAULT_PRIORITY) << shift),
    );
    // GICD_IROUTER<n>: Aff2.Aff1.Aff0 in the low word (IRM = 0), Aff3 in the high word.
    let affinity = cpu::affinity();
    let router = distributor + GICD_IROUTER + intid as usize * 8;
    write(router, (affinity & 0x00ff_ffff) as u32);
    write(router + 4, (affinity >> 32) as u32 & 0xff);
    write(distributor + GICD_ISENABLER + register, bit);
    Ok(())
}

pub(super) fn disable(distributor: usize, intid: u32) -> Result<(), GicError> {
    let bit = 1u32 << (intid % 32);
    if intid < 32 {
        let frame = current_redistributor()?;
        write(frame + GICR_ICENABLER0, bit);
        wait_while_set(frame + GICR_CTLR, GICR_CTLR_RWP);
        return Ok(());
    }
    if intid >= interrupt_lines(distributor) {
        return Err(GicError::InvalidIntid(intid));
    }
    write(distributor + GICD_ICENABLER + intid as usize / 32 * 4, bit);
    wait_while_set(distributor + GICD_CTLR, GICD_CTLR_RWP);
    Ok(())
}

pub(super) fn clear_active(distributor: usize, intid: u32) -> Result<(), GicError> {
    const ICACTIVER: usize = 0x0380;
    let bit = 1u32 << (intid % 32);
    if intid < 32 {
        write(current_redistributor()? + SGI_FRAME + ICACTIVER, bit);
        return Ok(());
    }
    if intid >= interrupt_lines(distributor) {
        return Err(GicError::InvalidIntid(intid));
    }
    write(distributor + ICACTIVER + intid as usize / 32 * 4, bit);
    Ok(())
}

pub(super) fn acknowledge() -> u32 {
    let raw: u64;
    // SAFETY: reading ICC_IAR1_EL1 acknowledges the pending interrupt; the caller ends it.
    unsafe { asm!("mrs {}, icc_iar1_el1", out(reg) raw, options(nomem, nostack)) };
    raw as u32
}

pub(super) fn end_of_interrupt(raw: u32) {
    // SAFETY: ends an interrupt this vCPU acknowledged (priority drop and deactivation).
    unsafe { asm!("msr icc_eoir1_el1, {}", in(reg) u64::from(raw), options(nomem, nostack)) };
}

pub(super) fn send_sgi(sgi: u32, target: usize) -> Result<(), GicError> {
    // The target: this vCPU's Aff3.Aff2.Aff1 with Aff0 = index; TargetList holds Aff0 % 16
    // and RS (range selector) Aff0 / 16.
    if target > 0xff {
        return Err(GicError::InvalidSgi);
    }
    let affinity = cpu::affinity();
    let aff1 = (affinity >> 8) & 0xff;
    let aff2 = (affinity >> 16) & 0xff;
    let aff3 = (affinity >> 32) & 0xff;
    let target = target as u64;
    let value = (aff3 << 48)
        | ((target / 16) << 44)
        | (aff2 << 32)
        | (u64::from(sgi) << 24)
        | (aff1 << 16)
        | (1 << (target % 16));
    // SAFETY: the barrier orders this vCPU's earlier stores before the SGI; ICC_SGI1R_EL1
    // only raises an SGI at a vCPU of this guest.
    unsafe { asm!("dsb ishst", "msr icc_sgi1r_el1, {}", "isb", in(reg) value, options(nostack)) };
    Ok(())
}
