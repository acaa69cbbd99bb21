//! `sysreset`: asks for PSCI SYSTEM_RESET (its partition is reloaded and restarted; the others
//! must not notice) until Bulkhead's `bulkhead.restarts=N` boot argument says it was restarted
//! three times, then passes.

#![no_std]
#![no_main]

use bulkhead_guest::{exit_fail, exit_pass, platform, println, psci};

bulkhead_guest::entry!(main);

/// Resets to ask for before passing.
const RESETS: u32 = 3;

fn main() -> ! {
    let Some(restarts) = platform::restarts() else {
        exit_fail("sysreset: no bulkhead.restarts=N in /chosen/bootargs");
    };
    if restarts < RESETS {
        println!("sysreset: restarted {restarts} time(s), resetting my partition");
        psci::call(psci::SYSTEM_RESET, 0, 0, 0);
        exit_fail("sysreset: SYSTEM_RESET returned");
    }
    println!("sysreset: restarted {restarts} time(s), done resetting");
    exit_pass()
}
