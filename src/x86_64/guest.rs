//! What an x86_64 partition finds in its RAM when vCPU 0 starts (the contract the guest
//! runtime `guests/x86/runtime` documents): identity page tables for the first 1 TiB of
//! guest-physical space (RAM, the I/O APIC, PCI windows, shared-memory windows), a flat GDT,
//! the boot information page with the partition's device list, and the image at 0x200000,
//! entered in 64-bit mode.

use arch_x86_64::vmcs::LongModeStart;
use hypervisor::config::PartitionConfig;
use hypervisor::pci::GuestPci;

/// Guest-physical layout inside the partition's first RAM range (which starts at 0).
const PML4: u64 = 0x1000;
const PDPT: u64 = 0x2000;
const PAGE_DIRECTORY: u64 = 0x3000;
const GDT: u64 = 0x4000;
/// The second PDPT (512 GiB - 1 TiB), with 1 GiB pages.
const HIGH_PDPT: u64 = 0x5000;
/// Without 1 GiB pages: page directories for 1-4 GiB (2 MiB pages).
const LOW_PAGE_DIRECTORIES: [u64; 3] = [0x8000, 0x9000, 0xa000];
/// The device list inside the boot information page: a count (u64), then entries of
/// [`DEVICE_ENTRY_SIZE`] bytes: kind (u32), number (u32), base (u64), size (u64).
const DEVICE_LIST: u64 = BOOT_INFO + 0x100;
const DEVICE_ENTRY_SIZE: u64 = 24;
/// Most entries the list holds (the rest of the page).
const MAX_DEVICES: usize = 16;
/// The TSC's rate in Hz as the boot CPU measured it (u64), inside the boot information.
const TSC_HZ_OFFSET: u64 = 0x60;
/// How many times the partition was restarted (u64), inside the boot information.
const RESTARTS_OFFSET: u64 = 0x68;
/// The command line's length (u64), inside the boot information; the text (ASCII, no NUL)
/// from [`COMMAND_LINE_OFFSET`].
const COMMAND_LINE_LENGTH_OFFSET: u64 = 0x70;
const COMMAND_LINE_OFFSET: u64 = 0x400;
/// Room for the command line: the rest of the boot information page.
const COMMAND_LINE_CAPACITY: usize = 0xc00;

