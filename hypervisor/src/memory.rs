//! Physical memory bookkeeping: which RAM is free, and carving allocations out of it.

use alloc::vec::Vec;

use crate::addr::{HostPhysAddr, PhysRange};

/// A sorted set of disjoint physical ranges (free RAM, typically).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PhysRangeSet {
    ranges: Vec<PhysRange>,
}

impl PhysRangeSet {
    /// An empty set.
    pub const fn new() -> Self {
        Self { ranges: Vec::new() }
    }

    /// The ranges, sorted and disjoint.
    pub fn ranges(&self) -> &[PhysRange] {
        &self.ranges
    }

    /// Total bytes in the set.
    pub fn total(&self) -> u64 {
        self.ranges.iter().map(PhysRange::size).sum()
    }

    /// Adds a range, merging it with neighbours it touches or overlaps.
    pub fn insert(&mut self, range: PhysRange) {
        if range.is_empty() {
            return;
        }
        let mut merged = range;
        self.ranges.retain(|r| {
            let touches = r.start <= merged.end && merged.start <= r.end;
            if touches {
                merged.start = merged.start.min(r.start);
                merged.end = merged.end.max(r.end);
            }
            !touches
        });
        let at = self.ranges.partition_point(|r| r.start < merged.start);
        self.ranges.insert(at, merged);
    }

    /// Removes every byte of `range` from the set.
    pub fn remove(&mut self, range: PhysRange) {
        if range.is_empty() {
            return;
        }
        let mut result = Vec::with_capacity(self.ranges.len() + 1);
        for r in self.ranges.drain(..) {
            if !r.overlaps(&range) {
                result.push(r);
                continue;
            }
            if r.start < range.start {
                result.push(PhysRange {
                    start: r.start,
                    end: range.start,
                });
            }
            if range.end < r.end {
                result.push(PhysRange {
                    start: range.end,
                    end: r.end,
                });
            }
        }
        self.ranges = result;
    }

    /// Takes `size` bytes aligned to `align` (a power of two) from the lowest range that fits.
    pub fn allocate(&mut self, size: u64, align: u64) -> Option<PhysRange> {
        if size == 0 || !align.is_power_of_two() {
            return None;
        }
        let found = self.ranges.iter().find_map(|r| {
            let start = r.start.align_up(align)?;
            let end = start.checked_add(size)?;
            (end <= r.end).then_some(PhysRange { start, end })
        })?;
        self.remove(found);
        Some(found)
    }

    /// Whether `range` lies entirely inside one range of the set.
    pub fn covers(&self, range: &PhysRange) -> bool {
        self.ranges
            .iter()
            .any(|r| r.start <= range.start && range.end <= r.end)
    }
}

/// The regions Bulkhead found in use at boot, for the memory-map report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Usage {
    /// The hypervisor image (text, data, bss, boot stack).
    Image,
    /// The device tree the firmware handed over.
    DeviceTree,
    /// The boot loader's boot information (x86: the Multiboot2 information structure).
    BootInformation,
    /// Kept by firmware (`/memreserve/`, `/reserved-memory`).
    Firmware,
    /// The hypervisor's heap.
    Heap,
    /// A partition's RAM.
    Partition,
    /// Shared-memory regions and the pool they are created from.
    SharedMemory,
}

impl Usage {
    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Usage::Image => "hypervisor image",
            Usage::DeviceTree => "device tree",
            Usage::BootInformation => "boot information",
            Usage::Firmware => "firmware reserved",
            Usage::Heap => "hypervisor heap",
            Usage::Partition => "partition RAM",
            Usage::SharedMemory => "shared memory",
        }
    }
}

/// Why a range cannot be a partition's RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RamError {
    /// It is not (entirely) in one RAM bank of this machine.
    NotRam,
    /// It overlaps something in use.
    InUse(PhysRange, Usage),
}

impl core::fmt::Display for RamError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RamError::NotRam => write!(f, "is not RAM on this machine"),
            RamError::InUse(range, usage) => write!(f, "overlaps {} {range}", usage.name()),
        }
    }
}

/// Plans the boot-time memory map: RAM minus the image, the device tree and firmware
/// reservations is free; the heap is carved from the free RAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryMap {
    /// RAM banks.
    pub ram: Vec<PhysRange>,
    /// What is in use and why, sorted by address.
    pub used: Vec<(PhysRange, Usage)>,
    /// RAM nothing uses yet.
    pub free: PhysRangeSet,
}

impl MemoryMap {
    /// Builds the map from the RAM banks and the ranges already in use.
    pub fn new(ram: &[PhysRange], in_use: &[(PhysRange, Usage)]) -> MemoryMap {
        let mut free = PhysRangeSet::new();
        for &bank in ram {
            free.insert(bank);
        }
        for (range, _) in in_use {
            free.remove(*range);
        }
        let mut used = in_use.to_vec();
        used.sort();
        MemoryMap {
            ram: ram.to_vec(),
            used,
            free,
        }
    }

    /// Takes `size` bytes for `usage` from free RAM, 2 MiB-aligned when the size allows
    /// (so the hypervisor's page tables can use block mappings), else page-aligned.
    pub fn carve(&mut self, size: u64, usage: Usage) -> Option<PhysRange> {
        const BLOCK: u64 = 2 << 20;
        let range = if size >= BLOCK {
            self.free
                .allocate(size, BLOCK)
                .or_else(|| self.free.allocate(size, 4096))
        } else {
            self.free.allocate(size, 4096)
        }?;
        let at = self.used.partition_point(|(r, _)| r.start < range.start);
        self.used.insert(at, (range, usage));
        Some(range)
    }

