//! The ivshmem doorbell board: named regions with their host memory, up to 16 peers each, and per-peer pending-vector masks.
//!
//! ivshmem needs to know which vector was rung, which the QNX registry's "notified by" mask
//! does not carry, so ivshmem keeps its own small board: a ring of (peer, vector) sets bit
//! `vector` of the peer's pending mask and asks the lead, through
//! [`Effect::Signal`], to run the peer device's [`crate::device::SignalTarget::signalled`],
//! which takes the mask. Peer IDs 0-15 are handed out lowest-free-first on attach and freed
//! when the [`BoardLink`] is dropped. A device may ring itself (QEMU allows it).
//!
//! A ring takes no lock: each region publishes its peers and their pending masks in atomics
//! (`Bells`), written under the board's lock when peers attach and detach, read and set
//! lock-free by rings and by the peer taking its mask.
//!
//! Lock order: a bridge's lock, then the board's; the board never calls back.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;

use super::ivshmem::{MAX_VECTORS, PeerLink, SharedMemory};
use crate::addr::PAGE_SIZE;
use crate::device::{ClientId, Effect, Effects};
use crate::fast::{FastDoorbell, MsiRoute, Ring};

/// Peers one region holds (QEMU's ivshmem-server default, QNX's limit).
pub const MAX_PEERS: usize = 16;

/// Why the board refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoardError {
    /// A region of that name exists already.
    DuplicateName,
    /// Memory of size zero, not whole pages, or not page-aligned.
    InvalidMemory,
    /// No region of that name.
    UnknownRegion,
    /// All 16 peer IDs are taken.
    Full,
    /// More than 64 vectors.
    TooManyVectors,
}

impl fmt::Display for BoardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            BoardError::DuplicateName => "ivshmem region named twice",
            BoardError::InvalidMemory => "ivshmem region memory not whole pages",
            BoardError::UnknownRegion => "no ivshmem region of that name",
            BoardError::Full => "ivshmem region has 16 peers already",
            BoardError::TooManyVectors => "more than 64 ivshmem vectors",
        };
        f.write_str(text)
    }
}

#[derive(Clone, Copy, Debug)]
struct Peer {
    client: ClientId,
    vectors: u16,
}

/// A region's peers as rings see them, without the board's lock: per peer ID, the peer
/// (0: none; else bit 63 | vectors << 32 | partition << 16 | device), its pending mask, and
/// per vector the route its MSI-X entry gives now ([`MsiRoute::encode`]; 0: none, rings set
/// the pending bit and signal the device).
#[derive(Debug)]
struct Bells {
    peers: [AtomicU64; MAX_PEERS],
    pending: [AtomicU64; MAX_PEERS],
    routes: [[AtomicU64; MAX_VECTORS as usize]; MAX_PEERS],
}

impl Default for Bells {
    fn default() -> Self {
        Self {
            peers: [const { AtomicU64::new(0) }; MAX_PEERS],
            pending: [const { AtomicU64::new(0) }; MAX_PEERS],
            routes: [const { [const { AtomicU64::new(0) }; MAX_VECTORS as usize] }; MAX_PEERS],
        }
    }
}

const PRESENT: u64 = 1 << 63;

impl Bells {
    fn encode(peer: &Peer) -> u64 {
        PRESENT
            | u64::from(peer.vectors) << 32
            | u64::from(peer.client.partition) << 16
            | u64::from(peer.client.device)
    }

    /// Peer `id`, if attached: its client and vector count.
    /// Sets `vector` pending for peer `peer`; the client to signal, or `None` (and nothing
    /// done) for an absent peer or a vector it does not have.
    fn ring(&self, peer: u16, vector: u16) -> Option<ClientId> {
        let (client, vectors) = self.peer(peer)?;
        if vector >= vectors || vector >= MAX_VECTORS {
            return None;
        }
        let pending = self.pending.get(usize::from(peer))?;
        pending.fetch_or(1u64 << vector, Ordering::AcqRel);
        Some(client)
    }

    /// The fast lane's ring: `vector`'s route straight to the peer's interrupt controller
    /// where one is published for the peer there now, else [`Bells::ring`]. A route read just
    /// before the peer masked the vector (or left) delivers as a ring made before that would.
    fn ring_fast(&self, peer: u16, vector: u16) -> Option<Ring> {
        let (client, vectors) = self.peer(peer)?;
        if vector >= vectors || vector >= MAX_VECTORS {
            return None;
        }
        let word = self
            .routes
            .get(usize::from(peer))?
            .get(usize::from(vector))?
            .load(Ordering::Acquire);
        if let Some(route) = MsiRoute::decode(word, client.partition) {
            return Some(Ring::Deliver {
                partition: client.partition,
                route,
            });
        }
        self.ring(peer, vector).map(Ring::Signal)
    }

