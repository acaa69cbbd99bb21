//! The validated system: plain owned types that build.rs turns into static tables.
//!
//! Every item remembers the `file:line` it came from so later stages (build.rs, code
//! generation) can still point at the configuration when they find something wrong.

use std::fmt;
use std::path::PathBuf;

use crate::error::Location;

/// A value and the place it was written (or, for a default, the item that got it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub at: Location,
}

impl<T> Spanned<T> {
    /// `value` written at `at`.
    pub fn new(value: T, at: Location) -> Self {
        Self { value, at }
    }
}

/// The instruction-set architecture of the board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// ARMv8-A, hypervisor at EL2, GIC interrupt controller (`gic`).
    Aarch64,
    /// x86_64 with VMX or SVM, local APIC interrupt controller (`apic`).
    X86_64,
}

impl Arch {
    /// The spelling used in board files.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64",
            Arch::X86_64 => "x86_64",
        }
    }

    /// Guest-physical base of a VM's first `ram` when the file gives none.
    pub fn default_ram_base(self) -> u64 {
        match self {
            Arch::Aarch64 => 0x4000_0000,
            Arch::X86_64 => 0,
        }
    }

    /// The interrupt controller every VM of this architecture has.
    pub fn builtin_controller(self) -> &'static str {
        match self {
            Arch::Aarch64 => "gic",
            Arch::X86_64 => "apic",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A range of physical addresses: `size` bytes from `base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemoryRange {
    /// First address.
    pub base: u64,
    /// Length in bytes (a whole number of 4 KiB pages).
    pub size: u64,
}

impl MemoryRange {
    /// One past the last address (the parser guarantees it does not overflow).
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }

    /// True if the two ranges share at least one byte.
    pub fn overlaps(&self, other: &MemoryRange) -> bool {
        self.base < other.end() && other.base < self.end()
    }

    /// True if `other` lies entirely inside `self`.
    pub fn contains(&self, other: &MemoryRange) -> bool {
        self.base <= other.base && other.end() <= self.end()
    }
}

impl fmt::Display for MemoryRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}-{:#x}", self.base, self.end().saturating_sub(1))
    }
}

/// The board file: the machine and what the hypervisor keeps for itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Board {
    /// The board file itself.
    pub path: PathBuf,
    /// `board NAME`.
    pub name: Spanned<String>,
    /// `arch aarch64|x86_64`.
    pub arch: Spanned<Arch>,
    /// `cpus N`: physical CPUs 0..N-1 exist.
    pub cpus: Spanned<u32>,
    /// `ram BASE,SIZE`: the board's RAM, in file order.
    pub ram: Vec<Spanned<MemoryRange>>,
    /// `hypervisor BASE,SIZE`: memory the hypervisor keeps for itself.
    pub hypervisor: Spanned<MemoryRange>,
    /// `shmem-pool SIZE`: pool for shared-memory regions created at run time (None: 0).
    pub shmem_pool: Option<Spanned<u64>>,
    /// `console ...`: the hypervisor's own physical console (None: no console).
    pub console: Option<Spanned<Console>>,
    /// `vm PATH`: the VM files, already joined to the board file's directory.
    pub vms: Vec<Spanned<PathBuf>>,
}

impl Board {
    /// Bytes in the run-time shared-memory pool (0 when `shmem-pool` is absent).
    pub fn shmem_pool_size(&self) -> u64 {
        self.shmem_pool.as_ref().map_or(0, |pool| pool.value)
    }
}

/// The hypervisor's physical console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    /// `console pl011 loc ADDR`: an ARM PL011 UART at a physical MMIO address.
    Pl011 {
        /// Physical address of the register block.
        base: u64,
    },
    /// `console cadence loc ADDR`: a Cadence UART (Zynq, ZynqMP) at a physical MMIO address.
    Cadence {
        /// Physical address of the register block.
        base: u64,
    },
    /// `console 8250 port N`: a 16550-compatible UART at an x86 I/O port.
    Uart8250 {
        /// First I/O port of the register block.
        port: u16,
    },
}

/// What the hypervisor does when a VM faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FaultPolicy {
    /// Stop the VM and report; the others keep running (default).
    #[default]
    Stop,
    /// Reload the VM's image and start it again.
    Restart,
}

/// The whole validated system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct System {
    /// The board file.
    pub board: Board,
    /// The VMs, in the board file's `vm` order.
    pub vms: Vec<Vm>,
    /// Shared-memory regions created at start-up (`create`, `ivshmem-*`), one per host name,
    /// in the order they first appear.
    pub regions: Vec<Region>,
    /// Board RAM no VM and not the hypervisor's reserve holds, sorted by address: where the
    /// start-up regions and the `shmem-pool` are carved from.
    pub free_ram: Vec<MemoryRange>,
}

/// One VM (partition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    /// `system NAME`.
    pub name: String,
    /// The `system` line.
    pub at: Location,
    /// The VM file.
    pub path: PathBuf,
    /// `ram` lines, in file order, with their host placement decided.
    pub ram: Vec<RamRegion>,
    /// `cpu` lines, in file order: vCPU i runs on `vcpus[i].physical_cpu`.
    pub vcpus: Vec<Vcpu>,
    /// `load PATH`, resolved.
    pub image: Image,
    /// `initrd PATH`, resolved: an initial RAM disk loaded after the image.
    pub initrd: Option<Image>,
    /// `cmdline "..."`: the guest's command line (Bulkhead appends `bulkhead.restarts=N`).
    pub cmdline: Option<String>,
    /// `fault-policy`.
    pub fault_policy: FaultPolicy,
    /// `vdev` items, in file order.
    pub vdevs: Vec<Vdev>,
    /// Where the windows Bulkhead places by itself lie, around the RAM and `loc`s above.
    pub layout: GuestLayout,
}

/// Where the guest-physical windows Bulkhead places by itself lie in one VM: chosen by the
/// validator around what the VM's file places (RAM, every `loc`) and what the architecture
/// fixes (the GIC); see README.md, "Guest-physical layout".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestLayout {
    /// PCI configuration space (ECAM) of the VM's host bridge: bus 0, 1 MiB.
    pub pci_ecam: MemoryRange,
    /// The host bridge's 32-bit memory window (below 4 GiB).
    pub pci_mmio32: MemoryRange,
    /// The host bridge's 64-bit prefetchable memory window.
    pub pci_mmio64: MemoryRange,
    /// The GICv2m MSI frame (aarch64, used with a GICv2); empty on x86_64.
    pub msi_frame: MemoryRange,
    /// The QNX shared-memory windows: the n-th `vdev shmem` of the file maps its attached
    /// regions in `SHMEM_WINDOW_SIZE` bytes from `base + n * SHMEM_WINDOW_SIZE`; empty when the
    /// VM has no `vdev shmem`.
    pub shmem_windows: MemoryRange,
}

/// One `ram` line of a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RamRegion {
    /// Guest-physical base.
    pub guest_base: u64,
    /// Bytes (whole pages).
    pub size: u64,
    /// Host-physical base: from `host HPA`, or allocated by the validator.
    pub host_base: u64,
    /// True when the file pinned `host_base` with `host HPA`.
    pub pinned: bool,
    /// The `ram` line.
    pub at: Location,
}

impl RamRegion {
    /// The guest-physical range.
    pub fn guest(&self) -> MemoryRange {
        MemoryRange {
            base: self.guest_base,
            size: self.size,
        }
    }

    /// The host-physical range.
    pub fn host(&self) -> MemoryRange {
        MemoryRange {
            base: self.host_base,
            size: self.size,
        }
    }
}

/// One `cpu` line: a vCPU pinned to one physical CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vcpu {
    /// The physical CPU it runs on.
    pub physical_cpu: u32,
    /// True when the file named the CPU with `runmask`.
    pub pinned: bool,
    /// The `cpu` line.
    pub at: Location,
}

/// The guest image of a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// `load PATH` as written.
    pub load: String,
    /// What the resolver made of it.
    pub path: PathBuf,
    /// The `load` line.
    pub at: Location,
}

/// An interrupt line `CONTROLLER:NUMBER` (`intr gic:40`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interrupt {
    /// `gic`, `apic` or the `name` of an `ioapic` vdev of the same VM.
    pub controller: String,
    /// The interrupt number on that controller.
    pub number: u32,
    /// The `intr` option's line.
    pub at: Location,
}

impl fmt::Display for Interrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.controller, self.number)
    }
}

/// A virtual device of a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vdev {
    /// `vdev pl011`: ARM PL011 UART, multiplexed onto the hypervisor's console.
    Pl011(Pl011),
    /// `vdev ser8250`: 16550-compatible UART.
    Uart8250(Uart8250),
    /// `vdev ioapic` (x86_64): an I/O APIC other vdevs can name in `intr`.
    IoApic(IoApic),
    /// `vdev shmem`: QNX shared-memory device.
    Shmem(Shmem),
    /// `vdev ivshmem-plain` / `vdev ivshmem-doorbell`: QEMU ivshmem device.
    Ivshmem(Ivshmem),
}

impl Vdev {
    /// The `vdev` line.
    pub fn at(&self) -> &Location {
        match self {
            Vdev::Pl011(device) => &device.at,
            Vdev::Uart8250(device) => &device.at,
            Vdev::IoApic(device) => &device.at,
            Vdev::Shmem(device) => &device.at,
            Vdev::Ivshmem(device) => &device.at,
        }
    }
}

/// `vdev pl011`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pl011 {
    /// Guest-physical base of its 4 KiB register page (`loc`).
    pub base: Spanned<u64>,
    /// `intr`, if the guest gets an interrupt.
    pub intr: Option<Interrupt>,
    /// The `vdev` line.
    pub at: Location,
}

/// Where a `ser8250` sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UartLocation {
    /// x86_64: first of 8 I/O ports.
    Port(u16),
    /// aarch64: guest-physical base of a 4 KiB register page.
    Mmio(u64),
}

/// `vdev ser8250`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uart8250 {
    /// `loc`.
    pub location: Spanned<UartLocation>,
    /// `intr`, if the guest gets an interrupt.
    pub intr: Option<Interrupt>,
    /// The `vdev` line.
    pub at: Location,
}

/// `vdev ioapic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoApic {
    /// Guest-physical base of its 4 KiB register page (`loc`).
    pub base: Spanned<u64>,
    /// `intr CTRL`: the controller it delivers to (`apic`).
    pub parent: Spanned<String>,
    /// `name`: what `intr NAME:PIN` calls it.
    pub name: Spanned<String>,
    /// The `vdev` line.
    pub at: Location,
}

/// `vdev shmem`: the QNX shared-memory personality.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shmem {
    /// `create NAME,SIZE`, in file order.
    pub creates: Vec<Create>,
    /// `allow` / `deny`, in file order (first match wins; see DESIGN for the implicit end).
    pub rules: Vec<Rule>,
    /// `subst OLD,NEW`, in file order (first matching prefix applies).
    pub substs: Vec<Subst>,
    /// `loc` + `intr`: an MMIO factory page instead of a PCI device.
    pub mmio: Option<ShmemMmio>,
    /// The `vdev` line.
    pub at: Location,
}

