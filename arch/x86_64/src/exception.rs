//! The interrupt descriptor table and exception entry. Every exception vector (0..32) enters
//! a common stub that saves the registers into a [`TrapFrame`] and calls Rust; an exception in
//! the hypervisor is a bug: it is reported (vector, error code, RIP, CR2, CPU) and the machine
//! stops cleanly through [`power::fail`].

use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, Ordering};

use hypervisor::console::CONSOLE;
use spin::Once;
use x86_64::VirtAddr;
use x86_64::registers::control::Cr2;
use x86_64::structures::idt::InterruptDescriptorTable;

use crate::descriptors::{DOUBLE_FAULT_STACK, NMI_STACK};
use crate::{cpu, power, vector};

/// The registers of the interrupted context, as the entry stubs and the CPU save them.
#[derive(Debug)]
#[repr(C)]
pub struct TrapFrame {
    /// r15, r14, ..., r8, rbp, rdi, rsi, rdx, rcx, rbx, rax (in that order in memory).
    pub registers: [u64; 15],
    /// The exception vector.
    pub vector: u64,
    /// The error code (0 for vectors without one).
    pub error_code: u64,
    /// Where the exception was taken.
    pub rip: u64,
    /// Code segment of the interrupted context.
    pub cs: u64,
    /// RFLAGS of the interrupted context.
    pub rflags: u64,
    /// Stack pointer of the interrupted context.
    pub rsp: u64,
    /// Stack segment of the interrupted context.
    pub ss: u64,
}

const _: () = assert!(core::mem::size_of::<TrapFrame>() == 22 * 8);

/// Emits one entry stub per exception vector (those without an error code push a zero, so every
/// frame has the same shape) and `bulkhead_x86_vector_table`, their 32 addresses.
macro_rules! exception_stubs {
    ($($vector:literal: $kind:ident),* $(,)?) => {
        global_asm!(concat!(
            ".section .text, \"ax\"\n",
            $(
                ".balign 16\n",
                "bulkhead_x86_vector_", stringify!($vector), ":\n",
                exception_stubs!(@push $kind),
                "push ", stringify!($vector), "\n",
                "jmp bulkhead_x86_exception_common\n",
            )*
            ".section .rodata, \"a\"\n",
            ".balign 8\n",
            ".global bulkhead_x86_vector_table\n",
            "bulkhead_x86_vector_table:\n",
            $( ".quad bulkhead_x86_vector_", stringify!($vector), "\n", )*
        ));
    };
    (@push error_code) => { "" };
    (@push no_error_code) => { "push 0\n" };
}

exception_stubs!(
    0: no_error_code, 1: no_error_code, 2: no_error_code, 3: no_error_code,
    4: no_error_code, 5: no_error_code, 6: no_error_code, 7: no_error_code,
    8: error_code, 9: no_error_code, 10: error_code, 11: error_code,
    12: error_code, 13: error_code, 14: error_code, 15: no_error_code,
    16: no_error_code, 17: error_code, 18: no_error_code, 19: no_error_code,
    20: no_error_code, 21: error_code, 22: no_error_code, 23: no_error_code,
    24: no_error_code, 25: no_error_code, 26: no_error_code, 27: no_error_code,
    28: no_error_code, 29: error_code, 30: error_code, 31: no_error_code,
);

// The common part: save the general registers, call Rust with the frame (stack aligned), and
// return with IRETQ if Rust returns.
global_asm!(
    r#"
.section .text, "ax"
.global bulkhead_x86_exception_common
bulkhead_x86_exception_common:
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    mov rdi, rsp
    mov rbx, rsp
    and rsp, -16
    cld
    call bulkhead_x86_exception
    mov rsp, rbx
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    add rsp, 16
    iretq
"#
);

unsafe extern "C" {
    static bulkhead_x86_vector_table: [u64; 32];
}

static IDT: Once<InterruptDescriptorTable> = Once::new();

fn stub_address(vector: usize) -> VirtAddr {
    // SAFETY: the table is 32 addresses in .rodata, written by the assembler, never changed.
    let table = unsafe { &*core::ptr::addr_of!(bulkhead_x86_vector_table) };
    VirtAddr::new(table.get(vector).copied().unwrap_or(0))
}

