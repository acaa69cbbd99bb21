//! `sysoff`: powers its partition off at once with PSCI SYSTEM_OFF (other partitions must
//! keep running).

#![no_std]
#![no_main]

use bulkhead_guest::{exit_fail, println, psci};

bulkhead_guest::entry!(main);

fn main() -> ! {
    println!("sysoff: powering off early");
    psci::call(psci::SYSTEM_OFF, 0, 0, 0);
    exit_fail("sysoff: SYSTEM_OFF returned")
}