    /// Checks that `range` can be a partition's RAM: inside one RAM bank, and clear of
    /// everything the hypervisor or firmware uses (other partitions' RAM is the configuration
    /// validator's business; the boot device tree is read once at boot and may be reused).
    pub fn check_partition_ram(&self, range: &PhysRange) -> Result<(), RamError> {
        if !self
            .ram
            .iter()
            .any(|bank| bank.start <= range.start && range.end <= bank.end)
        {
            return Err(RamError::NotRam);
        }
        let clash = self.used.iter().find(|(used, usage)| {
            !matches!(usage, Usage::Partition | Usage::DeviceTree) && used.overlaps(range)
        });
        match clash {
            Some(&(used, usage)) => Err(RamError::InUse(used, usage)),
            None => Ok(()),
        }
    }

    /// Whether `address` lies in RAM.
    pub fn is_ram(&self, address: HostPhysAddr) -> bool {
        self.ram.iter().any(|r| r.contains(address))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> PhysRange {
        PhysRange {
            start: HostPhysAddr::new(start),
            end: HostPhysAddr::new(end),
        }
    }

    #[test]
    fn insert_merges_neighbours() {
        let mut set = PhysRangeSet::new();
        set.insert(r(0x3000, 0x4000));
        set.insert(r(0x1000, 0x2000));
        set.insert(r(0x2000, 0x3000));
        set.insert(r(0x8000, 0x9000));
        assert_eq!(set.ranges(), [r(0x1000, 0x4000), r(0x8000, 0x9000)]);
        assert_eq!(set.total(), 0x4000);
    }

    #[test]
    fn remove_splits() {
        let mut set = PhysRangeSet::new();
        set.insert(r(0x1000, 0x9000));
        set.remove(r(0x3000, 0x4000));
        set.remove(r(0x0, 0x1800));
        set.remove(r(0x8800, 0xa000));
        assert_eq!(set.ranges(), [r(0x1800, 0x3000), r(0x4000, 0x8800)]);
        assert!(set.covers(&r(0x4000, 0x5000)));
        assert!(!set.covers(&r(0x2000, 0x5000)));
    }

    #[test]
    fn allocate_respects_alignment_and_exhaustion() {
        let mut set = PhysRangeSet::new();
        set.insert(r(0x1000, 0x30_0000));
        assert_eq!(
            set.allocate(0x1000, 0x20_0000),
            Some(r(0x20_0000, 0x20_1000))
        );
        assert_eq!(set.allocate(0x1000, 0x1000), Some(r(0x1000, 0x2000)));
        assert_eq!(set.allocate(0x40_0000, 0x1000), None);
        assert_eq!(set.allocate(0, 0x1000), None);
        assert_eq!(set.allocate(0x1000, 3), None);
        assert_eq!(
            set.ranges(),
            [r(0x2000, 0x20_0000), r(0x20_1000, 0x30_0000)]
        );
    }

    #[test]
    fn partition_ram_checks() {
        let ram = [r(0x4000_0000, 0x6000_0000)];
        let in_use = [
            (r(0x4020_0000, 0x4024_0000), Usage::Image),
            (r(0x4800_0000, 0x4810_0000), Usage::DeviceTree),
            (r(0x4900_0000, 0x4a00_0000), Usage::Partition),
        ];
        let map = MemoryMap::new(&ram, &in_use);
        assert_eq!(
            map.check_partition_ram(&r(0x4200_0000, 0x4400_0000)),
            Ok(())
        );
        // The device tree and other partitions' RAM are not the hypervisor's concern here.
        assert_eq!(
            map.check_partition_ram(&r(0x4800_0000, 0x4a00_0000)),
            Ok(())
        );
        assert_eq!(
            map.check_partition_ram(&r(0x4000_0000, 0x4100_0000)),
            Err(RamError::InUse(r(0x4020_0000, 0x4024_0000), Usage::Image))
        );
        assert_eq!(
            map.check_partition_ram(&r(0x5f00_0000, 0x6100_0000)),
            Err(RamError::NotRam)
        );
    }

    #[test]
    fn memory_map_carves_heap_outside_image_and_device_tree() {
        let ram = [r(0x4000_0000, 0x6000_0000)];
        let in_use = [
            (r(0x4020_0000, 0x4024_0000), Usage::Image),
            (r(0x4800_0000, 0x4810_0000), Usage::DeviceTree),
        ];
        let mut map = MemoryMap::new(&ram, &in_use);
        assert_eq!(map.free.total(), 0x2000_0000 - 0x4_0000 - 0x10_0000);
        let heap = map.carve(16 << 20, Usage::Heap).unwrap();
        assert_eq!(heap, r(0x4040_0000, 0x4140_0000));
        assert!(
            map.used
                .iter()
                .all(|(u, _)| u == &heap || !u.overlaps(&heap))
        );
        assert_eq!(map.used.len(), 3);
        assert!(map.is_ram(HostPhysAddr::new(0x5000_0000)));
        assert!(!map.is_ram(HostPhysAddr::new(0x0900_0000)));
    }
}
