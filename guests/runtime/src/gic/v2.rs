//! GICv2: memory-mapped distributor and CPU interface.

use super::{DEFAULT_PRIORITY, GicError, priority_register};
use crate::mmio;

const GICD_CTLR: usize = 0x000;
const GICD_TYPER: usize = 0x004;
const GICD_ISENABLER: usize = 0x100;
const GICD_ICENABLER: usize = 0x180;
const GICD_IPRIORITYR: usize = 0x400;
const GICD_ITARGETSR: usize = 0x800;
const GICD_SGIR: usize = 0xf00;

const GICC_CTLR: usize = 0x000;
const GICC_PMR: usize = 0x004;
const GICC_BPR: usize = 0x008;
const GICC_IAR: usize = 0x00c;
const GICC_EOIR: usize = 0x010;

/// GICv2 CPU interfaces are numbered 0-7.
const MAX_CPU_INTERFACES: usize = 8;

fn read(address: usize) -> u32 {
    // SAFETY: addresses are GIC distributor/CPU-interface registers from the platform
    // description plus register offsets; they never alias program memory.
    unsafe { mmio::read32(address) }
}

fn write(address: usize, value: u32) {
    // SAFETY: as for `read`.
    unsafe { mmio::write32(address, value) }
}

fn interrupt_lines(distributor: usize) -> u32 {
    let lines = 32 * ((read(distributor + GICD_TYPER) & 0x1f) + 1);
    lines.min(1020)
}

/// This CPU interface's bit for ITARGETSR (banked GICD_ITARGETSR0 reads it; RAZ on a
/// uniprocessor GIC, where interface 0 is the only one).
fn own_target_mask(distributor: usize) -> u32 {
    match read(distributor + GICD_ITARGETSR) & 0xff {
        0 => 1,
        mask => mask,
    }
}

pub(super) fn init_distributor(distributor: usize) {
    write(distributor + GICD_CTLR, 0);
    let lines = interrupt_lines(distributor) as usize;
    for first in (32..lines).step_by(32) {
        write(distributor + GICD_ICENABLER + first / 32 * 4, u32::MAX);
    }
    let priorities = u32::from_ne_bytes([DEFAULT_PRIORITY; 4]);
    for first in (32..lines).step_by(4) {
        write(distributor + GICD_IPRIORITYR + first, priorities);
    }
    write(distributor + GICD_CTLR, 1);
}

pub(super) fn init_cpu(distributor: usize, cpu_interface: usize) {
    // SGI and PPI registers are banked per CPU interface.
    write(distributor + GICD_ICENABLER, u32::MAX);
    let priorities = u32::from_ne_bytes([DEFAULT_PRIORITY; 4]);
    for first in (0..32).step_by(4) {
        write(distributor + GICD_IPRIORITYR + first, priorities);
    }
    write(cpu_interface + GICC_PMR, 0xff);
    write(cpu_interface + GICC_BPR, 0);
    write(cpu_interface + GICC_CTLR, 1);
}

pub(super) fn enable(distributor: usize, intid: u32) -> Result<(), GicError> {
    if intid >= interrupt_lines(distributor) {
        return Err(GicError::InvalidIntid(intid));
    }
    if intid >= 32 {
        let (offset, shift, mask) = priority_register(intid);
        let priority = read(distributor + GICD_IPRIORITYR + offset);
        write(
            distributor + GICD_IPRIORITYR + offset,
            (priority & !mask) | (u32::from(DEFAULT_PRIORITY) << shift),
        );
        let targets = read(distributor + GICD_ITARGETSR + offset);
        write(
            distributor + GICD_ITARGETSR + offset,
            (targets & !mask) | (own_target_mask(distributor) << shift),
        );
    }
    write(
        distributor + GICD_ISENABLER + intid as usize / 32 * 4,
        1 << (intid % 32),
    );
    Ok(())
}

pub(super) fn disable(distributor: usize, intid: u32) -> Result<(), GicError> {
    if intid >= interrupt_lines(distributor) {
        return Err(GicError::InvalidIntid(intid));
    }
    write(
        distributor + GICD_ICENABLER + intid as usize / 32 * 4,
        1 << (intid % 32),
    );
    Ok(())
}

pub(super) fn clear_active(distributor: usize, intid: u32) -> Result<(), GicError> {
    const GICD_ICACTIVER: usize = 0x380;
    if intid >= interrupt_lines(distributor) {
        return Err(GicError::InvalidIntid(intid));
    }
    write(
        distributor + GICD_ICACTIVER + intid as usize / 32 * 4,
        1 << (intid % 32),
    );
    Ok(())
}

pub(super) fn acknowledge(cpu_interface: usize) -> u32 {
    read(cpu_interface + GICC_IAR)
}

pub(super) fn end_of_interrupt(cpu_interface: usize, raw: u32) {
    write(cpu_interface + GICC_EOIR, raw);
}

pub(super) fn send_sgi(distributor: usize, sgi: u32, target: usize) -> Result<(), GicError> {
    if target >= MAX_CPU_INTERFACES {
        return Err(GicError::InvalidSgi);
    }
    // TargetListFilter 0: the CPU interfaces in CPUTargetList (bits 23:16).
    // SAFETY: the barrier orders this vCPU's earlier stores before the SGI write.
    unsafe { core::arch::asm!("dsb ishst", options(nostack, preserves_flags)) };
    write(distributor + GICD_SGIR, (1 << (16 + target)) | sgi);
    Ok(())
}
