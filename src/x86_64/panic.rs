//! The panic handler: report where, then leave the machine with a failure status.

use arch_x86_64::{cpu, power};
use hypervisor::console::CONSOLE;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let (file, line) = info
        .location()
        .map_or(("<unknown>", 0), |l| (l.file(), l.line()));
    CONSOLE.print_emergency(format_args!(
        "bulkhead: panic at {file}:{line} on cpu {}: {}\n",
        cpu::index(),
        info.message()
    ));
    power::fail()
}

/// The `bulkhead.selftest=panic` path: shows the handler names the location.
#[allow(clippy::panic, reason = "the panic self-test panics on purpose")]
pub fn deliberate_panic() -> ! {
    panic!("self-test: deliberate panic")
}
