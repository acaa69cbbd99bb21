//! `smp`: two vCPUs. vCPU 0 starts vCPU 1 with PSCI CPU_ON, checks AFFINITY_INFO, plays five
//! rounds of SGI ping-pong with it (SGI 1 there, SGI 2 back), waits for it to CPU_OFF, and
//! checks that CPU_ON of an absent vCPU (Aff0 = 7) is refused with INVALID_PARAMETERS.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use bulkhead_guest::{cpu, exit_fail, exit_fail_with, exit_pass, gic, irq, println, psci, timer};

bulkhead_guest::entry!(main);

/// SGI vCPU 0 sends to vCPU 1.
const PING_SGI: u32 = 1;
/// SGI vCPU 1 answers with.
const REPLY_SGI: u32 = 2;
/// Ping-pong rounds.
const ROUNDS: u32 = 5;
/// vCPU index that does not exist in a two-vCPU partition.
const ABSENT_VCPU: usize = 7;
/// How long any one wait may take before the run fails.
const TIMEOUT_MS: u64 = 5_000;

/// Pings vCPU 1 has taken.
static PINGS: AtomicU32 = AtomicU32::new(0);
/// Replies vCPU 0 has taken.
static REPLIES: AtomicU32 = AtomicU32::new(0);
/// vCPU 1 has its GIC set up and IRQs unmasked.
static SECOND_READY: AtomicBool = AtomicBool::new(false);

fn send(sgi: u32, target: usize) {
    if let Err(error) = gic::send_sgi(sgi, target) {
        exit_fail_with(format_args!("smp: SGI {sgi} to vcpu{target}: {error:?}"));
    }
}

fn on_ping(_intid: u32) {
    let round = PINGS.fetch_add(1, Ordering::Relaxed) + 1;
    println!("smp: vcpu1 got sgi {round}");
    send(REPLY_SGI, 0);
}

fn on_reply(_intid: u32) {
    let round = REPLIES.fetch_add(1, Ordering::Relaxed) + 1;
    println!("smp: vcpu0 got reply {round}");
}

/// Waits (WFE/WFI-friendly polling) until `done` holds, or fails with `what`.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = timer::counter() + timer::ticks_from_ms(TIMEOUT_MS);
    while !done() {
        if timer::counter() > deadline {
            exit_fail_with(format_args!("smp: timed out waiting for {what}"));
        }
        cpu::relax();
    }
}

fn set_up_interrupts(sgi: u32, handler: irq::Handler) {
    let result = gic::init()
        .and_then(|()| irq::register(sgi, handler).map_err(|_| gic::GicError::InvalidIntid(sgi)))
        .and_then(|()| gic::enable(sgi));
    if let Err(error) = result {
        exit_fail_with(format_args!(
            "smp: vcpu{} interrupt set-up: {error:?}",
            cpu::current_index()
        ));
    }
}

/// vCPU 1: answers pings until the last round, then turns itself off.
fn second(index: usize) -> ! {
    if index != 1 || cpu::current_index() != 1 {
        exit_fail_with(format_args!(
            "smp: started as index {index} with MPIDR {:#x}",
            cpu::mpidr()
        ));
    }
    set_up_interrupts(PING_SGI, on_ping);
    cpu::enable_interrupts();
    SECOND_READY.store(true, Ordering::Release);
    while PINGS.load(Ordering::Relaxed) < ROUNDS {
        cpu::wait_for_interrupt();
    }
    cpu::disable_interrupts();
    let result = psci::cpu_off();
    exit_fail_with(format_args!("smp: CPU_OFF returned {result}"))
}

fn affinity_state(index: usize) -> i64 {
    psci::affinity_info(cpu::mpidr_of(index))
}

fn main() -> ! {
    let (major, minor) = psci::version();
    println!(
        "smp: psci {major}.{minor} via {}, {}",
        bulkhead_guest::platform::psci_conduit().name(),
        gic::version()
    );
    set_up_interrupts(REPLY_SGI, on_reply);

    let absent = psci::cpu_on(
        cpu::mpidr_of(ABSENT_VCPU),
        cpu::secondary_entry_address(),
        ABSENT_VCPU as u64,
    );
    println!("smp: CPU_ON of absent vcpu{ABSENT_VCPU} returned {absent}");
    if absent != psci::INVALID_PARAMETERS {
        exit_fail("smp: CPU_ON of an absent vCPU must return INVALID_PARAMETERS (-2)");
    }

    if let Err(error) = cpu::start_vcpu(1, second) {
        exit_fail_with(format_args!("smp: CPU_ON of vcpu1 failed: {error:?}"));
    }
    println!("smp: CPU_ON of vcpu1 returned 0");
    wait_until("AFFINITY_INFO(vcpu1) = ON", || {
        affinity_state(1) == psci::AFFINITY_ON
    });
    println!("smp: AFFINITY_INFO says vcpu1 is ON");
    wait_until("vcpu1 to set up its interrupts", || {
        SECOND_READY.load(Ordering::Acquire)
    });

    cpu::enable_interrupts();
    for round in 1..=ROUNDS {
        send(PING_SGI, 1);
        wait_until("a reply", || REPLIES.load(Ordering::Relaxed) >= round);
    }
    cpu::disable_interrupts();

    wait_until("AFFINITY_INFO(vcpu1) = OFF", || {
        affinity_state(1) == psci::AFFINITY_OFF
    });
    println!("smp: AFFINITY_INFO says vcpu1 is OFF");
    exit_pass()
}
