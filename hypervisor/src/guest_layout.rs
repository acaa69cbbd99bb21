//! Where a partition finds its virtual platform: the addresses and interrupt numbers of
//! QEMU's aarch64 `virt` machine, so guests written for it run unmodified.
//!
//! The GIC stays where it is. The windows Bulkhead adds (PCI ECAM and memory windows, the
//! MSI frame, the shared-memory windows) are at these addresses only when the configuration
//! places nothing there: build.rs moves them around its RAM and `loc`s (hypervisor/config's
//! layout rules, which these defaults must equal) and a partition takes them from
//! [`crate::config::PartitionConfig::windows`].

/// GIC distributor (64 KiB).
pub const GIC_DISTRIBUTOR: (u64, u64) = (0x0800_0000, 0x1_0000);
/// GICv2 CPU interface: the hardware's virtual CPU interface (GICV) is mapped here.
pub const GIC_CPU_INTERFACE: (u64, u64) = (0x0801_0000, 0x2000);
/// GICv3 redistributors: 128 KiB per vCPU from here.
pub const GIC_REDISTRIBUTORS: u64 = 0x080a_0000;
/// Bytes of one GICv3 redistributor (RD_base + SGI_base frames).
pub const GIC_REDISTRIBUTOR_SIZE: u64 = 0x2_0000;
/// Shared peripheral interrupts each partition's GIC has (INTIDs 32..128; 96..128 are for
/// MSIs).
pub const SPI_COUNT: u32 = 96;
/// The PL011's interrupt when its `vdev` gives no `intr`: INTID 33 (SPI 1), as on QEMU virt.
pub const PL011_DEFAULT_INTID: u32 = 33;
/// The first SPI's INTID.
pub const FIRST_SPI: u32 = 32;
/// The EL1 virtual timer's PPI.
pub const VIRTUAL_TIMER_INTID: u32 = 27;

/// PCI configuration space (ECAM) of a partition's virtual host bridge when nothing is in
/// its way: bus 0 only (1 MiB, device d at offset d << 15, function f at f << 12).
pub const PCI_ECAM: (u64, u64) = (0x3f00_0000, 0x10_0000);
/// The host bridge's usual 32-bit memory window (BAR0/BAR1 of the devices by default).
pub const PCI_MMIO32: (u64, u64) = (0x1000_0000, 0x2eff_0000);
/// The host bridge's usual 64-bit prefetchable memory window (shared-memory BARs by default).
pub const PCI_MMIO64: (u64, u64) = (0x80_0000_0000, 0x80_0000_0000);
/// INTx: device slot `s`, pin `p` (1 = INTA) raises INTID `PCI_INTX_FIRST + (s + p - 1) % 4`
/// (level-sensitive), as the device tree's `interrupt-map` says (QEMU virt's SPIs 3..6).
pub const PCI_INTX_FIRST: u32 = 35;
/// INTIDs message-signalled interrupts (MSI-X) are delivered on: a vector's message data is
/// the INTID, its address the distributor's SETSPI register (GICv3 MBI; GICv2m on GICv2).
pub const MSI_INTIDS: (u32, u32) = (96, 32);
/// The usual GICv2m MSI frame (QEMU virt's address), 4 KiB; used with a GICv2.
pub const MSI_FRAME: (u64, u64) = (0x0802_0000, 0x1000);
/// Where a QNX `vdev shmem` usually maps attached regions (control page + data pages):
/// device `n` of a partition gets `SHMEM_WINDOWS + n * SHMEM_WINDOW_SIZE`.
pub const SHMEM_WINDOWS: u64 = 0x60_0000_0000;
/// Size of each QNX shmem device's window.
pub const SHMEM_WINDOW_SIZE: u64 = 0x10_0000_0000;

/// Where an x86_64 partition finds its platform (PC conventions where there are some).
pub mod x86 {
    /// PCI configuration space (ECAM, bus 0); the same registers answer through the I/O
    /// ports 0xCF8/0xCFC (configuration mechanism #1).
    pub const PCI_ECAM: (u64, u64) = (0xe000_0000, 0x10_0000);
    /// The host bridge's 32-bit memory window, below the ECAM and the I/O APIC.
    pub const PCI_MMIO32: (u64, u64) = (0xc000_0000, 0x2000_0000);
    /// INTx: slot `s`, pin `p` (1 = INTA) drives I/O APIC pin `16 + (s + p - 1) % 4`
    /// (level-sensitive, active high), like a PC's PIRQ lines.
    pub const PCI_INTX_FIRST_PIN: u32 = 16;
    /// First I/O port of PCI configuration mechanism #1 (address at 0xCF8, data at 0xCFC).
    pub const PCI_CONFIG_PORTS: u16 = 0xcf8;
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_config::{Arch, MemoryRange, WindowKind, window_rules};

    fn pair(range: MemoryRange) -> (u64, u64) {
        (range.base, range.size)
    }

    /// build.rs places windows with hypervisor/config's rules; where nothing is in the way
    /// they must land on this module's addresses, and the GIC the rules keep clear of must
    /// be the one partitions get.
    #[test]
    fn defaults_equal_the_configuration_layout_rules() {
        for rule in window_rules(Arch::Aarch64, 2) {
            let expected = match rule.kind {
                WindowKind::PciEcam => PCI_ECAM,
                WindowKind::MsiFrame => MSI_FRAME,
                WindowKind::PciMmio32 => PCI_MMIO32,
                WindowKind::ShmemWindows => (SHMEM_WINDOWS, 2 * SHMEM_WINDOW_SIZE),
                WindowKind::PciMmio64 => PCI_MMIO64,
            };
            assert_eq!(pair(rule.usual), expected, "{}", rule.name);
        }
        for rule in window_rules(Arch::X86_64, 1) {
            let expected = match rule.kind {
                WindowKind::PciEcam => x86::PCI_ECAM,
                WindowKind::MsiFrame => (0, 0),
                WindowKind::PciMmio32 => x86::PCI_MMIO32,
                WindowKind::ShmemWindows => (SHMEM_WINDOWS, SHMEM_WINDOW_SIZE),
                WindowKind::PciMmio64 => PCI_MMIO64,
            };
            assert_eq!(pair(rule.usual), expected, "{}", rule.name);
        }
        assert_eq!(bulkhead_config::SHMEM_WINDOW_SIZE, SHMEM_WINDOW_SIZE);
        assert_eq!(
            pair(bulkhead_config::AARCH64_GIC_DISTRIBUTOR),
            GIC_DISTRIBUTOR
        );
        assert_eq!(
            pair(bulkhead_config::AARCH64_GIC_CPU_INTERFACE),
            GIC_CPU_INTERFACE
        );
        assert_eq!(
            bulkhead_config::AARCH64_GIC_REDISTRIBUTORS,
            GIC_REDISTRIBUTORS
        );
        assert_eq!(
            bulkhead_config::AARCH64_GIC_REDISTRIBUTOR_SIZE,
            GIC_REDISTRIBUTOR_SIZE
        );
    }
}
