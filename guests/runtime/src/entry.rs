//! The arm64 Image header, the boot and CPU_ON entry code, the EL1 vector table and the
//! identity map every vCPU turns on before it runs Rust.
//!
//! Entered at EL1h with the MMU off and DAIF masked: at `_start` by the loader (x0 = device
//! tree or 0), or at `bulkhead_guest_secondary_entry` by PSCI CPU_ON (x0 = vCPU index, the
//! context the runtime passes). Each vCPU then installs the vectors, enables FP/SIMD (Rust
//! code uses it), turns the MMU on with the identity map below, takes its stack and calls
//! into Rust. The MMU is on so that RAM is Normal cacheable memory: exclusives (the spin
//! locks), unaligned accesses and cache coherency with the hypervisor then behave as they do
//! for any OS; devices stay Device-nGnRnE and every address is its own guest-physical one.
//! The map spans 1 TiB so that shared memory above 4 GiB (QNX shmem windows, 64-bit PCI
//! BARs) is reachable too.

use core::arch::global_asm;

/// Bytes of stack per vCPU (the linker script reserves `MAX_VCPUS` of them).
pub const STACK_SIZE: usize = 0x4000;

global_asm!(
    r#"
.section .text.head, "ax"
.global _start
_start:
    b       bulkhead_guest_primary_entry    // code0
    .long   0                               // code1
    .quad   0x200000                        // text_offset: RAM base + 2 MiB
    .quad   __image_size                    // image_size, .bss and stacks included
    .quad   0x2                             // flags: LE, 4 KiB pages, placed at the offset
    .quad   0                               // res2
    .quad   0                               // res3
    .quad   0                               // res4
    .long   0x644d5241                      // magic "ARM\x64"
    .long   0                               // res5: no PE header

.section .text, "ax"
bulkhead_guest_primary_entry:
    msr     daifset, #0xf
    mov     x19, x0                         // device tree address (or 0)
    bl      bulkhead_guest_leave_el2
    bl      bulkhead_guest_cpu_setup
    adrp    x1, __stacks_start              // vCPU 0's stack: slot 0
    add     x1, x1, :lo12:__stacks_start
    add     x1, x1, #{stack_size}
    mov     sp, x1
    adrp    x1, __bss_start                 // zero .bss, now through the cache
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
1:  cmp     x1, x2
    b.hs    2f
    stp     xzr, xzr, [x1], #16
    b       1b
2:  mov     x0, x19
    bl      bulkhead_guest_primary_start
3:  wfi
    b       3b

// PSCI CPU_ON entry: x0 = the vCPU index the runtime passed as context.
.global bulkhead_guest_secondary_entry
bulkhead_guest_secondary_entry:
    msr     daifset, #0xf
    mov     x19, x0
    cmp     x19, #{max_vcpus}
    b.hs    5f                              // no stack for it: park
    bl      bulkhead_guest_leave_el2
    bl      bulkhead_guest_cpu_setup
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    add     x2, x19, #1
    mov     x3, #{stack_size}
    madd    x1, x2, x3, x1                  // top of slot x19
    mov     sp, x1
    mov     x0, x19
    bl      bulkhead_guest_secondary_start
5:  wfi
    b       5b

// Entered at EL2 (bare QEMU with virtualization=on, which also makes PSCI use SMC): drop to
// EL1h with nothing trapped and the EL1 timers and GICv3 system registers usable, as a
// hypervisor would give them. A leaf that touches only x0-x1 and no memory; at EL1 it
// returns at once.
bulkhead_guest_leave_el2:
    mrs     x0, CurrentEL
    cmp     x0, #(2 << 2)
    b.ne    7f
    mov     x0, #(1 << 31)                  // HCR_EL2: RW (EL1 is AArch64), nothing trapped
    msr     hcr_el2, x0
    msr     hstr_el2, xzr
    mov     x0, #0x33ff                     // CPTR_EL2: RES1 bits, no FP/SIMD trap
    msr     cptr_el2, x0
    mrs     x0, cnthctl_el2
    orr     x0, x0, #3                      // EL1PCTEN | EL1PCEN
    msr     cnthctl_el2, x0
    msr     cntvoff_el2, xzr
    mrs     x0, midr_el1
    msr     vpidr_el2, x0
    mrs     x0, mpidr_el1
    msr     vmpidr_el2, x0
    mrs     x0, id_aa64pfr0_el1
    ubfx    x0, x0, #24, #4                 // GIC system registers implemented?
    cbz     x0, 6f
    mrs     x0, icc_sre_el2
    mov     x1, #0x9                        // SRE | Enable (EL1 may use ICC_SRE_EL1)
    orr     x0, x0, x1
    msr     icc_sre_el2, x0
    isb
6:  movz    x0, #0x0800                     // SCTLR_EL1: RES1 bits only, MMU and caches off
    movk    x0, #0x30d0, lsl #16
    msr     sctlr_el1, x0
    mov     x0, #0x3c5                      // SPSR_EL2: EL1h, DAIF masked
    msr     spsr_el2, x0
    msr     elr_el2, x30                    // "return" to the caller, at EL1
    isb
    eret
7:  ret

// Per-vCPU setup, a leaf that touches only x0-x3 and no memory: vectors, FP/SIMD, MMU.
bulkhead_guest_cpu_setup:
    adrp    x0, bulkhead_guest_vectors
    add     x0, x0, :lo12:bulkhead_guest_vectors
    msr     vbar_el1, x0
    mrs     x0, cpacr_el1
    orr     x0, x0, #(3 << 20)              // FPEN: no FP/SIMD traps at EL1/EL0
    msr     cpacr_el1, x0
    mov     x0, #0xff00                     // MAIR: attr0 Device-nGnRnE, attr1 Normal WB RA/WA
    msr     mair_el1, x0
    movz    x0, #0x3518                     // TCR: T0SZ=24 (1 TiB), inner/outer WB WA,
    movk    x0, #0x80, lsl #16              //   inner shareable, 4 KiB granule, EPD1,
    movk    x0, #0x2, lsl #32               //   IPS=40 bits (1 TiB)
    msr     tcr_el1, x0
    adrp    x0, bulkhead_guest_identity_map
    add     x0, x0, :lo12:bulkhead_guest_identity_map
    msr     ttbr0_el1, x0
    isb
    tlbi    vmalle1
    dsb     nsh
    isb
    mrs     x0, sctlr_el1
    movz    x1, #0x1005                     // M | C | I
    orr     x0, x0, x1
    movz    x1, #0x0002                     // A (alignment checks) off
    movk    x1, #0x0008, lsl #16            // WXN off
    bic     x0, x0, x1
    msr     sctlr_el1, x0
    isb
    ret

// Identity map of a 40-bit VA space (VA = PA), 1 GiB blocks: a level-0 table whose two
// entries point at level-1 tables for 0-512 GiB and 512 GiB-1 TiB. The first GiB (flash,
// GIC, UART, PCI ECAM and 32-bit BARs, ...) is Device-nGnRnE and never executable, 1-4 GiB
// (RAM) Normal write-back. Above that: 256-257 GiB Device-nGnRnE (QEMU virt's high PCIe
// ECAM), and the shared-memory windows, Normal write-back and never executable: 384-512 GiB
// (where a QNX `vdev shmem` maps attached regions) and 512 GiB-1 TiB (the PCI 64-bit
// prefetchable window: ivshmem BAR2).
.section .rodata.bulkhead_guest_identity_map, "a"
.balign 4096
bulkhead_guest_identity_map:
    .quad   bulkhead_guest_identity_map_low + 3
    .quad   bulkhead_guest_identity_map_high + 3
    .fill   510, 8, 0
.balign 4096
bulkhead_guest_identity_map_low:
    .quad   0x0060000000000401
    .quad   0x0000000040000705
    .quad   0x0000000080000705
    .quad   0x00000000c0000705
    .fill   252, 8, 0
    .quad   0x0060004000000401
    .fill   127, 8, 0
    .set    bulkhead_guest_block, 0x6000000000
    .rept   128
    .quad   0x0060000000000705 + bulkhead_guest_block
    .set    bulkhead_guest_block, bulkhead_guest_block + 0x40000000
    .endr
.balign 4096
bulkhead_guest_identity_map_high:
    .set    bulkhead_guest_block, 0x8000000000
    .rept   512
    .quad   0x0060000000000705 + bulkhead_guest_block
    .set    bulkhead_guest_block, bulkhead_guest_block + 0x40000000
    .endr

// EL1 vector table: IRQs taken on SP_EL1 go to the dispatcher, everything else is fatal.
.section .text.vectors, "ax"
.balign 2048
.global bulkhead_guest_vectors
bulkhead_guest_vectors:
.irp kind, 0, 1, 2, 3
    .balign 0x80
    mov     x0, #\kind
    b       bulkhead_guest_fatal_vector
.endr
    .balign 0x80                            // current EL, SP_ELx: synchronous
    mov     x0, #4
    b       bulkhead_guest_fatal_vector
    .balign 0x80                            // current EL, SP_ELx: IRQ
    b       bulkhead_guest_irq_vector
.irp kind, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
    .balign 0x80
    mov     x0, #\kind
    b       bulkhead_guest_fatal_vector
.endr

.section .text, "ax"
bulkhead_guest_fatal_vector:
    mrs     x1, esr_el1
    mrs     x2, elr_el1
    mrs     x3, far_el1
    mrs     x4, spsr_el1
    bl      bulkhead_guest_exception
6:  wfi
    b       6b

// Saves what the AAPCS64 lets a callee clobber (x0-x18, x29, x30, all of v0-v31 since the
// interrupted code may hold full 128-bit values in v8-v15) plus ELR/SPSR/FPSR/FPCR.
bulkhead_guest_irq_vector:
    sub     sp, sp, #720
    stp     x0, x1, [sp, #0]
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x29, [sp, #144]
    str     x30, [sp, #160]
    mrs     x0, elr_el1
    mrs     x1, spsr_el1
    stp     x0, x1, [sp, #176]
    mrs     x0, fpsr
    mrs     x1, fpcr
    stp     x0, x1, [sp, #192]
    stp     q0, q1, [sp, #208]
    stp     q2, q3, [sp, #240]
    stp     q4, q5, [sp, #272]
    stp     q6, q7, [sp, #304]
    stp     q8, q9, [sp, #336]
    stp     q10, q11, [sp, #368]
    stp     q12, q13, [sp, #400]
    stp     q14, q15, [sp, #432]
    stp     q16, q17, [sp, #464]
    stp     q18, q19, [sp, #496]
    stp     q20, q21, [sp, #528]
    stp     q22, q23, [sp, #560]
    stp     q24, q25, [sp, #592]
    stp     q26, q27, [sp, #624]
    stp     q28, q29, [sp, #656]
    stp     q30, q31, [sp, #688]
    bl      bulkhead_guest_irq
    ldp     q30, q31, [sp, #688]
    ldp     q28, q29, [sp, #656]
    ldp     q26, q27, [sp, #624]
    ldp     q24, q25, [sp, #592]
    ldp     q22, q23, [sp, #560]
    ldp     q20, q21, [sp, #528]
    ldp     q18, q19, [sp, #496]
    ldp     q16, q17, [sp, #464]
    ldp     q14, q15, [sp, #432]
    ldp     q12, q13, [sp, #400]
    ldp     q10, q11, [sp, #368]
    ldp     q8, q9, [sp, #336]
    ldp     q6, q7, [sp, #304]
    ldp     q4, q5, [sp, #272]
    ldp     q2, q3, [sp, #240]
    ldp     q0, q1, [sp, #208]
    ldp     x0, x1, [sp, #192]
    msr     fpsr, x0
    msr     fpcr, x1
    ldp     x0, x1, [sp, #176]
    msr     elr_el1, x0
    msr     spsr_el1, x1
    ldr     x30, [sp, #160]
    ldp     x18, x29, [sp, #144]
    ldp     x16, x17, [sp, #128]
    ldp     x14, x15, [sp, #112]
    ldp     x12, x13, [sp, #96]
    ldp     x10, x11, [sp, #80]
    ldp     x8, x9, [sp, #64]
    ldp     x6, x7, [sp, #48]
    ldp     x4, x5, [sp, #32]
    ldp     x2, x3, [sp, #16]
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #720
    eret
"#,
    stack_size = const STACK_SIZE,
    max_vcpus = const crate::cpu::MAX_VCPUS,
);

unsafe extern "C" {
    static bulkhead_guest_secondary_entry: u8;
}

/// Guest-physical address of the PSCI CPU_ON entry point (VA = PA under the identity map).
pub fn secondary_entry_address() -> u64 {
    core::ptr::addr_of!(bulkhead_guest_secondary_entry) as u64
}
