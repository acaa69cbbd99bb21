//! Host-physical memory: board RAM as a set of ranges, pinned VM RAM, first-fit allocation.

use crate::error::{Errors, Location};
use crate::model::{Board, MemoryRange};
use crate::numbers::{LARGE_PAGE_SIZE, PAGE_SIZE, format_size};

/// Sorted, disjoint, non-adjacent address ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RangeSet {
    ranges: Vec<MemoryRange>,
}

impl RangeSet {
    /// The union of `ranges` (overlapping and adjacent ones merged).
    pub(crate) fn union(ranges: impl IntoIterator<Item = MemoryRange>) -> Self {
        let mut sorted: Vec<MemoryRange> = ranges.into_iter().filter(|r| r.size > 0).collect();
        sorted.sort();
        let mut merged: Vec<MemoryRange> = Vec::with_capacity(sorted.len());
        for range in sorted {
            match merged.last_mut() {
                Some(last) if range.base <= last.end() => {
                    let end = last.end().max(range.end());
                    last.size = end.saturating_sub(last.base);
                }
                _ => merged.push(range),
            }
        }
        Self { ranges: merged }
    }

    /// True if `range` lies entirely inside the set.
    pub(crate) fn contains(&self, range: &MemoryRange) -> bool {
        self.ranges.iter().any(|r| r.contains(range))
    }

    /// Takes `range` out of the set.
    pub(crate) fn remove(&mut self, range: &MemoryRange) {
        let mut kept = Vec::with_capacity(self.ranges.len().saturating_add(1));
        for r in &self.ranges {
            if !r.overlaps(range) {
                kept.push(*r);
                continue;
            }
            if r.base < range.base {
                kept.push(MemoryRange {
                    base: r.base,
                    size: range.base.saturating_sub(r.base),
                });
            }
            if range.end() < r.end() {
                kept.push(MemoryRange {
                    base: range.end(),
                    size: r.end().saturating_sub(range.end()),
                });
            }
        }
        self.ranges = kept;
    }

    /// Bytes in the set.
    pub(crate) fn total(&self) -> u64 {
        self.ranges
            .iter()
            .fold(0u64, |sum, r| sum.saturating_add(r.size))
    }

    /// The largest range's size (0 when empty).
    pub(crate) fn largest(&self) -> u64 {
        self.ranges.iter().map(|r| r.size).max().unwrap_or(0)
    }

    /// The lowest `align`-aligned base where `size` bytes fit.
    pub(crate) fn first_fit(&self, size: u64, align: u64) -> Option<u64> {
        self.ranges.iter().find_map(|r| {
            let base = r.base.checked_next_multiple_of(align)?;
            let end = base.checked_add(size)?;
            (end <= r.end()).then_some(base)
        })
    }

    /// The ranges, sorted by address.
    pub(crate) fn ranges(&self) -> &[MemoryRange] {
        &self.ranges
    }
}

/// One VM `ram` line as the allocator sees it.
#[derive(Debug, Clone)]
pub(crate) struct RamRequest {
    /// Index of the VM in system order.
    pub vm: usize,
    pub guest_base: u64,
    pub size: u64,
    /// `host HPA`, if pinned.
    pub host_base: Option<u64>,
    pub at: Location,
}

/// Checks the board's RAM list and reserve; returns the board RAM as a set.
pub(crate) fn check_board_ram(board: &Board, errors: &mut Errors) -> RangeSet {
    for (index, ram) in board.ram.iter().enumerate() {
        for earlier in board.ram.iter().take(index) {
            if ram.value.overlaps(&earlier.value) {
                let message = format!(
                    "board ram {} overlaps board ram {} (line {})",
                    ram.value, earlier.value, earlier.at.line
                );
                errors.push(&ram.at, message);
            }
        }
    }
    let board_ram = RangeSet::union(board.ram.iter().map(|ram| ram.value));
    if !board_ram.contains(&board.hypervisor.value) {
        let message = format!(
            "hypervisor reserve {} lies outside board RAM ({})",
            board.hypervisor.value,
            describe(&board_ram)
        );
        errors.push(&board.hypervisor.at, message);
    }
    board_ram
}

/// Lists a set of ranges for a message.
fn describe(set: &RangeSet) -> String {
    let parts: Vec<String> = set.ranges().iter().map(ToString::to_string).collect();
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(", ")
    }
}

