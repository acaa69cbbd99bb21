//! The local APIC of this CPU (xAPIC through MMIO, or x2APIC through MSRs when firmware left it
//! on): enabling it, starting other CPUs with INIT-SIPI-SIPI, kick IPIs between CPUs and the
//! timer that wakes a halted CPU or ends a guest's run at a TSC value ([`HostTimer`]: the
//! TSC-deadline mode where the CPU has it, else a one-shot count-down calibrated against the
//! TSC at boot, as on QEMU's TCG CPUs).

use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::registers::model_specific::Msr;

use crate::cpu::{self, read_msr, write_msr};
use crate::host_timer::{HostTimer, one_shot_count};
use crate::pit;

const IA32_APIC_BASE: u32 = 0x1b;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const APIC_BASE_ENABLE: u64 = 1 << 11;
/// Registers (xAPIC MMIO offsets; x2APIC MSR = 0x800 + offset / 16).
const SPURIOUS_VECTOR: u32 = 0xf0;
const INTERRUPT_COMMAND_LOW: u32 = 0x300;
const INTERRUPT_COMMAND_HIGH: u32 = 0x310;
const SOFTWARE_ENABLE: u32 = 1 << 8;
const DELIVERY_PENDING: u32 = 1 << 12;
const LEVEL_ASSERT: u32 = 1 << 14;
const DELIVERY_INIT: u32 = 0b101 << 8;
const DELIVERY_STARTUP: u32 = 0b110 << 8;
/// The spurious-interrupt vector (its low 4 bits must be ones on old APICs).
const SPURIOUS: u32 = 0xff;
const END_OF_INTERRUPT: u32 = 0xb0;
const LVT_TIMER: u32 = 0x320;
const LVT_TSC_DEADLINE: u32 = 0b10 << 17;
const LVT_MASKED: u32 = 1 << 16;
const TIMER_INITIAL_COUNT: u32 = 0x380;
const TIMER_CURRENT_COUNT: u32 = 0x390;
const TIMER_DIVIDE: u32 = 0x3e0;
/// Divide configuration value for "divide by 1".
const DIVIDE_BY_1: u32 = 0b1011;
const IA32_TSC_DEADLINE: u32 = 0x6e0;
/// One-shot timer ticks per TSC tick, 32.32 fixed point, as [`LocalApic::calibrate_one_shot`]
/// measured it on the boot CPU (every local APIC timer runs from the same clock); 0 until
/// then.
static ONE_SHOT_RATE: AtomicU64 = AtomicU64::new(0);
/// The host's own vector for kicks between CPUs and its timer: its handler only
/// sends EOI; whoever halted looks at its state again.
pub const KICK_VECTOR: u8 = 0xf0;

/// This CPU's local APIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalApic {
    /// Memory-mapped registers at this (identity-mapped, uncached) physical address.
    Xapic {
        /// Base of the 4 KiB register page.
        base: u64,
    },
    /// x2APIC mode: registers are MSRs 0x800..0x8ff.
    X2apic,
}

impl LocalApic {
    /// The local APIC as IA32_APIC_BASE describes it: its base address (for the page tables)
    /// and the mode firmware left it in.
    pub fn current() -> Self {
        // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU; reading it has no effect.
        let base = unsafe { read_msr(IA32_APIC_BASE) };
        if base & APIC_BASE_X2APIC != 0 {
            LocalApic::X2apic
        } else {
            LocalApic::Xapic {
                base: base & 0x000f_ffff_ffff_f000,
            }
        }
    }

    /// The register page to map uncached (xAPIC only).
    pub fn mmio_base(self) -> Option<u64> {
        match self {
            LocalApic::Xapic { base } => Some(base),
            LocalApic::X2apic => None,
        }
    }

    fn read(self, register: u32) -> u32 {
        match self {
            // SAFETY: `base` is the local APIC's register page (IA32_APIC_BASE), mapped
            // uncached; `register` is one of the 32-bit registers above, inside the page.
            LocalApic::Xapic { base } => unsafe {
                core::ptr::read_volatile((base + u64::from(register)) as *const u32)
            },
            // SAFETY: x2APIC mode is on (checked in `current`); the MSR is the register's.
            LocalApic::X2apic => unsafe { read_msr(0x800 + register / 16) as u32 },
        }
    }

    fn write(self, register: u32, value: u32) {
        match self {
            // SAFETY: as in `read`.
            LocalApic::Xapic { base } => unsafe {
                core::ptr::write_volatile((base + u64::from(register)) as *mut u32, value)
            },
            // SAFETY: as in `read`.
            LocalApic::X2apic => unsafe { write_msr(0x800 + register / 16, u64::from(value)) },
        }
    }

    /// Enables the APIC (globally in IA32_APIC_BASE, and in software through the spurious
    /// vector register) with every local interrupt still masked by RFLAGS.IF.
    pub fn enable(self) {
        // SAFETY: setting the global enable bit keeps the base address and mode; the APIC
        // page stays where it is mapped.
        unsafe {
            let mut base = Msr::new(IA32_APIC_BASE);
            let value = base.read();
            if value & APIC_BASE_ENABLE == 0 {
                base.write(value | APIC_BASE_ENABLE);
            }
        }
        let spurious = self.read(SPURIOUS_VECTOR);
        self.write(SPURIOUS_VECTOR, spurious | SOFTWARE_ENABLE | SPURIOUS);
    }

    /// Ends the interrupt in service.
    pub fn end_of_interrupt(self) {
        self.write(END_OF_INTERRUPT, 0);
    }

    /// Sends [`KICK_VECTOR`] (fixed, physical destination) to the CPU with local APIC ID
    /// `apic_id`.
    pub fn kick(self, apic_id: u32) {
        self.send(apic_id, u32::from(KICK_VECTOR));
    }

