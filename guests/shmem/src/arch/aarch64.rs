//! aarch64: the platform from the device tree (QEMU `virt` defaults), interrupts through the
//! GIC (INTIDs), MSI through GICD_SETSPI_NSR or a GICv2m frame, waits on the virtual timer,
//! and the runtime's identity map (0-1 GiB Device memory, 1-4 GiB and 384 GiB-1 TiB Normal).

use core::arch::asm;
use core::fmt;

use bulkhead_guest::gic::{self, GicError, Trigger};
use bulkhead_guest::platform::{self, GicLayout};
use bulkhead_guest::{cpu, irq, timer};

use super::Handler;
use crate::pci::{Mechanism, PciDevice, PciError};

pub use bulkhead_guest as runtime;
pub use bulkhead_guest::mmio;
pub use bulkhead_guest::{exit_fail, exit_fail_with, exit_pass};

/// ECAM base when the device tree names no `pci-host-ecam-generic` (QEMU virt, Bulkhead).
pub const DEFAULT_ECAM: usize = 0x3f00_0000;
/// The host bridge's 32-bit memory window when the device tree gives none: (base, size).
pub const DEFAULT_MMIO32: (u64, u64) = (0x1000_0000, 0x2eff_0000);
/// The host bridge's 64-bit prefetchable window when the device tree gives none.
pub const DEFAULT_MMIO64: (u64, u64) = (0x80_0000_0000, 0x80_0000_0000);
/// INTx of slot `s`, pin `p` (1 = INTA) is INTID `INTX_FIRST_INTID + (s + p - 1) % 4`.
pub const INTX_FIRST_INTID: u32 = 35;
/// GICv2m frame when the device tree names none (QEMU virt, Bulkhead).
pub const DEFAULT_GICV2M_FRAME: u64 = 0x0802_0000;
/// Offset of the SETSPI register in a GICv3 distributor and in a GICv2m frame.
const SETSPI: u64 = 0x40;
/// The first of the SPIs QEMU virt and Bulkhead leave for MSIs (96-127).
pub const FIRST_MSI: u32 = 96;

/// End of the first GiB: the identity map's Device-nGnRnE part (ECAM, 32-bit BARs, ...).
const IDENTITY_DEVICE_END: u64 = 0x4000_0000;
/// The identity map's other Device-nGnRnE GiB (QEMU virt's high PCIe ECAM).
const IDENTITY_HIGH_DEVICE: (u64, u64) = (0x40_0000_0000, 0x40_4000_0000);
/// Where shared memory can be so the identity map reaches it as Normal memory: RAM-like
/// space 1-4 GiB, or the shared-memory windows 384 GiB - 1 TiB.
const SHARED_MEMORY_WINDOWS: [(u64, u64); 2] = [
    (0x4000_0000, 0x1_0000_0000),
    (0x60_0000_0000, 0x100_0000_0000),
];

/// The partition's name: `NAME` from the device tree's `model = "bulkhead,NAME"`. Elsewhere
/// (plain QEMU, `-append NAME`): the first word of `/chosen/bootargs`.
pub fn partition_name() -> Option<&'static str> {
    if let Some(name) = platform::model().and_then(|model| model.strip_prefix("bulkhead,")) {
        return Some(name);
    }
    platform::bootargs().and_then(|args| args.split_whitespace().next())
}

/// Whether `/chosen/bootargs` holds `option` as a word after the first (plain-QEMU test knobs
/// such as `msix`; a Bulkhead partition's bootargs come from its configuration).
pub fn boot_option(option: &str) -> bool {
    platform::bootargs()
        .is_some_and(|args| args.split_whitespace().skip(1).any(|word| word == option))
}

/// The partition's command line: `/chosen/bootargs` (the VM file's `cmdline`, then
/// `bulkhead.restarts=N`).
pub fn command_line() -> Option<&'static str> {
    platform::bootargs()
}

/// The partition's RAM (base, size), from the device tree.
pub fn ram() -> Option<(u64, u64)> {
    platform::ram()
}

/// Whether `[address, address + len)` is non-zero and Device memory in the identity map.
pub fn is_device_range(address: u64, len: u64) -> bool {
    let Some(end) = address.checked_add(len) else {
        return false;
    };
    address != 0
        && (end <= IDENTITY_DEVICE_END
            || (address >= IDENTITY_HIGH_DEVICE.0 && end <= IDENTITY_HIGH_DEVICE.1))
}

/// Whether `[address, address + len)` lies in a window the identity map has as Normal memory
/// for shared memory.
pub fn is_shared_memory_range(address: u64, len: u64) -> bool {
    let Some(end) = address.checked_add(len) else {
        return false;
    };
    SHARED_MEMORY_WINDOWS
        .iter()
        .any(|&(start, stop)| address >= start && end <= stop)
}