    /// Publishes peer `peer`'s routes (of partition `partition`), vector by vector; vectors
    /// past `routes` get none.
    fn publish_routes(&self, peer: u16, partition: u16, routes: &[Option<MsiRoute>]) {
        let Some(slots) = self.routes.get(usize::from(peer)) else {
            return;
        };
        for (index, slot) in slots.iter().enumerate() {
            let word = routes
                .get(index)
                .copied()
                .flatten()
                .and_then(|route| route.encode(partition))
                .unwrap_or(0);
            slot.store(word, Ordering::Release);
        }
    }

    fn peer(&self, id: u16) -> Option<(ClientId, u16)> {
        let word = self.peers.get(usize::from(id))?.load(Ordering::Acquire);
        (word & PRESENT != 0).then(|| {
            let client = ClientId {
                partition: (word >> 16) as u16,
                device: word as u16,
            };
            (client, (word >> 32) as u16)
        })
    }
}

#[derive(Debug)]
struct Region {
    name: String,
    memory: SharedMemory,
    peers: [Option<Peer>; MAX_PEERS],
    bells: Arc<Bells>,
}

/// All ivshmem regions of the system.
#[derive(Debug, Default)]
pub struct DoorbellBoard {
    regions: Vec<Region>,
}

/// The board as the partitions share it.
pub type SharedBoard = Arc<Mutex<DoorbellBoard>>;

impl DoorbellBoard {
    /// An empty board.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers region `name` backed by `memory` (the lead carves it at start-up).
    pub fn add_region(&mut self, name: &str, memory: SharedMemory) -> Result<(), BoardError> {
        if self.regions.iter().any(|region| region.name == name) {
            return Err(BoardError::DuplicateName);
        }
        let pages = memory.size.is_multiple_of(PAGE_SIZE) && memory.host.is_aligned(PAGE_SIZE);
        if memory.size == 0 || !pages {
            return Err(BoardError::InvalidMemory);
        }
        self.regions.push(Region {
            name: String::from(name),
            memory,
            peers: [None; MAX_PEERS],
            bells: Arc::default(),
        });
        Ok(())
    }

    /// The memory of region `name`.
    pub fn memory(&self, name: &str) -> Option<SharedMemory> {
        self.regions
            .iter()
            .find(|region| region.name == name)
            .map(|region| region.memory)
    }

    /// The peer IDs attached to region `name`, bit `n` = peer `n`.
    pub fn peers(&self, name: &str) -> Option<u16> {
        let region = self.regions.iter().find(|region| region.name == name)?;
        Some(
            region
                .peers
                .iter()
                .enumerate()
                .filter(|(_, peer)| peer.is_some())
                .fold(0, |bits, (id, _)| bits | 1 << id),
        )
    }
}

/// Attaches `client` (the partition's ivshmem device, with `vectors` doorbell vectors; 0 for
/// `ivshmem-plain`) to region `name` under the lowest free peer ID.
pub fn attach(
    board: &SharedBoard,
    name: &str,
    client: ClientId,
    vectors: u16,
) -> Result<BoardLink, BoardError> {
    if vectors > MAX_VECTORS {
        return Err(BoardError::TooManyVectors);
    }
    let mut locked = board.lock();
    let region = locked
        .regions
        .iter()
        .position(|region| region.name == name)
        .ok_or(BoardError::UnknownRegion)?;
    let entry = locked
        .regions
        .get_mut(region)
        .ok_or(BoardError::UnknownRegion)?;
    let (id, free) = entry
        .peers
        .iter_mut()
        .enumerate()
        .find(|(_, peer)| peer.is_none())
        .ok_or(BoardError::Full)?;
    let peer = Peer { client, vectors };
    *free = Some(peer);
    if let (Some(pending), Some(published)) =
        (entry.bells.pending.get(id), entry.bells.peers.get(id))
    {
        pending.store(0, Ordering::Release);
        published.store(Bells::encode(&peer), Ordering::Release);
    }
    if let Some(routes) = entry.bells.routes.get(id) {
        for route in routes {
            route.store(0, Ordering::Release);
        }
    }
    Ok(BoardLink {
        board: board.clone(),
        region,
        partition: client.partition,
        position: id as u16,
        memory: entry.memory,
        bells: Arc::clone(&entry.bells),
    })
}

/// A device's doorbell register on the fast lane: the same lock-free ring as
/// [`BoardLink`]'s (QEMU's layout: peer ID in bits 31:16, vector in 15:0).
struct FastRing(Arc<Bells>);

impl FastDoorbell for FastRing {
    fn ring(&self, value: u32) -> Option<Ring> {
        self.0.ring_fast((value >> 16) as u16, value as u16)
    }
}

/// One attached device's [`PeerLink`]; dropping it detaches.
pub struct BoardLink {
    board: SharedBoard,
    region: usize,
    /// The partition of the device holding it.
    partition: u16,
    position: u16,
    memory: SharedMemory,
    bells: Arc<Bells>,
}

impl fmt::Debug for BoardLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoardLink")
            .field("region", &self.region)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl BoardLink {
    /// The region's memory.
    pub fn memory(&self) -> SharedMemory {
        self.memory
    }
}

