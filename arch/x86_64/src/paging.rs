//! The x86_64 entry formats for the shared translation-table builder
//! ([`hypervisor::paging`]): the hypervisor's own long-mode tables ([`HostPaging`]) and the
//! partitions' extended page tables ([`Ept`]), 4 levels, 4 KiB pages, 2 MiB and 1 GiB pages
//! where alignment (and the format) allows.

pub use hypervisor::paging::{
    ENTRIES, EntryFormat, LEVEL_SIZE, MapError, Memory, PageTable, TableMemory,
};

/// Highest input address + 1 (48-bit; identity maps use the lower half only).
pub const INPUT_LIMIT: u64 = 1 << 47;
/// Bits 51:12 of an entry: the output address.
pub const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Page size bit (a 2 MiB or 1 GiB leaf at levels 1 and 2), the same in both formats.
const LARGE_PAGE: u64 = 1 << 7;

/// The hypervisor's own long-mode tables (CR3). Write-back through PAT entry 0, device memory
/// uncacheable through PCD|PWT (PAT entry 3 after reset). Needs EFER.NXE for the NX bit and
/// CR0.WP so read-only pages hold in ring 0.
#[derive(Debug)]
pub enum HostPaging {}

impl HostPaging {
    const PRESENT: u64 = 1 << 0;
    const WRITABLE: u64 = 1 << 1;
    const WRITE_THROUGH: u64 = 1 << 3;
    const CACHE_DISABLE: u64 = 1 << 4;
    const ACCESSED: u64 = 1 << 5;
    const DIRTY: u64 = 1 << 6;
    const NO_EXECUTE: u64 = 1 << 63;
}

impl EntryFormat for HostPaging {
    const INPUT_LIMIT: u64 = INPUT_LIMIT;
    const ADDRESS_MASK: u64 = ADDRESS_MASK;

    fn is_leaf(entry: u64, level: usize) -> bool {
        level == 3 || (level > 0 && entry & LARGE_PAGE != 0)
    }

    fn table_entry(address: u64) -> u64 {
        (address & ADDRESS_MASK) | Self::PRESENT | Self::WRITABLE
    }

    fn leaf_entry(address: u64, memory: Memory, level: usize) -> u64 {
        let size = if level < 3 { LARGE_PAGE } else { 0 };
        let attributes = match memory {
            Memory::Normal { write, execute } => {
                (if write {
                    Self::WRITABLE | Self::DIRTY
                } else {
                    0
                }) | if execute { 0 } else { Self::NO_EXECUTE }
            }
            Memory::Device => {
                Self::WRITABLE
                    | Self::DIRTY
                    | Self::WRITE_THROUGH
                    | Self::CACHE_DISABLE
                    | Self::NO_EXECUTE
            }
        };
        (address & ADDRESS_MASK) | Self::PRESENT | Self::ACCESSED | size | attributes
    }

    fn is_present(entry: u64) -> bool {
        entry & Self::PRESENT != 0
    }

    fn memory_of(entry: u64) -> Option<Memory> {
        long_mode_memory(entry)
    }

    fn large_pages_at(level: usize) -> bool {
        // 1 GiB pages need CPUID.80000001H:EDX.Page1GB; 2 MiB pages are always there.
        level == 2
    }
}

/// Extended page tables (guest-physical → host-physical) for partitions. Memory type in bits
/// 5:3 (6 = write-back, 0 = uncacheable), read/write/execute in bits 2:0.
#[derive(Debug)]
pub enum Ept {}

impl Ept {
    const READ: u64 = 1 << 0;
    const WRITE: u64 = 1 << 1;
    const EXECUTE: u64 = 1 << 2;
    const TYPE_WRITE_BACK: u64 = 6 << 3;
    const TYPE_UNCACHEABLE: u64 = 0;
    const TYPE_MASK: u64 = 7 << 3;
    /// The EPT pointer for a 4-level walk of the tables at `root`, write-back walks.
    pub fn pointer(root: u64) -> u64 {
        const WALK_LENGTH_4: u64 = 3 << 3;
        (root & ADDRESS_MASK) | WALK_LENGTH_4 | 6
    }
}

