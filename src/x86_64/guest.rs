//! What an x86_64 partition finds in its RAM when vCPU 0 starts (the contract the guest
//! runtime `guests/x86/runtime` documents): identity page tables for the first 1 GiB, a flat
//! GDT, the boot information page, and the image at 0x200000, entered in 64-bit mode.

use arch_x86_64::vmcs::LongModeStart;
use hypervisor::config::PartitionConfig;

/// Guest-physical layout inside the partition's first RAM range (which starts at 0).
const PML4: u64 = 0x1000;
const PDPT: u64 = 0x2000;
const PAGE_DIRECTORY: u64 = 0x3000;
const GDT: u64 = 0x4000;
/// The boot information page (its address arrives in RDI).
pub const BOOT_INFO: u64 = 0x7000;
/// Where the image is loaded and entered.
pub const IMAGE_BASE: u64 = 0x20_0000;
/// Smallest first RAM range: the tables, the image's 2 MiB slot.
pub const MIN_RAM: u64 = 4 << 20;
/// Bytes of the partition name the boot information holds.
const NAME_CAPACITY: usize = 64;
const CODE_SELECTOR: u16 = 0x08;
const DATA_SELECTOR: u16 = 0x10;

/// Why a partition's RAM cannot hold its guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The first RAM range does not start at guest-physical 0.
    NotAtZero,
    /// It is smaller than [`MIN_RAM`] or the image does not fit.
    TooSmall,
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LayoutError::NotAtZero => {
                write!(
                    f,
                    "x86_64 partitions need their first RAM at guest-physical 0"
                )
            }
            LayoutError::TooSmall => write!(
                f,
                "the first RAM range must hold 4 MiB and the image at {IMAGE_BASE:#x}"
            ),
        }
    }
}

/// Writes `bytes` at guest-physical `offset` of RAM whose host base is `host`.
fn copy(host: u64, offset: u64, bytes: &[u8]) {
    // SAFETY: the caller checked `offset + len` lies inside the partition's first RAM range,
    // which the hypervisor's page tables map read-write and which no one else uses while the
    // partition's vCPUs are stopped (load and restart).
    unsafe {
        core::ptr::copy_nonoverlapping(bytes.as_ptr(), (host + offset) as *mut u8, bytes.len())
    };
}

fn put_u64(host: u64, offset: u64, value: u64) {
    copy(host, offset, &value.to_le_bytes());
}

/// Zeroes the partition's RAM and lays out tables, GDT, boot information and image; returns
/// how vCPU 0 starts.
pub fn load(partition: &PartitionConfig) -> Result<LongModeStart, LayoutError> {
    let Some(ram) = partition.ram.first() else {
        return Err(LayoutError::TooSmall);
    };
    if ram.guest_base != 0 {
        return Err(LayoutError::NotAtZero);
    }
    let image_end = IMAGE_BASE.saturating_add(partition.image.len() as u64);
    if ram.size < MIN_RAM || image_end > ram.size {
        return Err(LayoutError::TooSmall);
    }
    for range in partition.ram {
        // SAFETY: the partition's RAM (checked against the memory map at boot) is mapped
        // read-write in the hypervisor's tables and belongs to this partition alone.
        unsafe { core::ptr::write_bytes(range.host_base as *mut u8, 0, range.size as usize) };
    }
    let host = ram.host_base;
    const PRESENT_WRITABLE: u64 = 0x3;
    const LARGE: u64 = 0x80;
    put_u64(host, PML4, PDPT | PRESENT_WRITABLE);
    put_u64(host, PDPT, PAGE_DIRECTORY | PRESENT_WRITABLE);
    for entry in 0..512u64 {
        put_u64(
            host,
            PAGE_DIRECTORY + entry * 8,
            (entry << 21) | LARGE | PRESENT_WRITABLE,
        );
    }
    // Null, 64-bit code (0x08), data (0x10).
    put_u64(host, GDT + 8, 0x00af_9b00_0000_ffff);
    put_u64(host, GDT + 16, 0x00cf_9300_0000_ffff);
    let total: u64 = partition.ram.iter().map(|r| r.size).sum();
    let name = partition.name.as_bytes();
    let name = name.get(..NAME_CAPACITY).unwrap_or(name);
    put_u64(host, BOOT_INFO, u64::from_le_bytes(*b"BULKHEAD"));
    put_u64(host, BOOT_INFO + 8, total);
    put_u64(host, BOOT_INFO + 16, 0);
    put_u64(host, BOOT_INFO + 24, name.len() as u64);
    copy(host, BOOT_INFO + 32, name);
    copy(host, IMAGE_BASE, partition.image);
    Ok(LongModeStart {
        rip: IMAGE_BASE,
        rsp: IMAGE_BASE,
        cr3: PML4,
        gdt: (GDT, 23),
        selectors: (CODE_SELECTOR, DATA_SELECTOR),
    })
}

/// Where a secondary vCPU enters after PSCI CPU_ON (VMCALL): RIP = `entry`, RSP = `context`
/// (the guest passes the top of that vCPU's stack), the same page tables and GDT as vCPU 0.
pub fn secondary_start(entry: u64, context: u64) -> LongModeStart {
    LongModeStart {
        rip: entry,
        rsp: context,
        cr3: PML4,
        gdt: (GDT, 23),
        selectors: (CODE_SELECTOR, DATA_SELECTOR),
    }
}
