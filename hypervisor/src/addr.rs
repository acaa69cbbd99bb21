//! Address newtypes: host-physical, host-virtual and guest-physical addresses never mix implicitly.

use core::fmt;
use core::ops::Range;

/// Size of the smallest translation granule Bulkhead uses (4 KiB).
pub const PAGE_SIZE: u64 = 4096;

macro_rules! address_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[repr(transparent)]
        pub struct $name(u64);

        impl $name {
            /// Wraps a raw address.
            pub const fn new(raw: u64) -> Self {
                Self(raw)
            }

            /// The raw address.
            pub const fn as_u64(self) -> u64 {
                self.0
            }

            /// Adds an offset, or `None` on overflow.
            pub const fn checked_add(self, offset: u64) -> Option<Self> {
                match self.0.checked_add(offset) {
                    Some(raw) => Some(Self(raw)),
                    None => None,
                }
            }

            /// Distance from `base` to `self`, or `None` if `self` is below `base`.
            pub const fn offset_from(self, base: Self) -> Option<u64> {
                self.0.checked_sub(base.0)
            }

            /// Rounds down to a multiple of `align` (a power of two).
            pub const fn align_down(self, align: u64) -> Self {
                Self(self.0 & !(align - 1))
            }

            /// Rounds up to a multiple of `align` (a power of two), or `None` on overflow.
            pub const fn align_up(self, align: u64) -> Option<Self> {
                match self.0.checked_add(align - 1) {
                    Some(raw) => Some(Self(raw & !(align - 1))),
                    None => None,
                }
            }

            /// Whether the address is a multiple of `align` (a power of two).
            pub const fn is_aligned(self, align: u64) -> bool {
                self.0 & (align - 1) == 0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:#x})", stringify!($name), self.0)
            }
        }

        impl fmt::LowerHex for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }
    };
}

address_type!(
    /// An address in the machine's physical address space.
    HostPhysAddr
);
address_type!(
    /// An address in the hypervisor's own virtual address space.
    HostVirtAddr
);
address_type!(
    /// An address in a partition's (intermediate) physical address space. Comes from a guest:
    /// check it against the partition's map before use.
    GuestPhysAddr
);

/// A half-open range of host-physical memory `[start, end)`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PhysRange {
    /// First byte.
    pub start: HostPhysAddr,
    /// One past the last byte.
    pub end: HostPhysAddr,
}

impl PhysRange {
    /// The range `[start, start + size)`, or `None` if it wraps.
    pub const fn from_start_size(start: u64, size: u64) -> Option<Self> {
        match start.checked_add(size) {
            Some(end) => Some(Self {
                start: HostPhysAddr::new(start),
                end: HostPhysAddr::new(end),
            }),
            None => None,
        }
    }

    /// Size in bytes.
    pub const fn size(&self) -> u64 {
        self.end.as_u64().saturating_sub(self.start.as_u64())
    }

    /// Whether the range holds no byte.
    pub const fn is_empty(&self) -> bool {
        self.end.as_u64() <= self.start.as_u64()
    }

    /// Whether `addr` lies inside.
    pub const fn contains(&self, addr: HostPhysAddr) -> bool {
        self.start.as_u64() <= addr.as_u64() && addr.as_u64() < self.end.as_u64()
    }

    /// Whether the two ranges share a byte.
    pub const fn overlaps(&self, other: &PhysRange) -> bool {
        self.start.as_u64() < other.end.as_u64() && other.start.as_u64() < self.end.as_u64()
    }

    /// As a `core::ops::Range<u64>`.
    pub const fn as_range(&self) -> Range<u64> {
        self.start.as_u64()..self.end.as_u64()
    }
}

impl fmt::Debug for PhysRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.start.as_u64(), self.end.as_u64())
    }
}

impl fmt::Display for PhysRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:#012x}-{:#012x} ({})",
            self.start.as_u64(),
            self.end.as_u64(),
            HumanSize(self.size())
        )
    }
}

/// Prints a byte count as `512 MiB`, `4 KiB`, `1.5 GiB` or `123 B`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HumanSize(pub u64);

impl fmt::Display for HumanSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 4] = [
            (1 << 40, "TiB"),
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
        ];
        for (unit, name) in UNITS {
            if self.0 >= unit {
                let whole = self.0 / unit;
                let tenths = (self.0 % unit) * 10 / unit;
                return if tenths == 0 {
                    write!(f, "{whole} {name}")
                } else {
                    write!(f, "{whole}.{tenths} {name}")
                };
            }
        }
        write!(f, "{} B", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn alignment_helpers() {
        let a = HostPhysAddr::new(0x4020_1234);
        assert_eq!(a.align_down(PAGE_SIZE), HostPhysAddr::new(0x4020_1000));
        assert_eq!(a.align_up(PAGE_SIZE), Some(HostPhysAddr::new(0x4020_2000)));
        assert!(!a.is_aligned(PAGE_SIZE));
        assert!(HostPhysAddr::new(0x4020_0000).is_aligned(2 << 20));
        assert_eq!(HostPhysAddr::new(u64::MAX).align_up(PAGE_SIZE), None);
    }

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(GuestPhysAddr::new(u64::MAX).checked_add(1), None);
        assert_eq!(
            GuestPhysAddr::new(0x1000).offset_from(GuestPhysAddr::new(0x2000)),
            None
        );
        assert_eq!(
            GuestPhysAddr::new(0x3000).offset_from(GuestPhysAddr::new(0x2000)),
            Some(0x1000)
        );
    }

    #[test]
    fn ranges() {
        let a = PhysRange::from_start_size(0x1000, 0x2000).unwrap();
        let b = PhysRange::from_start_size(0x2fff, 1).unwrap();
        let c = PhysRange::from_start_size(0x3000, 1).unwrap();
        assert!(a.overlaps(&b));
        assert!(!a.overlaps(&c));
        assert!(a.contains(HostPhysAddr::new(0x2fff)));
        assert!(!a.contains(HostPhysAddr::new(0x3000)));
        assert_eq!(PhysRange::from_start_size(u64::MAX, 2), None);
        assert_eq!(format!("{a}"), "0x0000001000-0x0000003000 (8 KiB)");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(format!("{}", HumanSize(512 << 20)), "512 MiB");
        assert_eq!(format!("{}", HumanSize(3 << 29)), "1.5 GiB");
        assert_eq!(format!("{}", HumanSize(100)), "100 B");
    }

    #[test]
    fn debug_names_the_space() {
        assert_eq!(
            format!("{:?}", GuestPhysAddr::new(0x10)),
            "GuestPhysAddr(0x10)"
        );
    }
}
