//! The aarch64 descriptor formats for the shared translation-table builder
//! ([`hypervisor::paging`]): the hypervisor's own EL2 stage-1 tables ([`El2Stage1`]) and the
//! partitions' stage-2 tables ([`Stage2`]), 4 KiB granule, 48-bit input addresses.

pub use hypervisor::paging::{
    ENTRIES, EntryFormat, LEVEL_SIZE, MapError, Memory, PageTable, TableMemory,
};

/// Descriptor bit 0: valid.
const VALID: u64 = 1 << 0;
/// Descriptor bit 1: a table (levels 0-2) or a page (level 3); clear for a block.
const TABLE_OR_PAGE: u64 = 1 << 1;
/// Bits 47:12 of a descriptor: the output address.
const ADDRESS_MASK: u64 = 0x0000_ffff_ffff_f000;

/// The parts both formats share: validity, table and page bits, block levels.
macro_rules! aarch64_entry_format {
    ($format:ty) => {
        impl EntryFormat for $format {
            const INPUT_LIMIT: u64 = 1 << 48;
            const ADDRESS_MASK: u64 = ADDRESS_MASK;

            fn table_entry(address: u64) -> u64 {
                (address & ADDRESS_MASK) | VALID | TABLE_OR_PAGE
            }

            fn leaf_entry(address: u64, memory: Memory, level: usize) -> u64 {
                let kind = if level == 3 { TABLE_OR_PAGE } else { 0 };
                (address & ADDRESS_MASK) | <$format>::leaf_attributes(memory) | kind | VALID
            }

            fn is_present(entry: u64) -> bool {
                entry & VALID != 0
            }

            fn is_leaf(entry: u64, level: usize) -> bool {
                level == 3 || entry & TABLE_OR_PAGE == 0
            }

            fn memory_of(entry: u64) -> Option<Memory> {
                <$format>::decode(entry)
            }
        }
    };
}

aarch64_entry_format!(El2Stage1);
aarch64_entry_format!(Stage2);

/// The EL2 stage-1 format (non-VHE, one VA range). MAIR_EL2 index 0 = Normal WB,
/// index 1 = Device-nGnRE ([`El2Stage1::MAIR`]).
#[derive(Debug)]
pub enum El2Stage1 {}

impl El2Stage1 {
    /// The MAIR_EL2 value matching the attribute indices this format uses.
    pub const MAIR: u64 = 0xff | (0x04 << 8);
    const ATTR_INDEX_NORMAL: u64 = 0 << 2;
    const ATTR_INDEX_DEVICE: u64 = 1 << 2;
    /// AP[2:1] at bits 7:6; AP[1] is RES1 at EL2.
    const AP_READ_WRITE: u64 = 0b01 << 6;
    const AP_READ_ONLY: u64 = 0b11 << 6;
    const INNER_SHAREABLE: u64 = 0b11 << 8;
    const ACCESS_FLAG: u64 = 1 << 10;
    const EXECUTE_NEVER: u64 = 1 << 54;
}

impl El2Stage1 {
    /// The attribute bits of a leaf entry for `memory`.
    pub fn leaf_attributes(memory: Memory) -> u64 {
        match memory {
            Memory::Normal { write, execute } => {
                let access = if write {
                    Self::AP_READ_WRITE
                } else {
                    Self::AP_READ_ONLY
                };
                let execute_never = if execute { 0 } else { Self::EXECUTE_NEVER };
                Self::ATTR_INDEX_NORMAL
                    | access
                    | Self::INNER_SHAREABLE
                    | Self::ACCESS_FLAG
                    | execute_never
            }
            Memory::Device => {
                Self::ATTR_INDEX_DEVICE
                    | Self::AP_READ_WRITE
                    | Self::ACCESS_FLAG
                    | Self::EXECUTE_NEVER
            }
        }
    }

    fn decode(entry: u64) -> Option<Memory> {
        match entry & (0b111 << 2) {
            Self::ATTR_INDEX_DEVICE => Some(Memory::Device),
            Self::ATTR_INDEX_NORMAL => Some(Memory::Normal {
                write: entry & Self::AP_READ_ONLY == Self::AP_READ_WRITE,
                execute: entry & Self::EXECUTE_NEVER == 0,
            }),
            _ => None,
        }
    }
}

/// The stage-2 format (guest-physical → host-physical) for partitions. MemAttr encodes the
/// memory type directly (no MAIR): Normal write-back, or Device-nGnRE.
#[derive(Debug)]
pub enum Stage2 {}

