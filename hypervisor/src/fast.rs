//! The fast lane: exits a backend answers on the exiting CPU, straight back into the guest,
//! without the run loop, the partition's device table or any lock (issue 9's trap budget).
//!
//! What it answers is only what needs no state that another CPU could be changing under a
//! lock: the pure PSCI queries ([`crate::partition::Partition::fast_call`]), MMIO to register
//! ranges a device published as "reads zero, writes ignored", and stores to a doorbell
//! register whose ring is lock-free ([`FastDoorbell`]: ivshmem's; the peer is then signalled
//! as the slow path would) ([`crate::partition::Partition::fast_mmio`]). Everything else, and every exit of a vCPU
//! whose run state needs a look (stop, restart, CPU_OFF: its attention bit), takes the slow
//! path, which gives the same answers.
//!
//! [`FastWindows`] is the published table: a few guest-physical ranges behind a sequence
//! lock. One writer at a time (the owner's lock, e.g. the PCI bridge's, serialises
//! [`FastWindows::publish`]); readers never wait: a reader that sees a publication in
//! progress or a changed sequence number simply takes the slow path. An access that read a
//! consistent table before a BAR moved is ordered before the move, as on hardware. Written by
//! hand: a seqlock over a handful of words is smaller than any crate for it.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering, fence};

use crate::device::ClientId;

/// Ranges one table holds (a partition has a few PCI functions).
pub const FAST_WINDOWS: usize = 8;

/// Where a doorbell's interrupt goes once its receiver has programmed its MSI-X entry (MSI-X
/// on, function and vector unmasked): computed by the receiver's PCI bridge whenever that
/// state changes, so that a ring reaches the receiver's interrupt controller without its
/// bridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsiRoute {
    /// An edge on SPI `intid` of the receiver's virtual GIC (the message data names it).
    Spi(u32),
    /// A message on the receiver's APIC bus.
    Message {
        /// Message address (0xFEEx_xxxx).
        address: u64,
        /// Message data.
        data: u32,
    },
}

const ROUTE_VALID: u64 = 1 << 63;
const ROUTE_MESSAGE: u64 = 1 << 62;
const ROUTE_PARTITION_SHIFT: u32 = 40;

impl MsiRoute {
    /// The route as one word for partition `partition` (tagged with it, so that a reader can
    /// tell a route published for another occupant of the same peer ID); `None` when it does
    /// not fit (a message address outside 0xFEE0_0000..0xFEF0_0000, data above 16 bits):
    /// such a route is not published and rings take the slow path.
    pub fn encode(self, partition: u16) -> Option<u64> {
        let tag = ROUTE_VALID | u64::from(partition) << ROUTE_PARTITION_SHIFT;
        match self {
            MsiRoute::Spi(intid) => Some(tag | u64::from(intid)),
            MsiRoute::Message { address, data } => {
                let local = address >> 20 == 0xfee && address & 0b11 == 0;
                (local && data <= 0xffff).then_some(
                    tag | ROUTE_MESSAGE | ((address & 0xf_fffc) >> 2) << 16 | u64::from(data),
                )
            }
        }
    }

    /// The route in `word` if it was published for partition `partition`.
    pub fn decode(word: u64, partition: u16) -> Option<MsiRoute> {
        let tag = ROUTE_VALID | u64::from(partition) << ROUTE_PARTITION_SHIFT;
        let tag_mask = ROUTE_VALID | 0xffff << ROUTE_PARTITION_SHIFT;
        if word & tag_mask != tag {
            return None;
        }
        Some(if word & ROUTE_MESSAGE == 0 {
            MsiRoute::Spi(word as u32)
        } else {
            MsiRoute::Message {
                address: 0xfee0_0000 | ((word >> 16) & 0x3_ffff) << 2,
                data: word as u32 & 0xffff,
            }
        })
    }
}

/// What a ring on the fast lane asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ring {
    /// Run the device's [`crate::device::SignalTarget::signalled`] (as
    /// [`crate::device::Effect::Signal`] does): the slow way, through its bridge.
    Signal(ClientId),
    /// Deliver `route` in partition `partition` at once.
    Deliver {
        /// The receiving partition.
        partition: u16,
        /// Its interrupt.
        route: MsiRoute,
    },
}

/// A doorbell register the fast lane rings without its device's lock.
pub trait FastDoorbell: Send + Sync {
    /// A 32-bit store of `value` to the register: records the ring and says what reaches the
    /// receiver, if anything (an absent peer or vector: nothing).
    fn ring(&self, value: u32) -> Option<Ring>;
}

/// What a published range is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FastKind {
    /// Registers that read as zero and ignore writes.
    Reserved,
    /// A 32-bit doorbell register (reads zero): doorbell `n` of the table's list.
    Doorbell(usize),
}