/// The TSC rate guests are told (0: not measured).
static TSC_HZ: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Records the TSC rate the boot CPU measured, for every partition's boot information.
pub fn set_tsc_hz(hz: u64) {
    TSC_HZ.store(hz, core::sync::atomic::Ordering::Relaxed);
}
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
    /// Its boot information would list more devices than the list holds ([`MAX_DEVICES`]).
    TooManyDevices(usize),
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
            LayoutError::TooManyDevices(count) => write!(
                f,
                "{count} devices (I/O APIC, UART, PCI windows, MMIO vdev shmems) do not fit the \
                 boot information's list of {MAX_DEVICES}"
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

/// Zeroes the partition's RAM and lays out tables, GDT, boot information (with `restarts`, the
/// times the partition was restarted) and image; returns how vCPU 0 starts.
pub fn load(partition: &PartitionConfig, restarts: usize) -> Result<LongModeStart, LayoutError> {
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
    let device_count = devices(partition).count();
    if device_count > MAX_DEVICES {
        return Err(LayoutError::TooManyDevices(device_count));
    }
    for range in partition.ram {
        // SAFETY: the partition's RAM (checked against the memory map at boot) is mapped
        // read-write in the hypervisor's tables and belongs to this partition alone.
        unsafe { core::ptr::write_bytes(range.host_base as *mut u8, 0, range.size as usize) };
    }
    let host = ram.host_base;
    write_page_tables(host);
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
    put_u64(
        host,
        BOOT_INFO + TSC_HZ_OFFSET,
        TSC_HZ.load(core::sync::atomic::Ordering::Relaxed),
    );
    put_u64(host, BOOT_INFO + RESTARTS_OFFSET, restarts as u64);
    // The VM file's `cmdline` (validated printable ASCII, at most 1 KiB), then Bulkhead's own.
    let command_line = match partition.cmdline {
        Some(cmdline) => alloc::format!("{cmdline} bulkhead.restarts={restarts}"),
        None => alloc::format!("bulkhead.restarts={restarts}"),
    };
    let command_line = command_line
        .as_bytes()
        .get(..COMMAND_LINE_CAPACITY)
        .unwrap_or(command_line.as_bytes());
    copy(host, BOOT_INFO + COMMAND_LINE_OFFSET, command_line);
    put_u64(
        host,
        BOOT_INFO + COMMAND_LINE_LENGTH_OFFSET,
        command_line.len() as u64,
    );
    for (index, device) in devices(partition).enumerate() {
        let at = DEVICE_LIST + 8 + index as u64 * DEVICE_ENTRY_SIZE;
        put_u64(
            host,
            at,
            u64::from(device.kind) | (u64::from(device.number) << 32),
        );
        put_u64(host, at + 8, device.base);
        put_u64(host, at + 16, device.size);
        put_u64(host, DEVICE_LIST, index as u64 + 1);
    }
    copy(host, IMAGE_BASE, partition.image);
    Ok(boot_start())
}

/// How vCPU 0 starts once [`load`] laid the guest out: at the image, with the stack below
/// it.
pub fn boot_start() -> LongModeStart {
    LongModeStart {
        rip: IMAGE_BASE,
        rsp: IMAGE_BASE,
        cr3: PML4,
        gdt: (GDT, 23),
        selectors: (CODE_SELECTOR, DATA_SELECTOR),
    }
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

/// Whether this CPU's paging has 1 GiB pages (CPUID.80000001H:EDX[26]).
fn has_1gib_pages() -> bool {
    let highest = core::arch::x86_64::__cpuid(0x8000_0000).eax;
    highest >= 0x8000_0001 && core::arch::x86_64::__cpuid(0x8000_0001).edx & (1 << 26) != 0
}

/// Identity page tables: the first GiB with 2 MiB pages; with 1 GiB pages the rest of the
/// first TiB, without them only up to 4 GiB (RAM, the I/O APIC, the 32-bit PCI window; the
/// 64-bit window and shared-memory windows then stay unreachable).
fn write_page_tables(host: u64) {
    const PRESENT_WRITABLE: u64 = 0x3;
    const LARGE: u64 = 0x80;
    const GIB: u64 = 1 << 30;
    put_u64(host, PML4, PDPT | PRESENT_WRITABLE);
    put_u64(host, PDPT, PAGE_DIRECTORY | PRESENT_WRITABLE);
    let directory = |table: u64, base: u64| {
        for entry in 0..512u64 {
            put_u64(
                host,
                table + entry * 8,
                (base + (entry << 21)) | LARGE | PRESENT_WRITABLE,
            );
        }
    };
    directory(PAGE_DIRECTORY, 0);
    if has_1gib_pages() {
        put_u64(host, PML4 + 8, HIGH_PDPT | PRESENT_WRITABLE);
        for entry in 1..512u64 {
            put_u64(
                host,
                PDPT + entry * 8,
                (entry * GIB) | LARGE | PRESENT_WRITABLE,
            );
        }
        for entry in 0..512u64 {
            put_u64(
                host,
                HIGH_PDPT + entry * 8,
                ((512 + entry) * GIB) | LARGE | PRESENT_WRITABLE,
            );
        }
    } else {
        for (gib, &table) in (1u64..).zip(LOW_PAGE_DIRECTORIES.iter()) {
            put_u64(host, PDPT + gib * 8, table | PRESENT_WRITABLE);
            directory(table, gib * GIB);
        }
    }
}

/// One entry of the boot information's device list.
struct Device {
    kind: u32,
    number: u32,
    base: u64,
    size: u64,
}

/// Device-list kinds (the guest runtime's `boot_info` parses the same numbers).
mod kind {
    pub const IOAPIC: u32 = 1;
    pub const QNX_SHMEM_MMIO: u32 = 2;
    pub const PCI_ECAM: u32 = 3;
    pub const PCI_MMIO32: u32 = 4;
    pub const PCI_MMIO64: u32 = 5;
    pub const UART16550: u32 = 6;
}

/// What the partition's guest finds where: its x86 counterpart of a device tree.
fn devices(partition: &PartitionConfig) -> impl Iterator<Item = Device> + '_ {
    let pci = GuestPci::X86.placed(&partition.windows);
    let ioapic = partition.ioapic.map(|base| Device {
        kind: kind::IOAPIC,
        number: u32::from(hypervisor::device::ioapic::PINS),
        base,
        size: hypervisor::device::ioapic::FRAME_SIZE,
    });
    let uart = partition.uart8250.map(|port| Device {
        kind: kind::UART16550,
        number: 0,
        base: u64::from(port),
        size: 8,
    });
    let shmem = partition.shmem.iter().filter_map(|device| {
        device.mmio.map(|(base, pin)| Device {
            kind: kind::QNX_SHMEM_MMIO,
            number: pin,
            base,
            size: 0x1000,
        })
    });
    let windows = [
        (kind::PCI_ECAM, pci.ecam),
        (kind::PCI_MMIO32, pci.mmio32),
        (kind::PCI_MMIO64, pci.mmio64),
    ]
    .into_iter()
    .map(|(kind, (base, size))| Device {
        kind,
        number: 0,
        base,
        size,
    });
    ioapic.into_iter().chain(uart).chain(windows).chain(shmem)
}
