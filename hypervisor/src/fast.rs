//! The fast lane: exits a backend answers on the exiting CPU, straight back into the guest,
//! without the run loop, the partition's device table or any lock (issue 9's trap budget).
//!
//! What it answers is only what needs no state that another CPU could be changing under a
//! lock: the pure PSCI queries ([`crate::partition::Partition::fast_call`]) and MMIO to
//! register ranges a device published as "reads zero, writes ignored"
//! ([`crate::partition::Partition::fast_mmio`]). Everything else, and every exit of a vCPU
//! whose run state needs a look (stop, restart, CPU_OFF: its attention bit), takes the slow
//! path, which gives the same answers.
//!
//! [`FastWindows`] is the published table: a few guest-physical ranges behind a sequence
//! lock. One writer at a time (the owner's lock, e.g. the PCI bridge's, serialises
//! [`FastWindows::publish`]); readers never wait: a reader that sees a publication in
//! progress or a changed sequence number simply takes the slow path. An access that read a
//! consistent table before a BAR moved is ordered before the move, as on hardware. Written by
//! hand: a seqlock over a handful of words is smaller than any crate for it.

use core::sync::atomic::{AtomicU64, Ordering, fence};

/// Ranges one table holds (a partition has a few PCI functions).
pub const FAST_WINDOWS: usize = 8;

/// A guest-physical range `[start, end)` whose registers read as zero and ignore writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FastWindow {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// The ranges a partition's fast lane serves, published by their owner.
#[derive(Debug)]
pub struct FastWindows {
    /// Even: stable; odd: a publication is in progress.
    sequence: AtomicU64,
    /// How many of `ranges` are valid.
    count: AtomicU64,
    /// (start, end) pairs.
    ranges: [[AtomicU64; 2]; FAST_WINDOWS],
}

impl Default for FastWindows {
    fn default() -> Self {
        Self::new()
    }
}

impl FastWindows {
    /// An empty table.
    pub const fn new() -> Self {
        Self {
            sequence: AtomicU64::new(0),
            count: AtomicU64::new(0),
            ranges: [const { [AtomicU64::new(0), AtomicU64::new(0)] }; FAST_WINDOWS],
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
        for (slot, window) in self.ranges.iter().zip(windows) {
            let [start, end] = slot;
            start.store(window.start, Ordering::Relaxed);
            end.store(window.end, Ordering::Relaxed);
            count += 1;
        }
        self.count.store(count, Ordering::Relaxed);
        self.sequence
            .store(sequence.wrapping_add(2), Ordering::Release);
    }

    /// Whether `[address, address + bytes)` lies in one published range, read consistently;
    /// `false` also when a publication raced the read.
    #[inline]
    pub fn contains(&self, address: u64, bytes: u64) -> bool {
        let before = self.sequence.load(Ordering::Acquire);
        if before & 1 != 0 {
            return false;
        }
        let count = self.count.load(Ordering::Relaxed) as usize;
        let Some(end) = address.checked_add(bytes) else {
            return false;
        };
        let mut found = false;
        for [start, stop] in self.ranges.iter().take(count) {
            if start.load(Ordering::Relaxed) <= address && end <= stop.load(Ordering::Relaxed) {
                found = true;
                break;
            }
        }
        // The ranges were read before the sequence number is checked again.
        fence(Ordering::Acquire);
        found && self.sequence.load(Ordering::Relaxed) == before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_ranges_are_found_whole() {
        let table = FastWindows::new();
        assert!(!table.contains(0x1000, 4));
        table.publish([
            FastWindow {
                start: 0x1010,
                end: 0x1100,
            },
            FastWindow {
                start: 0x8000,
                end: 0x8100,
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
        let table = FastWindows::new();
        table.publish([FastWindow {
            start: 0x1000,
            end: 0x2000,
        }]);
        table.sequence.fetch_add(1, Ordering::Relaxed);
        assert!(!table.contains(0x1000, 4));
        table.sequence.fetch_add(1, Ordering::Relaxed);
        assert!(table.contains(0x1000, 4));
    }

    #[test]
    fn more_windows_than_slots_keep_the_first_ones() {
        let table = FastWindows::new();
        table.publish((0..FAST_WINDOWS as u64 + 3).map(|n| FastWindow {
            start: n * 0x100,
            end: n * 0x100 + 0x10,
        }));
        assert!(table.contains(0, 4));
        assert!(table.contains((FAST_WINDOWS as u64 - 1) * 0x100, 4));
        assert!(!table.contains(FAST_WINDOWS as u64 * 0x100, 4));
    }
}
