//! The last step: caches and MMU off, image into place, enter it the way Linux is entered.
//!
//! Runs after ExitBootServices, in assembly, without a stack: with the MMU off every data
//! access goes straight to memory, and when the image could not be allocated at its link
//! address the copy may overwrite the pages that held the firmware's stack and page tables
//! (see `main.rs`). The code that runs with the MMU off is cleaned to the point of coherency
//! first, as the Linux EFI stub does, since the firmware only cleaned it to the point of
//! unification when it loaded this application.

use core::arch::global_asm;

/// What the image finds in x1: `"UEFI"`, Bulkhead's marker for "booted by its UEFI loader"
/// (`boot::aarch64::UEFI_HANDOFF_MAGIC`; the Linux boot protocol passes 0 there).
pub const UEFI_HANDOFF_MAGIC: u64 = 0x4946_4555;

/// SCTLR_EL2 for non-VHE EL2 with the MMU, caches and alignment checks off: the RES1 bits only
/// (QEMU's reset value), little-endian.
const SCTLR_EL2_MMU_OFF: u64 = 0x30c5_0830;

// Arguments (AAPCS64): x0 device tree, x1 its length, x2 destination (the link address),
// x3 bytes there (image_size, page-rounded), x4 staging copy, x5 bytes to copy from it (a
// multiple of 16; 0 when the image already sits at x2).
global_asm!(
    r#"
.text
.balign 64
.global bulkhead_uefi_handoff
bulkhead_uefi_handoff:
    msr     daifset, #0xf
    mov     x16, x2                     // destination, entry point
    mrs     x9, ctr_el0                 // x9 = smallest D-cache line
    ubfx    x9, x9, #16, #4
    mov     x10, #4
    lsl     x9, x10, x9

    // MMU on: clean + invalidate what was written through the cache to the point of coherency.
    mov     x10, x0                     // the device-tree copy
    add     x11, x0, x1
    bl      2f
    mov     x10, x4                     // the staging copy (empty range if none)
    add     x11, x4, x5
    bl      2f
    cbnz    x5, 0f
    mov     x10, x16                    // the image, when written in place
    add     x11, x16, x3
    bl      2f
0:  adr     x10, 1f                     // the code below, which runs with the MMU off
    adr     x11, 9f
    bl      2f
    dsb     sy

1:  mrs     x10, sctlr_el2              // MMU, D-cache and I-cache off
    bic     x10, x10, #(1 << 0)
    bic     x10, x10, #(1 << 2)
    bic     x10, x10, #(1 << 12)
    msr     sctlr_el2, x10
    isb

    // Flat physical addressing now. Write back whatever the firmware left dirty over the
    // destination before copying over it (a no-op when the image was written in place).
    mov     x10, x16
    add     x11, x16, x3
    bl      2f
    dsb     sy
    mov     x10, x16                    // copy the staged image, 16 bytes at a time
    mov     x11, x4
    add     x12, x16, x5
3:  cmp     x10, x12
    b.hs    4f
    ldp     x13, x14, [x11], #16
    stp     x13, x14, [x10], #16
    b       3b
    // No line over the image may shadow memory once the image turns its caches on: drop any
    // that speculation brought in while the MMU was still on.
4:  mov     x10, x16
    add     x11, x16, x3
    sub     x15, x9, #1
    bic     x10, x10, x15
5:  cmp     x10, x11
    b.hs    6f
    dc      ivac, x10
    add     x10, x10, x9
    b       5b
6:  dsb     sy
    ic      iallu
    tlbi    alle2
    dsb     sy
    isb

    // Non-VHE EL2 as the image expects: HCR_EL2 = 0 (TGE and E2H clear), then SCTLR_EL2
    // rewritten in the non-VHE layout, and the EL2 TLB flushed once more for the new regime.
    msr     hcr_el2, xzr
    isb
    mov     x10, #{sctlr_lo}
    movk    x10, #{sctlr_hi}, lsl #16
    msr     sctlr_el2, x10
    isb
    tlbi    alle2
    dsb     sy
    isb

    mov     x1, #{magic_lo}             // x0 = device tree, x1 = "UEFI", x2 = x3 = 0
    movk    x1, #{magic_hi}, lsl #16
    mov     x2, xzr
    mov     x3, xzr
    br      x16

    // dc civac over [x10, x11), x9 = line size; clobbers x10, x15.
2:  sub     x15, x9, #1
    bic     x10, x10, x15
7:  cmp     x10, x11
    b.hs    8f
    dc      civac, x10
    add     x10, x10, x9
    b       7b
8:  ret
9:
"#,
    sctlr_lo = const SCTLR_EL2_MMU_OFF & 0xffff,
    sctlr_hi = const SCTLR_EL2_MMU_OFF >> 16,
    magic_lo = const UEFI_HANDOFF_MAGIC & 0xffff,
    magic_hi = const UEFI_HANDOFF_MAGIC >> 16,
);

unsafe extern "C" {
    fn bulkhead_uefi_handoff(
        device_tree: u64,
        device_tree_len: u64,
        destination: u64,
        destination_len: u64,
        staging: u64,
        copy_len: u64,
    ) -> !;
}

/// Where everything is when the loader lets go.
#[derive(Clone, Copy, Debug)]
pub struct Handoff {
    /// The device-tree copy (8-byte aligned).
    pub device_tree: u64,
    /// Its length in bytes.
    pub device_tree_len: u64,
    /// The image's link address, where it runs.
    pub destination: u64,
    /// Bytes it occupies there (image_size rounded up to 4 KiB).
    pub destination_len: u64,
    /// Where a staged copy of the whole image (.bss zeroed) sits, if it is not in place yet.
    pub staging: Option<u64>,
}

/// Leaves the firmware behind and enters the image at EL2 with the MMU off.
///
/// # Safety
///
/// Boot services must have been exited. `device_tree` and, when staged, the staging copy must
/// hold what they claim, stay clear of the destination, and be identity-mapped; the
/// destination must hold nothing the machine still needs (only the image, or firmware boot-time
/// memory), and `destination_len` must be a multiple of 16. The code here must not be inside
/// the destination.
pub unsafe fn enter(handoff: Handoff) -> ! {
    let (staging, copy_len) = match handoff.staging {
        Some(address) => (address, handoff.destination_len),
        None => (0, 0),
    };
    // SAFETY: the caller guarantees the layout above; the routine takes no stack and never
    // returns.
    unsafe {
        bulkhead_uefi_handoff(
            handoff.device_tree,
            handoff.device_tree_len,
            handoff.destination,
            handoff.destination_len,
            staging,
            copy_len,
        )
    }
}
