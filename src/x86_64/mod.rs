//! x86_64 bring-up: Multiboot2 information (from GRUB, or from Bulkhead's UEFI loader) → COM1
//! console → ACPI (CPUs, APICs, power-off) → memory map → the hypervisor's page tables → heap →
//! exceptions → VMX → every CPU online.

mod guest;
mod panic;
mod partitions;
mod smp;

use alloc::boxed::Box;
use core::fmt;

use arch_x86_64::apic::LocalApic;
use arch_x86_64::cpu::{self, PerCpu};
use arch_x86_64::mmu;

use crate::heap_tables::{CODE, HeapTables, IdentityMap, READ_WRITE};
use arch_x86_64::paging::{HostPaging, Memory, PageTable};
use arch_x86_64::platform::{self, Platform, RootTable};
use arch_x86_64::serial::{COM1, Serial};
use arch_x86_64::{descriptors, exception, power, vmx};
use boot::x86_64::{BootInfo, EntryPath, ImageLayout, TRAMPOLINE_ADDRESS};
use hypervisor::addr::{HostPhysAddr, HumanSize, PAGE_SIZE, PhysRange};
use hypervisor::bootargs::{BootOptions, SelfTest};
use hypervisor::console::CONSOLE;
use hypervisor::memory::{MemoryMap, PhysRangeSet, Usage};
use hypervisor::println;
use spin::Once;

use crate::allocator::BootAllocator;

#[global_allocator]
static ALLOCATOR: BootAllocator = BootAllocator::new();

/// Size of the hypervisor heap carved from RAM at boot.
const HEAP_SIZE: u64 = 16 << 20;
/// Below this, memory belongs to the firmware (real-mode area, EBDA, BIOS) and the AP
/// trampoline; Bulkhead maps only the trampoline's page there.
const LOW_MEMORY_END: u64 = 1 << 20;

static UART: Once<Serial> = Once::new();

/// Stops the boot with a report (a firmware or configuration problem, not a guest's doing).
fn boot_failure(args: fmt::Arguments<'_>) -> ! {
    CONSOLE.print_emergency(format_args!("bulkhead: boot failed: {args}\n"));
    power::fail()
}

