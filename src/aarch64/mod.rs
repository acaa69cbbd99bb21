//! aarch64 bring-up: device tree → console → memory map → EL2 MMU → heap → every CPU online.

mod panic;
mod partitions;
mod smp;

use alloc::boxed::Box;
use core::fmt;

use arch_aarch64::cpu::{self, PerCpu};
use arch_aarch64::mmu::MmuSettings;

use crate::heap_tables::{IdentityMap, READ_WRITE};
use arch_aarch64::console_uart::ConsoleUart;
use arch_aarch64::paging::{El2Stage1, Memory};
use arch_aarch64::{exception, power, psci};
use boot::aarch64::{ImageLayout, UEFI_HANDOFF_MAGIC};
use hypervisor::addr::{HostPhysAddr, HumanSize, PAGE_SIZE, PhysRange};
use hypervisor::board::{Board, Gic, PsciConduit, Uart, UartKind, device_tree_size};
use hypervisor::bootargs::{BootOptions, SelfTest};
use hypervisor::config::ConsoleConfig;
use hypervisor::console::CONSOLE;
use hypervisor::memory::{MemoryMap, PhysRangeSet, Usage};
use hypervisor::println;
use spin::Once;

use crate::allocator::BootAllocator;

#[global_allocator]
static ALLOCATOR: BootAllocator = BootAllocator::new();

/// Size of the hypervisor heap carved from RAM at boot.
const HEAP_SIZE: u64 = 16 << 20;

/// How the image was entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BootMethod {
    /// Directly through the arm64 Image header (QEMU `-kernel`, U-Boot `booti`).
    LinuxImage,
    /// Through Bulkhead's UEFI loader.
    Uefi,
}

impl fmt::Display for BootMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BootMethod::LinuxImage => "linux-image",
            BootMethod::Uefi => "uefi",
        })
    }
}

static UART: Once<ConsoleUart> = Once::new();

/// Who chose the console UART.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConsoleSource {
    /// The board file's `console` line.
    BoardFile,
    /// The device tree (`/chosen/stdout-path`, else its first PL011).
    DeviceTree,
}

/// The console UART: the board file's `console` when it names one, else the device tree's.
fn choose_console(
    board: &Board,
    configured: Option<ConsoleConfig>,
) -> Option<(Uart, ConsoleSource)> {
    let from_board_file = |kind, base| {
        PhysRange::from_start_size(base, PAGE_SIZE)
            .map(|registers| (Uart { kind, registers }, ConsoleSource::BoardFile))
    };
    match configured {
        Some(ConsoleConfig::Pl011 { base }) => from_board_file(UartKind::Pl011, base),
        Some(ConsoleConfig::Cadence { base }) => from_board_file(UartKind::Cadence, base),
        // The build refuses an I/O-port console on aarch64.
        Some(ConsoleConfig::Uart8250 { .. }) | None => {
            board.uart.map(|uart| (uart, ConsoleSource::DeviceTree))
        }
    }
}

/// Stops the boot with a report (a firmware or configuration problem, not a guest's doing).
fn boot_failure(args: fmt::Arguments<'_>) -> ! {
    CONSOLE.print_emergency(format_args!("bulkhead: boot failed: {args}\n"));
    power::fail()
}

/// Parses the board description from the device tree at `address`; returns it with the
/// blob's size. The blob is read only here: later, partitions may reuse its RAM.
fn read_board(address: u64) -> Option<(Board, u64)> {
    if address == 0 || !address.is_multiple_of(8) {
        return None;
    }
    // SAFETY: the boot protocol puts a device tree at x0; the first 8 bytes are its magic and
    // size, read before trusting anything else. Identity-mapped RAM (or MMU off).
    let header = unsafe { &*(address as *const [u8; 8]) };
    let size = device_tree_size(header)?;
    // SAFETY: the header says the blob spans `size` bytes from `address`; nothing writes it
    // while this function reads it, and the slice does not outlive the call.
    let blob = unsafe { core::slice::from_raw_parts(address as *const u8, size) };
    Some((Board::from_device_tree(blob).ok()?, size as u64))
}

