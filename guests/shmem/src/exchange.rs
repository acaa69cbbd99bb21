//! What the two-partition exchange guests (pingpong, ivpingpong, bench) share: which end of
//! the exchange a partition plays, and the payload patterns that let each end check what
//! crossed the region.

use bulkhead_guest::exit_fail_with;

use crate::partition_name;

/// Payload bytes per message.
pub const PAYLOAD_LEN: usize = 48;

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
