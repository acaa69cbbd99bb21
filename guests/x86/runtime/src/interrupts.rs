//! Interrupts: an IDT whose vectors 32..=47 run the handler [`register`]ed for the vector (if
//! any), count the interrupt and then send EOI to the x2APIC; [`wait`] halts with interrupts
//! on.
//!
//! The handler runs before the EOI, with interrupts off: for a level-triggered I/O APIC pin it
//! must quiet its device (read the status that deasserts the line), or the pin fires again at
//! once after the EOI.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

/// First vector with a handler.
pub const FIRST: u8 = 32;
/// Vectors with handlers: FIRST..FIRST + COUNT.
pub const COUNT: usize = 16;

/// 256 gates of 16 bytes.
#[repr(C, align(16))]
struct Idt([AtomicU64; 512]);

static IDT: Idt = Idt([const { AtomicU64::new(0) }; 512]);
static COUNTS: [AtomicU32; COUNT] = [const { AtomicU32::new(0) }; COUNT];
/// A [`Handler`] cast to a raw pointer per vector, or null.
static HANDLERS: [AtomicPtr<()>; COUNT] = [const { AtomicPtr::new(core::ptr::null_mut()) }; COUNT];

/// An interrupt handler; gets the vector it was registered for.
pub type Handler = fn(vector: u32);

/// Why [`register`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoStub(pub u32);

global_asm!(
    ".irp v, 32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47",
    ".global bulkhead_guest_irq_\\v",
    "bulkhead_guest_irq_\\v:",
    "    push \\v",
    "    jmp 1f",
    ".endr",
    "1:  push rax",
    "    push rcx",
    "    push rdx",
    "    push rsi",
    "    push rdi",
    "    push r8",
    "    push r9",
    "    push r10",
    "    push r11",
    "    mov rdi, [rsp + 72]",
    "    sub rsp, 8",
    "    call {handler}",
    "    add rsp, 8",
    "    pop r11",
    "    pop r10",
    "    pop r9",
    "    pop r8",
    "    pop rdi",
    "    pop rsi",
    "    pop rdx",
    "    pop rcx",
    "    pop rax",
    "    add rsp, 8",
    "    iretq",
    ".section .rodata",
    ".balign 8",
    ".global bulkhead_guest_irq_table",
    "bulkhead_guest_irq_table:",
    ".irp v, 32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47",
    "    .quad bulkhead_guest_irq_\\v",
    ".endr",
    ".text",
    handler = sym interrupt,
);

unsafe extern "C" {
    static bulkhead_guest_irq_table: [u64; COUNT];
}

extern "C" fn interrupt(vector: u64) {
    let index = vector.wrapping_sub(u64::from(FIRST)) as usize;
    if let Some(handler) = HANDLERS.get(index) {
        let handler = handler.load(Ordering::Acquire);
        if !handler.is_null() {
            // SAFETY: `register` stores nothing but `Handler` function pointers here.
            let handler = unsafe { core::mem::transmute::<*mut (), Handler>(handler) };
            handler(vector as u32);
        }
    }
    if let Some(count) = COUNTS.get(index) {
        count.fetch_add(1, Ordering::AcqRel);
    }
    crate::x2apic::eoi();
}

/// Installs `handler` for `vector` (replacing any earlier one); it runs before the EOI.
pub fn register(vector: u32, handler: Handler) -> Result<(), NoStub> {
    let slot = vector
        .checked_sub(u32::from(FIRST))
        .and_then(|index| HANDLERS.get(index as usize))
        .ok_or(NoStub(vector))?;
    slot.store(handler as *mut (), Ordering::Release);
    Ok(())
}

/// Removes the handler of `vector`.
pub fn unregister(vector: u32) {
    if let Some(slot) = vector
        .checked_sub(u32::from(FIRST))
        .and_then(|index| HANDLERS.get(index as usize))
    {
        slot.store(core::ptr::null_mut(), Ordering::Release);
    }
}

/// Fills the IDT (vectors 32..=47, interrupt gates, code selector 0x08) and loads it.
/// Interrupts stay off until [`wait`] or [`enable`].
pub fn install() {
    // SAFETY: the table is the stub addresses the assembly above emits; read-only.
    let stubs = unsafe { &bulkhead_guest_irq_table };
    for (vector, &stub) in (usize::from(FIRST)..).zip(stubs.iter()) {
        let low = (stub & 0xffff) | (0x08 << 16) | (0x8e00 << 32) | ((stub >> 16) & 0xffff) << 48;
        if let (Some(l), Some(h)) = (IDT.0.get(vector * 2), IDT.0.get(vector * 2 + 1)) {
            l.store(low, Ordering::Relaxed);
            h.store(stub >> 32, Ordering::Relaxed);
        }
    }
    let pointer: [u64; 2] = [(512 * 8 - 1) << 48, IDT.0.as_ptr() as u64];
    // SAFETY: the descriptor (limit, base) at offset 6 of `pointer` describes the static IDT,
    // whose gates point at the stubs above; LIDT changes no memory.
    unsafe {
        asm!(
            "lidt [{0} + 6]",
            in(reg) pointer.as_ptr(),
            options(readonly, nostack)
        );
    }
}

/// Points IDT gate `vector` at `handler` (an interrupt gate, code selector 0x08), e.g. an
/// exception handler of the guest's own; [`install`] loads the IDT.
///
/// # Safety
/// `handler` must be the address of code that handles the event as the CPU delivers it
/// (error code or not) and returns with IRETQ.
pub unsafe fn set_gate(vector: u8, handler: u64) {
    let low = (handler & 0xffff) | (0x08 << 16) | (0x8e00 << 32) | ((handler >> 16) & 0xffff) << 48;
    let index = usize::from(vector) * 2;
    if let (Some(l), Some(h)) = (IDT.0.get(index), IDT.0.get(index + 1)) {
        l.store(low, Ordering::Relaxed);
        h.store(handler >> 32, Ordering::Relaxed);
    }
}

/// How many interrupts with `vector` arrived.
pub fn count(vector: u8) -> u32 {
    COUNTS
        .get(usize::from(vector.wrapping_sub(FIRST)))
        .map_or(0, |c| c.load(Ordering::Acquire))
}

/// Halts until an interrupt arrives (`sti; hlt`: one pending since before the STI still ends
/// the HLT), then turns interrupts off again. A compiler barrier: handlers change memory.
pub fn wait() {
    // SAFETY: the IDT is installed; the handlers preserve every register they use.
    unsafe { asm!("sti", "hlt", "cli", options(nostack)) };
}

/// Turns interrupts on (STI): they arrive while the vCPU runs, without HLT. A compiler
/// barrier, like [`wait`].
pub fn enable() {
    // SAFETY: the IDT is installed; the handlers preserve every register they use.
    unsafe { asm!("sti", options(nostack)) };
}

/// Turns interrupts off (CLI). A compiler barrier, like [`wait`].
pub fn disable() {
    // SAFETY: only clears RFLAGS.IF.
    unsafe { asm!("cli", options(nostack)) };
}

/// Turns interrupts off and says whether they were on (for [`restore`]). A compiler barrier,
/// like [`wait`].
pub fn save_and_disable() -> bool {
    let flags: u64;
    // SAFETY: reads RFLAGS through the stack and clears IF; no other state changes.
    unsafe { asm!("pushfq", "pop {}", "cli", out(reg) flags) };
    flags & (1 << 9) != 0
}

/// Turns interrupts back on if [`save_and_disable`] found them on.
pub fn restore(were_enabled: bool) {
    if were_enabled {
        enable();
    }
}
