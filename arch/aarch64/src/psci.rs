//! PSCI calls to the firmware through the SMC conduit.

use core::arch::asm;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use hypervisor::board::PsciConduit;

const PSCI_VERSION: u32 = 0x8400_0000;
const CPU_ON_64: u32 = 0xc400_0003;
const SYSTEM_OFF: u32 = 0x8400_0008;
const SYSTEM_RESET: u32 = 0x8400_0009;

/// A PSCI error return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciError {
    /// NOT_SUPPORTED (-1).
    NotSupported,
    /// INVALID_PARAMETERS (-2).
    InvalidParameters,
    /// DENIED (-3).
    Denied,
    /// ALREADY_ON (-4).
    AlreadyOn,
    /// ON_PENDING (-5).
    OnPending,
    /// INTERNAL_FAILURE (-6).
    InternalFailure,
    /// Any other negative value.
    Other(i64),
}

impl fmt::Display for PsciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PsciError::NotSupported => write!(f, "NOT_SUPPORTED"),
            PsciError::InvalidParameters => write!(f, "INVALID_PARAMETERS"),
            PsciError::Denied => write!(f, "DENIED"),
            PsciError::AlreadyOn => write!(f, "ALREADY_ON"),
            PsciError::OnPending => write!(f, "ON_PENDING"),
            PsciError::InternalFailure => write!(f, "INTERNAL_FAILURE"),
            PsciError::Other(code) => write!(f, "error {code}"),
        }
    }
}

static USE_HVC: AtomicBool = AtomicBool::new(false);

/// Selects the conduit the firmware's device tree names. `Hvc` only makes sense when
/// Bulkhead itself runs below EL2 (to report that it cannot run there).
pub fn set_conduit(conduit: PsciConduit) {
    USE_HVC.store(conduit == PsciConduit::Hvc, Ordering::Relaxed);
}

/// One SMC Calling Convention call through `$instruction` (`smc #0` or `hvc #0`).
macro_rules! smccc {
    ($instruction:literal, $function:expr, $arg1:expr, $arg2:expr, $arg3:expr) => {{
        let result: i64;
        // SAFETY: a PSCI call with the SMC Calling Convention: x0-x3 in, x0 out, x4-x17 may
        // be clobbered. The functions used here do not touch the hypervisor's memory.
        unsafe {
            asm!(
                $instruction,
                inout("x0") u64::from($function) => result,
                inout("x1") $arg1 => _, inout("x2") $arg2 => _, inout("x3") $arg3 => _,
                out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _,
                out("x10") _, out("x11") _, out("x12") _, out("x13") _, out("x14") _,
                out("x15") _, out("x16") _, out("x17") _,
                options(nostack)
            );
        }
        result
    }};
}

fn call(function: u32, arg1: u64, arg2: u64, arg3: u64) -> i64 {
    if USE_HVC.load(Ordering::Relaxed) {
        smccc!("hvc #0", function, arg1, arg2, arg3)
    } else {
        smccc!("smc #0", function, arg1, arg2, arg3)
    }
}

fn check(result: i64) -> Result<(), PsciError> {
    match result {
        0 => Ok(()),
        -1 => Err(PsciError::NotSupported),
        -2 => Err(PsciError::InvalidParameters),
        -3 => Err(PsciError::Denied),
        -4 => Err(PsciError::AlreadyOn),
        -5 => Err(PsciError::OnPending),
        -6 => Err(PsciError::InternalFailure),
        other => Err(PsciError::Other(other)),
    }
}

/// The firmware's PSCI version as (major, minor).
pub fn version() -> (u16, u16) {
    let version = call(PSCI_VERSION, 0, 0, 0) as u64;
    ((version >> 16) as u16, version as u16)
}

/// Starts the CPU with affinity `mpidr` at physical address `entry` (EL2, MMU off), with
/// `context` in x0.
pub fn cpu_on(mpidr: u64, entry: u64, context: u64) -> Result<(), PsciError> {
    check(call(CPU_ON_64, mpidr, entry, context))
}

/// Powers the machine off; returns only if the firmware refused.
pub fn system_off() -> PsciError {
    check(call(SYSTEM_OFF, 0, 0, 0))
        .err()
        .unwrap_or(PsciError::InternalFailure)
}

/// Resets the machine; returns only if the firmware refused.
pub fn system_reset() -> PsciError {
    check(call(SYSTEM_RESET, 0, 0, 0))
        .err()
        .unwrap_or(PsciError::InternalFailure)
}
