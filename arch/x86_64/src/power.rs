//! Leaving the machine: clean power-off (ACPI S5), and the failure exit an emulator's exit
//! status or a test harness can tell apart.

use hypervisor::bootargs::ExitMethod;
use spin::Once;

use crate::cpu::{self, in_u16, out_u8, out_u16};
use crate::pit;
use crate::platform::SoftOff;

static FAILURE_EXIT: Once<ExitMethod> = Once::new();
static SOFT_OFF: Once<SoftOff> = Once::new();

/// QEMU's `isa-debug-exit` device (when configured at this port): writing v exits QEMU with
/// status (v << 1) | 1.
const DEBUG_EXIT_PORT: u16 = 0xf4;
/// Bochs's shutdown port: the string "Shutdown" written byte by byte ends the simulation.
const BOCHS_SHUTDOWN_PORT: u16 = 0x8900;
const SLEEP_ENABLE: u16 = 1 << 13;
const SCI_ENABLE: u16 = 1 << 0;

/// Chooses how [`fail`] leaves the machine (from the boot options); the first call wins.
pub fn set_failure_exit(method: ExitMethod) {
    FAILURE_EXIT.call_once(|| method);
}

/// Records how ACPI powers the machine off (from the FADT and DSDT); the first call wins.
pub fn set_soft_off(soft_off: SoftOff) {
    SOFT_OFF.call_once(|| soft_off);
}

/// Clean power-off: ACPI S5 through the PM1 control registers (QEMU exits with status 0, Bochs
/// ends), then Bochs's shutdown port, then halt.
pub fn power_off() -> ! {
    if let Some(soft_off) = SOFT_OFF.get() {
        acpi_soft_off(soft_off);
    }
    if FAILURE_EXIT.get() == Some(&ExitMethod::DebugExit) {
        bochs_shutdown();
    }
    hypervisor::console::CONSOLE.print_emergency(format_args!(
        "bulkhead: ACPI power-off did not take effect; halting\n"
    ));
    cpu::halt()
}

/// Leaves the machine after a fatal error: with `bulkhead.exit=debug-exit`, QEMU's
/// isa-debug-exit with status 3 and Bochs's shutdown port; else the clean power-off.
pub fn fail() -> ! {
    if FAILURE_EXIT.get() == Some(&ExitMethod::DebugExit) {
        // SAFETY: the boot options say an emulator runs us, where this port is the
        // isa-debug-exit device (QEMU) or unclaimed (Bochs); no memory is affected.
        unsafe { out_u8(DEBUG_EXIT_PORT, 1) };
        bochs_shutdown();
    }
    power_off()
}

fn bochs_shutdown() {
    for byte in *b"Shutdown" {
        // SAFETY: only reached with `bulkhead.exit=debug-exit` (an emulator); outside Bochs the
        // port is unclaimed. No memory is affected.
        unsafe { out_u8(BOCHS_SHUTDOWN_PORT, byte) };
    }
}

fn acpi_soft_off(soft_off: &SoftOff) {
    let Some(pm1a) = soft_off.pm1a_control else {
        return;
    };
    // SAFETY: the FADT names these ports as the PM1 control blocks and the SMI command port;
    // the write sequence is the one ACPI defines for entering S5. No memory is affected.
    unsafe {
        if in_u16(pm1a) & SCI_ENABLE == 0
            && let Some((port, value)) = soft_off.acpi_enable
        {
            out_u8(port, value);
            for _ in 0..300 {
                if in_u16(pm1a) & SCI_ENABLE != 0 {
                    break;
                }
                pit::delay_milliseconds(1);
            }
        }
        let (type_a, type_b) = soft_off.sleep_types;
        out_u16(pm1a, (u16::from(type_a & 7) << 10) | SLEEP_ENABLE);
        if let Some(pm1b) = soft_off.pm1b_control {
            out_u16(pm1b, (u16::from(type_b & 7) << 10) | SLEEP_ENABLE);
        }
    }
    pit::delay_milliseconds(100);
}
