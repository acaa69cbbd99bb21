//! Leaving the machine: clean power-off, and the failure exit a test harness can tell apart.

use core::arch::asm;

use hypervisor::bootargs::ExitMethod;
use spin::Once;

use crate::{cpu, psci};

static FAILURE_EXIT: Once<ExitMethod> = Once::new();

/// Chooses how [`fail`] leaves the machine (from the boot options); the first call wins.
pub fn set_failure_exit(method: ExitMethod) {
    FAILURE_EXIT.call_once(|| method);
}

/// Clean power-off through PSCI SYSTEM_OFF (QEMU exits with status 0).
pub fn power_off() -> ! {
    let error = psci::system_off();
    hypervisor::console::CONSOLE.print_emergency(format_args!(
        "bulkhead: PSCI SYSTEM_OFF failed: {error}; halting\n"
    ));
    cpu::halt()
}

/// Leaves the machine after a fatal error: semihosting SYS_EXIT with status 1 when chosen
/// (the emulator's exit status shows the failure), else PSCI SYSTEM_OFF.
pub fn fail() -> ! {
    if FAILURE_EXIT.get() == Some(&ExitMethod::Semihosting) {
        semihosting_exit(1);
    }
    power_off()
}

/// Semihosting SYS_EXIT (0x18) with ADP_Stopped_ApplicationExit and `status`.
fn semihosting_exit(status: u64) {
    const SYS_EXIT: u64 = 0x18;
    const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x2_0026;
    let block = [ADP_STOPPED_APPLICATION_EXIT, status];
    // SAFETY: `hlt #0xf000` is the AArch64 semihosting trap; the emulator reads the two-word
    // parameter block at x1, which lives on this stack frame for the duration of the call.
    // Only reached when the boot options say an emulator with semihosting runs us.
    unsafe {
        asm!("hlt #0xf000", in("x0") SYS_EXIT, in("x1") block.as_ptr(), options(nostack));
    }
}
