//! `hello`: the smallest Bulkhead guest. Prints its exception level, MPIDR, RAM size, GIC and
//! PSCI versions, five ticks 50 ms apart on the virtual counter, then `PASS`.

#![no_std]
#![no_main]

use bulkhead_guest::{cpu, exit_fail_with, exit_pass, gic, platform, println, psci, timer};

bulkhead_guest::entry!(main);

fn main() -> ! {
    let level = cpu::current_el();
    println!("hello: running at EL{level}");
    if level != 1 {
        exit_fail_with(format_args!("hello: expected EL1, running at EL{level}"));
    }
    println!(
        "hello: vcpu {} mpidr {:#x}",
        cpu::current_index(),
        cpu::mpidr()
    );
    match (platform::device_tree_address(), platform::ram()) {
        (None, _) => println!("hello: no device tree"),
        (Some(address), None) => println!("hello: device tree at {address:#x} has no memory node"),
        (Some(_), Some((base, size))) => {
            println!("hello: ram {base:#x} size {size:#x} ({} MiB)", size >> 20)
        }
    }
    if let Some(bootargs) = platform::bootargs() {
        println!("hello: command line \"{bootargs}\"");
    }
    let (major, minor) = psci::version();
    println!(
        "hello: {}, psci {major}.{minor} via {}, counter {} Hz",
        gic::version(),
        platform::psci_conduit().name(),
        timer::frequency()
    );
    for tick in 1..=5 {
        timer::delay_ms(50);
        println!("hello: tick {tick}");
    }
    exit_pass()
}