impl Stage2 {
    const MEMORY_NORMAL_WRITE_BACK: u64 = 0b1111 << 2;
    const MEMORY_DEVICE_NGNRE: u64 = 0b0001 << 2;
    const ACCESS_READ_ONLY: u64 = 0b01 << 6;
    const ACCESS_READ_WRITE: u64 = 0b11 << 6;
    const INNER_SHAREABLE: u64 = 0b11 << 8;
    const ACCESS_FLAG: u64 = 1 << 10;
    const EXECUTE_NEVER: u64 = 1 << 54;
}

impl Stage2 {
    /// The attribute bits of a leaf entry for `memory`.
    pub fn leaf_attributes(memory: Memory) -> u64 {
        match memory {
            Memory::Normal { write, execute } => {
                let access = if write {
                    Self::ACCESS_READ_WRITE
                } else {
                    Self::ACCESS_READ_ONLY
                };
                let execute_never = if execute { 0 } else { Self::EXECUTE_NEVER };
                Self::MEMORY_NORMAL_WRITE_BACK
                    | access
                    | Self::INNER_SHAREABLE
                    | Self::ACCESS_FLAG
                    | execute_never
            }
            Memory::Device => {
                Self::MEMORY_DEVICE_NGNRE
                    | Self::ACCESS_READ_WRITE
                    | Self::ACCESS_FLAG
                    | Self::EXECUTE_NEVER
            }
        }
    }

    fn decode(entry: u64) -> Option<Memory> {
        match entry & (0b1111 << 2) {
            Self::MEMORY_DEVICE_NGNRE => Some(Memory::Device),
            Self::MEMORY_NORMAL_WRITE_BACK => Some(Memory::Normal {
                write: entry & Self::ACCESS_READ_WRITE == Self::ACCESS_READ_WRITE,
                execute: entry & Self::EXECUTE_NEVER == 0,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypervisor::paging::BufferTables;

    const RW: Memory = Memory::Normal {
        write: true,
        execute: false,
    };
    const RX: Memory = Memory::Normal {
        write: false,
        execute: true,
    };

    #[test]
    fn el2_stage1_blocks_and_attributes() {
        let mut t = PageTable::<_, El2Stage1>::new(BufferTables::default()).unwrap();
        t.map(0x4000_0000, 0x4000_0000, (1 << 30) + 0x1000, RW)
            .unwrap();
        t.map(0x0900_0000, 0x0900_0000, 0x1000, Memory::Device)
            .unwrap();
        assert_eq!(t.lookup(0x4000_1234), Some((0x4000_1234, RW, 1 << 30)));
        assert_eq!(t.lookup(0x8000_0fff), Some((0x8000_0fff, RW, 0x1000)));
        assert_eq!(
            t.lookup(0x0900_0abc),
            Some((0x0900_0abc, Memory::Device, 0x1000))
        );
        let rw = El2Stage1::leaf_attributes(RW);
        assert_eq!(rw & (0b11 << 6), 0b01 << 6, "AP RW with AP[1] RES1");
        assert_ne!(rw & (1 << 54), 0, "XN");
        assert_ne!(rw & (1 << 10), 0, "AF");
        let rx = El2Stage1::leaf_attributes(RX);
        assert_eq!(rx & (1 << 54), 0);
        assert_eq!(rx & (0b11 << 6), 0b11 << 6);
        assert_eq!(
            El2Stage1::leaf_attributes(Memory::Device) & (0b111 << 2),
            1 << 2
        );
        // A 1 GiB block is a block descriptor (bit 1 clear); a page has bit 1 set.
        assert_eq!(El2Stage1::leaf_entry(0x4000_0000, RW, 1) & 0b11, 0b01);
        assert_eq!(El2Stage1::leaf_entry(0x4000_0000, RW, 3) & 0b11, 0b11);
    }

    #[test]
    fn stage2_round_trip() {
        let mut t = PageTable::<_, Stage2>::new(BufferTables::default()).unwrap();
        let rwx = Memory::Normal {
            write: true,
            execute: true,
        };
        t.map(0x4000_0000, 0x4800_0000, 64 << 20, rwx).unwrap();
        t.map(0x0801_0000, 0x0804_0000, 0x2000, Memory::Device)
            .unwrap();
        assert_eq!(t.lookup(0x4000_1234), Some((0x4800_1234, rwx, 2 << 20)));
        assert_eq!(
            t.lookup(0x0801_1000),
            Some((0x0804_1000, Memory::Device, 0x1000))
        );
        assert_eq!(t.lookup(0x0900_0000), None);
        assert_eq!(Stage2::leaf_attributes(rwx) & (0b11 << 6), 0b11 << 6);
        t.unmap(0x0801_0000, 0x2000).unwrap();
        assert_eq!(t.lookup(0x0801_0000), None);
    }
}
