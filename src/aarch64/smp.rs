//! Secondary CPUs: started one at a time through PSCI CPU_ON, each reporting in.

use alloc::boxed::Box;
use alloc::vec;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use arch_aarch64::cpu::{self, PerCpu};
use arch_aarch64::mmu::{self, MmuSettings};
use arch_aarch64::psci;
use boot::aarch64::SecondaryContext;
use hypervisor::board::Board;
use hypervisor::println;

/// Stack for each secondary CPU.
const STACK_SIZE: usize = 64 << 10;
/// How long a CPU gets to report in after CPU_ON.
const ONLINE_TIMEOUT_SECONDS: u64 = 5;

/// CPUs that reached Rust with their MMU on (the boot CPU included).
static ONLINE: AtomicUsize = AtomicUsize::new(1);
/// Set once the partitions are loaded: secondaries then run their vCPUs.
static LAUNCH: AtomicBool = AtomicBool::new(false);

/// Lets every CPU run its vCPU (the partitions are loaded).
pub fn launch_partitions() {
    LAUNCH.store(true, Ordering::Release);
    cpu::send_event();
}

/// Starts every CPU of the board but the boot CPU, one after the other, and returns how many
/// CPUs are online afterwards.
pub fn start_secondaries(board: &Board, boot_cpu: usize, settings: MmuSettings) -> usize {
    for (index, cpu_entry) in board.cpus.iter().enumerate() {
        if index == boot_cpu {
            continue;
        }
        let stack: &'static mut [u8] = Box::leak(vec![0u8; STACK_SIZE].into_boxed_slice());
        let stack_top = (stack.as_ptr() as u64 + STACK_SIZE as u64) & !0xf;
        let context: &'static SecondaryContext = Box::leak(Box::new(SecondaryContext {
            stack_top,
            mair: settings.mair,
            tcr: settings.tcr,
            ttbr0: settings.ttbr0,
            sctlr: settings.sctlr,
            cpu_index: index as u64,
            mpidr: cpu_entry.mpidr,
        }));
        let context_address = core::ptr::from_ref(context) as u64;
        // The secondary reads its context with the MMU and caches off.
        mmu::clean_to_point_of_coherency(
            context_address,
            core::mem::size_of::<SecondaryContext>() as u64,
        );
        let expected = ONLINE.load(Ordering::Acquire) + 1;
        let entry = boot::aarch64::secondary_entry_address();
        if let Err(error) = psci::cpu_on(cpu_entry.mpidr, entry, context_address) {
            println!(
                "cpu {index} (MPIDR {:#x}) did not start: PSCI CPU_ON returned {error}",
                cpu_entry.mpidr
            );
            continue;
        }
        let deadline = cpu::counter() + ONLINE_TIMEOUT_SECONDS * cpu::counter_frequency();
        while ONLINE.load(Ordering::Acquire) < expected && cpu::counter() < deadline {
            core::hint::spin_loop();
        }
        if ONLINE.load(Ordering::Acquire) < expected {
            println!(
                "cpu {index} (MPIDR {:#x}) did not report in within {ONLINE_TIMEOUT_SECONDS} s",
                cpu_entry.mpidr
            );
        }
    }
    ONLINE.load(Ordering::Acquire)
}

/// Rust entry of a secondary CPU, called by `boot/src/aarch64.rs` with its MMU on.
#[unsafe(no_mangle)]
extern "C" fn bulkhead_secondary_main(context: &'static SecondaryContext) -> ! {
    let per_cpu: &'static PerCpu = Box::leak(Box::new(PerCpu::new(
        context.cpu_index as usize,
        cpu::mpidr(),
    )));
    cpu::install_per_cpu(per_cpu);
    match arch_aarch64::gic::init_this_cpu(per_cpu.mpidr) {
        Ok(list_registers) => per_cpu
            .list_registers
            .store(list_registers, Ordering::Relaxed),
        Err(e) => {
            println!("cpu {}: GIC: {e}; this CPU stays idle", per_cpu.index);
            ONLINE.fetch_add(1, Ordering::AcqRel);
            cpu::halt();
        }
    }
    println!(
        "cpu {} online at EL2 (MPIDR {:#x})",
        per_cpu.index, per_cpu.mpidr
    );
    ONLINE.fetch_add(1, Ordering::AcqRel);
    while !LAUNCH.load(Ordering::Acquire) {
        cpu::wait_for_event();
    }
    super::partitions::run_this_cpu()
}
