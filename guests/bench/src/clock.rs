//! The clocks a measurement reads: the virtual counter (in ns) and the PMU cycle counter.
//!
//! The virtual counter is CNTVCT_EL0, converted to ns with CNTFRQ_EL0; the cycle counter is
//! PMCCNTR_EL0, used when the PMU lets EL1 have it.
//!
//! Under QEMU TCG the cycle counter is QEMU's virtual clock at 1 GHz; with
//! `-icount shift=0` that clock advances one nanosecond per instruction executed by any vCPU,
//! so a cycle-counter delta is an instruction count: guest and hypervisor, all CPUs of the
//! machine (they run in turn on one host thread). The cycle counter only ticks at the
//! exception levels PMCCFILTR_EL0 admits: EL1 always, EL2 (where the hypervisor handles the
//! traps and idles a waiting vCPU) only if its NSH bit sticks.

use core::arch::asm;

use bulkhead_guest::{cpu, timer};

/// PMCR_EL0.E: enable the counters.
const PMCR_ENABLE: u64 = 1 << 0;
/// PMCR_EL0.C: reset the cycle counter.
const PMCR_CYCLE_RESET: u64 = 1 << 2;
/// PMCR_EL0.LC: the cycle counter overflows at 64 bits.
const PMCR_LONG_CYCLES: u64 = 1 << 6;
/// PMCNTENSET_EL0 bit of the cycle counter.
const CYCLE_COUNTER_ENABLE: u64 = 1 << 31;
/// PMCCFILTR_EL0.NSH: count at (non-secure) EL2 too. P = U = 0: EL1 and EL0 count.
const FILTER_COUNT_EL2: u64 = 1 << 27;

/// Whether the cycle counter can be read, and why not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CycleCounter {
    /// Counting; `el2` if PMCCFILTR_EL0.NSH stuck (EL2 time is included).
    Counting { el2: bool, filter: u64 },
    /// Not used: the reason.
    Unavailable(&'static str),
}

/// The clocks of this vCPU.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    frequency: u64,
    cycles: CycleCounter,
}

/// One reading of both clocks.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stamp {
    ticks: u64,
    cycles: u64,
}

impl Stamp {
    /// Virtual-counter ticks and cycles from `self` to `later`.
    pub fn until(self, later: Stamp) -> (u64, u64) {
        (
            later.ticks.wrapping_sub(self.ticks),
            later.cycles.wrapping_sub(self.cycles),
        )
    }
}

impl Clock {
    /// Reads the counter frequency and turns the cycle counter on if the PMU allows it.
    pub fn start() -> Self {
        Self {
            frequency: timer::frequency().max(1),
            cycles: start_cycle_counter(),
        }
    }

    /// CNTFRQ_EL0 in Hz.
    pub fn frequency(&self) -> u64 {
        self.frequency
    }

    /// What the cycle counter does.
    pub fn cycle_counter(&self) -> CycleCounter {
        self.cycles
    }

    /// Whether stamps carry cycles.
    pub fn has_cycles(&self) -> bool {
        matches!(self.cycles, CycleCounter::Counting { .. })
    }

    /// Both clocks now (after an ISB, so earlier instructions have completed).
    #[inline(always)]
    pub fn stamp(&self) -> Stamp {
        let ticks: u64;
        let mut cycles: u64 = 0;
        if self.has_cycles() {
            // SAFETY: reads two counters; the cycle counter is readable (checked in `start`).
            unsafe {
                asm!(
                    "isb",
                    "mrs {ticks}, cntvct_el0",
                    "mrs {cycles}, pmccntr_el0",
                    ticks = out(reg) ticks,
                    cycles = out(reg) cycles,
                    options(nomem, nostack, preserves_flags)
                );
            }
        } else {
            ticks = timer::counter();
        }
        Stamp { ticks, cycles }
    }

    /// Nanoseconds in `ticks` virtual-counter ticks.
    pub fn nanoseconds(&self, ticks: u64) -> u64 {
        let ns = u128::from(ticks) * 1_000_000_000 / u128::from(self.frequency);
        u64::try_from(ns).unwrap_or(u64::MAX)
    }
}

fn read_debug_features() -> u64 {
    let value: u64;
    // SAFETY: reading ID_AA64DFR0_EL1 has no side effects (HCR_EL2.TID3 is clear).
    unsafe {
        asm!("mrs {}, id_aa64dfr0_el1", out(reg) value, options(nomem, nostack, preserves_flags))
    };
    value
}

fn read_cycles() -> u64 {
    let value: u64;
    // SAFETY: reading PMCCNTR_EL0 has no side effects; only called once PMUv3 is known.
    unsafe {
        asm!("isb", "mrs {}, pmccntr_el0", out(reg) value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Enables the cycle counter (EL1, and EL2 if allowed) and checks that it moves. A
/// hypervisor that traps PMU registers (MDCR_EL2.TPM / TPMCR) would stop the partition on the
/// first `msr` here: Bulkhead writes MDCR_EL2 with only HPMN set (no traps, and HPMD clear, so
/// EL2 may be counted).
fn start_cycle_counter() -> CycleCounter {
    let version = (read_debug_features() >> 8) & 0xf;
    if version == 0 || version == 0xf {
        return CycleCounter::Unavailable("no PMUv3 (ID_AA64DFR0_EL1.PMUVer)");
    }
    let filter: u64;
    // SAFETY: programs this vCPU's own PMU cycle counter; no memory is touched.
    unsafe {
        asm!(
            "msr pmccfiltr_el0, {filter_in}",
            "msr pmcntenset_el0, {enable}",
            "msr pmcr_el0, {control}",
            "isb",
            "mrs {filter_out}, pmccfiltr_el0",
            filter_in = in(reg) FILTER_COUNT_EL2,
            enable = in(reg) CYCLE_COUNTER_ENABLE,
            control = in(reg) PMCR_ENABLE | PMCR_CYCLE_RESET | PMCR_LONG_CYCLES,
            filter_out = out(reg) filter,
            options(nomem, nostack, preserves_flags)
        );
    }
    let before = read_cycles();
    for _ in 0..256 {
        cpu::relax();
    }
    let after = read_cycles();
    if after == before {
        return CycleCounter::Unavailable("PMCCNTR_EL0 does not count");
    }
    CycleCounter::Counting {
        el2: filter & FILTER_COUNT_EL2 != 0,
        filter,
    }
}
