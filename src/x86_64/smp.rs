//! Application processors: started one at a time with INIT-SIPI-SIPI through the real-mode
//! trampoline, each reporting in and turning VMX on.

use alloc::boxed::Box;
use alloc::vec;
use core::sync::atomic::{AtomicUsize, Ordering};

use arch_x86_64::apic::LocalApic;
use arch_x86_64::cpu::{self, PerCpu};
use arch_x86_64::platform::Platform;
use arch_x86_64::{descriptors, exception, mmu, pit};
use boot::x86_64::TRAMPOLINE_VECTOR;
use hypervisor::println;

/// Stack for each application processor.
const STACK_SIZE: usize = 64 << 10;
/// How long a CPU gets to report in after its STARTUP IPIs.
const ONLINE_TIMEOUT_MILLISECONDS: u64 = 1000;

/// CPUs that reached Rust on the hypervisor's page tables (the boot CPU included).
static ONLINE: AtomicUsize = AtomicUsize::new(1);
/// Application processors that turned VMX on.
static VMX_ON: AtomicUsize = AtomicUsize::new(0);

/// What an application processor learns from the boot CPU.
#[derive(Debug)]
struct SecondaryContext {
    /// Bulkhead's index of the CPU.
    index: usize,
    /// Its local APIC ID.
    apic_id: u32,
}

/// Starts every CPU the MADT lists but the boot CPU, one after the other. Returns how many CPUs
/// are online afterwards and how many application processors turned VMX on.
pub fn start_secondaries(
    platform: &Platform,
    boot_cpu: usize,
    local_apic: LocalApic,
) -> (usize, usize) {
    for (index, entry) in platform.cpus.iter().enumerate() {
        if index == boot_cpu {
            continue;
        }
        let stack: &'static mut [u8] = Box::leak(vec![0u8; STACK_SIZE].into_boxed_slice());
        let stack_top = (stack.as_ptr() as u64 + STACK_SIZE as u64) & !0xf;
        let context: &'static SecondaryContext = Box::leak(Box::new(SecondaryContext {
            index,
            apic_id: entry.apic_id,
        }));
        let expected = ONLINE.load(Ordering::Acquire) + 1;
        boot::x86_64::prepare_secondary(stack_top, core::ptr::from_ref(context) as u64);
        let started = || ONLINE.load(Ordering::Acquire) >= expected;
        local_apic.start_cpu(entry.apic_id, TRAMPOLINE_VECTOR, started);
        let mut waited = 0;
        while !started() && waited < ONLINE_TIMEOUT_MILLISECONDS {
            pit::delay_milliseconds(1);
            waited += 1;
        }
        if !started() {
            boot::x86_64::withdraw_secondary();
            println!(
                "cpu {index} (APIC ID {}) did not report in within {ONLINE_TIMEOUT_MILLISECONDS} ms",
                entry.apic_id
            );
        }
    }
    (
        ONLINE.load(Ordering::Acquire),
        VMX_ON.load(Ordering::Acquire),
    )
}

/// Rust entry of an application processor, called by `boot/src/x86_64.rs` in long mode on the
/// hypervisor's page tables with its own stack.
#[unsafe(no_mangle)]
extern "C" fn bulkhead_x86_secondary_main(context: &'static SecondaryContext) -> ! {
    descriptors::install_this_cpu();
    exception::install();
    mmu::enable_protection();
    // Software-enabled, so that its timer (waking halted vCPUs) and kicks work here
    // as on the boot CPU.
    LocalApic::current().enable();
    let per_cpu: &'static PerCpu = Box::leak(Box::new(PerCpu::new(context.index, context.apic_id)));
    cpu::install_per_cpu(per_cpu);
    let apic_id = cpu::apic_id();
    if apic_id == context.apic_id {
        println!("cpu {} online (APIC ID {apic_id})", context.index);
    } else {
        println!(
            "cpu {} online (APIC ID {apic_id}, but the MADT said {})",
            context.index, context.apic_id
        );
    }
    let vmx_on = super::report_vmx(context.index);
    if vmx_on {
        VMX_ON.fetch_add(1, Ordering::AcqRel);
    }
    ONLINE.fetch_add(1, Ordering::AcqRel);
    super::partitions::run_this_cpu(vmx_on)
}