/// Completes this vCPU's earlier memory writes (DSB ISH) before what follows.
pub fn complete_writes() {
    // SAFETY: a barrier; no memory or register state beyond ordering is affected.
    unsafe { asm!("dsb ish", options(nostack, preserves_flags)) };
}

/// ECAM, the only configuration mechanism here.
pub fn default_mechanism() -> Mechanism {
    Mechanism::Ecam(ecam().unwrap_or(DEFAULT_ECAM))
}

/// The device tree's `pci-host-ecam-generic` window, else [`DEFAULT_ECAM`].
pub fn ecam() -> Option<usize> {
    let base = platform::device_tree()
        .and_then(|tree| {
            let node = tree.find_compatible(&["pci-host-ecam-generic"])?;
            let region = node.reg()?.next()?;
            Some(region.starting_address as usize)
        })
        .filter(|&base| is_device_range(base as u64, 1 << 20))
        .unwrap_or(DEFAULT_ECAM);
    Some(base)
}

/// The host bridge's memory window from its `ranges` (32-bit, or 64-bit prefetchable), else
/// the `virt` default.
pub fn pci_window(is_64: bool) -> Option<(u64, u64)> {
    let from_tree = platform::device_tree().and_then(|tree| {
        let node = tree.find_compatible(&["pci-host-ecam-generic"])?;
        let ranges = node.property("ranges")?.value;
        // PCI child address (3 cells), parent address (2 cells), size (2 cells).
        let cell = |entry: &[u8], index: usize| -> Option<u64> {
            let bytes = entry.get(index * 4..index * 4 + 4)?;
            Some(u64::from(u32::from_be_bytes(bytes.try_into().ok()?)))
        };
        ranges.chunks_exact(28).find_map(|entry| {
            let space = (cell(entry, 0)? >> 24) & 3;
            let wanted = if is_64 { 3 } else { 2 };
            if space != wanted {
                return None;
            }
            let parent = (cell(entry, 3)? << 32) | cell(entry, 4)?;
            let size = (cell(entry, 5)? << 32) | cell(entry, 6)?;
            Some((parent, size))
        })
    });
    Some(from_tree.unwrap_or(if is_64 {
        DEFAULT_MMIO64
    } else {
        DEFAULT_MMIO32
    }))
}

/// No port I/O on aarch64: every register reads as all ones (no device).
pub fn config_port_read(_slot: u8, _offset: usize) -> u32 {
    u32::MAX
}

/// No port I/O on aarch64: writes go nowhere.
pub fn config_port_write(_slot: u8, _offset: usize, _value: u32) {}

/// The GIC INTID a function's INTx raises (level-sensitive): slot and pin swizzled onto
/// INTIDs 35-38 as the platform's `interrupt-map` says.
pub fn intx(device: &PciDevice) -> Result<Interrupt, PciError> {
    match device.interrupt_pin() {
        pin @ 1..=4 => Ok(Interrupt::new(
            INTX_FIRST_INTID + (u32::from(device.slot()) + u32::from(pin) - 1) % 4,
        )),
        _ => Err(PciError::NoInterruptPin),
    }
}

/// The `nth` MMIO QNX shmem device in the device tree (a node whose `compatible` mentions
/// `shm`, e.g. `qvm,guest_shm`, with `reg` and a GIC SPI or PPI in `interrupts`): its factory
/// page and interrupt.
pub fn mmio_shmem(nth: usize) -> Option<(u64, Interrupt)> {
    let tree = platform::device_tree()?;
    tree.all_nodes()
        .filter_map(|node| {
            let compatible = node.compatible()?;
            let is_shmem = compatible
                .all()
                .any(|name| name.contains("shm") && !name.contains("ivshmem"));
            if !is_shmem {
                return None;
            }
            let loc = node.reg()?.next()?.starting_address as u64;
            let cells = node.property("interrupts")?.value;
            let cell = |index: usize| -> Option<u32> {
                let bytes = cells.get(index * 4..index * 4 + 4)?;
                Some(u32::from_be_bytes(bytes.try_into().ok()?))
            };
            // GIC binding: <type number flags>, type 0 = SPI (INTID 32 + n), 1 = PPI (16 + n).
            let intid = match cell(0)? {
                0 => cell(1)?.checked_add(32)?,
                1 => cell(1)?.checked_add(16)?,
                _ => return None,
            };
            Some((loc, Interrupt::new(intid)))
        })
        .nth(nth)
}

/// The interrupt with GIC INTID `intid`.
pub fn wired(intid: u32) -> Interrupt {
    Interrupt::new(intid)
}

/// An interrupt: its GIC INTID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interrupt {
    intid: u32,
}

impl Interrupt {
    const fn new(intid: u32) -> Self {
        Self { intid }
    }

    /// The INTID.
    pub fn number(&self) -> u32 {
        self.intid
    }

    /// What handlers get and dispatch by: the INTID.
    pub fn key(&self) -> u32 {
        self.intid
    }

