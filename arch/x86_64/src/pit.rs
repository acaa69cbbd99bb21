//! Busy-wait delays on the 8254 PIT's channel 2 (the speaker channel, gated through port 0x61),
//! present on PCs and in every PC emulator; used before any calibrated timer exists.

use crate::cpu::{in_u8, out_u8};

/// The PIT's input clock.
const FREQUENCY_HZ: u64 = 1_193_182;
const CHANNEL_2_DATA: u16 = 0x42;
const COMMAND: u16 = 0x43;
const SPEAKER_CONTROL: u16 = 0x61;
const GATE_2: u8 = 1 << 0;
const SPEAKER_ENABLE: u8 = 1 << 1;
const OUT_2: u8 = 1 << 5;
/// Channel 2, low then high byte, mode 0 (interrupt on terminal count), binary.
const CHANNEL_2_ONE_SHOT: u8 = 0b1011_0000;

/// Waits at least `microseconds` (in steps of at most ~54 ms, the 16-bit counter's range).
pub fn delay_microseconds(microseconds: u64) {
    let mut ticks = microseconds
        .saturating_mul(FREQUENCY_HZ)
        .div_ceil(1_000_000);
    while ticks > 0 {
        let step = ticks.min(0xffff);
        one_shot(step as u16);
        ticks -= step;
    }
}

/// Waits at least `milliseconds`.
pub fn delay_milliseconds(milliseconds: u64) {
    delay_microseconds(milliseconds.saturating_mul(1000));
}

fn one_shot(count: u16) {
    let [low, high] = count.max(1).to_le_bytes();
    // SAFETY: the PIT's channel 2 and the speaker gate are only used here, by one CPU at a time
    // (the boot CPU while it starts the others); the speaker stays off. Port I/O touches no
    // memory.
    unsafe {
        let control = in_u8(SPEAKER_CONTROL);
        out_u8(SPEAKER_CONTROL, (control & !SPEAKER_ENABLE) | GATE_2);
        out_u8(COMMAND, CHANNEL_2_ONE_SHOT);
        out_u8(CHANNEL_2_DATA, low);
        out_u8(CHANNEL_2_DATA, high);
        // In mode 0 OUT goes high when the count reaches zero.
        for _ in 0..100_000_000_u64 {
            if in_u8(SPEAKER_CONTROL) & OUT_2 != 0 {
                break;
            }
            core::hint::spin_loop();
        }
    }
}

/// The time-stamp counter's rate in Hz, measured across a 10 ms PIT delay (an emulator's TSC
/// runs at its own pace: this is the rate guests see, not the modelled CPU's nominal one).
pub fn measure_tsc_hz() -> u64 {
    const MILLISECONDS: u64 = 10;
    // SAFETY: RDTSC only reads the time-stamp counter.
    let start = unsafe { core::arch::x86_64::_rdtsc() };
    delay_milliseconds(MILLISECONDS);
    // SAFETY: as above.
    let end = unsafe { core::arch::x86_64::_rdtsc() };
    end.wrapping_sub(start).saturating_mul(1000 / MILLISECONDS)
}

/// Masks every line of the two legacy 8259 PICs: Bulkhead takes no legacy interrupts (BIOS
/// leaves the PIT's IRQ 0 on vector 8, which would otherwise reach whatever runs with
/// interrupts on).
pub fn mask_legacy_pic() {
    // SAFETY: writing the interrupt mask registers (OCW1) of the master and slave PIC only
    // masks their lines; no memory is touched.
    unsafe {
        out_u8(0x21, 0xff);
        out_u8(0xa1, 0xff);
    }
}
