//! `hello-x86`: the smallest Bulkhead x86_64 guest. Says hello with its partition's name (from
//! the boot information), shows what CPUID tells a guest (VMX hidden), then powers its
//! partition off with VMCALL.

#![no_std]
#![no_main]

use bulkhead_guest_x86::{boot_info, cpu, exit_fail_with, println, system_off};

bulkhead_guest_x86::entry!(main);

fn main() -> ! {
    let name = boot_info::name();
    println!("hello from {name}");
    if !boot_info::present() {
        exit_fail_with(format_args!("no boot information"));
    }
    println!(
        "{name}: vcpu {} of a partition with {} MiB RAM",
        boot_info::vcpu_index().unwrap_or(u64::MAX),
        boot_info::ram_size().unwrap_or(0) >> 20
    );
    if let Some(line) = boot_info::command_line() {
        println!("{name}: command line \"{line}\"");
    }
    let vendor = cpu::vendor();
    println!(
        "{name}: cpuid vendor {}, max leaf {}, vmx {}, hypervisor bit {}",
        core::str::from_utf8(&vendor).unwrap_or("?"),
        cpu::cpuid(0).eax,
        if cpu::has_vmx() { "visible" } else { "hidden" },
        cpu::has_hypervisor_bit()
    );
    if cpu::has_vmx() {
        exit_fail_with(format_args!("CPUID shows VMX to a guest"));
    }
    for line in 1..=3 {
        println!("{name}: line {line}");
    }
    println!("{name}: PASS, system off");
    system_off()
}
