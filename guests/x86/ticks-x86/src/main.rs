//! `ticks-x86`: ten periodic timer interrupts from the partition's virtual x2APIC, the vCPU halting between them, then PASS.

#![no_std]
#![no_main]

use bulkhead_guest_x86::{cpu, exit_fail_with, interrupts, println, system_off, x2apic};

bulkhead_guest_x86::entry!(main);

const VECTOR: u8 = 0x20;
/// TSC ticks between interrupts.
const PERIOD: u32 = 200_000;
const TICKS: u32 = 10;

fn tsc() -> u64 {
    // SAFETY: RDTSC only reads the time-stamp counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

fn main() -> ! {
    if !x2apic::supported() || !x2apic::enabled() {
        exit_fail_with(format_args!("no x2APIC (CPUID or IA32_APIC_BASE)"));
    }
    println!(
        "ticks: x2APIC id {}, version {:#x}, apic base {:#x}, cpuid x2apic {}",
        x2apic::id(),
        x2apic::read(x2apic::VERSION),
        x2apic::read(x2apic::APIC_BASE),
        x2apic::supported()
    );
    let _ = cpu::cpuid(1);
    interrupts::install();
    x2apic::enable();
    let start = tsc();
    x2apic::start_timer(VECTOR, true, PERIOD);
    let current = x2apic::read(x2apic::TMCCT);
    if current == 0 || current > u64::from(PERIOD) {
        exit_fail_with(format_args!("timer current count {current} after start"));
    }
    let mut seen = 0;
    while seen < TICKS {
        interrupts::wait();
        let now = interrupts::count(VECTOR);
        if now != seen {
            seen = now;
            println!("ticks: interrupt {seen}");
        }
    }
    let elapsed = tsc().wrapping_sub(start);
    x2apic::stop_timer();
    println!("ticks: {TICKS} interrupts in {elapsed} TSC ticks (period {PERIOD})");
    if elapsed < u64::from(PERIOD) * u64::from(TICKS - 1) {
        exit_fail_with(format_args!("interrupts came too fast"));
    }
    println!("PASS");
    system_off()
}
