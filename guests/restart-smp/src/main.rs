//! `restart-smp`: a fault on a secondary vCPU restarts the whole partition. vCPU 0 reads how
//! often the partition was restarted (`bulkhead.restarts=N` in `/chosen/bootargs`), starts
//! vCPU 1 with PSCI CPU_ON and spins with IRQs masked until vCPU 1 sets a flag. While N is
//! below two, vCPU 1 reads past the partition's RAM instead (with `fault-policy restart` the
//! partition restarts); only a restart that takes vCPU 0 out of its spin and reloads the
//! guest gets to the next run. On the third run vCPU 1 sets the flag and turns itself off,
//! and vCPU 0 passes.
//!
//! While it spins, vCPU 0 keeps writing its own RAM (a block of initialised data, which the
//! restart reloads from the image). Each run first checks that the block holds its initial
//! pattern: a vCPU still writing after the reload (a restart that did not wait for every vCPU
//! to leave the guest) would show here.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use bulkhead_guest::{cpu, exit_fail, exit_fail_with, platform, println, psci, timer};

bulkhead_guest::entry!(main);

/// Runs whose vCPU 1 faults before the one that passes.
const FAULTING_RUNS: u32 = 2;
/// How long vCPU 0 spins before it gives up: neither the flag nor a restart came.
const SPIN_TIMEOUT_MS: u64 = 30_000;
/// How long vCPU 0 waits for vCPU 1 to be off at the end.
const OFF_TIMEOUT_MS: u64 = 5_000;

/// The restarts so far, as vCPU 0 read them (for vCPU 1).
static RESTARTS: AtomicU32 = AtomicU32::new(0);
/// vCPU 1 ran on the passing run and did not fault.
static SECOND_DONE: AtomicBool = AtomicBool::new(false);
/// The initial pattern of [`SCRATCH`] (in the image's initialised data).
const PATTERN: u64 = 0x005e_ed0f_1ead_da7a;
/// Words vCPU 0 keeps overwriting while it spins.
const SCRATCH_WORDS: usize = 512;
/// RAM vCPU 0 writes while waiting; reloaded with the image at each restart.
static SCRATCH: [AtomicU64; SCRATCH_WORDS] = [const { AtomicU64::new(PATTERN) }; SCRATCH_WORDS];

/// vCPU 1: faults on the early runs, sets the flag on the last.
fn second(index: usize) -> ! {
    if index != 1 || cpu::current_index() != 1 {
        exit_fail_with(format_args!(
            "restart-smp: started as index {index} with MPIDR {:#x}",
            cpu::mpidr()
        ));
    }
    let restarts = RESTARTS.load(Ordering::Acquire);
    println!("restart-smp: vcpu 1 running (run {})", restarts + 1);
    if restarts >= FAULTING_RUNS {
        SECOND_DONE.store(true, Ordering::Release);
        let result = psci::cpu_off();
        exit_fail_with(format_args!("restart-smp: CPU_OFF returned {result}"));
    }
    let Some((base, size)) = platform::ram() else {
        exit_fail("restart-smp: no memory node in the device tree");
    };
    let outside = base + size;
    println!("restart-smp: vcpu 1 reads {outside:#x}, past the partition's RAM");
    // SAFETY: not memory-safe by intent: the address is past the partition's RAM (inside the
    // runtime's identity map); the read leaves the guest with a stage-2 fault and never
    // completes inside Bulkhead. Reading changes nothing in the guest's own memory.
    let value = unsafe { core::ptr::read_volatile(outside as *const u32) };
    exit_fail_with(format_args!(
        "restart-smp: the read past RAM returned {value:#x}"
    ))
}

/// Spins (YIELD, IRQs as they are) until `done` holds, or fails after `timeout_ms` with `what`;
/// overwrites [`SCRATCH`] with `stamp` meanwhile when asked to.
fn spin_until(what: &str, timeout_ms: u64, stamp: Option<u64>, done: impl Fn() -> bool) {
    let deadline = timer::counter() + timer::ticks_from_ms(timeout_ms);
    let mut word = 0;
    while !done() {
        if timer::counter() > deadline {
            exit_fail_with(format_args!("restart-smp: {what} within {timeout_ms} ms"));
        }
        if let Some(stamp) = stamp {
            for _ in 0..16 {
                if let Some(slot) = SCRATCH.get(word % SCRATCH_WORDS) {
                    slot.store(stamp ^ word as u64, Ordering::Relaxed);
                }
                word += 1;
            }
        } else {
            cpu::relax();
        }
    }
}

fn main() -> ! {
    let Some(restarts) = platform::restarts() else {
        exit_fail("restart-smp: no bulkhead.restarts=N in /chosen/bootargs");
    };
    let run = restarts + 1;
    println!("restart-smp: run {run} (restarts so far {restarts})");
    RESTARTS.store(restarts, Ordering::Release);
    if let Some((index, word)) = SCRATCH
        .iter()
        .map(|word| word.load(Ordering::Relaxed))
        .enumerate()
        .find(|&(_, word)| word != PATTERN)
    {
        exit_fail_with(format_args!(
            "restart-smp: run {run}: RAM written after the reload: word {index} is {word:#x}"
        ));
    }
    println!("restart-smp: run {run}: RAM as loaded ({SCRATCH_WORDS} words checked)");
    if let Err(error) = cpu::start_vcpu(1, second) {
        exit_fail_with(format_args!(
            "restart-smp: run {run}: CPU_ON of vcpu 1 failed: {error:?}"
        ));
    }
    // IRQs masked: only the hypervisor (a physical interrupt taken at EL2) can take this vCPU
    // out of the spin when vCPU 1's fault restarts the partition.
    cpu::disable_interrupts();
    spin_until(
        "vcpu 1 neither set its flag nor had the partition restarted",
        SPIN_TIMEOUT_MS,
        Some(u64::from(run) << 48),
        || SECOND_DONE.load(Ordering::Acquire),
    );
    if restarts < FAULTING_RUNS {
        exit_fail_with(format_args!(
            "restart-smp: run {run}: vcpu 1 set its flag instead of faulting"
        ));
    }
    spin_until("vcpu 1 did not turn off", OFF_TIMEOUT_MS, None, || {
        psci::affinity_info(cpu::mpidr_of(1)) == psci::AFFINITY_OFF
    });
    println!(
        "restart-smp: restarted {restarts} times by vcpu 1's faults; both vcpus ran again; PASS"
    );
    psci::system_off()
}
