//! The host-wide shared-memory state both architectures build the same way at boot: the region
//! registry (QNX personality) over the RAM the memory map carved for it, with the
//! configuration's start-up regions, and the ivshmem doorbell board (QEMU personality) over the
//! regions ivshmem devices name.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use hypervisor::addr::{HumanSize, PhysRange};
use hypervisor::config::SystemConfig;
use hypervisor::memory::{MemoryMap, Usage};
use hypervisor::partition::SharedMemorySystem;
use hypervisor::pci::doorbell::DoorbellBoard;
use hypervisor::pci::ivshmem::SharedMemory;
use hypervisor::println;
use hypervisor::shmem::{Registry, ZeroMemory};
use spin::Once;

/// How the caller's boot stops with a report.
pub type BootFailure = fn(fmt::Arguments<'_>) -> !;

/// Zeroes host memory for the region registry.
struct ZeroHostMemory;

impl ZeroMemory for ZeroHostMemory {
    fn zero(&self, range: PhysRange) {
        // SAFETY: the registry only hands out ranges of the shared-memory range the boot
        // memory map carved for it (RAM nothing else uses, identity-mapped read-write); a range
        // is zeroed while no partition has it mapped (created, or freed by its last client).
        unsafe {
            core::ptr::write_bytes(range.start.as_u64() as *mut u8, 0, range.size() as usize)
        };
    }
}

static REGISTRY: Once<spin::Mutex<Registry>> = Once::new();

static SHARED: Once<SharedMemorySystem> = Once::new();

/// Bytes the shared-memory regions created at start-up and the run-time pool need, if any.
pub fn size(config: &SystemConfig) -> Option<u64> {
    let regions: u64 = config
        .regions
        .iter()
        .map(|&(_, size)| (size + 0xfff) & !0xfff)
        .sum();
    let total = regions.saturating_add(config.shmem_pool);
    (total > 0).then_some(total)
}

/// Takes the RAM the configuration's shared memory needs (start-up regions and pool) out of
/// `memory_map`, if it needs any; fails the boot when there is not enough.
pub fn carve(
    config: &SystemConfig,
    memory_map: &mut MemoryMap,
    boot_failure: BootFailure,
) -> Option<PhysRange> {
    let size = size(config)?;
    Some(
        memory_map
            .carve(size, Usage::SharedMemory)
            .unwrap_or_else(|| {
                boot_failure(format_args!(
                    "no {} of free RAM for the shared-memory regions and pool",
                    HumanSize(size)
                ))
            }),
    )
}

/// The registry over `memory` with `config`'s start-up regions created (largest first, so
/// 2 MiB-aligned ones pack well), and the doorbell board over the regions ivshmem devices name.
pub fn create(
    config: &SystemConfig,
    memory: PhysRange,
    boot_failure: BootFailure,
) -> &'static SharedMemorySystem {
    let registry = create_registry(config, memory, boot_failure);
    let mut board = DoorbellBoard::new();
    let mut names: Vec<&str> = config
        .partitions
        .iter()
        .flat_map(|p| p.ivshmem.iter().map(|i| i.name))
        .collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let locked = registry.lock();
        let Some(info) = locked.lookup(name).and_then(|id| locked.region(id)) else {
            boot_failure(format_args!("ivshmem region {name} was not created"))
        };
        drop(locked);
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
            boot_failure(format_args!("ivshmem region {name} named twice"));
        }
    }
    SHARED.call_once(|| SharedMemorySystem {
        registry,
        board: Arc::new(spin::Mutex::new(board)),
    })
}

fn create_registry(
    config: &SystemConfig,
    memory: PhysRange,
    boot_failure: BootFailure,
) -> &'static spin::Mutex<Registry> {
    let registry = REGISTRY.call_once(|| spin::Mutex::new(Registry::new(memory, &ZeroHostMemory)));
    let mut regions: Vec<(&str, u64)> = config.regions.to_vec();
    regions.sort_by_key(|&(_, size)| core::cmp::Reverse(size));
    for (name, size) in regions {
        if let Err(status) = registry.lock().create_at_startup(name, size) {
            boot_failure(format_args!(
                "shared-memory region {name} ({}): {status:?}",
                HumanSize(size)
            ));
        }
        println!("shared memory: region {name} ({}) created", HumanSize(size));
    }
    registry
}