impl PeerLink for BoardLink {
    fn position(&self) -> Option<u16> {
        Some(self.position)
    }

    fn ring(&self, peer: u16, vector: u16, effects: &mut Effects) -> bool {
        match self.bells.ring(peer, vector) {
            Some(client) => {
                effects.push(Effect::Signal(client));
                true
            }
            None => false,
        }
    }

    fn fast_doorbell(&self) -> Option<Arc<dyn FastDoorbell>> {
        Some(Arc::new(FastRing(Arc::clone(&self.bells))))
    }

    fn publish_routes(&self, routes: &[Option<MsiRoute>]) {
        self.bells
            .publish_routes(self.position, self.partition, routes);
    }

    fn take_rung(&self) -> u64 {
        self.bells
            .pending
            .get(usize::from(self.position))
            .map_or(0, |pending| pending.swap(0, Ordering::AcqRel))
    }
}

impl Drop for BoardLink {
    fn drop(&mut self) {
        let mut board = self.board.lock();
        if let Some(region) = board.regions.get_mut(self.region)
            && let Some(slot) = region.peers.get_mut(usize::from(self.position))
        {
            *slot = None;
            let id = usize::from(self.position);
            if let Some(published) = region.bells.peers.get(id) {
                published.store(0, Ordering::Release);
            }
            if let Some(pending) = region.bells.pending.get(id) {
                pending.store(0, Ordering::Release);
            }
            if let Some(routes) = region.bells.routes.get(id) {
                for route in routes {
                    route.store(0, Ordering::Release);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::HostPhysAddr;
    use std::vec::Vec;

    fn client(partition: u16) -> ClientId {
        ClientId {
            partition,
            device: 0,
        }
    }

    fn board() -> SharedBoard {
        let mut board = DoorbellBoard::new();
        let memory = SharedMemory {
            host: HostPhysAddr::new(0x8000_0000),
            size: 0x10_0000,
        };
        board.add_region("pingpong", memory).unwrap();
        Arc::new(Mutex::new(board))
    }

    #[test]
    fn regions_are_checked() {
        let shared = board();
        let mut board = shared.lock();
        let memory = board.memory("pingpong").unwrap();
        assert_eq!(
            board.add_region("pingpong", memory),
            Err(BoardError::DuplicateName)
        );
        let odd = SharedMemory {
            host: HostPhysAddr::new(0x8000_0000),
            size: 0x1800,
        };
        assert_eq!(board.add_region("odd", odd), Err(BoardError::InvalidMemory));
        assert_eq!(board.memory("nope"), None);
        drop(board);
        assert_eq!(
            attach(&shared, "nope", client(0), 1).unwrap_err(),
            BoardError::UnknownRegion
        );
        assert_eq!(
            attach(&shared, "pingpong", client(0), 65).unwrap_err(),
            BoardError::TooManyVectors
        );
    }

    #[test]
    fn peer_ids_are_lowest_free_and_freed_on_drop() {
        let shared = board();
        let mut links: Vec<BoardLink> = (0..16)
            .map(|n| attach(&shared, "pingpong", client(n), 2).unwrap())
            .collect();
        assert_eq!(links[5].position(), Some(5));
        assert_eq!(links[5].memory().size, 0x10_0000);
        assert_eq!(
            attach(&shared, "pingpong", client(16), 2).unwrap_err(),
            BoardError::Full
        );
        assert_eq!(shared.lock().peers("pingpong"), Some(0xffff));
        links.remove(3);
        assert_eq!(shared.lock().peers("pingpong"), Some(0xfff7));
        let again = attach(&shared, "pingpong", client(20), 1).unwrap();
        assert_eq!(again.position(), Some(3));
    }

    #[test]
    fn rings_carry_vectors_and_signal_the_peer() {
        let shared = board();
        let zero = attach(&shared, "pingpong", client(0), 4).unwrap();
        let one = attach(&shared, "pingpong", client(1), 2).unwrap();
        let mut effects = Effects::default();
        assert!(zero.ring(1, 1, &mut effects));
        assert!(zero.ring(1, 0, &mut effects));
        assert!(
            !zero.ring(1, 2, &mut effects),
            "vector past the peer's count"
        );
        assert!(!zero.ring(7, 0, &mut effects), "absent peer");
        assert!(one.ring(0, 3, &mut effects));
        assert!(zero.ring(0, 0, &mut effects), "self");
        assert_eq!(
            effects.drain().collect::<Vec<_>>(),
            [
                Effect::Signal(client(1)),
                Effect::Signal(client(1)),
                Effect::Signal(client(0)),
                Effect::Signal(client(0)),
            ]
        );
        assert_eq!(one.take_rung(), 0b11);
        assert_eq!(one.take_rung(), 0);
        assert_eq!(zero.take_rung(), 0b1001);
        drop(one);
        assert!(!zero.ring(1, 0, &mut effects), "detached");
    }
}
