//! What the two-partition exchange guests (pingpong, ivpingpong, bench) share: which end of
//! the exchange a partition plays, and the payload patterns that let each end check what
//! crossed the region.

use crate::{exit_fail_with, partition_name};

/// Payload bytes per message.
pub const PAYLOAD_LEN: usize = 48;

/// Quiet round trips: round trips the exchange programs add after their printed ones,
/// printing nothing (x86_64), to count what a doorbell round trip costs the hypervisor
/// ([`QuietWindows`]): [`WARMUP`] to settle, a window of [`SHORT_WINDOW`], one of
/// [`LONG_WINDOW`], and one more so that both ends take their last reading. None on aarch64,
/// where `cargo xtask bench` counts with the PMU instead.
pub const QUIET_ROUNDS: u32 = if cfg!(target_arch = "x86_64") {
    WARMUP + SHORT_WINDOW + LONG_WINDOW + 1
} else {
    0
};
/// Quiet round trips before the first reading.
pub const WARMUP: u32 = 2;
/// Round trips in the first and the second window: the second less the first is
/// [`MEASURED_ROUNDS`] round trips with no reading's cost in them.
pub const SHORT_WINDOW: u32 = 3;
pub const LONG_WINDOW: u32 = 8;
pub const MEASURED_ROUNDS: u32 = LONG_WINDOW - SHORT_WINDOW;

/// The exit classes of [`Counters::classes`], as printed.
pub const EXIT_CLASSES: [&str; 5] = ["mmio", "hlt", "interrupt", "msr", "other"];

/// One reading of the hypervisor's counters (x86_64: Bulkhead's MSRs).
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    /// The TSC: under QEMU's `-icount shift=0` the instructions the whole machine executed.
    pub tsc: u64,
    /// This vCPU's VM exits.
    pub exits: u64,
    /// TSC ticks this vCPU spent in its guest, where the hypervisor counts them.
    pub guest_time: Option<u64>,
    /// Its exits by class ([`EXIT_CLASSES`]), where counted.
    pub classes: Option<[u64; 5]>,
}

/// The readings at the start of the two windows and after them.
#[derive(Clone, Copy, Debug, Default)]
pub struct QuietWindows([Option<Counters>; 3]);

impl QuietWindows {
    /// Call at the start of each round (both ends, before waiting): at the windows' edges
    /// it reads the counters. Both ends read in the same rounds, so each window holds one
    /// reading of each end, and the second window less the first holds none.
    pub fn round(&mut self, round: u32, loud_rounds: u32) {
        let first = loud_rounds + WARMUP + 1;
        let edges = [
            first,
            first + SHORT_WINDOW,
            first + SHORT_WINDOW + LONG_WINDOW,
        ];
        if let Some(slot) = edges
            .iter()
            .position(|&edge| edge == round)
            .and_then(|index| self.0.get_mut(index))
        {
            *slot = crate::arch::hypervisor_counters();
        }
    }

    /// Prints the exits this vCPU took in [`MEASURED_ROUNDS`] round trips (the second window
    /// less the first), and, where the hypervisor counts them, each counter over each
    /// window: `NAME: quiet windows 3,8 round trips: tsc=A,B guest=A,B exits=A,B mmio=A,B
    /// ...` (`cargo xtask bench` reads it).
    pub fn report(self, me: &str) {
        let [Some(start), Some(middle), Some(end)] = self.0 else {
            return;
        };
        let windows = |value: fn(&Counters) -> Option<u64>| {
            Some((
                value(&middle)?.wrapping_sub(value(&start)?),
                value(&end)?.wrapping_sub(value(&middle)?),
            ))
        };
        if let Some((short, long)) = windows(|c| Some(c.exits)) {
            crate::println!(
                "{me}: {MEASURED_ROUNDS} quiet round trips: {} VM exits on this vCPU",
                long.wrapping_sub(short)
            );
        }
        let (Some(tsc), Some(guest)) = (windows(|c| Some(c.tsc)), windows(|c| c.guest_time)) else {
            return;
        };
        let exits = windows(|c| Some(c.exits)).unwrap_or_default();
        let class = |index: usize| {
            let read = |c: &Counters| c.classes.and_then(|classes| classes.get(index).copied());
            let (Some(a), Some(b), Some(c)) = (read(&start), read(&middle), read(&end)) else {
                return (0, 0);
            };
            (b.wrapping_sub(a), c.wrapping_sub(b))
        };
        let [mmio, hlt, interrupt, msr, other] = [0, 1, 2, 3, 4].map(class);
        crate::println!(
            "{me}: quiet windows {SHORT_WINDOW},{LONG_WINDOW} round trips: tsc={},{} guest={},{} exits={},{} mmio={},{} hlt={},{} interrupt={},{} msr={},{} other={},{}",
            tsc.0,
            tsc.1,
            guest.0,
            guest.1,
            exits.0,
            exits.1,
            mmio.0,
            mmio.1,
            hlt.0,
            hlt.1,
            interrupt.0,
            interrupt.1,
            msr.0,
            msr.1,
            other.0,
            other.1
        );
    }
}

