//! The running CPU: its exception level, identity, counter, and per-CPU state.

use core::sync::atomic::AtomicUsize;

use aarch64_cpu::registers::{
    CNTFRQ_EL0, CNTPCT_EL0, CurrentEL, MPIDR_EL1, Readable, TPIDR_EL2, Writeable,
};

/// State each CPU keeps for itself; `TPIDR_EL2` points at it.
pub struct PerCpu {
    /// Bulkhead's CPU index (device-tree order).
    pub index: usize,
    /// The CPU's MPIDR affinity value.
    pub mpidr: u64,
    /// How many GIC list registers this CPU has.
    pub list_registers: AtomicUsize,
    /// How many of them the last flush filled.
    pub list_registers_used: AtomicUsize,
    /// Whether the underflow maintenance interrupt is on (ICH_HCR_EL2.UIE / GICH_HCR.UIE).
    pub underflow_interrupt: core::sync::atomic::AtomicBool,
    /// The vCPU this CPU runs and what it answers to traps (set once, when it first enters
    /// its guest): reached in O(1) from TPIDR_EL2 on every trap.
    pub host: spin::Once<&'static dyn crate::vcpu::VcpuHost>,
    /// The list-register images exchanged with the core on fold and flush, kept here so
    /// that no trap builds (and zeroes) one. Only this CPU locks it.
    pub list_entries: spin::Mutex<hypervisor::device::gic::ListEntries>,
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
            index,
            mpidr,
            list_registers: AtomicUsize::new(0),
            list_registers_used: AtomicUsize::new(0),
            underflow_interrupt: core::sync::atomic::AtomicBool::new(false),
            host: spin::Once::new(),
            list_entries: spin::Mutex::new(hypervisor::device::gic::ListEntries::new()),
        }
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
