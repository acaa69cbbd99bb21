//! `mmio`: exercises the load/store forms a hypervisor must decode from the instruction
//! because the data-abort syndrome has no ISV: pre/post-index write-back, pairs (STP, STNP,
//! LDP, LDNP, LDPSW), register offsets with extends, and sign-extending loads, all against
//! the PL011.
//!
//! The stores write the console line `mmio: stp ok` one byte per form (a pair's second word
//! goes to RSR/ECR at +4, where a write only clears error flags). The loads read the PrimeCell
//! ID registers (PeriphID0/1 = 0x11 0x10, PCellID0/1 = 0x0d 0xf0, the same on QEMU and on
//! Bulkhead's virtual PL011) and FR. Every write-back base and loaded value is checked.

#![no_std]
#![no_main]

use core::arch::asm;

use bulkhead_guest::{cpu, exit_fail_with, exit_pass, mmio, platform, println};

bulkhead_guest::entry!(main);

/// PL011 flag register offset.
const FLAG: usize = 0x18;
/// FR.TXFF.
const FLAG_TRANSMIT_FULL: u32 = 1 << 5;
/// PeriphID0 offset (PeriphID1 follows; PCellID0 at 0xff0, PCellID1 at 0xff4).
const PERIPH_ID0: usize = 0xfe0;

fn wait_transmit_ready(data: usize) {
    // SAFETY: FR of the console PL011; reading it has no side effects.
    while unsafe { mmio::read32(data + FLAG) } & FLAG_TRANSMIT_FULL != 0 {
        cpu::relax();
    }
}

fn expect(form: &str, what: &str, got: u64, expected: u64) {
    if got != expected {
        exit_fail_with(format_args!(
            "mmio: `{form}`: {what} is {got:#x}, expected {expected:#x}"
        ));
    }
}

/// One store form writing one byte to DR: the base starts at DR + start and must end at
/// DR + end. `index` (if given) is the index register's value.
macro_rules! store {
    ($data:expr, $form:literal, $byte:expr, $start:expr => $end:expr) => {{
        wait_transmit_ready($data);
        let mut base = $data.wrapping_add_signed($start);
        // SAFETY: the form's effective address is the PL011 DR (and, for pairs, RSR/ECR at
        // +4); both are console device registers, never program memory.
        unsafe {
            asm!($form, base = inout(reg) base, value = in(reg) u32::from($byte),
                 options(nostack, preserves_flags));
        }
        expect($form, "base", base as u64, $data.wrapping_add_signed($end) as u64);
    }};
    ($data:expr, $form:literal, $byte:expr, $start:expr, index $index:expr) => {{
        wait_transmit_ready($data);
        let base = $data.wrapping_add_signed($start);
        // SAFETY: base + extended index is the PL011 DR, a console device register.
        unsafe {
            asm!($form, base = in(reg) base, value = in(reg) u32::from($byte),
                 index = in(reg) $index, options(nostack, preserves_flags));
        }
    }};
}

/// One load form: the base starts at DR + start and must end at DR + end; returns the
/// one or two loaded registers.
macro_rules! load {
    ($data:expr, $form:literal, $start:expr => $end:expr) => {{
        let mut base = $data.wrapping_add_signed($start);
        let first: u64;
        let second: u64;
        // SAFETY: the form reads PL011 ID or flag registers (no side effects).
        unsafe {
            asm!($form, base = inout(reg) base, first = out(reg) first,
                 second = out(reg) second, options(nostack, preserves_flags));
        }
        expect($form, "base", base as u64, $data.wrapping_add_signed($end) as u64);
        (first, second)
    }};
    ($data:expr, $form:literal, $start:expr, index $index:expr) => {{
        let base = $data.wrapping_add_signed($start);
        let first: u64;
        // SAFETY: base + extended index is a PL011 ID or flag register (no side effects).
        unsafe {
            asm!($form, base = in(reg) base, first = out(reg) first, index = in(reg) $index,
                 options(nostack, preserves_flags));
        }
        first
    }};
}

