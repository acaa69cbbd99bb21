//! Leaving: calls to the hypervisor through VMCALL with a PSCI function ID in RAX.

use core::arch::asm;
use core::fmt;

/// PSCI SYSTEM_OFF: stop this partition.
pub const SYSTEM_OFF: u64 = 0x8400_0008;

/// PSCI CPU_ON (64-bit).
pub const CPU_ON: u64 = 0xc400_0003;

/// Starts vCPU `target` at `entry` with RSP = RDI = `context` (PSCI CPU_ON); returns the PSCI
/// status (0 on success).
pub fn cpu_on(target: u64, entry: u64, context: u64) -> i64 {
    let result: u64;
    // SAFETY: VMCALL traps to the hypervisor, which answers in RAX; no memory changes.
    unsafe {
        asm!(
            "vmcall",
            inlateout("rax") CPU_ON => result,
            in("rdi") target,
            in("rsi") entry,
            in("rdx") context,
            options(nostack)
        );
    }
    result as i64
}

/// VMCALL with `function` in RAX; returns RAX.
pub fn vmcall(function: u64) -> u64 {
    let result: u64;
    // SAFETY: VMCALL traps to the hypervisor, which answers in RAX; no memory changes.
    unsafe {
        asm!("vmcall", inlateout("rax") function => result, options(nostack));
    }
    result
}

/// Stops the partition ("exited: system off").
pub fn system_off() -> ! {
    vmcall(SYSTEM_OFF);
    loop {
        core::hint::spin_loop();
    }
}

/// Prints `PASS` and stops the partition ("exited: system off").
pub fn exit_pass() -> ! {
    crate::println!("PASS");
    system_off()
}

/// Prints `FAIL: message` and stops the partition with a fault (see [`exit_fail_with`]).
pub fn exit_fail(message: &str) -> ! {
    exit_fail_with(format_args!("{message}"))
}

/// Prints `FAIL: ...` and stops the partition with a fault (an unknown hypervisor call).
pub fn exit_fail_with(args: fmt::Arguments<'_>) -> ! {
    crate::println!("FAIL: {args}");
    vmcall(0xdead);
    loop {
        core::hint::spin_loop();
    }
}

/// Bare metal only: host unit tests link std's.
#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    exit_fail_with(format_args!("panic: {info}"))
}
