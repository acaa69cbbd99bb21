//! `ticks-x86`: ten periodic timer interrupts from the partition's virtual x2APIC, the vCPU
//! halting between them; then three more while it spins with interrupts on and never exits
//! by itself (the hypervisor must end its run at the timer's deadline), then PASS.

#![no_std]
#![no_main]

use bulkhead_guest_x86::{cpu, exit_fail_with, interrupts, println, system_off, time, x2apic};

bulkhead_guest_x86::entry!(main);

const VECTOR: u8 = 0x20;
/// TSC ticks between interrupts, at least: 20 ms where the TSC runs faster than 10 MHz (QEMU's
/// TCG runs it at the host's rate, far ahead of the emulation: a shorter period would have
/// interrupts follow each other back to back), so that the handler and a line fit in between.
const MIN_PERIOD: u32 = 200_000;
const PERIOD_MS: u64 = 20;
const TICKS: u32 = 10;
/// Interrupts taken while spinning.
const BUSY_TICKS: u32 = 3;
/// Bulkhead's MSR with this vCPU's VM exits so far.
const EXIT_COUNT_MSR: u32 = 0x4000_0100;

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
    let period = u32::try_from(time::ticks_from_ms(PERIOD_MS))
        .unwrap_or(u32::MAX)
        .max(MIN_PERIOD);
    let start = tsc();
    x2apic::start_timer(VECTOR, true, period);
    let current = x2apic::read(x2apic::TMCCT);
    if current == 0 || current > u64::from(period) {
        exit_fail_with(format_args!("timer current count {current} after start"));
    }
    let mut seen = 0;
    while seen < TICKS {
        interrupts::wait();
        // A line can take longer than a period where the TSC runs fast against the
        // emulation (QEMU's TCG): each interrupt taken is named, however many came meanwhile.
        let now = interrupts::count(VECTOR).min(TICKS);
        while seen < now {
            seen += 1;
            println!("ticks: interrupt {seen}");
        }
    }
    let elapsed = tsc().wrapping_sub(start);
    println!("ticks: {TICKS} interrupts in {elapsed} TSC ticks (period {period})");
    if elapsed < u64::from(period) * u64::from(TICKS - 1) {
        exit_fail_with(format_args!("interrupts came too fast"));
    }
    // Spinning with interrupts on: nothing here leaves the guest, so only the hypervisor's
    // own timer can stop the run for the injection.
    let exits_before = x2apic::read(EXIT_COUNT_MSR);
    let busy_start = tsc();
    let before = interrupts::count(VECTOR);
    let limit = u64::from(period) * u64::from(BUSY_TICKS) * 20;
    interrupts::enable();
    while interrupts::count(VECTOR) < before + BUSY_TICKS && tsc().wrapping_sub(busy_start) < limit
    {
        core::hint::spin_loop();
    }
    interrupts::disable();
    let busy = interrupts::count(VECTOR) - before;
    let exits = x2apic::read(EXIT_COUNT_MSR).wrapping_sub(exits_before);
    x2apic::stop_timer();
    if busy < BUSY_TICKS {
        exit_fail_with(format_args!(
            "only {busy} timer interrupts while spinning for {limit} TSC ticks"
        ));
    }
    println!("ticks: {busy} interrupts while spinning ({exits} VM exits)");
    println!("PASS");
    system_off()
}
