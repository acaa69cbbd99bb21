//! The machine the device fuzzers drive: two partitions (the fuzzing guest and a peer) with
//! every virtual device a configuration can give them, over one region registry and doorbell
//! board, and a mock [`Platform`] that records second-stage mappings and checks them.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use hypervisor::addr::{GuestPhysAddr, HostPhysAddr, PhysRange};
use hypervisor::config::{FaultPolicy, GuestWindows, IvshmemConfig, PartitionConfig, ShmemConfig};
use hypervisor::device::ClientId;
use hypervisor::device::gic::GicVersion;
use hypervisor::fast::MsiRoute;
use hypervisor::partition::{InterruptModel, Platform, SharedMemorySystem, System};
use hypervisor::pci::doorbell::DoorbellBoard;
use hypervisor::pci::ivshmem::SharedMemory;
use hypervisor::shmem::{Registry, ZeroMemory};
use spin::Mutex;

/// Host memory the registry hands out (start-up regions and the run-time pool).
pub const POOL: (u64, u64) = (0x8000_0000, 0x40_0000);
/// The MMIO factory page of each partition's second `vdev shmem` (aarch64).
pub const MMIO_FACTORY: u64 = 0x0a00_0000;
/// Its interrupt.
const MMIO_FACTORY_INTID: u32 = 40;
/// The PL011 (aarch64).
pub const PL011: u64 = 0x0900_0000;
/// The 16550's first port (x86).
pub const UART_PORT: u16 = 0x3f8;
/// The I/O APIC (x86).
pub const IOAPIC: u64 = 0xfec0_0000;
/// The ivshmem region both partitions share.
pub const IVSHMEM_REGION: (&str, u64) = ("ivfuzz", 0x10_0000);
/// Start-up QNX regions: (host name, bytes).
pub const STARTUP_REGIONS: [(&str, u64); 2] = [("fuzzA", 0x2000), ("shared", 0x1000)];

/// The fuzzing partition's QNX devices: a PCI one with a restriction list and a subst, an
/// MMIO one without restrictions.
const FUZZ_SHMEM_PCI: ShmemConfig = ShmemConfig {
    rules: &[
        (false, "fuzzno*"),
        (true, "fuzz*"),
        (true, "shared"),
        (true, "sub*"),
    ],
    substs: &[("sub", "fuzzsub")],
    creates: &[("fuzzA", "fuzzA", 0x2000)],
    mmio: None,
};
const PEER_SHMEM_PCI: ShmemConfig = ShmemConfig {
    rules: &[(true, "shared"), (true, "fuzz*")],
    substs: &[],
    creates: &[("shared", "shared", 0x1000)],
    mmio: None,
};
const FUZZ_SHMEM_ARM: [ShmemConfig; 2] = [
    FUZZ_SHMEM_PCI,
    ShmemConfig {
        rules: &[],
        substs: &[],
        creates: &[],
        mmio: Some((MMIO_FACTORY, MMIO_FACTORY_INTID)),
    },
];
const PEER_SHMEM_ARM: [ShmemConfig; 2] = [
    PEER_SHMEM_PCI,
    ShmemConfig {
        rules: &[],
        substs: &[],
        creates: &[],
        mmio: Some((MMIO_FACTORY, MMIO_FACTORY_INTID)),
    },
];
/// On x86 the QNX devices are PCI only (an MMIO one would need an I/O APIC pin).
const FUZZ_SHMEM_X86: [ShmemConfig; 1] = [FUZZ_SHMEM_PCI];
const PEER_SHMEM_X86: [ShmemConfig; 1] = [PEER_SHMEM_PCI];
const IVSHMEM: [IvshmemConfig; 1] = [IvshmemConfig {
    name: IVSHMEM_REGION.0,
    size: IVSHMEM_REGION.1,
    vectors: 2,
}];

const fn partition(
    name: &'static str,
    vcpus: &'static [usize],
    shmem: &'static [ShmemConfig],
    windows: GuestWindows,
) -> PartitionConfig {
    PartitionConfig {
        name,
        ram: &[],
        vcpus,
        image: &[],
        image_path: "fuzz",
        initrd: None,
        cmdline: None,
        fault_policy: FaultPolicy::Stop,
        pl011: Some(PL011),
        pl011_interrupt: None,
        uart8250: Some(UART_PORT),
        ioapic: Some(IOAPIC),
        shmem,
        ivshmem: &IVSHMEM,
        windows,
    }
}

