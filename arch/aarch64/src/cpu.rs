//! The running CPU: its exception level, identity, counter, and per-CPU state.

use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use crate::vcpu::FastVcpu;

use aarch64_cpu::registers::{
    CNTFRQ_EL0, CNTPCT_EL0, CurrentEL, MPIDR_EL1, Readable, TPIDR_EL2, Writeable,
};

/// State each CPU keeps for itself; `TPIDR_EL2` points at it.
#[repr(C)]
pub struct PerCpu {
    /// The frame the running vCPU's registers are saved into when it exits (first word: the
    /// guest-exit vector code reads it at offset 0).
    pub guest_frame: core::sync::atomic::AtomicU64,
    /// Bulkhead's CPU index (device-tree order).
    pub index: usize,
    /// The CPU's MPIDR affinity value.
    pub mpidr: u64,
    /// How many GIC list registers this CPU has.
    pub list_registers: AtomicUsize,
    /// The vCPU this CPU runs (null before it runs one), for the fast lane.
    running: AtomicPtr<FastVcpu>,
}

impl core::fmt::Debug for PerCpu {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PerCpu")
            .field("index", &self.index)
            .field("mpidr", &self.mpidr)
            .finish_non_exhaustive()
    }
}

impl PerCpu {
    /// State for CPU `index` with affinity `mpidr`.
    pub const fn new(index: usize, mpidr: u64) -> Self {
        Self {
            guest_frame: core::sync::atomic::AtomicU64::new(0),
            index,
            mpidr,
            list_registers: AtomicUsize::new(0),
            running: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// Records that this CPU runs `vcpu` from now on (for good: static partitioning never
    /// changes it).
    pub fn set_running(&self, vcpu: &'static FastVcpu) {
        self.running
            .store(core::ptr::from_ref(vcpu).cast_mut(), Ordering::Release);
    }

    /// The vCPU [`PerCpu::set_running`] recorded, if any.
    #[inline]
    pub fn running(&self) -> Option<&'static FastVcpu> {
        let pointer = self.running.load(Ordering::Acquire);
        // SAFETY: null, or the pointer `set_running` stored, which came from a
        // `&'static FastVcpu` (shared, never mutated through the pointer).
        unsafe { pointer.as_ref() }
    }
}

/// The exception level the CPU runs at (0..=3).
pub fn current_el() -> u8 {
    CurrentEL.read(CurrentEL::EL) as u8
}

/// This CPU's MPIDR_EL1.
pub fn mpidr() -> u64 {
    MPIDR_EL1.get()
}

/// The system counter (CNTPCT_EL0).
pub fn counter() -> u64 {
    CNTPCT_EL0.get()
}

/// The system counter's frequency in Hz (CNTFRQ_EL0), never zero.
pub fn counter_frequency() -> u64 {
    CNTFRQ_EL0.get().max(1)
}

/// Makes `per_cpu` this CPU's state for the rest of the run.
pub fn install_per_cpu(per_cpu: &'static PerCpu) {
    TPIDR_EL2.set(core::ptr::from_ref(per_cpu) as u64);
}

/// This CPU's state, once [`install_per_cpu`] ran on it.
pub fn per_cpu() -> Option<&'static PerCpu> {
    let pointer = TPIDR_EL2.get() as *const PerCpu;
    // SAFETY: TPIDR_EL2 is zero at reset (checked by `as_ref`) or holds the pointer
    // `install_per_cpu` stored, which came from a `&'static PerCpu`. Nothing else writes it.
    unsafe { pointer.as_ref() }
}

/// This CPU's index, or 0 before per-CPU state exists (only the boot CPU runs then).
pub fn index() -> usize {
    per_cpu().map_or(0, |p| p.index)
}

/// Waits for an interrupt or event (low power idle).
pub fn wait_for_interrupt() {
    aarch64_cpu::asm::wfi();
}

/// Waits for an event.
pub fn wait_for_event() {
    aarch64_cpu::asm::wfe();
}

/// Wakes CPUs waiting in [`wait_for_event`].
pub fn send_event() {
    aarch64_cpu::asm::sev();
}

/// Stops this CPU for good (interrupts masked, so only a reset wakes it).
pub fn halt() -> ! {
    loop {
        aarch64_cpu::asm::wfi();
    }
}
