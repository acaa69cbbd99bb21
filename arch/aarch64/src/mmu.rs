//! The hypervisor's own EL2 stage-1 translation: switching the MMU on with tables built in
//! heap frames (the image's `HeapTables`).

use core::arch::asm;

use aarch64_cpu::registers::{ID_AA64MMFR0_EL1, Readable};

use crate::paging::{EntryFormat, PageTable, TableMemory};

/// The EL2 translation registers: what every CPU loads before it turns its MMU on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct MmuSettings {
    /// MAIR_EL2.
    pub mair: u64,
    /// TCR_EL2.
    pub tcr: u64,
    /// TTBR0_EL2.
    pub ttbr0: u64,
    /// SCTLR_EL2.
    pub sctlr: u64,
}

impl MmuSettings {
    /// Settings for a 48-bit identity map rooted at `table`: 4 KiB granule, walks inner and
    /// outer write-back cacheable, inner shareable; caches on, W^X enforced.
    pub fn for_table<M: TableMemory, F: EntryFormat>(table: &PageTable<M, F>, mair: u64) -> Self {
        const T0SZ_48_BITS: u64 = 16;
        const WALK_CACHEABLE: u64 = (0b01 << 8) | (0b01 << 10) | (0b11 << 12);
        const TCR_RES1: u64 = (1 << 31) | (1 << 23);
        let physical_range = ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange).min(5);
        let tcr = T0SZ_48_BITS | WALK_CACHEABLE | (physical_range << 16) | TCR_RES1;
        const SCTLR_RES1: u64 = 0x30c5_0830;
        const MMU: u64 = 1 << 0;
        const DATA_CACHE: u64 = 1 << 2;
        const STACK_ALIGNMENT_CHECK: u64 = 1 << 3;
        const INSTRUCTION_CACHE: u64 = 1 << 12;
        const WRITE_EXECUTE_NEVER: u64 = 1 << 19;
        let sctlr = SCTLR_RES1
            | MMU
            | DATA_CACHE
            | STACK_ALIGNMENT_CHECK
            | INSTRUCTION_CACHE
            | WRITE_EXECUTE_NEVER;
        Self {
            mair,
            tcr,
            ttbr0: table.root(),
            sctlr,
        }
    }

    /// Loads the settings and turns the MMU on, on this CPU.
    ///
    /// # Safety
    /// The tables must identity-map the code running now, its stack, and everything it will
    /// touch, with the attributes it needs; the MMU must be off.
    pub unsafe fn enable(&self) {
        // SAFETY: the caller guarantees the identity map covers this code and its data, so
        // execution continues at the next instruction with the same addresses.
        unsafe {
            asm!(
                "dsb ish",
                "msr mair_el2, {mair}",
                "msr tcr_el2, {tcr}",
                "msr ttbr0_el2, {ttbr0}",
                "isb",
                "tlbi alle2",
                "ic iallu",
                "dsb nsh",
                "isb",
                "msr sctlr_el2, {sctlr}",
                "isb",
                mair = in(reg) self.mair,
                tcr = in(reg) self.tcr,
                ttbr0 = in(reg) self.ttbr0,
                sctlr = in(reg) self.sctlr,
                options(nostack)
            );
        }
    }
}

/// Cleans the data cache lines covering `[start, start + size)` to the point of coherency, so
/// a CPU that starts with its MMU and caches off reads what this CPU wrote.
pub fn clean_to_point_of_coherency(start: u64, size: u64) {
    const LINE: u64 = 64;
    let mut line = start & !(LINE - 1);
    let end = start.saturating_add(size);
    while line < end {
        // SAFETY: `dc cvac` only writes back a cache line; it faults only on an unmapped
        // address, and the callers pass memory they own.
        unsafe { asm!("dc cvac, {}", in(reg) line, options(nostack, preserves_flags)) };
        line += LINE;
    }
    // SAFETY: a barrier has no memory-safety effect.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// Invalidates stage-2 TLB entries of `[ipa, ipa + size)` for the VMID in this CPU's
/// VTTBR_EL2 (the partition whose vCPU runs here), on every CPU of the inner shareable domain,
/// and the combined stage-1+2 entries that may hold them.
pub fn invalidate_stage2(ipa: u64, size: u64) {
    const PAGE: u64 = 4096;
    let mut page = ipa & !(PAGE - 1);
    let end = ipa.saturating_add(size);
    // SAFETY: TLB maintenance and barriers only; they affect translations of this CPU's
    // current guest, which is what the caller changed.
    unsafe { asm!("dsb ishst", options(nostack, preserves_flags)) };
    while page < end {
        // SAFETY: as above.
        unsafe {
            asm!("tlbi ipas2e1is, {}", in(reg) page >> 12, options(nostack, preserves_flags))
        };
        page += PAGE;
    }
    // SAFETY: as above.
    unsafe {
        asm!(
            "dsb ish",
            "tlbi vmalle1is",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        )
    };
}