static ARM: [PartitionConfig; 2] = [
    partition("fuzz", &[0, 1], &FUZZ_SHMEM_ARM, GuestWindows::QEMU_VIRT),
    partition("peer", &[2], &PEER_SHMEM_ARM, GuestWindows::QEMU_VIRT),
];
static X86: [PartitionConfig; 2] = [
    partition("fuzz", &[0, 1], &FUZZ_SHMEM_X86, GuestWindows::X86),
    partition("peer", &[2], &PEER_SHMEM_X86, GuestWindows::X86),
];

/// Zeroing is recorded as a count only (the host has no region memory to clear).
struct Zeroes;

impl ZeroMemory for Zeroes {
    fn zero(&self, _range: PhysRange) {}
}

static ZEROES: Zeroes = Zeroes;

thread_local! {
    /// A registry and doorbell board to reuse (the partitions need them `'static`, so each
    /// is leaked): a session that ends clean (every client gone, the pool whole, checked by
    /// the session) hands its back; after a finding or a panic the next session makes a new
    /// one, so sessions stay independent and replay alone.
    static SHARED: RefCell<Option<&'static SharedMemorySystem>> = const { RefCell::new(None) };
}

#[allow(
    clippy::panic,
    reason = "a harness whose shared memory cannot be set up must fail loudly (the session reports the panic), never fuzz a smaller system silently"
)]
fn shared_memory_system() -> &'static SharedMemorySystem {
    let pool = PhysRange::from_start_size(POOL.0, POOL.1)
        .unwrap_or_else(|| panic!("harness: the shared-memory pool {POOL:x?} is not a range"));
    let mut registry = Registry::new(pool, &ZEROES);
    let mut board = DoorbellBoard::new();
    let (name, size) = IVSHMEM_REGION;
    let id = registry
        .create_at_startup(name, size)
        .unwrap_or_else(|status| panic!("harness: ivshmem region {name}: {status:?}"));
    let Some(info) = registry.region(id) else {
        panic!("harness: ivshmem region {name} vanished")
    };
    if board
        .add_region(
            name,
            SharedMemory {
                host: info.base,
                size: info.size,
            },
        )
        .is_err()
    {
        panic!("harness: ivshmem region {name} named twice");
    }
    for (name, size) in STARTUP_REGIONS {
        if let Err(status) = registry.create_at_startup(name, size) {
            panic!("harness: start-up region {name}: {status:?}");
        }
    }
    Box::leak(Box::new(SharedMemorySystem {
        registry: Box::leak(Box::new(Mutex::new(registry))),
        board: Arc::new(Mutex::new(board)),
    }))
}

/// Which interrupt controller the partitions see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Model {
    /// aarch64 with a GIC of this version.
    Gic(GicVersion),
    /// x86 with local APICs and an I/O APIC.
    Apic,
}

/// One mapping the platform made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Partition index.
    pub partition: usize,
    /// Guest-physical base.
    pub guest: u64,
    /// Host-physical base.
    pub host: u64,
    /// Bytes.
    pub size: u64,
}

/// Deepest chain of signals one access may cause before it counts as a loop.
const SIGNAL_DEPTH: u32 = 8;

/// The partitions and the mock platform they run on.
pub struct Machine {
    /// The partitions: 0 = the fuzzing guest, 1 = its peer.
    pub system: System,
    /// Their interrupt controller.
    pub model: Model,
    /// The shared-memory system (registry, board).
    pub shared: &'static SharedMemorySystem,
    /// Free pool bytes when the session began.
    pub free_at_start: u64,
    mappings: RefCell<Vec<Mapping>>,
    problems: RefCell<Vec<String>>,
    depth: Cell<u32>,
}