/// Rust entry of the boot CPU, called by `boot/src/x86_64.rs` in long mode on the boot page
/// tables (the low 4 GiB identity-mapped), interrupts off, from either entry (`entry_path`).
#[unsafe(no_mangle)]
extern "C" fn bulkhead_x86_primary_main(boot_information: u64, entry_path: u64) -> ! {
    let (heap_start, heap_size) = boot::x86_64::bootstrap_heap();
    // SAFETY: the linker reserved this region inside the image for exactly this; nothing else
    // uses it, and this runs once, on the boot CPU, before any allocation.
    unsafe { ALLOCATOR.init_bootstrap(heap_start, heap_size) };
    // SAFETY: COM1's ports belong to the hypervisor console alone.
    if let Some(serial) = unsafe { Serial::new(COM1) } {
        CONSOLE.set_sink(UART.call_once(|| serial));
    }
    hypervisor::console::init_logging(log::LevelFilter::Info);
    // Exceptions are reported from here on.
    descriptors::install_this_cpu();
    exception::install();

    // SAFETY: the entry code checked the Multiboot2 magic and passes EBX unchanged; the boot
    // page tables identity-map the low 4 GiB, where GRUB and the UEFI loader put the
    // information.
    let info = match unsafe { boot::x86_64::read_multiboot2(boot_information) } {
        Ok(info) => info,
        Err(error) => boot_failure(format_args!(
            "the Multiboot2 boot information at {boot_information:#x} is unusable: {error:?}"
        )),
    };
    let options = BootOptions::parse(&info.command_line);
    power::set_failure_exit(options.exit);
    println!("Bulkhead {} (x86_64) booting", hypervisor::VERSION);
    let method = match EntryPath::from_register(entry_path) {
        EntryPath::Multiboot2 => "multiboot2",
        EntryPath::Uefi => "uefi",
    };
    if info.loader.is_empty() {
        println!("boot method: {method}");
    } else {
        println!("boot method: {method} ({})", info.loader);
    }
    for word in &options.unknown {
        log::warn!("unknown boot option `{word}` ignored");
    }

    let root = info.acpi.map(|root| RootTable {
        revision: root.revision,
        address: root.address,
    });
    // SAFETY: the boot page tables identity-map the low 4 GiB; the root comes from the boot
    // loader's RSDP tag (or the BIOS area is searched).
    let platform = match unsafe { platform::read(root) } {
        Ok(platform) => platform,
        Err(error) => boot_failure(format_args!("{error}")),
    };
    power::set_soft_off(platform.soft_off);
    let local_apic = LocalApic::current();
    print_platform(&platform, local_apic);

    let tsc_hz = arch_x86_64::pit::measure_tsc_hz();
    println!(
        "TSC: {}.{:03} MHz (measured against the PIT; partitions find it in their boot information)",
        tsc_hz / 1_000_000,
        tsc_hz / 1000 % 1000
    );
    guest::set_tsc_hz(tsc_hz);
    let image = boot::x86_64::image_layout();
    check_trampoline_page(&info);
    let mut memory_map = build_memory_map(&info, &image);
    let Some(heap) = memory_map.carve(HEAP_SIZE, Usage::Heap) else {
        boot_failure(format_args!(
            "no {} of free RAM for the heap",
            HumanSize(HEAP_SIZE)
        ))
    };
    // SAFETY: the memory map took this range out of free RAM for the heap alone.
    unsafe { ALLOCATOR.init_main(heap.start.as_u64(), heap.size()) };
    let shared_memory =
        crate::shared_memory::carve(partitions::configuration(), &mut memory_map, boot_failure);
    print_memory_map(&memory_map);

    let table = build_hypervisor_map(&memory_map, &image, &platform, local_apic);
    // SAFETY: still on the boot page tables, which map the trampoline's page writable; it lies
    // in low memory the memory map keeps out of every allocation; no other CPU runs yet.
    if let Err(error) = unsafe { boot::x86_64::install_trampoline(table.root()) } {
        boot_failure(format_args!("AP trampoline: {error:?}"));
    }
    mmu::enable_protection();
    // SAFETY: the new tables map the image (this code, its stack, .data), all RAM (heap and the
    // boot information), the local APIC and the I/O APICs, at the same addresses.
    unsafe { mmu::activate(&table) };
    local_apic.enable();
    arch_x86_64::pit::mask_legacy_pic();
    // Enabled first: a software-disabled APIC masks its timer.
    if !LocalApic::has_tsc_deadline() {
        let timer_hz = local_apic.calibrate_one_shot(tsc_hz);
        println!(
            "local APIC timer: no TSC-deadline mode, one-shot at {}.{:03} MHz (measured against the TSC)",
            timer_hz / 1_000_000,
            timer_hz / 1000 % 1000
        );
    }

    let apic_id = cpu::apic_id();
    let boot_cpu = platform.cpu_index(apic_id).unwrap_or_else(|| {
        log::warn!("the boot CPU's APIC ID {apic_id} is not in the MADT; calling it cpu 0");
        0
    });
    let per_cpu: &'static PerCpu = Box::leak(Box::new(PerCpu::new(boot_cpu, apic_id)));
    cpu::install_per_cpu(per_cpu);
    println!("cpu {boot_cpu} online (APIC ID {apic_id}, boot CPU)");
    let vmx_on = usize::from(report_vmx(boot_cpu));

    let (online, vmx_on_secondaries) = smp::start_secondaries(&platform, boot_cpu, local_apic);
    println!("{online} of {} CPUs online", platform.cpus.len());
    let vmx_total = vmx_on + vmx_on_secondaries;
    if vmx_total == online {
        println!("{} on {vmx_total} of {online} CPUs", backend_name());
    } else if partitions::uses_svm() {
        println!(
            "SVM on {vmx_total} of {online} CPUs: partitions need SVM with nested paging \
             (QEMU -cpu max under TCG, or KVM with nested SVM)"
        );
    } else {
        println!(
            "VMX on {vmx_total} of {online} CPUs: partitions need VMX (Bochs with \
             cpu: model=corei7_skylake_x, or KVM with nested VMX)"
        );
    }
    let config = partitions::configuration();
    println!(
        "configuration: {} ({}), {} partition(s)",
        config.board,
        config.source,
        config.partitions.len()
    );
    partitions::load(
        &memory_map,
        platform.cpus.iter().map(|cpu| cpu.apic_id).collect(),
        shared_memory,
    );
    println!("boot complete");

    match options.self_test {
        Some(SelfTest::Panic) => panic::deliberate_panic(),
        Some(SelfTest::Fault) => deliberate_fault(),
        None => {}
    }
    if options.power_off_when_done {
        println!("bulkhead: powering off (ACPI S5)");
        power::power_off();
    }
    if !partitions::has_partitions() {
        println!("no partitions; CPUs idle");
    }
    partitions::run_this_cpu(vmx_on == 1)
}