/// The end of an exchange a partition plays: it sends first (ping) or answers (pong).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Ping,
    Pong,
}

impl Role {
    /// The role the partition's name ends in (`...ping` or `...pong`); any other name ends the
    /// run with `FAIL`, naming `program`.
    pub fn from_partition_name(program: &str) -> Role {
        let name = partition_name().unwrap_or("");
        if name.ends_with("pong") {
            Role::Pong
        } else if name.ends_with("ping") {
            Role::Ping
        } else {
            exit_fail_with(format_args!(
                "{program}: partition name \"{name}\" ends in neither ping nor pong"
            ))
        }
    }

    /// `ping` for the ping end, `pong` for the pong end.
    pub fn pick<T>(self, ping: T, pong: T) -> T {
        match self {
            Role::Ping => ping,
            Role::Pong => pong,
        }
    }
}

/// A payload pattern. Message byte `i` of round `r` is `r * round_step + i * index_step +
/// offset` (mod 256); the reply is the message reversed, each byte XOR `reply_xor`.
#[derive(Clone, Copy, Debug)]
pub struct Pattern {
    pub round_step: u32,
    pub index_step: usize,
    pub offset: usize,
    pub reply_xor: u8,
}

impl Pattern {
    /// The ping end's payload for `round`.
    pub fn message(&self, round: u32) -> [u8; PAYLOAD_LEN] {
        let mut payload = [0u8; PAYLOAD_LEN];
        let base = round.wrapping_mul(self.round_step) as usize;
        for (index, byte) in payload.iter_mut().enumerate() {
            *byte = base
                .wrapping_add(index.wrapping_mul(self.index_step))
                .wrapping_add(self.offset) as u8;
        }
        payload
    }

    /// The pong end's reply to `message`.
    pub fn reply(&self, message: &[u8]) -> [u8; PAYLOAD_LEN] {
        let mut payload = [0u8; PAYLOAD_LEN];
        for (byte, &source) in payload.iter_mut().zip(message.iter().rev()) {
            *byte = source ^ self.reply_xor;
        }
        payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pingpong's pattern (guests/pingpong).
    const PINGPONG: Pattern = Pattern {
        round_step: 37,
        index_step: 11,
        offset: 5,
        reply_xor: 0x5a,
    };

    #[test]
    fn payloads_have_the_checksums_both_architectures_print() {
        // The aarch64 demo's `ping: sent 1 (checksum 0x5ef8b195)`, `pong: replied 1
        // (checksum 0x157fddf5)`; the x86_64 scenarios expect the same values.
        let message = PINGPONG.message(1);
        assert_eq!(crate::fnv1a(&message), 0x5ef8_b195);
        assert_eq!(crate::fnv1a(&PINGPONG.reply(&message)), 0x157f_ddf5);
        assert_eq!(crate::fnv1a(&PINGPONG.message(3)), 0x54e1_4145);
    }

    #[test]
    fn reply_is_the_message_reversed_and_xored() {
        let message = PINGPONG.message(2);
        let reply = PINGPONG.reply(&message);
        assert_eq!(reply[0], message[PAYLOAD_LEN - 1] ^ 0x5a);
        assert_eq!(reply[PAYLOAD_LEN - 1], message[0] ^ 0x5a);
    }
}