impl Shmem {
    /// The host name of a guest-visible region name: the first `subst` whose OLD is a prefix
    /// of `name` replaces that prefix with NEW; without a match the name is unchanged.
    pub fn host_name(&self, name: &str) -> String {
        substitute(&self.substs, name)
    }
}

/// Applies the first matching `subst` to `name`.
pub(crate) fn substitute(substs: &[Subst], name: &str) -> String {
    for subst in substs {
        if let Some(rest) = name.strip_prefix(subst.old.as_str()) {
            return format!("{}{}", subst.new, rest);
        }
    }
    name.to_string()
}

/// A shmem vdev as an MMIO device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShmemMmio {
    /// Guest-physical base of the 4 KiB factory page (`loc`).
    pub base: Spanned<u64>,
    /// `intr`: the signalling interrupt.
    pub intr: Interrupt,
}

/// `create NAME,SIZE`: a region created at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Create {
    /// The name as the guest sees it (as written).
    pub name: String,
    /// The registry's name for it, after `subst`.
    pub host_name: String,
    /// Bytes (whole pages).
    pub size: u64,
    /// The `create` option's line.
    pub at: Location,
}

/// One `allow GLOB` or `deny GLOB`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// True for `allow`, false for `deny`.
    pub allow: bool,
    /// Shell glob (`*`, `?`, `[...]`) on the guest-visible name.
    pub glob: String,
    /// The option's line.
    pub at: Location,
}

/// One `subst OLD,NEW`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subst {
    /// Prefix of the guest-visible name (may be empty: matches every name).
    pub old: String,
    /// What replaces it in the host name (may be empty).
    pub new: String,
    /// The option's line.
    pub at: Location,
}

/// `vdev ivshmem-plain` / `vdev ivshmem-doorbell`: the QEMU personality.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ivshmem {
    /// `name`: the region (same namespace as shmem `create` host names).
    pub name: Spanned<String>,
    /// `size`: bytes, a power of two (it is a PCI BAR).
    pub size: Spanned<u64>,
    /// `vectors` of an `ivshmem-doorbell` (default 1); None for `ivshmem-plain`.
    pub doorbell_vectors: Option<u32>,
    /// The `vdev` line.
    pub at: Location,
}

/// A shared-memory region that exists from start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// Host name (after `subst`).
    pub name: String,
    /// Bytes (whole pages).
    pub size: u64,
    /// The first `create` (or ivshmem `name`) that names it.
    pub at: Location,
}