fn stores(data: usize) {
    store!(data, "str {value:w}, [{base}, #4]!", b'm', -4 => 0);
    store!(data, "str {value:w}, [{base}], #16", b'm', 0 => 16);
    store!(data, "strb {value:w}, [{base}, #-16]!", b'i', 16 => 0);
    store!(data, "strh {value:w}, [{base}], #-8", b'o', 0 => -8);
    store!(data, "str {value:w}, [{base}, {index}, lsl #2]", b':', -8, index 2u64);
    store!(data, "stp {value:w}, wzr, [{base}]", b' ', 0 => 0);
    store!(data, "stp {value:w}, wzr, [{base}, #-8]!", b's', 8 => 0);
    store!(data, "stp {value:w}, wzr, [{base}], #24", b't', 0 => 24);
    store!(data, "stnp {value:w}, wzr, [{base}, #-24]", b'p', 24 => 24);
    store!(data, "sturb {value:w}, [{base}, #-24]", b' ', 24 => 24);
    store!(
        data,
        "strh {value:w}, [{base}, {index:w}, sxtw #1]",
        b'o',
        4,
        index - 2i64 as u64
    );
    store!(data, "stp {value:w}, wzr, [{base}, #-4]", b'k', 4 => 4);
    store!(data, "strb {value:w}, [{base}, {index:w}, uxtw]", b'\n', -0x100, index 0x100u64);
}

fn loads(data: usize) {
    let id = PERIPH_ID0 as isize;
    let form = "ldp (offset)";
    let (first, second) = load!(data, "ldp {first:w}, {second:w}, [{base}]", id => id);
    expect(form, "PeriphID0", first, 0x11);
    expect(form, "PeriphID1", second, 0x10);

    let form = "ldnp";
    let (first, second) = load!(data, "ldnp {first:w}, {second:w}, [{base}]", id => id);
    expect(form, "PeriphID0", first, 0x11);
    expect(form, "PeriphID1", second, 0x10);

    let form = "ldp (pre-index)";
    let (first, second) = load!(data, "ldp {first:w}, {second:w}, [{base}, #16]!", id => id + 16);
    expect(form, "PCellID0", first, 0x0d);
    expect(form, "PCellID1", second, 0xf0);

    let form = "ldp (post-index)";
    let (first, second) = load!(data, "ldp {first:w}, {second:w}, [{base}], #-240", 0xff0 => 0xf00);
    expect(form, "PCellID0", first, 0x0d);
    expect(form, "PCellID1", second, 0xf0);

    let form = "ldpsw";
    let (first, second) = load!(data, "ldpsw {first}, {second}, [{base}, #240]", 0xf00 => 0xf00);
    expect(form, "PCellID0", first, 0x0d);
    expect(form, "PCellID1", second, 0xf0);

    let form = "ldrsb w (pre-index)";
    let (first, _) =
        load!(data, "ldrsb {first:w}, [{base}, #244]!\nmov {second}, xzr", 0xf00 => 0xff4);
    expect(
        form,
        "PCellID1 sign-extended to 32 bits",
        first,
        0xffff_fff0,
    );

    let form = "ldrsb x (post-index)";
    let (first, _) =
        load!(data, "ldrsb {first}, [{base}], #-244\nmov {second}, xzr", 0xff4 => 0xf00);
    expect(
        form,
        "PCellID1 sign-extended to 64 bits",
        first,
        0xffff_ffff_ffff_fff0,
    );

    let form = "ldrsh x (register offset)";
    let first = load!(data, "ldrsh {first}, [{base}, {index}, lsl #1]", 0xf00, index 0x7au64);
    expect(form, "PCellID1 halfword", first, 0xf0);

    let form = "ldr w (pre-index)";
    let (first, _) = load!(data, "ldr {first:w}, [{base}, #24]!\nmov {second}, xzr", 0 => 0x18);
    expect(form, "FR.TXFF", first & u64::from(FLAG_TRANSMIT_FULL), 0);

    let form = "ldrb w (post-index)";
    let (first, _) = load!(data, "ldrb {first:w}, [{base}], #-24\nmov {second}, xzr", 0x18 => 0);
    expect(form, "FR.TXFF", first & u64::from(FLAG_TRANSMIT_FULL), 0);

    let form = "ldr w (register offset, sxtw)";
    let first = load!(
        data,
        "ldr {first:w}, [{base}, {index:w}, sxtw #2]",
        0x20,
        index - 2i64 as u64
    );
    expect(form, "FR.TXFF", first & u64::from(FLAG_TRANSMIT_FULL), 0);
}

fn main() -> ! {
    let data = platform::console_base();
    stores(data);
    println!("mmio: 13 store forms wrote that line, write-back bases ok");
    loads(data);
    println!("mmio: pair loads ok: PeriphID0/1 0x11 0x10, PCellID0/1 0x0d 0xf0");
    println!("mmio: sign-extending loads ok: ldrsb w 0xfffffff0, ldrsb x 0xfffffffffffffff0");
    println!("mmio: flag register reads ok (pre/post-index, register offset)");
    exit_pass()
}
