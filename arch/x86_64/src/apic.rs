//! The local APIC of this CPU (xAPIC through MMIO, or x2APIC through MSRs when firmware left it
//! on), as far as bring-up needs it: enabling it and starting other CPUs with INIT-SIPI-SIPI.

use x86_64::registers::model_specific::Msr;

use crate::cpu::{read_msr, write_msr};
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