    /// Whether the local APIC timer has TSC-deadline mode (CPUID.1:ECX bit 24).
    pub fn has_tsc_deadline() -> bool {
        core::arch::x86_64::__cpuid(1).ecx & (1 << 24) != 0
    }

    /// Arms this CPU's timer to raise [`KICK_VECTOR`] when the TSC reaches `deadline` (at once
    /// if it already has), or disarms it (`None`). Needs [`LocalApic::has_tsc_deadline`].
    pub fn set_deadline(self, deadline: Option<u64>) {
        self.write(LVT_TIMER, LVT_TSC_DEADLINE | u32::from(KICK_VECTOR));
        // SAFETY: IA32_TSC_DEADLINE exists with TSC-deadline mode (the caller checked); it
        // only arms or (0) disarms this CPU's timer.
        unsafe { write_msr(IA32_TSC_DEADLINE, deadline.map_or(0, |d| d.max(1))) };
    }

    /// Measures the one-shot timer's rate against the TSC across a 10 ms PIT delay (divide by
    /// 1, masked, so nothing fires) and keeps it for [`host_timer`]; returns the
    /// timer's ticks per second for `tsc_hz` TSC ticks per second (0 if it did not count).
    /// Call on the boot CPU before the others start.
    pub fn calibrate_one_shot(self, tsc_hz: u64) -> u64 {
        self.write(TIMER_DIVIDE, DIVIDE_BY_1);
        self.write(LVT_TIMER, LVT_MASKED | u32::from(KICK_VECTOR));
        self.write(TIMER_INITIAL_COUNT, u32::MAX);
        let start = cpu::tsc();
        pit::delay_milliseconds(10);
        let remaining = self.read(TIMER_CURRENT_COUNT);
        let elapsed = cpu::tsc().wrapping_sub(start);
        self.write(TIMER_INITIAL_COUNT, 0);
        let counted = u64::from(u32::MAX - remaining);
        // A timer that ran out (more than 2^32 ticks in 10 ms) or did not move is not used.
        if remaining == 0 || counted == 0 || elapsed == 0 {
            return 0;
        }
        let rate = ((u128::from(counted) << 32) / u128::from(elapsed)) as u64;
        ONE_SHOT_RATE.store(rate, Ordering::Relaxed);
        ((u128::from(tsc_hz) * u128::from(rate)) >> 32) as u64
    }

    /// Arms this CPU's timer (in `timer`'s mode) to raise [`KICK_VECTOR`] when the TSC
    /// reaches `deadline`, or disarms it (`None`); returns the TSC value from which it fires
    /// (a one-shot count-down is at most 2^32 - 1 ticks long: a later deadline needs arming
    /// again then), `None` when disarmed or without a timer.
    pub fn arm(self, timer: HostTimer, deadline: Option<u64>) -> Option<u64> {
        match (timer, deadline) {
            (HostTimer::TscDeadline, _) => {
                self.set_deadline(deadline);
                deadline
            }
            (HostTimer::OneShot { .. }, None) => {
                self.write(TIMER_INITIAL_COUNT, 0);
                None
            }
            (HostTimer::OneShot { ticks_per_tsc }, Some(deadline)) => {
                let now = cpu::tsc();
                let (count, fires) = one_shot_count(now, deadline, ticks_per_tsc);
                self.write(TIMER_DIVIDE, DIVIDE_BY_1);
                self.write(LVT_TIMER, u32::from(KICK_VECTOR));
                self.write(TIMER_INITIAL_COUNT, count);
                Some(fires)
            }
            (HostTimer::Absent, _) => None,
        }
    }

    fn send(self, destination: u32, command: u32) {
        match self {
            LocalApic::Xapic { .. } => {
                self.write(INTERRUPT_COMMAND_HIGH, destination << 24);
                self.write(INTERRUPT_COMMAND_LOW, command);
                for _ in 0..1_000_000 {
                    if self.read(INTERRUPT_COMMAND_LOW) & DELIVERY_PENDING == 0 {
                        break;
                    }
                    core::hint::spin_loop();
                }
            }
            LocalApic::X2apic => {
                let value = (u64::from(destination) << 32) | u64::from(command);
                // SAFETY: the x2APIC ICR (MSR 0x830) takes the destination and command in one
                // write; delivery needs no polling in x2APIC mode.
                unsafe { write_msr(0x830, value) };
            }
        }
    }

    /// Starts the CPU with local APIC ID `apic_id` at physical address `vector_page << 12`
    /// (real mode, CS = vector_page << 8, IP = 0) with the universal INIT-SIPI-SIPI sequence:
    /// INIT, 10 ms, STARTUP, 200 µs, and a second STARTUP unless `started` says it is running.
    pub fn start_cpu(self, apic_id: u32, vector_page: u8, started: impl Fn() -> bool) {
        self.send(apic_id, DELIVERY_INIT | LEVEL_ASSERT);
        pit::delay_milliseconds(10);
        for _ in 0..2 {
            if started() {
                return;
            }
            self.send(apic_id, DELIVERY_STARTUP | u32::from(vector_page));
            pit::delay_microseconds(200);
        }
    }
}

/// How this CPU's local APIC timer wakes it at a TSC value: TSC-deadline mode where the CPU
/// has it, else the one-shot count-down at the rate [`LocalApic::calibrate_one_shot`]
/// measured.
pub fn host_timer() -> HostTimer {
    if LocalApic::has_tsc_deadline() {
        return HostTimer::TscDeadline;
    }
    match ONE_SHOT_RATE.load(Ordering::Relaxed) {
        0 => HostTimer::Absent,
        ticks_per_tsc => HostTimer::OneShot { ticks_per_tsc },
    }
}
