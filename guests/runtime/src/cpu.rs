//! The running vCPU: its identity (MPIDR), exception level, interrupt masking, and starting
//! the other vCPUs of the partition with PSCI CPU_ON.

use core::arch::asm;

use crate::psci;
use crate::sync::SpinLock;

/// How many vCPUs the runtime has stacks for (vCPU indices 0..MAX_VCPUS).
pub const MAX_VCPUS: usize = 4;

/// MPIDR_EL1 as read (bit 31 is RES1; Aff0 is the vCPU index on Bulkhead and QEMU virt).
pub fn mpidr() -> u64 {
    let value: u64;
    // SAFETY: reading MPIDR_EL1 has no side effects.
    unsafe { asm!("mrs {}, mpidr_el1", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// The MPIDR affinity fields (Aff3.Aff2.Aff1.Aff0), without the flag bits.
pub fn affinity() -> u64 {
    let value = mpidr();
    value & 0xff_00ff_ffff
}

/// This vCPU's index: MPIDR Aff0.
pub fn current_index() -> usize {
    (mpidr() & 0xff) as usize
}

/// The MPIDR value that names vCPU `index` of this partition (Aff0 = index) for PSCI.
pub fn mpidr_of(index: usize) -> u64 {
    index as u64 & 0xff
}

/// The exception level the guest runs at (1 expected).
pub fn current_el() -> u8 {
    let value: u64;
    // SAFETY: reading CurrentEL has no side effects.
    unsafe { asm!("mrs {}, CurrentEL", out(reg) value, options(nomem, nostack, preserves_flags)) };
    ((value >> 2) & 0b11) as u8
}

/// Unmasks IRQs on this vCPU.
pub fn enable_interrupts() {
    // SAFETY: clearing PSTATE.I only lets IRQs in; the vector table is installed at entry.
    unsafe { asm!("msr daifclr, #2", options(nomem, nostack, preserves_flags)) };
}

/// Masks IRQs on this vCPU and returns the previous DAIF for [`restore_interrupts`].
pub fn disable_interrupts() -> u64 {
    let daif: u64;
    // SAFETY: reads DAIF and sets PSTATE.I; no memory is touched.
    unsafe {
        asm!("mrs {}, daif", "msr daifset, #2", out(reg) daif, options(nomem, nostack, preserves_flags));
    }
    daif
}

/// Puts back the DAIF value [`disable_interrupts`] returned.
pub fn restore_interrupts(daif: u64) {
    // SAFETY: restores an interrupt mask this vCPU had before.
    unsafe { asm!("msr daif, {}", in(reg) daif, options(nomem, nostack, preserves_flags)) };
}

/// Waits for an interrupt (WFI). Returns at once if one is pending, even while masked.
pub fn wait_for_interrupt() {
    // SAFETY: WFI only suspends this vCPU until an interrupt or another wake-up event.
    unsafe { asm!("dsb sy", "wfi", options(nomem, nostack, preserves_flags)) };
}

/// Waits for an event (WFE) or a wake-up: use in polling loops to be kind to the host.
pub fn wait_for_event() {
    // SAFETY: WFE only suspends this vCPU until an event, which an SEV or an interrupt sends.
    unsafe { asm!("wfe", options(nomem, nostack, preserves_flags)) };
}

/// Spin-loop hint: YIELD, which lets an emulator that runs vCPUs in turn (QEMU TCG without
/// MTTCG, e.g. under `-icount`) switch to another vCPU; a no-op on hardware.
/// (`core::hint::spin_loop` emits ISB on aarch64, which does not.)
pub fn relax() {
    // SAFETY: YIELD is a hint with no architectural effect.
    unsafe { asm!("yield", options(nomem, nostack, preserves_flags)) };
}

/// Sends an event to every vCPU (wakes WFE).
pub fn send_event() {
    // SAFETY: SEV has no effect beyond waking WFE.
    unsafe { asm!("dsb ish", "sev", options(nomem, nostack, preserves_flags)) };
}

/// What a secondary vCPU runs once CPU_ON brings it up; gets its vCPU index.
pub type SecondaryEntry = fn(usize) -> !;

/// The entry each secondary vCPU runs, by vCPU index.
static SECONDARY_ENTRIES: SpinLock<[Option<SecondaryEntry>; MAX_VCPUS]> =
    SpinLock::new([None; MAX_VCPUS]);

/// Why [`start_vcpu`] could not start a vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartError {
    /// The index is not below [`MAX_VCPUS`]: there is no stack for it.
    NoStack,
    /// PSCI CPU_ON failed with this return code.
    Psci(i64),
}

/// Starts vCPU `index` with PSCI CPU_ON; it runs `entry(index)` on its own stack, with
/// interrupts masked and the same exception vectors and memory map as vCPU 0.
pub fn start_vcpu(index: usize, entry: SecondaryEntry) -> Result<(), StartError> {
    {
        let mut entries = SECONDARY_ENTRIES.lock();
        let slot = entries.get_mut(index).ok_or(StartError::NoStack)?;
        *slot = Some(entry);
    }
    let result = psci::cpu_on(
        mpidr_of(index),
        crate::entry::secondary_entry_address(),
        index as u64,
    );
    if result == psci::SUCCESS {
        Ok(())
    } else {
        Err(StartError::Psci(result))
    }
}

/// Guest-physical address to give PSCI CPU_ON as the entry point; the context must be the
/// vCPU index (below [`MAX_VCPUS`], or the vCPU parks with interrupts masked).
pub fn secondary_entry_address() -> u64 {
    crate::entry::secondary_entry_address()
}

/// Rust side of the CPU_ON entry: runs the entry [`start_vcpu`] stored for this vCPU.
#[unsafe(no_mangle)]
extern "C" fn bulkhead_guest_secondary_start(index: u64) -> ! {
    let entry = SECONDARY_ENTRIES
        .lock()
        .get(index as usize)
        .copied()
        .flatten();
    match entry {
        Some(entry) => entry(index as usize),
        None => {
            crate::println!("vcpu {index}: started without an entry, calling CPU_OFF");
            psci::cpu_off();
            loop {
                wait_for_interrupt();
            }
        }
    }
}
