//! Where a partition finds its virtual platform: the addresses and interrupt numbers of
//! QEMU's aarch64 `virt` machine, so guests written for it run unmodified.

/// GIC distributor (64 KiB).
pub const GIC_DISTRIBUTOR: (u64, u64) = (0x0800_0000, 0x1_0000);
/// GICv2 CPU interface: the hardware's virtual CPU interface (GICV) is mapped here.
pub const GIC_CPU_INTERFACE: (u64, u64) = (0x0801_0000, 0x2000);
/// GICv3 redistributors: 128 KiB per vCPU from here.
pub const GIC_REDISTRIBUTORS: u64 = 0x080a_0000;
/// Bytes of one GICv3 redistributor (RD_base + SGI_base frames).
pub const GIC_REDISTRIBUTOR_SIZE: u64 = 0x2_0000;
/// Shared peripheral interrupts each partition's GIC has (INTIDs 32..96).
pub const SPI_COUNT: u32 = 64;
/// The PL011's interrupt when its `vdev` gives no `intr`: INTID 33 (SPI 1), as on QEMU virt.
pub const PL011_DEFAULT_INTID: u32 = 33;
/// The first SPI's INTID.
pub const FIRST_SPI: u32 = 32;
/// The EL1 virtual timer's PPI.
pub const VIRTUAL_TIMER_INTID: u32 = 27;