impl EntryFormat for Ept {
    const INPUT_LIMIT: u64 = INPUT_LIMIT;
    const ADDRESS_MASK: u64 = ADDRESS_MASK;

    fn is_leaf(entry: u64, level: usize) -> bool {
        level == 3 || (level > 0 && entry & LARGE_PAGE != 0)
    }

    fn table_entry(address: u64) -> u64 {
        (address & ADDRESS_MASK) | Self::READ | Self::WRITE | Self::EXECUTE
    }

    fn leaf_entry(address: u64, memory: Memory, level: usize) -> u64 {
        let size = if level < 3 { LARGE_PAGE } else { 0 };
        let attributes = match memory {
            Memory::Normal { write, execute } => {
                Self::TYPE_WRITE_BACK
                    | Self::READ
                    | if write { Self::WRITE } else { 0 }
                    | if execute { Self::EXECUTE } else { 0 }
            }
            Memory::Device => Self::TYPE_UNCACHEABLE | Self::READ | Self::WRITE,
        };
        (address & ADDRESS_MASK) | size | attributes
    }

    fn is_present(entry: u64) -> bool {
        entry & (Self::READ | Self::WRITE | Self::EXECUTE) != 0
    }

    fn memory_of(entry: u64) -> Option<Memory> {
        if !Self::is_present(entry) {
            return None;
        }
        match entry & Self::TYPE_MASK {
            Self::TYPE_UNCACHEABLE => Some(Memory::Device),
            Self::TYPE_WRITE_BACK => Some(Memory::Normal {
                write: entry & Self::WRITE != 0,
                execute: entry & Self::EXECUTE != 0,
            }),
            _ => None,
        }
    }

    fn large_pages_at(level: usize) -> bool {
        level == 1 || level == 2
    }
}

/// Nested page tables (AMD SVM; guest-physical → host-physical): AMD64 long-mode entries, 4
/// levels, with U/S set everywhere (the nested walk counts every guest access as a user
/// access). Write-back by default, device memory uncacheable through PCD|PWT; 2 MiB and 1 GiB
/// pages where they fit (Bulkhead requires CPUID.80000001H:EDX.Page1GB for SVM).
#[derive(Debug)]
pub enum Npt {}

impl Npt {
    const PRESENT: u64 = 1 << 0;
    const WRITABLE: u64 = 1 << 1;
    const USER: u64 = 1 << 2;
    const WRITE_THROUGH: u64 = 1 << 3;
    const CACHE_DISABLE: u64 = 1 << 4;
    const ACCESSED: u64 = 1 << 5;
    const DIRTY: u64 = 1 << 6;
    const NO_EXECUTE: u64 = 1 << 63;
    /// The nested CR3 (VMCB N_CR3) for the tables at `root`.
    pub fn n_cr3(root: u64) -> u64 {
        root & ADDRESS_MASK
    }
}

impl EntryFormat for Npt {
    const INPUT_LIMIT: u64 = INPUT_LIMIT;
    const ADDRESS_MASK: u64 = ADDRESS_MASK;

    fn is_leaf(entry: u64, level: usize) -> bool {
        level == 3 || (level > 0 && entry & LARGE_PAGE != 0)
    }

    fn table_entry(address: u64) -> u64 {
        (address & ADDRESS_MASK) | Self::PRESENT | Self::WRITABLE | Self::USER
    }