impl Machine {
    /// Fresh partitions over the thread's registry.
    pub fn new(model: Model) -> Result<Machine, String> {
        let shared = SHARED
            .with(|spare| spare.borrow_mut().take())
            .unwrap_or_else(shared_memory_system);
        let (configs, interrupt_model): (&'static [PartitionConfig], _) = match model {
            Model::Gic(version) => (&ARM, InterruptModel::Gic(version)),
            Model::Apic => (&X86, InterruptModel::Apic),
        };
        let free_at_start = shared.registry.lock().free_bytes();
        let system = System::new(configs, interrupt_model, Some(shared));
        for partition in &system.partitions {
            if let Some(problem) = partition.setup_problems().first() {
                return Err(format!("the fuzz machine does not set up: {problem}"));
            }
        }
        Ok(Machine {
            system,
            model,
            shared,
            free_at_start,
            mappings: RefCell::new(Vec::new()),
            problems: RefCell::new(Vec::new()),
            depth: Cell::new(0),
        })
    }

    /// Hands the registry and board back for the next session (call only when the session
    /// checked that they are clean).
    pub fn recycle(self) {
        let shared = self.shared;
        drop(self);
        SHARED.with(|spare| *spare.borrow_mut() = Some(shared));
    }

    /// Whether guest-physical `address` of `partition` is mapped memory (an attached
    /// region): accesses there do not trap.
    pub fn is_mapped(&self, partition: usize, address: u64, bytes: u64) -> bool {
        self.mappings.borrow().iter().any(|mapping| {
            mapping.partition == partition
                && address < mapping.guest.saturating_add(mapping.size)
                && mapping.guest < address.saturating_add(bytes)
        })
    }

    /// The mappings now.
    pub fn mappings(&self) -> Vec<Mapping> {
        self.mappings.borrow().clone()
    }

    /// What the platform found wrong since the last call.
    pub fn take_problems(&self) -> Vec<String> {
        std::mem::take(&mut *self.problems.borrow_mut())
    }

    fn problem(&self, text: String) {
        self.problems.borrow_mut().push(text);
    }
}

impl Platform for Machine {
    fn kick(&self, _cpu: usize) {}

    fn map_memory(
        &self,
        partition: usize,
        guest: GuestPhysAddr,
        host: HostPhysAddr,
        size: u64,
    ) -> Result<(), &'static str> {
        let (guest, host) = (guest.as_u64(), host.as_u64());
        let aligned = guest.is_multiple_of(4096)
            && host.is_multiple_of(4096)
            && size.is_multiple_of(4096)
            && size > 0;
        if !aligned {
            self.problem(format!(
                "partition {partition}: map of {size:#x} bytes at guest {guest:#x} from host \
                 {host:#x} is not whole pages"
            ));
            return Err("not page-aligned");
        }
        let inside_pool = host >= POOL.0
            && host
                .checked_add(size)
                .is_some_and(|end| end <= POOL.0 + POOL.1);
        if !inside_pool {
            self.problem(format!(
                "partition {partition}: map of host {host:#x}+{size:#x}, outside shared memory"
            ));
            return Err("outside shared memory");
        }
        if self.is_mapped(partition, guest, size) {
            self.problem(format!(
                "partition {partition}: map of {size:#x} bytes at guest {guest:#x} over a \
                 mapping that exists (stage 2 refuses it; the guest would see the old memory)"
            ));
            return Err("the range is mapped already");
        }
        self.mappings.borrow_mut().push(Mapping {
            partition,
            guest,
            host,
            size,
        });
        Ok(())
    }

    fn unmap_memory(&self, partition: usize, guest: GuestPhysAddr, size: u64) {
        let guest = guest.as_u64();
        self.mappings.borrow_mut().retain(|mapping| {
            !(mapping.partition == partition
                && mapping.guest < guest.saturating_add(size)
                && guest < mapping.guest.saturating_add(mapping.size))
        });
    }

    fn signal(&self, client: ClientId) {
        let depth = self.depth.get();
        if depth >= SIGNAL_DEPTH {
            self.problem(format!("signals nest deeper than {SIGNAL_DEPTH} (a loop?)"));
            return;
        }
        self.depth.set(depth + 1);
        if let Some(partition) = self.system.partitions.get(usize::from(client.partition)) {
            partition.signal_device(client.device, self);
        }
        self.depth.set(depth);
    }

    fn deliver(&self, partition: usize, route: MsiRoute) {
        if let Some(target) = self.system.partitions.get(partition) {
            target.deliver(usize::MAX, route, self);
        }
    }
}
