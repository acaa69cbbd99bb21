//! The system configuration as the image sees it: static tables that build.rs generates
//! from the board and VM files (see `hypervisor/config`), checked there, used here.

use crate::guest_layout;

/// What happens to a partition when its guest does something it may not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultPolicy {
    /// Stop the partition and report; the others keep running.
    Stop,
    /// Report, then reload the partition's image and start it again.
    Restart,
}

/// One range of a partition's RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamConfig {
    /// Where the guest sees it.
    pub guest_base: u64,
    /// Where it is in host memory.
    pub host_base: u64,
    /// Bytes (whole pages).
    pub size: u64,
}

/// One partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionConfig {
    /// Name from `system NAME`, used in console prefixes and reports.
    pub name: &'static str,
    /// RAM ranges; the first holds the image and the device tree.
    pub ram: &'static [RamConfig],
    /// The physical CPU of each vCPU (vCPU i runs on `vcpus[i]`).
    pub vcpus: &'static [usize],
    /// The guest image (an arm64 Image), loaded at the first RAM range's base + its
    /// text_offset.
    pub image: &'static [u8],
    /// The `load` path the image came from, for reports.
    pub image_path: &'static str,
    /// The initial RAM disk (`initrd PATH`), loaded page-aligned after the image in the
    /// first RAM range and announced in the device tree's `/chosen`.
    pub initrd: Option<&'static [u8]>,
    /// The guest's command line (`cmdline "..."`), without Bulkhead's own
    /// `bulkhead.restarts=N`, which is appended.
    pub cmdline: Option<&'static str>,
    /// Fault policy.
    pub fault_policy: FaultPolicy,
    /// Guest-physical base of the virtual PL011, if the partition has one.
    pub pl011: Option<u64>,
    /// The PL011's interrupt (a GIC INTID, an SPI), from `intr gic:N`; `None`: the default.
    pub pl011_interrupt: Option<u32>,
    /// First I/O port of the virtual 16550 (x86 `vdev ser8250`), if the partition has one.
    pub uart8250: Option<u16>,
    /// Guest-physical base of the virtual I/O APIC (x86 `vdev ioapic`), if it has one.
    pub ioapic: Option<u64>,
    /// QNX-personality shared-memory devices (`vdev shmem`), in file order.
    pub shmem: &'static [ShmemConfig],
    /// QEMU-personality shared-memory devices (`vdev ivshmem-plain|doorbell`), in file order.
    pub ivshmem: &'static [IvshmemConfig],
    /// Where the windows Bulkhead adds lie (placed around `ram` and every `loc` by build.rs).
    pub windows: GuestWindows,
}

/// Where the guest-physical windows Bulkhead places by itself lie in one partition: chosen
/// at build time around what the configuration places (hypervisor/config/README.md,
/// "Guest-physical layout"), each `(base, size)`. The PCI bridge, the device tree and the
/// x86 boot information all describe them from here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestWindows {
    /// PCI configuration space (ECAM, bus 0).
    pub pci_ecam: (u64, u64),
    /// The host bridge's 32-bit memory window.
    pub pci_mmio32: (u64, u64),
    /// The host bridge's 64-bit prefetchable memory window.
    pub pci_mmio64: (u64, u64),
    /// The GICv2m MSI frame (aarch64; `(0, 0)` on x86_64).
    pub msi_frame: (u64, u64),
    /// Where `vdev shmem` n (file order) maps its attachments:
    /// `shmem_windows + n * guest_layout::SHMEM_WINDOW_SIZE`.
    pub shmem_windows: u64,
}

impl GuestWindows {
    /// An aarch64 partition's windows where nothing is in their way (QEMU virt's addresses).
    pub const QEMU_VIRT: GuestWindows = GuestWindows {
        pci_ecam: guest_layout::PCI_ECAM,
        pci_mmio32: guest_layout::PCI_MMIO32,
        pci_mmio64: guest_layout::PCI_MMIO64,
        msi_frame: guest_layout::MSI_FRAME,
        shmem_windows: guest_layout::SHMEM_WINDOWS,
    };

    /// An x86_64 partition's windows (they do not move on x86_64 yet).
    pub const X86: GuestWindows = GuestWindows {
        pci_ecam: guest_layout::x86::PCI_ECAM,
        pci_mmio32: guest_layout::x86::PCI_MMIO32,
        pci_mmio64: guest_layout::PCI_MMIO64,
        msi_frame: (0, 0),
        shmem_windows: guest_layout::SHMEM_WINDOWS,
    };
}

/// One `vdev shmem` (QNX personality).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShmemConfig {
    /// Restriction list: (allow, glob) in file order.
    pub rules: &'static [(bool, &'static str)],
    /// `subst OLD,NEW` in file order.
    pub substs: &'static [(&'static str, &'static str)],
    /// `create NAME,SIZE`: (guest-visible name, host name, bytes).
    pub creates: &'static [(&'static str, &'static str, u64)],
    /// `loc` and `intr`: an MMIO factory page at this address with this interrupt (a GIC
    /// INTID on aarch64, the I/O APIC pin of `intr NAME:PIN` on x86_64); `None`: a PCI
    /// device.
    pub mmio: Option<(u64, u32)>,
}

/// One `vdev ivshmem-plain` / `ivshmem-doorbell` (QEMU personality).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IvshmemConfig {
    /// The region's (host) name.
    pub name: &'static str,
    /// Bytes (a power of two).
    pub size: u64,
    /// Doorbell vectors; 0 for `ivshmem-plain`.
    pub vectors: u32,
}

/// The hypervisor's physical console as the board file's `console` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleConfig {
    /// `console pl011 loc ADDR`.
    Pl011 {
        /// Physical address of the register frame.
        base: u64,
    },
    /// `console cadence loc ADDR`.
    Cadence {
        /// Physical address of the register frame.
        base: u64,
    },
    /// `console 8250 port N`.
    Uart8250 {
        /// First I/O port.
        port: u16,
    },
}

/// The whole system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SystemConfig {
    /// The board file's name, or `none` when built without a configuration.
    pub board: &'static str,
    /// Source of the configuration (the board file's path), for the banner.
    pub source: &'static str,
    /// Host memory the hypervisor keeps for itself (base, size); (0, 0) = not restricted.
    pub hypervisor_memory: (u64, u64),
    /// The partitions.
    pub partitions: &'static [PartitionConfig],
    /// Regions that exist from start-up: (host name, bytes), from `create`s and ivshmem
    /// `name`s, one per host name.
    pub regions: &'static [(&'static str, u64)],
    /// Bytes of the pool guests create regions from at run time (`shmem-pool`).
    pub shmem_pool: u64,
    /// The board file's `console` (None: the firmware's choice, e.g. the device tree's
    /// `/chosen/stdout-path` on aarch64).
    pub console: Option<ConsoleConfig>,
}