/// A guest-physical range `[start, end)` the fast lane answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FastWindow {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// What it is.
    pub kind: FastKind,
}

/// What the fast lane found at an address.
pub enum FastTarget<'a> {
    /// A reserved register.
    Reserved,
    /// A doorbell register.
    Doorbell(&'a dyn FastDoorbell),
}

/// The ranges a partition's fast lane serves, published by their owner.
#[derive(Debug)]
pub struct FastWindows {
    /// Even: stable; odd: a publication is in progress.
    sequence: AtomicU64,
    /// How many of `ranges` are valid.
    count: AtomicU64,
    /// The smallest start and the largest end of the ranges: most misses (every other
    /// device) are told by these two words.
    bounds: [AtomicU64; 2],
    /// (start, end, kind) triples; kind 0: reserved, n + 1: doorbell n.
    ranges: [[AtomicU64; 3]; FAST_WINDOWS],
    /// The doorbells ranges may name, fixed when the table is made.
    doorbells: Vec<Arc<dyn FastDoorbell>>,
}

impl core::fmt::Debug for dyn FastDoorbell {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("FastDoorbell")
    }
}

impl Default for FastWindows {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl FastWindows {
    /// An empty table whose ranges may name `doorbells` (by index).
    pub fn new(doorbells: Vec<Arc<dyn FastDoorbell>>) -> Self {
        Self {
            sequence: AtomicU64::new(0),
            count: AtomicU64::new(0),
            bounds: [AtomicU64::new(u64::MAX), AtomicU64::new(0)],
            ranges: [const { [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)] };
                FAST_WINDOWS],
            doorbells,
        }
    }

    /// Replaces the table with `windows` (at most [`FAST_WINDOWS`]; the rest stay on the
    /// slow path, which answers them the same). Callers serialise publications.
    pub fn publish(&self, windows: impl IntoIterator<Item = FastWindow>) {
        let sequence = self.sequence.load(Ordering::Relaxed);
        self.sequence
            .store(sequence.wrapping_add(1), Ordering::Relaxed);
        // The odd sequence number is visible before any range changes.
        fence(Ordering::Release);
        let mut count = 0;
        let (mut lowest, mut highest) = (u64::MAX, 0);
        let doorbells = self.doorbells.len();
        let valid = windows.into_iter().filter(|window| match window.kind {
            FastKind::Reserved => true,
            FastKind::Doorbell(index) => index < doorbells,
        });
        for (slot, window) in self.ranges.iter().zip(valid) {
            let [start, end, kind] = slot;
            start.store(window.start, Ordering::Relaxed);
            end.store(window.end, Ordering::Relaxed);
            let code = match window.kind {
                FastKind::Reserved => 0,
                FastKind::Doorbell(index) => index as u64 + 1,
            };
            kind.store(code, Ordering::Relaxed);
            lowest = lowest.min(window.start);
            highest = highest.max(window.end);
            count += 1;
        }
        self.count.store(count, Ordering::Relaxed);
        let [low, high] = &self.bounds;
        low.store(lowest, Ordering::Relaxed);
        high.store(highest, Ordering::Relaxed);
        self.sequence
            .store(sequence.wrapping_add(2), Ordering::Release);
    }

    /// Whether `[address, address + bytes)` may lie in a published range: `false` tells most
    /// misses (every other device) in two loads, without the sequence lock.
    #[inline]
    pub fn may_contain(&self, address: u64, bytes: u64) -> bool {
        let [low, high] = &self.bounds;
        address >= low.load(Ordering::Relaxed)
            && address.saturating_add(bytes) <= high.load(Ordering::Relaxed)
    }