/// Rust entry of the boot CPU, called by `boot/src/aarch64.rs` with the MMU off.
#[unsafe(no_mangle)]
extern "C" fn bulkhead_primary_main(device_tree_address: u64, handoff: u64) -> ! {
    let (heap_start, heap_size) = boot::aarch64::bootstrap_heap();
    // SAFETY: the linker reserved this region inside the image for exactly this; nothing else
    // uses it, and this runs once, on the boot CPU, before any allocation.
    unsafe { ALLOCATOR.init_bootstrap(heap_start, heap_size) };
    let method = if handoff == UEFI_HANDOFF_MAGIC {
        BootMethod::Uefi
    } else {
        BootMethod::LinuxImage
    };

    // Without a device tree there is no console to complain on: halt.
    let Some((board, device_tree_size)) = read_board(device_tree_address) else {
        cpu::halt()
    };
    let console = choose_console(&board, partitions::configuration().console);
    let board = Board {
        uart: console.map(|(uart, _)| uart),
        ..board
    };
    if let Some((uart, _)) = console {
        // SAFETY: the board file or the device tree names this frame as the console UART of
        // this kind; identity-mapped (MMU off now, device-mapped once it is on); only the
        // console drives it.
        let driver = UART.call_once(|| unsafe {
            ConsoleUart::new(uart.kind, uart.registers.start.as_u64() as usize)
        });
        CONSOLE.set_sink(driver);
    }
    hypervisor::console::init_logging(log::LevelFilter::Info);
    if let Some(conduit) = board.psci {
        psci::set_conduit(conduit);
    }
    let options = BootOptions::parse(&board.bootargs);
    power::set_failure_exit(options.exit);

    let exception_level = cpu::current_el();
    if exception_level != 2 {
        println!(
            "Bulkhead {} (aarch64): started at EL{exception_level}, but a hypervisor needs EL2. \
             Under QEMU use `-M virt,virtualization=on`; on a board, boot Bulkhead before any \
             other hypervisor.",
            hypervisor::VERSION
        );
        power::power_off();
    }
    println!("Bulkhead {} (aarch64) booting at EL2", hypervisor::VERSION);
    println!("boot method: {method}");
    for word in &options.unknown {
        log::warn!("unknown boot option `{word}` ignored");
    }
    print_board(&board, console.map(|(_, source)| source));
    if board.psci != Some(PsciConduit::Smc) {
        boot_failure(format_args!(
            "the device tree offers no PSCI through SMC; Bulkhead needs it"
        ));
    }

    let image = boot::aarch64::image_layout();
    let mut in_use = alloc::vec![
        (
            page_range(image.start, image.end - image.start),
            Usage::Image
        ),
        (
            page_range(device_tree_address, device_tree_size),
            Usage::DeviceTree
        ),
    ];
    in_use.extend(board.reserved.iter().map(|&range| (range, Usage::Firmware)));
    in_use.extend(partitions::partition_ram());
    let mut memory_map = MemoryMap::new(&board.memory, &in_use);
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

    let settings = build_hypervisor_map(&board, &image);
    // SAFETY: the map identity-maps all RAM (this code, its stack, heap, device tree) and the
    // console; the MMU is off on this CPU.
    unsafe { settings.enable() };
    exception::install();
    let boot_cpu = board.cpu_index(cpu::mpidr()).unwrap_or(0);
    let per_cpu: &'static PerCpu = Box::leak(Box::new(PerCpu::new(boot_cpu, cpu::mpidr())));
    cpu::install_per_cpu(per_cpu);
    let Some(gic) = board.gic.as_ref() else {
        boot_failure(format_args!("the device tree describes no GIC"))
    };
    if let Err(e) = arch_aarch64::gic::init_distributor(gic) {
        boot_failure(format_args!("GIC: {e}"));
    }
    match arch_aarch64::gic::init_this_cpu(cpu::mpidr()) {
        Ok(list_registers) => {
            per_cpu
                .list_registers
                .store(list_registers, core::sync::atomic::Ordering::Relaxed);
            println!(
                "GICv{} virtual interface: {list_registers} list registers",
                gic.version()
            );
        }
        Err(e) => boot_failure(format_args!("GIC: {e}")),
    }
    println!(
        "cpu {boot_cpu} online at EL2 (MPIDR {:#x}, boot CPU, MMU on)",
        cpu::mpidr()
    );

    let online = smp::start_secondaries(&board, boot_cpu, settings);
    println!("{online} of {} CPUs online", board.cpus.len());
    let config = partitions::configuration();
    println!(
        "configuration: {} ({}), {} partition(s)",
        config.board,
        config.source,
        config.partitions.len()
    );
    partitions::load(&memory_map, &board, shared_memory);
    println!("boot complete");

    match options.self_test {
        Some(SelfTest::Panic) => panic::deliberate_panic(),
        Some(SelfTest::Fault) => deliberate_fault(),
        None => {}
    }
    if options.power_off_when_done {
        println!("bulkhead: powering off (PSCI SYSTEM_OFF)");
        power::power_off();
    }
    if config.partitions.is_empty() {
        println!("no partitions configured; CPUs idle (in QEMU, Ctrl-A X quits)");
    }
    smp::launch_partitions();
    partitions::run_this_cpu()
}

