//! What the hypervisor itself costs: instruction counters per exception level and Bulkhead's
//! exit-count hypercall.
//!
//! **Instructions.** Two PMU event counters count INST_RETIRED (event 0x08), one filtered to
//! EL1 only (PMEVTYPER0_EL0 = 0x4000_0008: U=1) and one to EL2 only (PMEVTYPER1_EL0 =
//! 0xc800_0008: P=1, U=1, NSH=1); Bulkhead gives every PMU counter to EL1 (MDCR_EL2.HPMN =
//! PMCR_EL0.N, no traps). Under QEMU's `-icount shift=0` INST_RETIRED is the machine-wide
//! instruction count, sampled when this CPU changes exception level; so while the other guest
//! sleeps (its CPU halted in the hypervisor's WFI) the EL2 counter alone is the hypervisor's
//! cost, and for a round trip where both CPUs run the hypervisor's cost is the whole machine
//! (the cycle counter with PMCCFILTR_EL0.NSH, see [`crate::clock`]) minus the EL1 counts of
//! both guests over the same window. QEMU implements INST_RETIRED only with `-icount`
//! (PMCEID0_EL0 bit 8): without it the figures are `n/a`.
//!
//! **Exits.** HVC 0xC600_0001 (SMCCC vendor-specific hypervisor service, fast, 64-bit) returns
//! this vCPU's exits so far: x0 all, x1 MMIO (data abort), x2 WFI, x3 physical IRQ. It is called
//! only if PSCI_FEATURES reports it (an HVC Bulkhead does not know stops the partition); x0 =
//! -1 (NOT_SUPPORTED) also means unavailable.

use core::arch::asm;

use bulkhead_guest::psci;

/// PMCR_EL0.E: counters enabled.
const PMCR_ENABLE: u64 = 1 << 0;
/// PMCR_EL0.N: the number of event counters (bits 15:11).
const PMCR_COUNTERS_SHIFT: u64 = 11;
/// PMCEID0_EL0 bit of event 0x08 (INST_RETIRED).
const INST_RETIRED_IMPLEMENTED: u64 = 1 << 0x08;
/// INST_RETIRED at EL1 only (U=1 filters EL0; NSH=0 filters EL2).
const EVENT_EL1_ONLY: u64 = 0x4000_0008;
/// INST_RETIRED at EL2 only (P=1 filters EL1, U=1 EL0, NSH=1 counts EL2).
const EVENT_EL2_ONLY: u64 = 0xc800_0008;
/// The bits of PMEVTYPER QEMU keeps without EL3 (P, U, NSH, event number).
const EVENT_TYPE_BITS: u64 = 0xc800_ffff;
/// PMCNTENSET_EL0 bits of event counters 0 and 1.
const EVENT_COUNTERS_ENABLE: u64 = 0b11;

/// The exit-count hypercall.
pub const EXIT_COUNTS: u32 = 0xc600_0001;

/// One reading of the counters: the whole machine (cycle counter; instructions under icount)
/// and this CPU's EL1-only and EL2-only instruction counters (32 bits wide).
#[derive(Clone, Copy, Debug, Default)]
pub struct Reading {
    machine: u64,
    el1: u32,
    el2: u32,
}

/// Counter deltas over one window.
#[derive(Clone, Copy, Debug, Default)]
pub struct Window {
    /// Instructions of the whole machine.
    pub machine: u64,
    /// This CPU's instructions at EL1.
    pub el1: u64,
    /// Instructions while this CPU was at EL2.
    pub el2: u64,
    /// Instructions of the machine while this CPU slept at EL1 in a WFI (taken out of
    /// `el1` by the caller; see `wait_lean` in main.rs).
    pub halted: u64,
}

impl Reading {
    /// What happened from `self` to `later`.
    pub fn until(self, later: Reading) -> Window {
        Window {
            machine: later.machine.wrapping_sub(self.machine),
            el1: u64::from(later.el1.wrapping_sub(self.el1)),
            el2: u64::from(later.el2.wrapping_sub(self.el2)),
            halted: 0,
        }
    }
}

/// The EL1/EL2 instruction counters of this vCPU, or why they are not there.
#[derive(Clone, Copy, Debug)]
pub struct Counters {
    available: Result<(), &'static str>,
}

impl Counters {
    /// Programs event counters 0 (EL1) and 1 (EL2) with INST_RETIRED and enables them, then
    /// checks that the filters stuck and that both count (the EL2 one across an HVC).
    /// [`Window::machine`] comes from the cycle counter, which only [`crate::clock`] turns on.
    pub fn start() -> Self {
        Self {
            available: program(),
        }
    }