    /// What answers `[address, address + bytes)`, if it lies in one published range (a
    /// doorbell only for a 4-byte access), read consistently; `None` also when a publication
    /// raced the read.
    #[inline]
    pub fn find(&self, address: u64, bytes: u64) -> Option<FastTarget<'_>> {
        let before = self.sequence.load(Ordering::Acquire);
        if before & 1 != 0 {
            return None;
        }
        let end = address.checked_add(bytes)?;
        let [low, high] = &self.bounds;
        if address < low.load(Ordering::Relaxed) || end > high.load(Ordering::Relaxed) {
            // Stale bounds only send an access to the slow path.
            return None;
        }
        let count = self.count.load(Ordering::Relaxed) as usize;
        let mut found = None;
        for [start, stop, kind] in self.ranges.iter().take(count) {
            if start.load(Ordering::Relaxed) <= address && end <= stop.load(Ordering::Relaxed) {
                found = Some(kind.load(Ordering::Relaxed));
                break;
            }
        }
        // The ranges were read before the sequence number is checked again.
        fence(Ordering::Acquire);
        if self.sequence.load(Ordering::Relaxed) != before {
            return None;
        }
        match found? {
            0 => Some(FastTarget::Reserved),
            code if bytes == 4 => {
                let doorbell = self.doorbells.get(usize::try_from(code - 1).ok()?)?;
                Some(FastTarget::Doorbell(doorbell.as_ref()))
            }
            _ => None,
        }
    }

    /// Whether `[address, address + bytes)` lies in one published reserved range.
    #[cfg(test)]
    fn contains(&self, address: u64, bytes: u64) -> bool {
        matches!(self.find(address, bytes), Some(FastTarget::Reserved))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_ranges_are_found_whole() {
        let table = FastWindows::default();
        assert!(!table.contains(0x1000, 4));
        table.publish([
            FastWindow {
                start: 0x1010,
                end: 0x1100,
                kind: FastKind::Reserved,
            },
            FastWindow {
                start: 0x8000,
                end: 0x8100,
                kind: FastKind::Reserved,
            },
        ]);
        assert!(table.contains(0x1010, 4));
        assert!(table.contains(0x10fc, 4));
        assert!(!table.contains(0x10fc, 8), "straddles the end");
        assert!(!table.contains(0x100c, 4), "before the start");
        assert!(table.contains(0x80f8, 8));
        assert!(!table.contains(u64::MAX - 1, 4), "wraps");
        table.publish([]);
        assert!(!table.contains(0x1010, 4), "withdrawn");
    }

    #[test]
    fn a_publication_in_progress_sends_readers_to_the_slow_path() {
        let table = FastWindows::default();
        table.publish([FastWindow {
            start: 0x1000,
            end: 0x2000,
            kind: FastKind::Reserved,
        }]);
        table.sequence.fetch_add(1, Ordering::Relaxed);
        assert!(!table.contains(0x1000, 4));
        table.sequence.fetch_add(1, Ordering::Relaxed);
        assert!(table.contains(0x1000, 4));
    }

    struct Counter(core::sync::atomic::AtomicU32);

    impl FastDoorbell for Counter {
        fn ring(&self, value: u32) -> Option<Ring> {
            self.0.fetch_add(value, Ordering::Relaxed);
            None
        }
    }

    #[test]
    fn doorbells_are_found_for_word_accesses_and_unknown_ones_not_published() {
        let counter = Arc::new(Counter(core::sync::atomic::AtomicU32::new(0)));
        let table = FastWindows::new(alloc::vec![counter.clone() as Arc<dyn FastDoorbell>]);
        table.publish([
            FastWindow {
                start: 0x100c,
                end: 0x1010,
                kind: FastKind::Doorbell(0),
            },
            FastWindow {
                start: 0x200c,
                end: 0x2010,
                kind: FastKind::Doorbell(1),
            },
        ]);
        let Some(FastTarget::Doorbell(doorbell)) = table.find(0x100c, 4) else {
            panic!("doorbell not found");
        };
        assert_eq!(doorbell.ring(5), None);
        assert_eq!(counter.0.load(Ordering::Relaxed), 5);
        assert!(
            table.find(0x100c, 2).is_none(),
            "a doorbell takes words only"
        );
        assert!(table.find(0x200c, 4).is_none(), "doorbell 1 does not exist");
    }

    #[test]
    fn routes_round_trip_through_their_word_for_their_partition_only() {
        let spi = MsiRoute::Spi(96);
        let message = MsiRoute::Message {
            address: 0xfee0_3000,
            data: 0x41,
        };
        for route in [spi, message] {
            let word = route.encode(3).unwrap();
            assert_eq!(MsiRoute::decode(word, 3), Some(route));
            assert_eq!(MsiRoute::decode(word, 4), None, "another occupant");
        }
        assert_eq!(MsiRoute::decode(0, 0), None);
        let far = MsiRoute::Message {
            address: 0x1_fee0_0000,
            data: 0x41,
        };
        assert_eq!(far.encode(0), None);
        let wide = MsiRoute::Message {
            address: 0xfee0_0000,
            data: 0x1_0000,
        };
        assert_eq!(wide.encode(0), None);
    }

    #[test]
    fn more_windows_than_slots_keep_the_first_ones() {
        let table = FastWindows::default();
        table.publish((0..FAST_WINDOWS as u64 + 3).map(|n| FastWindow {
            start: n * 0x100,
            end: n * 0x100 + 0x10,
            kind: FastKind::Reserved,
        }));
        assert!(table.contains(0, 4));
        assert!(table.contains((FAST_WINDOWS as u64 - 1) * 0x100, 4));
        assert!(!table.contains(FAST_WINDOWS as u64 * 0x100, 4));
    }
}