    fn leaf_entry(address: u64, memory: Memory, level: usize) -> u64 {
        let size = if level < 3 { LARGE_PAGE } else { 0 };
        let attributes = match memory {
            Memory::Normal { write, execute } => {
                (if write {
                    Self::WRITABLE | Self::DIRTY
                } else {
                    0
                }) | if execute { 0 } else { Self::NO_EXECUTE }
            }
            Memory::Device => {
                Self::WRITABLE
                    | Self::DIRTY
                    | Self::WRITE_THROUGH
                    | Self::CACHE_DISABLE
                    | Self::NO_EXECUTE
            }
        };
        (address & ADDRESS_MASK) | Self::PRESENT | Self::USER | Self::ACCESSED | size | attributes
    }

    fn is_present(entry: u64) -> bool {
        entry & Self::PRESENT != 0
    }

    fn memory_of(entry: u64) -> Option<Memory> {
        long_mode_memory(entry)
    }

    fn large_pages_at(level: usize) -> bool {
        level == 1 || level == 2
    }
}

/// What a long-mode page-table entry (the hypervisor's own tables and NPT share the format)
/// maps, if it is present.
fn long_mode_memory(entry: u64) -> Option<Memory> {
    if !HostPaging::is_present(entry) {
        return None;
    }
    if entry & HostPaging::CACHE_DISABLE != 0 {
        return Some(Memory::Device);
    }
    Some(Memory::Normal {
        write: entry & HostPaging::WRITABLE != 0,
        execute: entry & HostPaging::NO_EXECUTE == 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypervisor::paging::BufferTables as Buffer;

    const RW: Memory = Memory::Normal {
        write: true,
        execute: false,
    };
    const RX: Memory = Memory::Normal {
        write: false,
        execute: true,
    };

    fn host() -> PageTable<Buffer, HostPaging> {
        PageTable::new(Buffer::default()).unwrap()
    }

    #[test]
    fn host_tables_use_two_megabyte_pages_and_never_gigabyte_pages() {
        let mut t = host();
        t.map(0x4000_0000, 0x4000_0000, (1 << 30) + 0x1000, RW)
            .unwrap();
        assert_eq!(t.lookup(0x4000_0000), Some((0x4000_0000, RW, 2 << 20)));
        assert_eq!(t.lookup(0x7fff_ffff), Some((0x7fff_ffff, RW, 2 << 20)));
        assert_eq!(t.lookup(0x8000_0fff), Some((0x8000_0fff, RW, 0x1000)));
        assert_eq!(t.lookup(0x8000_1000), None);
        // PML4 + PDPT + 2 PDs + 1 PT
        assert_eq!(t.memory().tables.len(), 5);
    }

    #[test]
    fn unaligned_start_falls_back_to_small_pages_then_grows() {
        let mut t = host();
        t.map(0x10_0000, 0x10_0000, 0x30_0000, RX).unwrap();
        assert_eq!(t.lookup(0x10_0123), Some((0x10_0123, RX, 0x1000)));
        assert_eq!(t.lookup(0x1f_f000), Some((0x1f_f000, RX, 0x1000)));
        assert_eq!(t.lookup(0x20_0000), Some((0x20_0000, RX, 2 << 20)));
        assert_eq!(t.lookup(0x40_0000), None);
    }

    #[test]
    fn host_entries_encode_write_execute_and_caching() {
        let rw = HostPaging::leaf_entry(0x20_0000, RW, 3);
        assert_eq!(rw & 0b11, 0b11, "present, writable");
        assert_ne!(rw & (1 << 63), 0, "NX");
        let rx = HostPaging::leaf_entry(0x20_0000, RX, 2);
        assert_eq!(rx & (1 << 1), 0, "read-only");
        assert_eq!(rx & (1 << 63), 0, "executable");
        assert_ne!(rx & (1 << 7), 0, "2 MiB page");
        let device = HostPaging::leaf_entry(0xfee0_0000, Memory::Device, 3);
        assert_eq!(device & 0x18, 0x18, "PCD|PWT");
        assert_eq!(HostPaging::memory_of(device), Some(Memory::Device));
        assert_eq!(
            HostPaging::table_entry(0x1234_5000),
            0x1234_5003,
            "tables never restrict"
        );
    }

    #[test]
    fn rejects_overlaps_bad_alignment_and_range() {
        let mut t = host();
        t.map(0x4000_0000, 0x4000_0000, 2 << 20, RW).unwrap();
        assert_eq!(
            t.map(0x401f_f000, 0, 0x2000, RW),
            Err(MapError::AlreadyMapped {
                address: 0x401f_f000
            })
        );
        assert_eq!(
            t.map(0x3fff_f000, 0, 0x2000, RW),
            Err(MapError::AlreadyMapped {
                address: 0x4000_0000
            })
        );
        assert_eq!(t.map(0x1001, 0, 0x1000, RW), Err(MapError::Unaligned));
        assert_eq!(t.map(0x1000, 0, 0, RW), Err(MapError::Unaligned));
        assert_eq!(
            t.map(INPUT_LIMIT - 0x1000, 0, 0x2000, RW),
            Err(MapError::OutOfRange)
        );
        t.map(0x3fff_f000, 0x3fff_f000, 0x1000, RW).unwrap();
    }

    #[test]
    fn running_out_of_tables_is_an_error() {
        let mut t = PageTable::<_, HostPaging>::new(Buffer {
            limit: 2,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            t.map(0x1000, 0x1000, 0x1000, RW),
            Err(MapError::OutOfTables)
        );
    }

    #[test]
    fn ept_uses_gigabyte_pages_and_encodes_types() {
        let mut t = PageTable::<_, Ept>::new(Buffer::default()).unwrap();
        let rwx = Memory::Normal {
            write: true,
            execute: true,
        };
        t.map(0, 0x4000_0000, 1 << 30, rwx).unwrap();
        t.map(0xfec0_0000, 0xfec0_0000, 0x1000, Memory::Device)
            .unwrap();
        assert_eq!(t.lookup(0x1234), Some((0x4000_1234, rwx, 1 << 30)));
        assert_eq!(
            t.lookup(0xfec0_0010),
            Some((0xfec0_0010, Memory::Device, 0x1000))
        );
        assert_eq!(t.lookup(0x4000_0000), None);
        let leaf = Ept::leaf_entry(0x20_0000, rwx, 2);
        assert_eq!(leaf & 0x7f, 0x37, "RWX, write-back");
        assert_ne!(leaf & (1 << 7), 0);
        assert_eq!(Ept::pointer(0x5000), 0x501e);
    }

    #[test]
    fn npt_uses_gigabyte_pages_and_user_entries() {
        let mut t = PageTable::<_, Npt>::new(Buffer::default()).unwrap();
        let rwx = Memory::Normal {
            write: true,
            execute: true,
        };
        t.map(0, 0x4000_0000, 1 << 30, rwx).unwrap();
        t.map(0x4000_0000, 0x8020_0000, 2 << 20, rwx).unwrap();
        t.map(0xfec0_0000, 0xfec0_0000, 0x1000, Memory::Device)
            .unwrap();
        assert_eq!(t.lookup(0x1234), Some((0x4000_1234, rwx, 1 << 30)));
        assert_eq!(t.lookup(0x4000_0010), Some((0x8020_0010, rwx, 2 << 20)));
        assert_eq!(
            t.lookup(0xfec0_0010),
            Some((0xfec0_0010, Memory::Device, 0x1000))
        );
        let leaf = Npt::leaf_entry(0x20_0000, rwx, 2);
        assert_eq!(leaf & 0xff, 0xe7, "P, RW, U, A, D, 2 MiB page");
        assert_eq!(leaf & (1 << 63), 0, "executable");
        assert_eq!(Npt::table_entry(0x1234_5000), 0x1234_5007, "U/S in tables");
        let device = Npt::leaf_entry(0xfec0_0000, Memory::Device, 3);
        assert_eq!(device & 0x1f, 0x1f, "P, RW, U, PWT, PCD");
        assert_eq!(Npt::n_cr3(0x5000), 0x5000);
    }
}
