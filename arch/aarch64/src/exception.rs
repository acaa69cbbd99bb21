//! EL2 exception vectors. An exception from the guest (lower EL, AArch64) saves the guest's
//! context into its vCPU's [`TrapFrame`] and returns from [`run_guest`], which entered it;
//! anything else is a hypervisor bug: it is reported (syndrome, fault address, return
//! address, CPU) and the machine stops cleanly.

use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, Ordering};

use aarch64_cpu::registers::{VBAR_EL2, Writeable};
use hypervisor::console::CONSOLE;

use crate::{cpu, esr, power};

/// The registers of the interrupted context, as the vector code saves them.
#[derive(Debug)]
#[repr(C)]
pub struct TrapFrame {
    /// x0..x30.
    pub registers: [u64; 31],
    /// ELR_EL2: where the exception was taken.
    pub elr: u64,
    /// SPSR_EL2: the interrupted PSTATE.
    pub spsr: u64,
    /// ESR_EL2: the syndrome.
    pub esr: u64,
    /// FAR_EL2: the faulting virtual address (for aborts).
    pub far: u64,
    padding: u64,
}

const _: () = assert!(core::mem::size_of::<TrapFrame>() == 288);

impl TrapFrame {
    /// A frame of zeros.
    pub const fn zeroed() -> Self {
        Self {
            registers: [0; 31],
            elr: 0,
            spsr: 0,
            esr: 0,
            far: 0,
            padding: 0,
        }
    }
}

