//! `triple-x86`: what a guest gets for what Bulkhead does not emulate. First RDMSR and WRMSR of
//! an MSR no one has: each must raise #GP(0) in the guest (its own handler skips the
//! instruction and counts). Then it loads an empty IDT (limit 0) and executes `int3`: the
//! breakpoint cannot be delivered, nor can the double fault that follows, so the vCPU
//! triple-faults, which on bare metal resets the machine. Bulkhead must stop this partition
//! alone and say so.

#![no_std]
#![no_main]

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use bulkhead_guest_x86::{exit_fail_with, interrupts, println};

bulkhead_guest_x86::entry!(main);

/// An MSR no CPU has.
const NO_SUCH_MSR: u32 = 0x1234_5678;
/// The general-protection exception.
const GENERAL_PROTECTION: u8 = 13;

/// #GP exceptions taken.
static GP_COUNT: AtomicU32 = AtomicU32::new(0);
/// The last #GP's error code.
static GP_CODE: AtomicU64 = AtomicU64::new(u64::MAX);

// #GP handler: records the error code, steps over the 2-byte RDMSR/WRMSR (0f 32 / 0f 30)
// that faulted, counts.
global_asm!(
    ".global triple_gp_handler",
    "triple_gp_handler:",
    "    push rax",
    "    mov rax, [rsp + 8]",
    "    mov [rip + {code}], rax",
    "    pop rax",
    "    add rsp, 8",
    "    add qword ptr [rsp], 2",
    "    lock inc dword ptr [rip + {count}]",
    "    iretq",
    code = sym GP_CODE,
    count = sym GP_COUNT,
);

unsafe extern "C" {
    fn triple_gp_handler();
}

/// An IDT pointer: limit, then base.
#[repr(C, packed)]
struct Pointer {
    limit: u16,
    base: u64,
}

fn main() -> ! {
    interrupts::install();
    // SAFETY: the handler above takes #GP as the CPU delivers it (with an error code) and
    // returns with IRETQ past the faulting 2-byte instruction.
    unsafe { interrupts::set_gate(GENERAL_PROTECTION, triple_gp_handler as *const () as u64) };
    // SAFETY: RDMSR of an MSR that does not exist faults with #GP, which the handler skips.
    unsafe {
        asm!("rdmsr", in("ecx") NO_SUCH_MSR, out("eax") _, out("edx") _, options(nostack));
    }
    // SAFETY: as above, for WRMSR.
    unsafe {
        asm!("wrmsr", in("ecx") NO_SUCH_MSR, in("eax") 1, in("edx") 0, options(nostack));
    }
    let count = GP_COUNT.load(Ordering::Acquire);
    let code = GP_CODE.load(Ordering::Acquire);
    if count != 2 || code != 0 {
        exit_fail_with(format_args!(
            "RDMSR/WRMSR of MSR {NO_SUCH_MSR:#x}: {count} #GP(s), error code {code:#x}"
        ));
    }
    println!("triple: RDMSR and WRMSR of MSR {NO_SUCH_MSR:#x} raised #GP(0) each, handled");

    println!("triple: loading an empty IDT, then int3");
    let empty = Pointer { limit: 0, base: 0 };
    // SAFETY: not memory-safe by intent: with no IDT the breakpoint escalates to a triple
    // fault, which ends the vCPU; nothing after it runs.
    unsafe {
        asm!("lidt [{pointer}]", "int3", pointer = in(reg) &empty, options(nostack));
    }
    exit_fail_with(format_args!("int3 with an empty IDT returned"))
}
