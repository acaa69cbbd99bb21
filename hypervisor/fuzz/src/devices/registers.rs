//! Where the registers are: the offsets a guest driver touches in each device, so that random
//! accesses land on real registers most of the time and on the space around them otherwise.

use crate::random::Rng;

/// (offset, bytes) blocks of the GIC distributor: CTLR/TYPER/IIDR, IGROUPR, ISENABLER,
/// ICENABLER, ISPENDR, ICPENDR, ISACTIVER, ICACTIVER, IPRIORITYR, ITARGETSR, ICFGR, IGRPMODR,
/// NSACR, SGIR/CPENDSGIR/SPENDSGIR, IROUTER, ID registers.
pub const GIC_DISTRIBUTOR: &[(u64, u64)] = &[
    (0x000, 0x10),
    (0x080, 0x80),
    (0x100, 0x80),
    (0x180, 0x80),
    (0x200, 0x80),
    (0x280, 0x80),
    (0x300, 0x80),
    (0x380, 0x80),
    (0x400, 0x400),
    (0x800, 0x400),
    (0xc00, 0x100),
    (0xd00, 0x80),
    (0xe00, 0x100),
    (0xf00, 0x30),
    (0x6100, 0x2000),
    (0xffd0, 0x30),
];

/// (offset, bytes) blocks of one GICv3 redistributor (RD_base then SGI_base at 0x10000).
pub const GIC_REDISTRIBUTOR: &[(u64, u64)] = &[
    (0x0000, 0x20),
    (0x0070, 0x10),
    (0xffd0, 0x30),
    (0x1_0080, 0x4),
    (0x1_0100, 0x4),
    (0x1_0180, 0x4),
    (0x1_0200, 0x4),
    (0x1_0280, 0x4),
    (0x1_0300, 0x4),
    (0x1_0380, 0x4),
    (0x1_0400, 0x20),
    (0x1_0c00, 0x8),
    (0x1_0d00, 0x4),
];

/// PL011: DR, RSR, FR, ILPR, IBRD, FBRD, LCR_H, CR, IFLS, IMSC, RIS, MIS, ICR, DMACR, IDs.
pub const PL011: &[(u64, u64)] = &[(0x000, 0x8), (0x018, 0x34), (0xfe0, 0x20)];

/// I/O APIC: IOREGSEL, IOWIN, EOI.
pub const IOAPIC: &[(u64, u64)] = &[(0x00, 0x4), (0x10, 0x4), (0x40, 0x4)];

/// QNX factory page: signature, shmem, vector, status, size, name, find.
pub const QNX_FACTORY: &[(u64, u64)] = &[(0x00, 0x40), (0x3c, 0x4)];

/// QNX control page: status, idx, notify, detach.
pub const QNX_CONTROL: &[(u64, u64)] = &[(0x0, 0x10)];

/// ivshmem register block: IntrMask, IntrStatus, IVPosition, Doorbell.
pub const IVSHMEM: &[(u64, u64)] = &[(0x0, 0x10)];

/// MSI-X table (16 bytes per vector) and PBA.
pub const MSIX: &[(u64, u64)] = &[(0x000, 0x40), (0x800, 0x8)];

/// PCI configuration header and capabilities.
pub const PCI_CONFIG: &[(u64, u64)] = &[(0x00, 0x40), (0x40, 0x40), (0x80, 0x80)];

/// An offset in a window of `size` bytes: mostly inside `blocks`, sometimes anywhere.
pub fn offset(rng: &mut Rng, blocks: &[(u64, u64)], size: u64) -> u64 {
    let offset = match rng.pick(blocks) {
        Some(&(start, length)) if rng.chance(7, 8) => start + rng.below(length),
        _ => rng.below(size),
    };
    offset.min(size.saturating_sub(1))
}

/// An access width in bytes, 4 most often.
pub fn width(rng: &mut Rng) -> u64 {
    match rng.below(8) {
        0 => 1,
        1 => 2,
        2 => 8,
        _ => 4,
    }
}

/// `offset` aligned to `bytes` most of the time (guests on aarch64 cannot make unaligned
/// device accesses; x86 guests can).
pub fn align(rng: &mut Rng, offset: u64, bytes: u64) -> u64 {
    if rng.chance(15, 16) {
        offset & !(bytes - 1)
    } else {
        offset
    }
}