/// The virtualization extension partitions run with: SVM on AMD's CPUs, VMX elsewhere.
fn backend_name() -> &'static str {
    if partitions::uses_svm() { "SVM" } else { "VMX" }
}

/// Turns VMX (on AMD's CPUs: SVM) on for this CPU and says so; true if it is on.
pub(crate) fn report_vmx(index: usize) -> bool {
    if partitions::uses_svm() {
        return report_svm(index);
    }
    match vmx::enable_this_cpu() {
        Ok(features) => {
            println!(
                "cpu {index}: VMX on (EPT, VPID, unrestricted guest{}; VMCS revision {:#x})",
                if features.ept_1gib_pages {
                    ", 1 GiB EPT pages"
                } else {
                    ""
                },
                features.revision
            );
            if index == 0 {
                let probe = vmx::probe();
                println!(
                    "cpu 0: VMX interrupt virtualization {} (allowed-1 pin-based {:#x}, primary {:#x}, secondary {:#x}); {}",
                    features.interrupts,
                    probe.pin_controls >> 32,
                    probe.primary_controls >> 32,
                    probe.secondary_controls >> 32,
                    features.interrupts.delivery(),
                );
            }
            true
        }
        Err(error) => {
            println!("cpu {index}: no VMX: {error}");
            false
        }
    }
}

/// Turns SVM on for this CPU and says so; true if it is on.
fn report_svm(index: usize) -> bool {
    match arch_x86_64::svm_vcpu::enable_this_cpu() {
        Ok(features) => {
            println!(
                "cpu {index}: SVM on (NPT, 1 GiB pages, {} ASIDs{})",
                features.asids,
                if features.nrips {
                    ", NRIPS"
                } else {
                    ", no NRIPS"
                }
            );
            true
        }
        Err(error) => {
            println!("cpu {index}: no SVM: {error}");
            false
        }
    }
}

/// Reads an unmapped address: the page fault must be reported.
fn deliberate_fault() -> ! {
    println!("self-test: reading unmapped address 0x1000");
    // SAFETY: not memory-safe by intent: the address is unmapped, so the load raises a page
    // fault, which is reported and stops the machine; the load never completes.
    let value = unsafe { core::ptr::read_volatile(0x1000 as *const u64) };
    boot_failure(format_args!(
        "the unmapped read returned {value:#x} instead of faulting"
    ))
}

fn page_range(start: u64, size: u64) -> PhysRange {
    let first = start & !(PAGE_SIZE - 1);
    let end = start.saturating_add(size).saturating_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1);
    PhysRange {
        start: HostPhysAddr::new(first),
        end: HostPhysAddr::new(end.max(first)),
    }
}

/// Stops the boot unless the boot loader's memory map says the AP trampoline's fixed page is
/// free RAM: firmware may keep something there (a UEFI runtime or ACPI area), and the
/// trampoline would overwrite it. (Bulkhead's UEFI loader already refuses to boot then.)
fn check_trampoline_page(info: &BootInfo) {
    let page = page_range(TRAMPOLINE_ADDRESS, PAGE_SIZE);
    let covers = |area: &boot::x86_64::MemoryArea| {
        area.start <= page.start.as_u64()
            && area.start.saturating_add(area.size) >= page.end.as_u64()
    };
    if info
        .memory
        .iter()
        .any(|area| area.available && covers(area))
    {
        return;
    }
    match info.memory.iter().find(|area| covers(area)) {
        Some(area) => boot_failure(format_args!(
            "the AP trampoline needs the page at {TRAMPOLINE_ADDRESS:#x}, but the memory map \
             has it in a reserved area ({:#x}+{:#x})",
            area.start, area.size
        )),
        None => boot_failure(format_args!(
            "the AP trampoline needs the page at {TRAMPOLINE_ADDRESS:#x}, but it is not RAM in \
             the memory map"
        )),
    }
}

