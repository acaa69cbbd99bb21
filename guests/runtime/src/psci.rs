//! PSCI calls through HVC or SMC (the device tree's `/psci` `method`, HVC by default).

use core::arch::asm;

use crate::platform;

/// PSCI_VERSION.
pub const PSCI_VERSION: u32 = 0x8400_0000;
/// CPU_OFF.
pub const CPU_OFF: u32 = 0x8400_0002;
/// CPU_ON (SMC64).
pub const CPU_ON: u32 = 0xc400_0003;
/// AFFINITY_INFO (SMC64).
pub const AFFINITY_INFO: u32 = 0xc400_0004;
/// SYSTEM_OFF.
pub const SYSTEM_OFF: u32 = 0x8400_0008;
/// SYSTEM_RESET.
pub const SYSTEM_RESET: u32 = 0x8400_0009;
/// PSCI_FEATURES.
pub const PSCI_FEATURES: u32 = 0x8400_000a;

/// Success.
pub const SUCCESS: i64 = 0;
/// NOT_SUPPORTED.
pub const NOT_SUPPORTED: i64 = -1;
/// INVALID_PARAMETERS.
pub const INVALID_PARAMETERS: i64 = -2;
/// DENIED.
pub const DENIED: i64 = -3;
/// ALREADY_ON.
pub const ALREADY_ON: i64 = -4;
/// ON_PENDING.
pub const ON_PENDING: i64 = -5;
/// INTERNAL_FAILURE.
pub const INTERNAL_FAILURE: i64 = -6;

/// AFFINITY_INFO: the vCPU is on.
pub const AFFINITY_ON: i64 = 0;
/// AFFINITY_INFO: the vCPU is off.
pub const AFFINITY_OFF: i64 = 1;
/// AFFINITY_INFO: the vCPU is being turned on.
pub const AFFINITY_ON_PENDING: i64 = 2;

/// The instruction that reaches the PSCI implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    /// HVC #0 (the hypervisor, or QEMU's built-in PSCI at EL1).
    Hvc,
    /// SMC #0 (firmware at EL3, or a hypervisor trapping SMC).
    Smc,
}

impl Conduit {
    /// The device-tree `method` name.
    pub fn name(self) -> &'static str {
        match self {
            Conduit::Hvc => "hvc",
            Conduit::Smc => "smc",
        }
    }
}

/// One SMCCC call: function id and three arguments in x0-x3, result in x0. x4-x17 are
/// treated as clobbered (SMCCC 1.0 allows it).
pub fn call(function: u32, arg1: u64, arg2: u64, arg3: u64) -> i64 {
    let mut result = u64::from(function);
    match platform::psci_conduit() {
        // SAFETY: a PSCI call only changes registers the asm declares clobbered, and memory
        // only as PSCI defines (none of the functions used here write guest memory).
        Conduit::Hvc => unsafe {
            asm!(
                "hvc #0",
                inout("x0") result, inout("x1") arg1 => _, inout("x2") arg2 => _,
                inout("x3") arg3 => _, out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
                out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
                options(nostack)
            )
        },
        // SAFETY: as for HVC above.
        Conduit::Smc => unsafe {
            asm!(
                "smc #0",
                inout("x0") result, inout("x1") arg1 => _, inout("x2") arg2 => _,
                inout("x3") arg3 => _, out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
                out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
                options(nostack)
            )
        },
    }
    result as i64
}

/// PSCI_VERSION: (major, minor).
pub fn version() -> (u16, u16) {
    let raw = call(PSCI_VERSION, 0, 0, 0) as u32;
    ((raw >> 16) as u16, raw as u16)
}

/// PSCI_FEATURES for a function id: >= 0 supported (feature flags), NOT_SUPPORTED else.
pub fn features(function: u32) -> i64 {
    call(PSCI_FEATURES, u64::from(function), 0, 0)
}

/// CPU_ON: starts the vCPU with MPIDR `target` at `entry` (guest-physical) with x0 = `context`.
pub fn cpu_on(target: u64, entry: u64, context: u64) -> i64 {
    call(CPU_ON, target, entry, context)
}

/// CPU_OFF: turns this vCPU off; returns only on failure (with the error code).
pub fn cpu_off() -> i64 {
    call(CPU_OFF, 0, 0, 0)
}

/// AFFINITY_INFO at level 0: [`AFFINITY_ON`], [`AFFINITY_OFF`], [`AFFINITY_ON_PENDING`] or
/// an error code.
pub fn affinity_info(target: u64) -> i64 {
    call(AFFINITY_INFO, target, 0, 0)
}

/// SYSTEM_OFF: powers the partition (on QEMU: the machine) off.
pub fn system_off() -> ! {
    call(SYSTEM_OFF, 0, 0, 0);
    halt()
}

/// SYSTEM_RESET: restarts the partition (on QEMU: the machine).
pub fn system_reset() -> ! {
    call(SYSTEM_RESET, 0, 0, 0);
    halt()
}

/// Parks this vCPU for good (used if a power-off call returns).
pub fn halt() -> ! {
    crate::cpu::disable_interrupts();
    loop {
        crate::cpu::wait_for_interrupt();
    }
}
