//! `storm`: interrupt storms a guest may make, which must never wedge its CPU at EL2 (issue
//! 13). With IRQs masked at PSTATE the guest drives its virtual CPU interface directly:
//! - `storm=level` (or no argument): the virtual PL011's transmit interrupt (INTID 33,
//!   level-sensitive, asserted for as long as UARTIMSC.TXIM is set) acknowledged and ended
//!   again and again: every end re-pends it (the maintenance interrupt on each EOI);
//! - `storm=sgi`: eight SGIs made pending on itself at once (more than the four list
//!   registers: the underflow interrupt refills them), all acknowledged and ended, repeated;
//! - `storm=print`: console lines without a pause for `storm.ms=N` milliseconds (default
//!   3,000): the noisy neighbour of `cargo xtask bench`'s console-isolation ratio.
//!
//! Both print their progress; a CPU stuck at EL2 would never print the next line.

#![no_std]
#![no_main]

use bulkhead_guest::{cpu, exit_fail_with, exit_pass, gic, platform, println};

bulkhead_guest::entry!(main);

/// The virtual PL011's interrupt (the configuration's default `intr gic:33`).
const UART_INTID: u32 = 33;
/// UARTIMSC and its transmit bit.
const UARTIMSC: usize = 0x038;
const TXIM: u32 = 1 << 5;
/// Level acknowledgements to make.
const LEVEL_ROUNDS: u32 = 20_000;
/// SGI rounds of eight.
const SGI_ROUNDS: u32 = 2_000;
/// SGIs made pending at once.
const SGIS: u32 = 8;

fn main() -> ! {
    let mode = platform::bootargs()
        .and_then(|args| {
            args.split_whitespace()
                .find_map(|word| word.strip_prefix("storm="))
        })
        .unwrap_or("level");
    println!("storm: {} storm, {}", mode, gic::version());
    if let Err(error) = gic::init() {
        exit_fail_with(format_args!("storm: GIC set-up failed: {error:?}"));
    }
    cpu::disable_interrupts();
    match mode {
        "level" => level_storm(),
        "sgi" => sgi_storm(),
        "print" => print_storm(),
        other => exit_fail_with(format_args!("storm: unknown mode {other}")),
    }
    exit_pass()
}

fn level_storm() {
    if let Err(error) = gic::set_trigger(UART_INTID, gic::Trigger::Level) {
        exit_fail_with(format_args!("storm: INTID {UART_INTID}: {error:?}"));
    }
    if let Err(error) = gic::enable(UART_INTID) {
        exit_fail_with(format_args!("storm: INTID {UART_INTID}: {error:?}"));
    }
    let imsc = platform::console_base() + UARTIMSC;
    // SAFETY: UARTIMSC of this guest's own virtual PL011.
    unsafe { bulkhead_guest::mmio::write32(imsc, TXIM) };
    let mut taken = 0u32;
    let mut spurious = 0u32;
    while taken < LEVEL_ROUNDS {
        match gic::acknowledge() {
            Some(interrupt) if interrupt.intid() == UART_INTID => {
                gic::end_of_interrupt(interrupt);
                taken += 1;
                if taken.is_multiple_of(5_000) {
                    println!("storm: level: {taken} acknowledged");
                }
            }
            Some(interrupt) => {
                gic::end_of_interrupt(interrupt);
            }
            None => {
                spurious += 1;
                if spurious > 1_000_000 {
                    exit_fail_with(format_args!(
                        "storm: INTID {UART_INTID} stopped coming back after {taken}"
                    ));
                }
            }
        }
    }
    // SAFETY: as above; the transmit interrupt off again.
    unsafe { bulkhead_guest::mmio::write32(imsc, 0) };
    println!("storm: level: {taken} acknowledgements of a line kept asserted, done");
}

fn print_storm() {
    let ms = platform::bootargs()
        .and_then(|args| {
            args.split_whitespace()
                .find_map(|word| word.strip_prefix("storm.ms="))
        })
        .and_then(|value| value.parse().ok())
        .unwrap_or(3_000u64);
    let end = bulkhead_guest::timer::counter() + bulkhead_guest::timer::ticks_from_ms(ms);
    let mut lines = 0u64;
    while bulkhead_guest::timer::counter() < end {
        lines += 1;
        println!(
            "storm: print {lines:>8}: the quick brown fox jumps over the lazy dog, again and again"
        );
    }
    println!("storm: print: {lines} lines in {ms} ms, done");
}

fn sgi_storm() {
    let me = cpu::current_index();
    for sgi in 0..SGIS {
        if let Err(error) = gic::enable(sgi) {
            exit_fail_with(format_args!("storm: SGI {sgi}: {error:?}"));
        }
    }
    let mut taken = 0u32;
    for round in 1..=SGI_ROUNDS {
        for sgi in 0..SGIS {
            if let Err(error) = gic::send_sgi(sgi, me) {
                exit_fail_with(format_args!("storm: SGI {sgi}: {error:?}"));
            }
        }
        let mut seen = 0u32;
        let mut spins = 0u32;
        while seen < SGIS {
            match gic::acknowledge() {
                Some(interrupt) => {
                    if interrupt.intid() < SGIS {
                        seen += 1;
                    }
                    gic::end_of_interrupt(interrupt);
                }
                None => {
                    spins += 1;
                    if spins > 1_000_000 {
                        exit_fail_with(format_args!(
                            "storm: round {round}: only {seen} of {SGIS} SGIs came"
                        ));
                    }
                }
            }
        }
        taken += seen;
        if round.is_multiple_of(500) {
            println!("storm: sgi: {round} rounds, {taken} acknowledged");
        }
    }
    println!("storm: sgi: {taken} SGIs in rounds of {SGIS}, done");
}