    /// `Ok` if the counters count, else why not.
    pub fn available(&self) -> Result<(), &'static str> {
        self.available
    }

    /// All three counters (zeros if unavailable). Kept lean: it runs at window edges.
    #[inline(always)]
    pub fn read(&self) -> Reading {
        if self.available.is_err() {
            return Reading::default();
        }
        let (machine, el1, el2): (u64, u64, u64);
        // SAFETY: reads three PMU counters of this vCPU (enabled in `program`); no memory.
        unsafe {
            asm!(
                "isb",
                "mrs {machine}, pmccntr_el0",
                "mrs {el1}, pmevcntr0_el0",
                "mrs {el2}, pmevcntr1_el0",
                machine = out(reg) machine,
                el1 = out(reg) el1,
                el2 = out(reg) el2,
                options(nomem, nostack, preserves_flags)
            );
        }
        Reading {
            machine,
            el1: el1 as u32,
            el2: el2 as u32,
        }
    }

    /// The EL1 counter alone (0 if unavailable).
    #[inline(always)]
    pub fn el1(&self) -> u32 {
        if self.available.is_err() {
            return 0;
        }
        let el1: u64;
        // SAFETY: reads event counter 0 of this vCPU; no memory.
        unsafe {
            asm!(
                "isb",
                "mrs {el1}, pmevcntr0_el0",
                el1 = out(reg) el1,
                options(nomem, nostack, preserves_flags)
            );
        }
        el1 as u32
    }
}

fn program() -> Result<(), &'static str> {
    let debug_features: u64;
    // SAFETY: reading ID_AA64DFR0_EL1 has no side effects (HCR_EL2.TID3 is clear).
    unsafe {
        asm!("mrs {}, id_aa64dfr0_el1", out(reg) debug_features,
             options(nomem, nostack, preserves_flags))
    };
    let version = (debug_features >> 8) & 0xf;
    if version == 0 || version == 0xf {
        return Err("no PMUv3 (ID_AA64DFR0_EL1.PMUVer)");
    }
    let (control, events): (u64, u64);
    // SAFETY: reads PMU identification registers of this vCPU; no side effects.
    unsafe {
        asm!(
            "mrs {control}, pmcr_el0",
            "mrs {events}, pmceid0_el0",
            control = out(reg) control,
            events = out(reg) events,
            options(nomem, nostack, preserves_flags)
        )
    };
    if (control >> PMCR_COUNTERS_SHIFT) & 0x1f < 2 {
        return Err("fewer than 2 PMU event counters (PMCR_EL0.N)");
    }
    if events & INST_RETIRED_IMPLEMENTED == 0 {
        return Err(
            "INST_RETIRED not implemented (PMCEID0_EL0 bit 8; QEMU has it only with -icount)",
        );
    }
    let (type0, type1): (u64, u64);
    // SAFETY: programs this vCPU's own event counters 0 and 1 and enables them (PMCR_EL0.E
    // set, its other bits kept); no memory is touched.
    unsafe {
        asm!(
            "msr pmevtyper0_el0, {el1_only}",
            "msr pmevtyper1_el0, {el2_only}",
            "msr pmcntenset_el0, {enable}",
            "orr {control}, {control}, {pmcr_enable}",
            "msr pmcr_el0, {control}",
            "isb",
            "mrs {type0}, pmevtyper0_el0",
            "mrs {type1}, pmevtyper1_el0",
            el1_only = in(reg) EVENT_EL1_ONLY,
            el2_only = in(reg) EVENT_EL2_ONLY,
            enable = in(reg) EVENT_COUNTERS_ENABLE,
            control = inout(reg) control => _,
            pmcr_enable = const PMCR_ENABLE,
            type0 = out(reg) type0,
            type1 = out(reg) type1,
            options(nomem, nostack, preserves_flags)
        );
    }
    if type0 & EVENT_TYPE_BITS != EVENT_EL1_ONLY {
        return Err("PMEVTYPER0_EL0 did not keep the EL1-only filter 0x40000008");
    }
    if type1 & EVENT_TYPE_BITS != EVENT_EL2_ONLY {
        return Err("PMEVTYPER1_EL0 did not keep the EL2-only filter 0xc8000008 (NSH)");
    }
    let counters = Counters { available: Ok(()) };
    let before = counters.read();
    // A trap: EL2 must count, EL1 must count the few instructions around it.
    let _ = psci::version();
    let after = counters.read();
    let window = before.until(after);
    if window.el1 == 0 {
        return Err("the EL1 INST_RETIRED counter does not count");
    }
    if window.el2 == 0 {
        return Err("the EL2 INST_RETIRED counter does not count across an HVC");
    }
    Ok(())
}