global_asm!(
    r#"
.section .text.vectors, "ax"
.balign 0x800
.global bulkhead_el2_vectors
bulkhead_el2_vectors:
.irp kind, 0,1,2,3,4,5,6,7
.balign 0x80
    sub sp, sp, #288
    stp x0, x1, [sp, #0]
    mov x1, #\kind
    b bulkhead_el2_vector_common
.endr
// From the guest (lower EL, AArch64): its registers go to the frame this CPU's vCPU runs
// from (the first word of the per-CPU state), then `bulkhead_guest_enter` returns.
.irp kind, 8,9,10,11
.balign 0x80
    stp x0, x1, [sp, #-16]!
    mrs x0, tpidr_el2
    ldr x0, [x0]
    stp x2, x3, [x0, #16]
    mov x2, #\kind
    b bulkhead_guest_exit
.endr
.irp kind, 12,13,14,15
.balign 0x80
    sub sp, sp, #288
    stp x0, x1, [sp, #0]
    mov x1, #\kind
    b bulkhead_el2_vector_common
.endr

bulkhead_guest_exit:
    stp x4, x5, [x0, #32]
    stp x6, x7, [x0, #48]
    stp x8, x9, [x0, #64]
    stp x10, x11, [x0, #80]
    stp x12, x13, [x0, #96]
    stp x14, x15, [x0, #112]
    stp x16, x17, [x0, #128]
    str x18, [x0, #144]
    mrs x3, elr_el2
    stp x30, x3, [x0, #240]
    mrs x3, spsr_el2
    mrs x4, esr_el2
    stp x3, x4, [x0, #256]
    mrs x3, far_el2
    str x3, [x0, #272]
    ldp x3, x4, [sp], #16
    stp x3, x4, [x0, #0]
    // The fast lane (`bulkhead_fast_exit`, synchronous and IRQ exits) runs with the guest's
    // x19-x29 still in their registers (a procedure call preserves them) and their frame
    // slots stale: it reads x0-x18 and x30 only. An exit it answers (it returns 1) goes
    // straight back into the guest; any other gets x19-x29 saved and returns to the run
    // loop. The host's callee-saved registers stay on the stack meanwhile.
    cmp x2, #8
    b.eq 3f
    cmp x2, #9
    b.ne 2f
    bl bulkhead_fast_interrupt
    mov x2, #9
    b 4f
3:
    bl bulkhead_fast_exit
    mov x2, #8
4:
    mov x1, x0
    mrs x0, tpidr_el2
    ldr x0, [x0]
    cbnz x1, bulkhead_fast_resume
2:
    stp x19, x20, [x0, #152]
    stp x21, x22, [x0, #168]
    stp x23, x24, [x0, #184]
    stp x25, x26, [x0, #200]
    stp x27, x28, [x0, #216]
    str x29, [x0, #232]
    mov x0, x2
    ldp x19, x20, [sp, #16]
    ldp x21, x22, [sp, #32]
    ldp x23, x24, [sp, #48]
    ldp x25, x26, [sp, #64]
    ldp x27, x28, [sp, #80]
    ldp x29, x30, [sp], #96
    ret

// Back into the guest: x0-x18, x30, ELR and SPSR from the frame at x0 (after the fast lane
// answered, x19-x29 were never touched; `bulkhead_guest_enter` loads them first).
bulkhead_fast_resume:
    ldp x2, x3, [x0, #248]
    msr elr_el2, x2
    msr spsr_el2, x3
    ldp x2, x3, [x0, #16]
    ldp x4, x5, [x0, #32]
    ldp x6, x7, [x0, #48]
    ldp x8, x9, [x0, #64]
    ldp x10, x11, [x0, #80]
    ldp x12, x13, [x0, #96]
    ldp x14, x15, [x0, #112]
    ldp x16, x17, [x0, #128]
    ldr x18, [x0, #144]
    ldr x30, [x0, #240]
    ldp x0, x1, [x0, #0]
    eret

// fn(frame: *mut TrapFrame) -> u64: saves the callee-saved registers, records the frame in
// the per-CPU state, loads the guest context from it and erets; returns (through
// `bulkhead_guest_exit`) with the vector slot of the exception that left the guest.
.global bulkhead_guest_enter
bulkhead_guest_enter:
    stp x29, x30, [sp, #-96]!
    stp x19, x20, [sp, #16]
    stp x21, x22, [sp, #32]
    stp x23, x24, [sp, #48]
    stp x25, x26, [sp, #64]
    stp x27, x28, [sp, #80]
    mrs x1, tpidr_el2
    str x0, [x1]
    ldp x19, x20, [x0, #152]
    ldp x21, x22, [x0, #168]
    ldp x23, x24, [x0, #184]
    ldp x25, x26, [x0, #200]
    ldp x27, x28, [x0, #216]
    ldr x29, [x0, #232]
    b bulkhead_fast_resume

bulkhead_el2_vector_common:
    stp x2, x3, [sp, #16]
    stp x4, x5, [sp, #32]
    stp x6, x7, [sp, #48]
    stp x8, x9, [sp, #64]
    stp x10, x11, [sp, #80]
    stp x12, x13, [sp, #96]
    stp x14, x15, [sp, #112]
    stp x16, x17, [sp, #128]
    stp x18, x19, [sp, #144]
    stp x20, x21, [sp, #160]
    stp x22, x23, [sp, #176]
    stp x24, x25, [sp, #192]
    stp x26, x27, [sp, #208]
    stp x28, x29, [sp, #224]
    mrs x2, elr_el2
    stp x30, x2, [sp, #240]
    mrs x2, spsr_el2
    mrs x3, esr_el2
    stp x2, x3, [sp, #256]
    mrs x2, far_el2
    str x2, [sp, #272]
    mov x0, sp
    bl bulkhead_el2_exception
.global bulkhead_el2_exception_return
bulkhead_el2_exception_return:
    ldp x2, x3, [sp, #248]
    msr elr_el2, x2
    msr spsr_el2, x3
    ldp x2, x3, [sp, #16]
    ldp x4, x5, [sp, #32]
    ldp x6, x7, [sp, #48]
    ldp x8, x9, [sp, #64]
    ldp x10, x11, [sp, #80]
    ldp x12, x13, [sp, #96]
    ldp x14, x15, [sp, #112]
    ldp x16, x17, [sp, #128]
    ldp x18, x19, [sp, #144]
    ldp x20, x21, [sp, #160]
    ldp x22, x23, [sp, #176]
    ldp x24, x25, [sp, #192]
    ldp x26, x27, [sp, #208]
    ldp x28, x29, [sp, #224]
    ldr x30, [sp, #240]
    ldp x0, x1, [sp, #0]
    add sp, sp, #288
    eret
"#
);

unsafe extern "C" {
    static bulkhead_el2_vectors: u8;
    fn bulkhead_guest_enter(frame: *mut TrapFrame) -> u64;
}

/// Runs the guest context in `frame` until an exception takes the CPU back to EL2; returns
/// the vector slot (8..=11: synchronous, IRQ, FIQ, SError from the guest) with the guest's
/// registers, ELR, SPSR, ESR and FAR saved in `frame`.
///
/// # Safety
/// `frame` must hold a valid EL1 context of this CPU's one guest (its SPSR an EL1 mode), the
/// per-CPU state must be installed (TPIDR_EL2) with room for the frame pointer in its first
/// word, and the guest's stage-2 and EL2 controls must be set up.
pub unsafe fn run_guest(frame: &mut TrapFrame) -> u64 {
    // SAFETY: the caller guarantees the frame and the per-CPU state; the assembly saves and
    // restores every callee-saved register and returns on this same stack.
    unsafe { bulkhead_guest_enter(core::ptr::from_mut(frame)) }
}

/// Points VBAR_EL2 at Bulkhead's vectors on this CPU.
pub fn install() {
    VBAR_EL2.set(core::ptr::addr_of!(bulkhead_el2_vectors) as u64);
}

/// Where an exception came from and what kind it is (the vector slot).
fn describe(kind: u64) -> (&'static str, &'static str) {
    let source = match kind / 4 {
        0 => "EL2 with SP_EL0",
        1 => "EL2",
        2 => "a lower EL (AArch64)",
        _ => "a lower EL (AArch32)",
    };
    let class = match kind % 4 {
        0 => "synchronous",
        1 => "IRQ",
        2 => "FIQ",
        _ => "SError",
    };
    (class, source)
}

static REPORTING: AtomicBool = AtomicBool::new(false);

/// Called by the vector code with the saved context and the vector slot (0..16).
#[unsafe(no_mangle)]
extern "C" fn bulkhead_el2_exception(frame: &mut TrapFrame, kind: u64) {
    if REPORTING.swap(true, Ordering::AcqRel) {
        // A second fatal exception while reporting the first (or on another CPU): stop here.
        cpu::halt();
    }
    let (class, source) = describe(kind);
    let exception_class = esr::exception_class(frame.esr);
    CONSOLE.print_emergency(format_args!(
        "bulkhead: unexpected exception: {class} from {source} on cpu {}: {} (EC {exception_class:#04x}) \
         ESR={:#x} FAR={:#x} ELR={:#x} SPSR={:#x}\n",
        cpu::index(),
        esr::class_name(exception_class),
        frame.esr,
        frame.far,
        frame.elr,
        frame.spsr,
    ));
    power::fail();
}