    /// Shown with its kind: `INTID 36`.
    pub fn labelled(&self) -> impl fmt::Display {
        Labelled(*self)
    }
}

/// The bare INTID (`36`).
impl fmt::Display for Interrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.intid)
    }
}

struct Labelled(Interrupt);

impl fmt::Display for Labelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "INTID {}", self.0.intid)
    }
}

/// The GIC refused something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterruptError(pub GicError);

impl From<GicError> for InterruptError {
    fn from(error: GicError) -> Self {
        InterruptError(error)
    }
}

impl fmt::Display for InterruptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GIC: {:?}", self.0)
    }
}

/// Sets up this vCPU's GIC interface (and the distributor on vCPU 0).
pub fn init_interrupts() -> Result<(), InterruptError> {
    gic::init().map_err(InterruptError)
}

fn register(intid: u32, handler: Handler) -> Result<(), InterruptError> {
    irq::register(intid, handler).map_err(|_| InterruptError(GicError::InvalidIntid(intid)))
}

/// Installs `handler` for a level-sensitive interrupt, configures it so and enables it on
/// this vCPU. Returns it as routed (unchanged here).
pub fn enable_level(interrupt: Interrupt, handler: Handler) -> Result<Interrupt, InterruptError> {
    register(interrupt.intid, handler)?;
    gic::set_trigger(interrupt.intid, Trigger::Level)?;
    gic::enable(interrupt.intid)?;
    Ok(interrupt)
}

/// Installs `handler` for MSIs on INTID `intid` (edge-triggered SPI) and enables it.
pub fn enable_msi(intid: u32, handler: Handler) -> Result<Interrupt, InterruptError> {
    register(intid, handler)?;
    gic::set_trigger(intid, Trigger::Edge)?;
    gic::enable(intid)?;
    Ok(Interrupt::new(intid))
}

/// Where an MSI writes to raise an SPI: GICv3 GICD_SETSPI_NSR, or the GICv2m frame's
/// MSI_SETSPI_NS (the device tree's `arm,gic-v2m-frame`, else [`DEFAULT_GICV2M_FRAME`]).
pub fn msi_address() -> u64 {
    match platform::gic() {
        GicLayout::V3 { distributor, .. } => distributor as u64 + SETSPI,
        GicLayout::V2 { .. } => {
            let frame = platform::device_tree()
                .and_then(|tree| {
                    let node = tree.find_compatible(&["arm,gic-v2m-frame"])?;
                    Some(node.reg()?.next()?.starting_address as u64)
                })
                .unwrap_or(DEFAULT_GICV2M_FRAME);
            frame + SETSPI
        }
    }
}

/// The MSI message (address, data) that raises `interrupt`: data = INTID.
pub fn msi_message(interrupt: &Interrupt) -> (u64, u32) {
    (msi_address(), interrupt.intid)
}

/// Interrupt mask state as [`disable_interrupts`] found it (DAIF).
pub type SavedInterrupts = u64;

/// Masks IRQs; returns the previous state for [`restore_interrupts`].
pub fn disable_interrupts() -> SavedInterrupts {
    cpu::disable_interrupts()
}

/// Puts back what [`disable_interrupts`] returned.
pub fn restore_interrupts(saved: SavedInterrupts) {
    cpu::restore_interrupts(saved)
}

/// Unmasks IRQs.
pub fn enable_interrupts() {
    cpu::enable_interrupts()
}

/// Called with IRQs masked: waits for an interrupt (WFI returns for a pending one even while
/// masked), lets its handler run, and returns with IRQs masked again.
pub fn idle() {
    cpu::wait_for_interrupt();
    cpu::enable_interrupts();
    cpu::disable_interrupts();
}

/// VM exits are not exposed on aarch64 (the benchmark counts instructions with the PMU).
pub fn vm_exits() -> Option<u64> {
    None
}

/// Nor are the hypervisor's counters of [`crate::exchange::Counters`].
pub fn hypervisor_counters() -> Option<crate::exchange::Counters> {
    None
}

/// The virtual counter.
pub fn counter() -> u64 {
    timer::counter()
}

/// Counter ticks in `ms` milliseconds.
pub fn ticks_from_ms(ms: u64) -> u64 {
    timer::ticks_from_ms(ms)
}

/// Installs `handler` for the virtual timer's PPI and enables it on this vCPU.
pub fn install_timer(handler: Handler) -> Result<(), InterruptError> {
    register(timer::VIRTUAL_TIMER_INTID, handler)?;
    gic::enable(timer::VIRTUAL_TIMER_INTID)?;
    Ok(())
}

/// Fires the timer interrupt `ticks` counter ticks from now.
pub fn arm_timer(ticks: u64) {
    timer::arm_virtual_timer(ticks)
}

/// Stops the timer (its level line drops).
pub fn stop_timer() {
    timer::stop_virtual_timer()
}
