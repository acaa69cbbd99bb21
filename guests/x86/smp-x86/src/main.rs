//! `smp-x86`: vCPU 0 starts vCPU 1 with PSCI CPU_ON (VMCALL), then they ping-pong five fixed IPIs through their x2APIC ICRs (vCPU 1 halts for odd rounds, spins with interrupts on for even ones), then PASS.

#![no_std]
#![no_main]

use core::arch::global_asm;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use bulkhead_guest_x86::exit::cpu_on;
use bulkhead_guest_x86::{exit_fail_with, interrupts, println, system_off, x2apic};

bulkhead_guest_x86::entry!(main);

const PING: u8 = 0x21;
const PONG: u8 = 0x22;
const ROUNDS: u32 = 5;

/// vCPU 1's stack (interior-mutable, so it lands in writable memory).
#[repr(C, align(16))]
struct Stack([AtomicU64; 2048]);
static STACK: Stack = Stack([const { AtomicU64::new(0) }; 2048]);
/// vCPU 1's x2APIC ID, as it read it (u32::MAX until it runs).
static SECONDARY_ID: AtomicU32 = AtomicU32::new(u32::MAX);

global_asm!(
    ".global smp_secondary_entry",
    "smp_secondary_entry:",
    "    and rsp, -16",
    "    call {secondary}",
    "    ud2",
    secondary = sym secondary,
);

unsafe extern "C" {
    fn smp_secondary_entry();
}

/// Interrupts of `vector` seen so far, waiting (HLT) until there are at least `n`.
fn wait_for(vector: u8, n: u32) {
    while interrupts::count(vector) < n {
        interrupts::wait();
    }
}

/// As `wait_for`, but running with interrupts on instead of halting (the IPI must make the
/// hypervisor take the vCPU out of the guest to inject it).
fn spin_for(vector: u8, n: u32) {
    interrupts::enable();
    while interrupts::count(vector) < n {
        core::hint::spin_loop();
    }
    interrupts::disable();
}

extern "C" fn secondary(_context: u64) -> ! {
    interrupts::install();
    x2apic::enable();
    SECONDARY_ID.store(x2apic::id(), Ordering::Release);
    for round in 1..=ROUNDS {
        if round % 2 == 1 {
            wait_for(PING, round);
        } else {
            spin_for(PING, round);
        }
        x2apic::send_ipi(0, PONG);
    }
    loop {
        interrupts::wait();
    }
}

fn main() -> ! {
    interrupts::install();
    x2apic::enable();
    println!("smp: vcpu0 x2APIC id {}", x2apic::id());
    let absent = cpu_on(7, smp_secondary_entry as *const () as u64, 0);
    println!("smp: CPU_ON of absent vcpu7 returned {absent}");
    if absent != -2 {
        exit_fail_with(format_args!("CPU_ON of an absent vCPU: {absent}"));
    }
    let stack_top = STACK.0.as_ptr() as u64 + core::mem::size_of::<Stack>() as u64;
    let status = cpu_on(1, smp_secondary_entry as *const () as u64, stack_top);
    println!("smp: CPU_ON vcpu1 returned {status}");
    if status != 0 {
        exit_fail_with(format_args!("CPU_ON vcpu1 failed: {status}"));
    }
    for round in 1..=ROUNDS {
        x2apic::send_ipi(1, PING);
        wait_for(PONG, round);
        println!("smp: vcpu0 got reply {round}");
    }
    let id = SECONDARY_ID.load(Ordering::Acquire);
    println!(
        "smp: vcpu1 (x2APIC id {id}) answered {} ping(s)",
        interrupts::count(PONG)
    );
    if id != 1 {
        exit_fail_with(format_args!("vcpu1 read x2APIC id {id}"));
    }
    println!("PASS");
    system_off()
}