/// Decides where every VM `ram` lives in host memory: pinned ones are checked first, then the
/// rest are placed first fit in file order. Returns the host bases (same shape as `requests`)
/// and the board RAM left over.
pub(crate) fn place_ram(
    board: &Board,
    board_ram: &RangeSet,
    requests: &[RamRequest],
    vm_names: &[&str],
    errors: &mut Errors,
) -> (Vec<u64>, RangeSet) {
    let mut free = board_ram.clone();
    free.remove(&board.hypervisor.value);
    let mut host_bases = vec![0u64; requests.len()];
    // Pinned ranges accepted so far: range, owning VM, line.
    let mut pinned: Vec<(MemoryRange, usize, &Location)> = Vec::new();
    for (request, host_base) in requests.iter().zip(host_bases.iter_mut()) {
        let Some(base) = request.host_base else {
            continue;
        };
        *host_base = base;
        let range = MemoryRange {
            base,
            size: request.size,
        };
        let reserve = &board.hypervisor;
        let clash = pinned.iter().find(|(other, ..)| other.overlaps(&range));
        let problem = if !board_ram.contains(&range) {
            Some(format!(
                "host RAM {range} lies outside board RAM ({})",
                describe(board_ram)
            ))
        } else if range.overlaps(&reserve.value) {
            Some(format!(
                "host RAM {range} overlaps the hypervisor's reserve {} ({})",
                reserve.value, reserve.at
            ))
        } else if let Some((other, vm, at)) = clash {
            let owner = if *vm == request.vm {
                "another ram of this VM".to_string()
            } else {
                format!(
                    "RAM of VM `{}`",
                    vm_names.get(*vm).copied().unwrap_or_default()
                )
            };
            Some(format!("host RAM {range} overlaps {owner}, {other} ({at})"))
        } else {
            None
        };
        match problem {
            Some(message) => errors.push(&request.at, message),
            None => {
                pinned.push((range, request.vm, &request.at));
                free.remove(&range);
            }
        }
    }
    for (request, host_base) in requests.iter().zip(host_bases.iter_mut()) {
        if request.host_base.is_some() {
            continue;
        }
        let large =
            request.size >= LARGE_PAGE_SIZE && request.guest_base.is_multiple_of(LARGE_PAGE_SIZE);
        let base = large
            .then(|| free.first_fit(request.size, LARGE_PAGE_SIZE))
            .flatten()
            .or_else(|| free.first_fit(request.size, PAGE_SIZE));
        match base {
            Some(base) => {
                *host_base = base;
                free.remove(&MemoryRange {
                    base,
                    size: request.size,
                });
            }
            None => {
                let message = format!(
                    "no room in board RAM for this ram ({}): {} left in all, the largest free \
                     block is {}",
                    format_size(request.size),
                    format_size(free.total()),
                    format_size(free.largest())
                );
                errors.push(&request.at, message);
            }
        }
    }
    (host_bases, free)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(base: u64, size: u64) -> MemoryRange {
        MemoryRange { base, size }
    }

    #[test]
    fn union_merges_overlapping_and_adjacent() {
        let set = RangeSet::union([
            range(0x3000, 0x1000),
            range(0x1000, 0x1000),
            range(0x1800, 0x1800),
            range(0x8000, 0x1000),
        ]);
        assert_eq!(set.ranges(), [range(0x1000, 0x3000), range(0x8000, 0x1000)]);
        assert!(set.contains(&range(0x1000, 0x3000)));
        assert!(!set.contains(&range(0x1000, 0x4000)));
        assert_eq!(set.total(), 0x4000);
        assert_eq!(set.largest(), 0x3000);
    }

    #[test]
    fn remove_splits_ranges() {
        let mut set = RangeSet::union([range(0, 0x10000)]);
        set.remove(&range(0x4000, 0x2000));
        assert_eq!(set.ranges(), [range(0, 0x4000), range(0x6000, 0xa000)]);
        set.remove(&range(0, 0x1000));
        set.remove(&range(0xf000, 0x8000));
        assert_eq!(set.ranges(), [range(0x1000, 0x3000), range(0x6000, 0x9000)]);
    }

    #[test]
    fn first_fit_respects_alignment() {
        let set = RangeSet::union([range(0x1000, 0x3000), range(0x10_1000, 0x40_0000)]);
        assert_eq!(set.first_fit(0x2000, PAGE_SIZE), Some(0x1000));
        assert_eq!(set.first_fit(0x4000, PAGE_SIZE), Some(0x10_1000));
        assert_eq!(set.first_fit(0x20_0000, LARGE_PAGE_SIZE), Some(0x20_0000));
        assert_eq!(set.first_fit(0x40_0000, LARGE_PAGE_SIZE), None);
        assert_eq!(set.first_fit(0x40_0000, PAGE_SIZE), Some(0x10_1000));
    }
}