/// RAM from the Multiboot2 memory map (available areas, whole pages), with the image, the
/// boot information and low memory in use.
fn build_memory_map(info: &BootInfo, image: &ImageLayout) -> MemoryMap {
    let ram: alloc::vec::Vec<PhysRange> = info
        .memory
        .iter()
        .filter(|area| area.available)
        .filter_map(|area| {
            let start = area.start.checked_add(PAGE_SIZE - 1)? & !(PAGE_SIZE - 1);
            let end = area.start.checked_add(area.size)? & !(PAGE_SIZE - 1);
            (end > start).then(|| page_range(start, end - start))
        })
        .collect();
    let (info_start, info_end) = info.range;
    let mut in_use = alloc::vec![
        (page_range(0, LOW_MEMORY_END), Usage::Firmware),
        (
            page_range(image.start, image.end - image.start),
            Usage::Image,
        ),
        (
            page_range(info_start, info_end.saturating_sub(info_start)),
            Usage::BootInformation,
        ),
    ];
    // Partition RAM is never the heap's (`partitions::load` checks it is RAM at all).
    in_use.extend(partitions::reserved_ranges());
    MemoryMap::new(&ram, &in_use)
}

fn print_platform(platform: &Platform, local_apic: LocalApic) {
    let apic_ids: alloc::vec::Vec<alloc::string::String> = platform
        .cpus
        .iter()
        .map(|cpu| alloc::format!("{}", cpu.apic_id))
        .collect();
    println!(
        "platform: ACPI ({}); {} CPUs (APIC IDs {}); local APIC at {:#x} ({}); {} I/O APIC(s)",
        platform.oem,
        platform.cpus.len(),
        apic_ids.join(", "),
        platform.local_apic_address,
        match local_apic {
            LocalApic::Xapic { .. } => "xAPIC",
            LocalApic::X2apic => "x2APIC",
        },
        platform.io_apics.len()
    );
    println!("console: COM1 at I/O port {COM1:#x}");
}

fn print_memory_map(map: &MemoryMap) {
    println!("memory map:");
    for bank in &map.ram {
        println!("  RAM   {bank}");
    }
    for (range, usage) in &map.used {
        match partitions::describe_host_range(range).filter(|_| *usage == Usage::Partition) {
            Some(name) => println!("  used  {range} {} {name}", usage.name()),
            None => println!("  used  {range} {}", usage.name()),
        }
    }
    for range in map.free.ranges() {
        println!("  free  {range}");
    }
}

/// Builds the hypervisor's identity map: image sections with W^X, the rest of RAM read-write
/// and never executable, the AP trampoline's page read-execute, the local and I/O APICs
/// uncached. Nothing else is mapped (page 0 included), so a stray access faults and is
/// reported.
fn build_hypervisor_map(
    memory_map: &MemoryMap,
    image: &ImageLayout,
    platform: &Platform,
    local_apic: LocalApic,
) -> PageTable<HeapTables, HostPaging> {
    let mut map = IdentityMap::<HostPaging>::new(boot_failure);
    map.map_image(image.start, image.text_end, image.rodata_end, image.end);
    map.map(
        TRAMPOLINE_ADDRESS,
        TRAMPOLINE_ADDRESS + PAGE_SIZE,
        CODE,
        "AP trampoline",
    );
    let mut rest_of_ram = PhysRangeSet::new();
    for &bank in &memory_map.ram {
        rest_of_ram.insert(bank);
    }
    rest_of_ram.remove(page_range(0, LOW_MEMORY_END));
    rest_of_ram.remove(page_range(image.start, image.end - image.start));
    for range in rest_of_ram.ranges() {
        map.map(range.start.as_u64(), range.end.as_u64(), READ_WRITE, "RAM");
    }
    let mut devices = PhysRangeSet::new();
    if let Some(base) = local_apic.mmio_base() {
        devices.insert(page_range(base, PAGE_SIZE));
    }
    for io_apic in &platform.io_apics {
        devices.insert(page_range(io_apic.address, PAGE_SIZE));
    }
    for range in devices.ranges() {
        map.map(
            range.start.as_u64(),
            range.end.as_u64(),
            Memory::Device,
            "device",
        );
    }
    map.into_table()
}
