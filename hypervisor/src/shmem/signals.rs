//! The clients a registry operation asks the caller to signal: a duplicate-free list, inline for one region's 16 clients.

use alloc::vec::Vec;

use super::MAX_CLIENTS;
use crate::device::{ClientId, Effect, Effects};

/// Clients to signal (each once). Operations on one region fill at most 15 and never
/// allocate; [`super::Registry::detach_all`] may spill into a heap list when a partition
/// shared many regions with many others.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Signals {
    inline: [Option<ClientId>; MAX_CLIENTS],
    count: usize,
    spilled: Vec<ClientId>,
}

impl Signals {
    /// An empty list.
    pub const fn new() -> Signals {
        Signals {
            inline: [None; MAX_CLIENTS],
            count: 0,
            spilled: Vec::new(),
        }
    }

    /// Adds `client` unless it is already listed.
    pub fn push(&mut self, client: ClientId) {
        if self.contains(client) {
            return;
        }
        match self.inline.get_mut(self.count) {
            Some(slot) => {
                *slot = Some(client);
                self.count += 1;
            }
            None => self.spilled.push(client),
        }
    }

    /// Adds every client of `other`.
    pub fn extend(&mut self, other: &Signals) {
        for client in other.iter() {
            self.push(client);
        }
    }

    /// Whether `client` is listed.
    pub fn contains(&self, client: ClientId) -> bool {
        self.iter().any(|listed| listed == client)
    }

    /// The clients, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.inline
            .iter()
            .flatten()
            .copied()
            .chain(self.spilled.iter().copied())
    }

    /// How many clients are listed.
    pub fn len(&self) -> usize {
        self.count + self.spilled.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One [`Effect::Signal`] per client.
    pub fn push_effects(&self, effects: &mut Effects) {
        for client in self.iter() {
            effects.push(Effect::Signal(client));
        }
    }
}