fn build() -> InterruptDescriptorTable {
    let mut idt = InterruptDescriptorTable::new();
    // SAFETY: for every `set_handler_addr` below, the address is the entry stub for exactly
    // that vector, which handles the frame the CPU pushes for it (with or without an error
    // code), and the kick vector's stub handles an interrupt frame; the stubs live in .text for
    // the whole run. The IST indices name stacks every CPU's
    // TSS has (`descriptors::install_this_cpu`).
    unsafe {
        idt.divide_error.set_handler_addr(stub_address(0));
        idt.debug.set_handler_addr(stub_address(1));
        idt.non_maskable_interrupt
            .set_handler_addr(stub_address(2))
            .set_stack_index(NMI_STACK);
        idt.breakpoint.set_handler_addr(stub_address(3));
        idt.overflow.set_handler_addr(stub_address(4));
        idt.bound_range_exceeded.set_handler_addr(stub_address(5));
        idt.invalid_opcode.set_handler_addr(stub_address(6));
        idt.device_not_available.set_handler_addr(stub_address(7));
        idt.double_fault
            .set_handler_addr(stub_address(8))
            .set_stack_index(DOUBLE_FAULT_STACK);
        idt.invalid_tss.set_handler_addr(stub_address(10));
        idt.segment_not_present.set_handler_addr(stub_address(11));
        idt.stack_segment_fault.set_handler_addr(stub_address(12));
        idt.general_protection_fault
            .set_handler_addr(stub_address(13));
        idt.page_fault.set_handler_addr(stub_address(14));
        idt.x87_floating_point.set_handler_addr(stub_address(16));
        idt.alignment_check.set_handler_addr(stub_address(17));
        idt.machine_check
            .set_handler_addr(stub_address(18))
            .set_stack_index(NMI_STACK);
        idt.simd_floating_point.set_handler_addr(stub_address(19));
        idt.virtualization.set_handler_addr(stub_address(20));
        idt.cp_protection_exception
            .set_handler_addr(stub_address(21));
        idt.hv_injection_exception
            .set_handler_addr(stub_address(28));
        idt.vmm_communication_exception
            .set_handler_addr(stub_address(29));
        idt.security_exception.set_handler_addr(stub_address(30));
        idt[crate::apic::KICK_VECTOR]
            .set_handler_addr(VirtAddr::new(bulkhead_x86_kick as *const () as u64));
    }
    idt
}

// The kick vector: save the registers the System V ABI lets Rust clobber, send EOI, return.
global_asm!(
    ".section .text, \"ax\"",
    ".balign 16",
    "bulkhead_x86_kick:",
    "    push rax",
    "    push rcx",
    "    push rdx",
    "    push rsi",
    "    push rdi",
    "    push r8",
    "    push r9",
    "    push r10",
    "    push r11",
    "    mov rax, rsp",
    "    and rsp, -16",
    "    push rax",
    "    sub rsp, 8",
    "    call {handler}",
    "    add rsp, 8",
    "    pop rsp",
    "    pop r11",
    "    pop r10",
    "    pop r9",
    "    pop r8",
    "    pop rdi",
    "    pop rsi",
    "    pop rdx",
    "    pop rcx",
    "    pop rax",
    "    iretq",
    handler = sym kick,
);

unsafe extern "C" {
    fn bulkhead_x86_kick();
}

/// The kick vector's Rust part.
extern "C" fn kick() {
    crate::apic::LocalApic::current().end_of_interrupt();
}

/// Loads the IDT on this CPU (built on first use; every CPU shares it).
pub fn install() {
    IDT.call_once(build).load();
}

static REPORTING: AtomicBool = AtomicBool::new(false);

/// Called by the entry stubs with the saved context.
#[unsafe(no_mangle)]
extern "C" fn bulkhead_x86_exception(frame: &mut TrapFrame) {
    if REPORTING.swap(true, Ordering::AcqRel) {
        // A second fatal exception while reporting the first (or on another CPU): stop here.
        cpu::halt();
    }
    let (mnemonic, name) = vector::name(frame.vector);
    let cr2 = Cr2::read_raw();
    // No allocation here: the fault may have hit inside the allocator.
    let detail =
        Detail((frame.vector == 14).then(|| vector::describe_page_fault(frame.error_code)));
    CONSOLE.print_emergency(format_args!(
        "bulkhead: unexpected exception: {name} ({mnemonic}, vector {}) on cpu {}: error code \
         {:#x}{detail} RIP={:#x} CR2={cr2:#x} RSP={:#x} RFLAGS={:#x} CS={:#x}\n",
        frame.vector,
        cpu::index(),
        frame.error_code,
        frame.rip,
        frame.rsp,
        frame.rflags,
        frame.cs,
    ));
    power::fail();
}

/// ` (what)` when there is something to say, else nothing.
struct Detail(Option<&'static str>);

impl core::fmt::Display for Detail {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(text) => write!(f, " ({text})"),
            None => Ok(()),
        }
    }
}
