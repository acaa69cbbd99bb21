//! The running CPU: its identity (APIC ID, Bulkhead's index), per-CPU state, MSRs, port I/O,
//! halting.

use raw_cpuid::CpuId;
use x86_64::VirtAddr;
use x86_64::instructions::port::Port;
use x86_64::registers::model_specific::{GsBase, Msr};

/// State each CPU keeps for itself; IA32_GS_BASE points at it.
#[derive(Debug)]
pub struct PerCpu {
    /// Bulkhead's CPU index (MADT order).
    pub index: usize,
    /// The CPU's local APIC ID.
    pub apic_id: u32,
}

impl PerCpu {
    /// State for CPU `index` with local APIC ID `apic_id`.
    pub const fn new(index: usize, apic_id: u32) -> Self {
        Self { index, apic_id }
    }
}

/// Makes `per_cpu` this CPU's state for the rest of the run.
pub fn install_per_cpu(per_cpu: &'static PerCpu) {
    GsBase::write(VirtAddr::new(core::ptr::from_ref(per_cpu) as u64));
}

/// This CPU's state, once [`install_per_cpu`] ran on it.
pub fn per_cpu() -> Option<&'static PerCpu> {
    let pointer = GsBase::read().as_u64() as *const PerCpu;
    // SAFETY: IA32_GS_BASE is zero at reset (checked by `as_ref`) or holds the pointer
    // `install_per_cpu` stored, which came from a `&'static PerCpu`. Nothing else writes it.
    unsafe { pointer.as_ref() }
}

/// This CPU's index, or 0 before per-CPU state exists (only the boot CPU runs then).
pub fn index() -> usize {
    per_cpu().map_or(0, |p| p.index)
}

/// This CPU's initial APIC ID from CPUID (leaf 0xB's 32-bit x2APIC ID when present, else
/// leaf 1's 8-bit ID).
pub fn apic_id() -> u32 {
    let cpuid = CpuId::new();
    if let Some(topology) = cpuid.get_extended_topology_info()
        && let Some(level) = topology.into_iter().next()
    {
        return level.x2apic_id();
    }
    cpuid
        .get_feature_info()
        .map_or(0, |features| u32::from(features.initial_local_apic_id()))
}

/// Reads a model-specific register.
///
/// # Safety
/// `register` must exist on this CPU (reading an absent MSR raises #GP).
pub unsafe fn read_msr(register: u32) -> u64 {
    // SAFETY: forwarded from the caller; RDMSR has no memory effect.
    unsafe { Msr::new(register).read() }
}

/// Writes a model-specific register.
///
/// # Safety
/// `register` must exist, accept `value`, and the write must not break what the running code
/// relies on.
pub unsafe fn write_msr(register: u32, value: u64) {
    // SAFETY: forwarded from the caller.
    unsafe { Msr::new(register).write(value) }
}

/// Writes a byte to an I/O port.
///
/// # Safety
/// The port's device must tolerate the write (no memory is affected through it).
pub unsafe fn out_u8(port: u16, value: u8) {
    // SAFETY: forwarded from the caller.
    unsafe { Port::<u8>::new(port).write(value) }
}

/// Writes a word to an I/O port.
///
/// # Safety
/// As for [`out_u8`].
pub unsafe fn out_u16(port: u16, value: u16) {
    // SAFETY: forwarded from the caller.
    unsafe { Port::<u16>::new(port).write(value) }
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// The read must have no side effect the caller does not intend.
pub unsafe fn in_u8(port: u16) -> u8 {
    // SAFETY: forwarded from the caller.
    unsafe { Port::<u8>::new(port).read() }
}

/// Reads a word from an I/O port.
///
/// # Safety
/// As for [`in_u8`].
pub unsafe fn in_u16(port: u16) -> u16 {
    // SAFETY: forwarded from the caller.
    unsafe { Port::<u16>::new(port).read() }
}

/// Stops this CPU for good: interrupts off, then HLT (only NMI, SMI, INIT or reset wake it,
/// and an NMI returns to the loop).
pub fn halt() -> ! {
    x86_64::instructions::interrupts::disable();
    loop {
        x86_64::instructions::hlt();
    }
}

/// The time-stamp counter.
pub fn tsc() -> u64 {
    // SAFETY: RDTSC only reads the time-stamp counter (every x86_64 CPU has it).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Halts until an interrupt (`sti; hlt` has no window in between), lets the host's handler take
/// it, then turns interrupts off again.
pub fn wait_for_interrupt() {
    // SAFETY: the only host interrupt with a handler other than the exception report is the
    // kick vector, whose handler sends EOI and returns; no memory is touched here.
    unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
}

/// Lets a host interrupt that is pending (one that made the guest exit) be taken now.
pub fn take_pending_interrupt() {
    // SAFETY: as in `wait_for_interrupt`; the interrupt is recognised after the NOP.
    unsafe { core::arch::asm!("sti", "nop", "cli", options(nomem, nostack)) };
}