/// Reads an address outside the hypervisor's map: the data abort must be reported.
fn deliberate_fault() -> ! {
    println!("self-test: reading unmapped address 0x1000 at EL2");
    // SAFETY: not memory-safe by intent: the address is unmapped, so the load traps to the EL2
    // vectors, which report it and stop the machine; the load never completes.
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

fn print_board(board: &Board, console: Option<ConsoleSource>) {
    let gic = match &board.gic {
        Some(Gic::V2 {
            distributor,
            hypervisor_interface,
            ..
        }) => alloc::format!(
            "GICv2 (distributor {:#x}{})",
            distributor.start,
            if hypervisor_interface.is_some() {
                ", virtualization extensions"
            } else {
                ""
            }
        ),
        Some(Gic::V3 {
            distributor,
            redistributors,
        }) => alloc::format!(
            "GICv3 (distributor {:#x}, {} redistributor region(s))",
            distributor.start,
            redistributors.len()
        ),
        None => "no GIC".into(),
    };
    let (major, minor) = psci::version();
    println!("board: {}; {} CPUs; {gic}", board.model, board.cpus.len());
    if let Some(uart) = board.uart {
        let source = match console {
            Some(ConsoleSource::BoardFile) => "board file",
            _ => "device tree",
        };
        println!(
            "console: {} at {:#x} ({source})",
            uart.kind.name(),
            uart.registers.start
        );
    }
    println!(
        "PSCI {major}.{minor} via {:?}",
        board.psci.unwrap_or(PsciConduit::Smc)
    );
}

fn print_memory_map(map: &MemoryMap) {
    println!("memory map:");
    for bank in &map.ram {
        println!("  RAM   {bank}");
    }
    for (range, usage) in &map.used {
        match partitions::describe_host_range(range).filter(|_| *usage == Usage::Partition) {
            Some(name) => println!("  used  {range} {} ({name})", usage.name()),
            None => println!("  used  {range} {}", usage.name()),
        }
    }
    for range in map.free.ranges() {
        println!("  free  {range}");
    }
}

/// Builds the hypervisor's identity map: image sections with W^X, the rest of RAM read-write
/// and never executable, the console and GIC frames as device memory. Nothing else is mapped,
/// so a stray hypervisor access faults and is reported.
fn build_hypervisor_map(board: &Board, image: &ImageLayout) -> MmuSettings {
    let mut map = IdentityMap::<El2Stage1>::new(boot_failure);
    map.map_image(image.start, image.text_end, image.rodata_end, image.end);
    let mut rest_of_ram = PhysRangeSet::new();
    for &bank in &board.memory {
        rest_of_ram.insert(page_range(bank.start.as_u64(), bank.size()));
    }
    rest_of_ram.remove(page_range(image.start, image.end - image.start));
    for range in rest_of_ram.ranges() {
        map.map(range.start.as_u64(), range.end.as_u64(), READ_WRITE, "RAM");
    }
    let mut devices = PhysRangeSet::new();
    if let Some(uart) = board.uart {
        devices.insert(page_range(
            uart.registers.start.as_u64(),
            uart.registers.size(),
        ));
    }
    for frame in board.gic.iter().flat_map(Gic::frames) {
        devices.insert(page_range(frame.start.as_u64(), frame.size()));
    }
    for range in devices.ranges() {
        map.map(
            range.start.as_u64(),
            range.end.as_u64(),
            Memory::Device,
            "device",
        );
    }
    MmuSettings::for_table(&map.into_table(), El2Stage1::MAIR)
}
