//! `mmio-x86`: the instruction forms Bulkhead decodes when a guest touches an emulated device
//! (an EPT violation gives the address, not the instruction). Each form writes and reads back
//! the virtual I/O APIC's registers (IOREGSEL keeps 8 bits; redirection entries keep their
//! writable bits), so a wrong width, register, extension or instruction length shows as a
//! wrong value or a crash. Last, an `add` to the device, which no hypervisor emulates: the
//! partition must be stopped with a report, and the line after it never printed.

#![no_std]
#![no_main]

use core::arch::asm;

use bulkhead_guest_x86::{exit_fail_with, println};

bulkhead_guest_x86::entry!(main);

/// The I/O APIC the configuration places (`vdev ioapic loc 0xfec00000`).
const IOAPIC: u64 = 0xfec0_0000;
/// Redirection entry 1, low half: masked (bit 16), level (bit 15), vector 0x31.
const ENTRY: u32 = 0x0001_8031;

fn check(what: &str, got: u64, want: u64) {
    if got != want {
        exit_fail_with(format_args!("{what}: read {got:#x}, expected {want:#x}"));
    }
    println!("mmio: {what}: {got:#x}");
}

fn main() -> ! {
    let base = IOAPIC;
    let mut checked = 0;
    // Every asm block below: `base` is the I/O APIC's register page, which the partition's
    // page tables map and its EPT leaves to the hypervisor; the blocks touch only its
    // registers and the named general registers.

    // C7 /0 id: a 32-bit immediate store; 8B /r: a 32-bit load, zero-extending into RAX.
    let value: u64;
    // SAFETY: the I/O APIC's registers and the named registers only (see above).
    unsafe {
        asm!(
            "mov rax, -1",
            "mov dword ptr [{base}], 0x10",
            "mov eax, dword ptr [{base}]",
            base = in(reg) base, out("rax") value, options(nostack)
        )
    };
    check("mov dword imm32 / mov eax", value, 0x10);
    checked += 1;

    // C6 /0 ib and 0F B6 /r: a byte immediate, read back with movzx into a REX register.
    let value: u64;
    // SAFETY: the I/O APIC's registers and the named registers only (see above).
    unsafe {
        asm!(
            "mov r11, -1",
            "mov byte ptr [{base}], 0x12",
            "movzx r11d, byte ptr [{base}]",
            base = in(reg) base, out("r11") value, options(nostack)
        )
    };
    check("mov byte imm8 / movzx r11d", value, 0x12);
    checked += 1;

    // 89 /r with REX.R and a SIB + disp8 address: the window gets the entry; 8B /r with a
    // scaled index reads it back into R10 (bits 63:32 cleared by the 32-bit write).
    let value: u64;
    // SAFETY: the I/O APIC's registers and the named registers only (see above).
    unsafe {
        asm!(
            "mov r10, -1",
            "mov dword ptr [{base} + 0x10], {entry:e}",
            "xor ecx, ecx",
            "mov r10d, dword ptr [{base} + rcx * 8 + 0x10]",
            base = in(reg) base, entry = in(reg) u64::from(ENTRY),
            out("r10") value, out("rcx") _, options(nostack)
        )
    };
    check(
        "mov [sib+disp8], r32 / mov r10d, [base+index*8+disp8]",
        value,
        u64::from(ENTRY),
    );
    checked += 1;

    // 66 89 /r: a 16-bit store merges into the register's low half; 0F BF /r sign-extends it
    // to 64 bits (bit 15 is the level bit, set).
    let value: u64;
    // SAFETY: the I/O APIC's registers and the named registers only (see above).
    unsafe {
        asm!(
            "mov eax, 0x8045",
            "mov word ptr [{base} + 0x10], ax",
            "movsx rax, word ptr [{base} + 0x10]",
            base = in(reg) base, out("rax") value, options(nostack)
        )
    };
    check("mov word / movsx rax, word", value, 0xffff_ffff_ffff_8045);
    checked += 1;

    // 8A /r into AH (no REX: bits 15:8 of RAX) and 88 /r from CH.
    let value: u64;
    // SAFETY: the I/O APIC's registers and the named registers only (see above).
    unsafe {
        asm!(
            "mov rax, 0x1122334455667788",
            "mov ah, byte ptr [{base} + 0x11]",
            base = in(reg) base, out("rax") value, options(nostack)
        )
    };
    check("mov ah, byte [disp8]", value, 0x1122_3344_5566_8088);
    checked += 1;
    let value: u64;
    // SAFETY: the I/O APIC's registers and the named registers only (see above).
    unsafe {
        asm!(
            "mov ecx, 0x1300",
            "mov byte ptr [{base}], ch",
            "mov edx, dword ptr [{base}]",
            base = in(reg) base, out("rdx") value, out("rcx") _, options(nostack)
        )
    };
    check("mov byte [base], ch / mov edx", value, 0x13);
    checked += 1;

    // A1 with a 64-bit absolute address (moffs): select the version register, read IOWIN.
    let value: u64;
    // SAFETY: the I/O APIC's registers and the named registers only (see above).
    unsafe {
        asm!(
            "mov dword ptr [{base}], 1",
            "movabs eax, dword ptr [0xfec00010]",
            base = in(reg) base, out("rax") value, options(nostack)
        )
    };
    check("movabs eax, [moffs64] (version)", value, 0x0017_0020);
    checked += 1;

    // 48 89 /r and 48 8B /r: 64-bit accesses (the I/O APIC keeps the low 32 bits), and
    // 48 63 /r (movsxd) through a segment-override prefix.
    let value: u64;
    // SAFETY: the I/O APIC's registers and the named registers only (see above).
    unsafe {
        asm!(
            "mov qword ptr [{base}], {select}",
            "mov rsi, qword ptr [{base}]",
            base = in(reg) base, select = in(reg) 0xdead_0000_0000_0014_u64,
            out("rsi") value, options(nostack)
        )
    };
    check("mov qword / mov rsi, qword", value, 0x14);
    checked += 1;
    let value: u64;
    // SAFETY: the I/O APIC's registers and the named registers only (see above).
    unsafe {
        asm!(
            "mov dword ptr [{base} + 0x10], {entry:e}",
            "movsxd r9, dword ptr ds:[{base} + 0x10]",
            base = in(reg) base, entry = in(reg) 0x8000_0040_u64,
            out("r9") value, options(nostack)
        )
    };
    // Entry 2 low: bits 11..=16 and 7..=0 writable, bit 31 reserved: reads 0x40.
    check("movsxd r9, ds:dword", value, 0x40);
    checked += 1;

    println!("mmio: {checked} instruction forms read back correctly; now an add to the device");
    // SAFETY: not memory-safe by intent: `add` to a device is not emulated, so the
    // partition is stopped here and the next line never runs.
    unsafe { asm!("add dword ptr [{base}], 1", base = in(reg) base, options(nostack)) };
    exit_fail_with(format_args!("the add to the I/O APIC returned"))
}
