//! The arm64 Linux Image header and the early entry code for the boot CPU and secondaries.
//!
//! The image is entered at EL2 with the MMU off: by a Linux-style loader (QEMU `-kernel`,
//! U-Boot `booti`, the UEFI loader in `boot/uefi`) with x0 = the device tree's address, or by
//! PSCI CPU_ON with x0 = a [`SecondaryContext`].
//!
//! The image is a static PIE (build.rs, `.cargo/config.toml`): code addresses everything
//! PC-relative, and the only absolute addresses are data words listed as R_AARCH64_RELATIVE
//! relocations. The boot CPU's first instructions add (load address - link address) to each
//! of them, before any Rust code runs, so a loader may put the image at any 2 MiB-aligned base
//! plus text_offset (header flags bit 3). A relocation of another type stops the boot (the
//! linker produces none; a hang is all that can be said before a console exists).

use core::arch::global_asm;

/// What a secondary CPU needs before it can run Rust: a stack and the MMU settings the boot
/// CPU uses. Read with the MMU off, so the boot CPU cleans it to the point of coherency.
#[derive(Debug)]
#[repr(C)]
pub struct SecondaryContext {
    /// Top of this CPU's stack (16-byte aligned).
    pub stack_top: u64,
    /// MAIR_EL2.
    pub mair: u64,
    /// TCR_EL2.
    pub tcr: u64,
    /// TTBR0_EL2.
    pub ttbr0: u64,
    /// SCTLR_EL2 (turns the MMU on).
    pub sctlr: u64,
    /// Bulkhead's index of the CPU.
    pub cpu_index: u64,
    /// Its MPIDR affinity.
    pub mpidr: u64,
}

global_asm!(
    r#"
.section .text.head, "ax"
.global _start
_start:
    b       bulkhead_primary_entry  // code0
    .long   0                       // code1
    .quad   0x200000                // text_offset: load at RAM base + 2 MiB
    .quad   __image_size            // image_size, .bss and boot stack included
    .quad   0xa                     // flags: little-endian, 4 KiB pages, any 2 MiB-aligned base
    .quad   0                       // res2
    .quad   0                       // res3
    .quad   0                       // res4
    .long   0x644d5241              // magic "ARM\x64"
    .long   0                       // res5: no PE header

.section .text, "ax"
bulkhead_primary_entry:
    mov     x19, x0                 // device tree address
    mov     x20, x1                 // 0, or UEFI_HANDOFF_MAGIC from Bulkhead's UEFI loader
    adrp    x1, __image_start       // where the loader put the image
    add     x1, x1, :lo12:__image_start
    ldr     x2, =__image_link_address // an absolute symbol: no relocation of its own
    sub     x3, x1, x2              // x3 = load address - link address (also at 0: the
                                    // linker leaves relocated words zero, RELA keeps addends)
    adrp    x4, __rela_start
    add     x4, x4, :lo12:__rela_start
    adrp    x5, __rela_end
    add     x5, x5, :lo12:__rela_end
6:  cmp     x4, x5
    b.hs    7f
    ldp     x6, x7, [x4], #16       // r_offset, r_info
    ldr     x8, [x4], #8            // r_addend
    cmp     x7, #0x403              // R_AARCH64_RELATIVE (symbol 0)
    b.ne    8f
    add     x8, x8, x3
    str     x8, [x6, x3]            // *(r_offset + delta) = r_addend + delta
    b       6b
8:  wfe                             // a relocation this code cannot apply
    b       8b
7:
    adrp    x1, __boot_stack_top
    add     x1, x1, :lo12:__boot_stack_top
    mov     sp, x1
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
1:  cmp     x1, x2
    b.hs    2f
    str     xzr, [x1], #8
    b       1b
2:  mrs     x1, CurrentEL
    cmp     x1, #(2 << 2)
    b.ne    3f                      // below EL2: Rust reports it
    adrp    x1, bulkhead_el2_vectors
    add     x1, x1, :lo12:bulkhead_el2_vectors
    msr     vbar_el2, x1
    mov     x1, #0x33ff             // CPTR_EL2: RES1 bits, no FP/SIMD trap
    msr     cptr_el2, x1
    isb
3:  mov     x0, x19
    mov     x1, x20
    bl      bulkhead_primary_main
4:  wfi
    b       4b

.global bulkhead_secondary_entry
bulkhead_secondary_entry:
    mov     x19, x0                 // SecondaryContext
    ldr     x1, [x19, #0]
    mov     sp, x1
    adrp    x1, bulkhead_el2_vectors
    add     x1, x1, :lo12:bulkhead_el2_vectors
    msr     vbar_el2, x1
    mov     x1, #0x33ff
    msr     cptr_el2, x1
    ldr     x1, [x19, #8]
    msr     mair_el2, x1
    ldr     x1, [x19, #16]
    msr     tcr_el2, x1
    ldr     x1, [x19, #24]
    msr     ttbr0_el2, x1
    isb
    tlbi    alle2
    ic      iallu
    dsb     nsh
    isb
    ldr     x1, [x19, #32]
    msr     sctlr_el2, x1
    isb
    mov     x0, x19
    bl      bulkhead_secondary_main
5:  wfi
    b       5b
"#
);

/// The value Bulkhead's UEFI loader passes in x1 (the Linux boot protocol passes 0 there), so
/// the image can report how it was booted: "UEFI" in ASCII.
pub const UEFI_HANDOFF_MAGIC: u64 = 0x4946_4555;

unsafe extern "C" {
    static bulkhead_secondary_entry: u8;
    static __bootstrap_heap_start: u8;
    static __bootstrap_heap_end: u8;
    static __image_start: u8;
    static __image_end: u8;
    static __text_end: u8;
    static __rodata_end: u8;
}

/// Physical address to give PSCI CPU_ON for a secondary CPU.
pub fn secondary_entry_address() -> u64 {
    core::ptr::addr_of!(bulkhead_secondary_entry) as u64
}

/// The image's sections as linked: `[start, text_end)` code, `[text_end, rodata_end)`
/// read-only data, `[rodata_end, end)` data, .bss and the boot stack. Identity-mapped.
#[derive(Clone, Copy, Debug)]
pub struct ImageLayout {
    /// First byte of the image (the header).
    pub start: u64,
    /// End of code (page-aligned).
    pub text_end: u64,
    /// End of read-only data (page-aligned).
    pub rodata_end: u64,
    /// End of the image including .bss and the boot stack (page-aligned).
    pub end: u64,
}

/// The bootstrap heap the linker reserved inside the image (.bss-like, NOLOAD): what the
/// allocator uses before the memory map is known. Returns (start, size).
pub fn bootstrap_heap() -> (u64, u64) {
    let start = core::ptr::addr_of!(__bootstrap_heap_start) as u64;
    let end = core::ptr::addr_of!(__bootstrap_heap_end) as u64;
    (start, end.saturating_sub(start))
}

/// Where the linker put the image's sections.
pub fn image_layout() -> ImageLayout {
    ImageLayout {
        start: core::ptr::addr_of!(__image_start) as u64,
        text_end: core::ptr::addr_of!(__text_end) as u64,
        rodata_end: core::ptr::addr_of!(__rodata_end) as u64,
        end: core::ptr::addr_of!(__image_end) as u64,
    }
}
