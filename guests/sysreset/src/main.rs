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
    let restarts = platform::bootargs()
        .and_then(|args| {
            args.split_whitespace()
                .find_map(|word| word.strip_prefix("bulkhead.restarts="))
        })
        .and_then(|count| count.parse::<u32>().ok());
    let Some(restarts) = restarts else {
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
