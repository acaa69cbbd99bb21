//! What the two-partition exchange guests (pingpong, ivpingpong, bench) share: which end of
//! the exchange a partition plays, and the payload patterns that let each end check what
//! crossed the region.

use crate::{exit_fail_with, partition_name};

/// Payload bytes per message.
pub const PAYLOAD_LEN: usize = 48;

/// Round trips the exchange programs add after their printed ones, printing nothing (x86_64):
/// the VM exits both vCPUs take during them ([`QuietExits`]) are what a doorbell round trip
/// costs. None on aarch64, where `cargo xtask bench` counts instructions instead.
pub const QUIET_ROUNDS: u32 = if cfg!(target_arch = "x86_64") { 5 } else { 0 };

/// The VM-exit counter as read before the quiet round trips.
#[derive(Clone, Copy, Debug, Default)]
pub struct QuietExits(Option<u64>);

impl QuietExits {
    /// Call at the start of each round: at the first quiet one it reads the counter.
    pub fn round(&mut self, round: u32, loud_rounds: u32) {
        if round == loud_rounds + 1 {
            self.0 = crate::vm_exits();
        }
    }

    /// Prints the VM exits this vCPU took during the quiet round trips, where the hypervisor
    /// exposes the count.
    pub fn report(self, me: &str) {
        if let (Some(start), Some(end)) = (self.0, crate::vm_exits()) {
            // `end` counts the first read's own exit too.
            let exits = end.saturating_sub(start).saturating_sub(1);
            crate::println!(
                "{me}: {QUIET_ROUNDS} quiet round trips: {exits} VM exits on this vCPU"
            );
        }
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