/// One reading of this vCPU's exit counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exits {
    pub total: u64,
    pub mmio: u64,
    pub wfi: u64,
    pub irq: u64,
}

impl Exits {
    /// What happened from `self` to `later`.
    pub fn until(self, later: Exits) -> Exits {
        Exits {
            total: later.total.wrapping_sub(self.total),
            mmio: later.mmio.wrapping_sub(self.mmio),
            wfi: later.wfi.wrapping_sub(self.wfi),
            irq: later.irq.wrapping_sub(self.irq),
        }
    }
}

/// Whether the hypervisor offers the exit-count hypercall: PSCI_FEATURES must report it, and
/// a first call must not answer NOT_SUPPORTED.
pub fn exit_counts_offered() -> Result<(), &'static str> {
    if psci::features(EXIT_COUNTS) < 0 {
        return Err(
            "PSCI_FEATURES(0xc6000001) says NOT_SUPPORTED (not called: an HVC Bulkhead does not know may stop the partition)",
        );
    }
    if exit_counts().is_none() {
        return Err("HVC 0xc6000001 answered NOT_SUPPORTED");
    }
    Ok(())
}

/// This vCPU's exits so far (`None`: the hypervisor answered NOT_SUPPORTED). Only call it
/// after [`exit_counts_offered`] said yes.
#[inline(always)]
pub fn exit_counts() -> Option<Exits> {
    let (total, mmio, wfi, irq): (u64, u64, u64, u64);
    // SAFETY: an SMCCC fast call; the hypervisor writes x0-x3 and may clobber x4-x17, which
    // the asm declares; it touches no guest memory.
    unsafe {
        asm!(
            "hvc #0",
            inout("x0") u64::from(EXIT_COUNTS) => total,
            inout("x1") 0u64 => mmio,
            inout("x2") 0u64 => wfi,
            inout("x3") 0u64 => irq,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _,
            out("x10") _, out("x11") _, out("x12") _, out("x13") _, out("x14") _,
            out("x15") _, out("x16") _, out("x17") _,
            options(nostack)
        );
    }
    (total != u64::MAX).then_some(Exits {
        total,
        mmio,
        wfi,
        irq,
    })
}

/// Which trap [`trap_loop`] repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trap {
    /// A 32-bit store to a device register that ignores writes.
    MmioWrite,
    /// A 32-bit load from a device register that reads as zero.
    MmioRead,
    /// HVC PSCI_VERSION.
    Hvc,
}

impl Trap {
    /// The name in `bench:` lines.
    pub fn name(self) -> &'static str {
        match self {
            Trap::MmioWrite => "mmio_write",
            Trap::MmioRead => "mmio_read",
            Trap::Hvc => "hvc",
        }
    }
}

/// Executes `trap` `count` times in a tight loop (one trapping instruction, a subtract and a
/// branch each). `register` is the device register for the MMIO traps.
///
/// # Safety
/// For the MMIO traps `register` must be a mapped, 4-byte aligned device register whose reads
/// and writes have no effect.
#[inline(never)]
pub unsafe fn trap_loop(trap: Trap, register: usize, count: u32) {
    if count == 0 {
        return;
    }
    let count = u64::from(count);
    match trap {
        // SAFETY: the caller guarantees the register; the loop only stores zero to it.
        Trap::MmioWrite => unsafe {
            asm!(
                "2:",
                "str wzr, [{register}]",
                "subs {count}, {count}, #1",
                "b.ne 2b",
                register = in(reg) register,
                count = inout(reg) count => _,
                options(nostack)
            )
        },
        // SAFETY: the caller guarantees the register; the loop only loads from it.
        Trap::MmioRead => unsafe {
            asm!(
                "2:",
                "ldr {value:w}, [{register}]",
                "subs {count}, {count}, #1",
                "b.ne 2b",
                register = in(reg) register,
                count = inout(reg) count => _,
                value = out(reg) _,
                options(nostack)
            )
        },
        // SAFETY: PSCI_VERSION changes only x0-x3 (x4-x17 may be clobbered by SMCCC, all
        // declared); no memory.
        Trap::Hvc => unsafe {
            asm!(
                "2:",
                "mov w0, #0x84000000",
                "hvc #0",
                "subs {count}, {count}, #1",
                "b.ne 2b",
                count = inout(reg) count => _,
                out("x0") _, out("x1") _, out("x2") _, out("x3") _, out("x4") _,
                out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _,
                out("x10") _, out("x11") _, out("x12") _, out("x13") _, out("x14") _,
                out("x15") _, out("x16") _, out("x17") _,
                options(nostack)
            )
        },
    }
}
