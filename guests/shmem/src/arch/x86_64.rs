//! x86_64: the platform from the boot information's device list, level interrupts through the
//! I/O APIC (pins routed to IDT vectors this module hands out), MSIs straight to the x2APIC,
//! waits on the x2APIC timer (TSC ticks, one-shot, armed once for waits that follow each other
//! quickly: every timer write is a VM exit), PCI configuration through ports 0xCF8/0xCFC or the
//! ECAM; the identity map covers 0..1 TiB write-back (see `bulkhead_guest_x86`).

use core::fmt;
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering, fence};

use bulkhead_guest_x86::boot_info::{self, DeviceKind};
use bulkhead_guest_x86::ioapic::{IoApic, IoApicError, Polarity, Redirection, Trigger};
use bulkhead_guest_x86::{interrupts, port, time, x2apic};

use super::Handler;
use crate::pci::{Mechanism, PciDevice, PciError};

pub use bulkhead_guest_x86 as runtime;
pub use bulkhead_guest_x86::mmio;
pub use bulkhead_guest_x86::{exit_fail, exit_fail_with, exit_pass};

/// End of the identity map (1 TiB).
const IDENTITY_END: u64 = 0x100_0000_0000;
/// Configuration mechanism #1: the address port and the data ports.
const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;
/// The wait timer's vector.
const TIMER_VECTOR: u8 = interrupts::FIRST;
/// Vectors for I/O APIC pins, handed out in order: FIRST_PIN_VECTOR..FIRST_MSI.
const FIRST_PIN_VECTOR: u8 = interrupts::FIRST + 1;
/// Vectors left for MSIs: FIRST_MSI..=LAST_VECTOR (the runtime's IDT stubs end there).
pub const FIRST_MSI: u32 = 0x28;
const LAST_VECTOR: u32 = interrupts::FIRST as u32 + interrupts::COUNT as u32 - 1;
/// I/O APIC pins that can be routed.
const PINS: usize = 24;
/// The Interrupt Line value of a function without a routed INTx.
const NO_INTERRUPT_LINE: u8 = 0xff;

/// The vector each pin is routed to (0: none yet).
static PIN_VECTORS: [AtomicU8; PINS] = [const { AtomicU8::new(0) }; PINS];
/// The next pin vector to hand out.
static NEXT_PIN_VECTOR: AtomicU8 = AtomicU8::new(FIRST_PIN_VECTOR);

/// The partition's name from the boot information.
pub fn partition_name() -> Option<&'static str> {
    boot_info::present().then(boot_info::name)
}

/// Whether the partition's command line (the VM file's `cmdline`) has word `option`.
pub fn boot_option(option: &str) -> bool {
    command_line().is_some_and(|line| line.split_whitespace().any(|word| word == option))
}

/// The partition's command line from the boot information (the VM file's `cmdline`, then
/// `bulkhead.restarts=N`).
pub fn command_line() -> Option<&'static str> {
    boot_info::command_line()
}

/// The partition's RAM: from guest-physical 0, the size the boot information gives.
pub fn ram() -> Option<(u64, u64)> {
    boot_info::ram_size().map(|size| (0, size))
}

/// Whether `[address, address + len)` is non-zero, inside the identity map and not RAM: where
/// device registers (trapped by the hypervisor) may be.
pub fn is_device_range(address: u64, len: u64) -> bool {
    address != 0 && is_outside_ram(address, len)
}

/// Whether `[address, address + len)` is inside the identity map (all write-back) and not RAM.
pub fn is_shared_memory_range(address: u64, len: u64) -> bool {
    is_outside_ram(address, len)
}

fn is_outside_ram(address: u64, len: u64) -> bool {
    let Some(end) = address.checked_add(len) else {
        return false;
    };
    let in_ram =
        ram().is_some_and(|(base, size)| address < base.saturating_add(size) && base < end);
    end <= IDENTITY_END && !in_ram
}

/// Completes this vCPU's earlier memory writes (MFENCE) before what follows.
pub fn complete_writes() {
    fence(Ordering::SeqCst);
}

/// Configuration mechanism #1 (ports 0xCF8/0xCFC), which every PC has.
pub fn default_mechanism() -> Mechanism {
    Mechanism::PortIo
}

/// The ECAM of bus 0 the boot information lists.
pub fn ecam() -> Option<usize> {
    let device = boot_info::device(DeviceKind::PciEcam, 0)?;
    let base = usize::try_from(device.base).ok()?;
    is_device_range(device.base, 1 << 20).then_some(base)
}

/// The host bridge's 32-bit or 64-bit prefetchable memory window the boot information lists.
pub fn pci_window(is_64: bool) -> Option<(u64, u64)> {
    let kind = if is_64 {
        DeviceKind::PciMemory64
    } else {
        DeviceKind::PciMemory32
    };
    boot_info::device(kind, 0).map(|device| (device.base, device.size))
}

/// The CONFIG_ADDRESS value for dword `offset` of function 0 of `slot` on bus 0: enable
/// (bit 31), device 15:11, register 7:2.
pub fn config_address(slot: u8, offset: usize) -> u32 {
    (1 << 31) | ((u32::from(slot) & 0x1f) << 11) | (offset as u32 & 0xfc)
}

/// Reads configuration dword `offset` (aligned, below 0x100) of function 0 of `slot`.
pub fn config_port_read(slot: u8, offset: usize) -> u32 {
    if offset >= 0x100 {
        return u32::MAX;
    }
    let saved = interrupts::save_and_disable();
    // SAFETY: the PCI configuration ports the partition's host bridge answers; selecting and
    // reading a register touch no memory (BARs are only read, never moved, here).
    let value = unsafe {
        port::out32(CONFIG_ADDRESS, config_address(slot, offset));
        port::in32(CONFIG_DATA)
    };
    interrupts::restore(saved);
    value
}

/// Writes configuration dword `offset` (aligned, below 0x100) of function 0 of `slot`.
pub fn config_port_write(slot: u8, offset: usize, value: u32) {
    if offset >= 0x100 {
        return;
    }
    let saved = interrupts::save_and_disable();
    // SAFETY: as in `config_port_read`; a configuration write changes the device, never RAM.
    unsafe {
        port::out32(CONFIG_ADDRESS, config_address(slot, offset));
        port::out32(CONFIG_DATA, value);
    }
    interrupts::restore(saved);
}

/// A function's INTx: the I/O APIC pin in its Interrupt Line register ([`Interrupt::Unrouted`]
/// when that reads 0xFF: the partition has no I/O APIC).
pub fn intx(device: &PciDevice) -> Result<Interrupt, PciError> {
    if !(1..=4).contains(&device.interrupt_pin()) {
        return Err(PciError::NoInterruptPin);
    }
    match device.interrupt_line() {
        NO_INTERRUPT_LINE => Ok(Interrupt::Unrouted),
        line => Ok(Interrupt::Pin {
            pin: u32::from(line),
            vector: None,
        }),
    }
}

/// The `nth` MMIO QNX shmem factory page the boot information lists, with its I/O APIC pin.
pub fn mmio_shmem(nth: usize) -> Option<(u64, Interrupt)> {
    let device = boot_info::device(DeviceKind::QnxShmem, nth)?;
    Some((device.base, wired(device.number)))
}

/// The interrupt of I/O APIC pin `pin`.
pub fn wired(pin: u32) -> Interrupt {
    Interrupt::Pin { pin, vector: None }
}

/// An interrupt as the x86 platform names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupt {
    /// An I/O APIC pin, with the vector it is routed to once enabled.
    Pin {
        /// The pin.
        pin: u32,
        /// Its vector, once routed.
        vector: Option<u8>,
    },
    /// A message-signalled interrupt on this vector.
    Msi {
        /// The vector.
        vector: u8,
    },
    /// A PCI function whose INTx goes nowhere (Interrupt Line 0xFF).
    Unrouted,
}

impl Interrupt {
    /// The pin, or the MSI vector (0xFF: unrouted).
    pub fn number(&self) -> u32 {
        match *self {
            Interrupt::Pin { pin, .. } => pin,
            Interrupt::Msi { vector } => u32::from(vector),
            Interrupt::Unrouted => u32::from(NO_INTERRUPT_LINE),
        }
    }

    /// What handlers get and dispatch by: the vector (0 before a pin is routed).
    pub fn key(&self) -> u32 {
        match *self {
            Interrupt::Pin { vector, .. } => vector.map_or(0, u32::from),
            Interrupt::Msi { vector } => u32::from(vector),
            Interrupt::Unrouted => 0,
        }
    }

    /// Shown with its kind (as [`Display`](fmt::Display) does on x86_64).
    pub fn labelled(&self) -> impl fmt::Display {
        *self
    }
}

/// `IOAPIC pin 17`, `IOAPIC pin 17 (vector 0x21)`, `vector 0x28`, `no interrupt`.
impl fmt::Display for Interrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Interrupt::Pin { pin, vector: None } => write!(f, "IOAPIC pin {pin}"),
            Interrupt::Pin {
                pin,
                vector: Some(vector),
            } => write!(f, "IOAPIC pin {pin} (vector {vector:#x})"),
            Interrupt::Msi { vector } => write!(f, "vector {vector:#x}"),
            Interrupt::Unrouted => f.write_str("no interrupt"),
        }
    }
}

/// Why an interrupt could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptError {
    /// The I/O APIC refused or is absent.
    IoApic(IoApicError),
    /// The device's INTx is not routed (the partition has no I/O APIC).
    Unrouted,
    /// No vector left for another pin.
    NoVector,
    /// An MSI vector outside FIRST_MSI..=47.
    BadMsiVector(u32),
    /// The runtime has no IDT stub for this vector.
    NoStub(u32),
    /// Not an interrupt of the kind asked for.
    WrongKind,
}

impl From<IoApicError> for InterruptError {
    fn from(error: IoApicError) -> Self {
        InterruptError::IoApic(error)
    }
}

impl fmt::Display for InterruptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InterruptError::IoApic(error) => write!(f, "I/O APIC: {error}"),
            InterruptError::Unrouted => f.write_str("INTx is not routed (no I/O APIC)"),
            InterruptError::NoVector => f.write_str("no free vector for another pin"),
            InterruptError::BadMsiVector(vector) => write!(
                f,
                "MSI vector {vector:#x} is outside {FIRST_MSI:#x}..={LAST_VECTOR:#x}"
            ),
            InterruptError::NoStub(vector) => write!(f, "no IDT stub for vector {vector:#x}"),
            InterruptError::WrongKind => f.write_str("not a wired interrupt"),
        }
    }
}

/// Installs the IDT and software-enables this vCPU's x2APIC.
pub fn init_interrupts() -> Result<(), InterruptError> {
    interrupts::install();
    x2apic::enable();
    Ok(())
}

fn register(vector: u32, handler: Handler) -> Result<(), InterruptError> {
    interrupts::register(vector, handler).map_err(|_| InterruptError::NoStub(vector))
}

/// The vector of `pin`, handing out the next free one the first time.
fn pin_vector(pin: u32) -> Result<u8, InterruptError> {
    let slot = PIN_VECTORS
        .get(pin as usize)
        .ok_or(InterruptError::IoApic(IoApicError::NoPin(pin)))?;
    let known = slot.load(Ordering::Acquire);
    if known != 0 {
        return Ok(known);
    }
    let vector = NEXT_PIN_VECTOR
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |next| {
            (u32::from(next) < FIRST_MSI).then_some(next + 1)
        })
        .map_err(|_| InterruptError::NoVector)?;
    match slot.compare_exchange(0, vector, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Ok(vector),
        // Another vCPU routed the pin meanwhile: use its vector (this one stays unused).
        Err(other) => Ok(other),
    }
}

/// Routes a level-triggered, active-high I/O APIC pin to a vector of its own, delivered to
/// this vCPU, with `handler` installed. Returns the interrupt with its vector.
pub fn enable_level(interrupt: Interrupt, handler: Handler) -> Result<Interrupt, InterruptError> {
    let pin = match interrupt {
        Interrupt::Pin { pin, .. } => pin,
        Interrupt::Unrouted => return Err(InterruptError::Unrouted),
        Interrupt::Msi { .. } => return Err(InterruptError::WrongKind),
    };
    let ioapic = IoApic::from_boot_info()?;
    let vector = pin_vector(pin)?;
    register(u32::from(vector), handler)?;
    ioapic.route(
        pin,
        Redirection {
            vector,
            trigger: Trigger::Level,
            polarity: Polarity::ActiveHigh,
            destination: x2apic::id() as u8,
            masked: false,
        },
    )?;
    Ok(Interrupt::Pin {
        pin,
        vector: Some(vector),
    })
}

/// Installs `handler` for MSIs on `vector` (FIRST_MSI..=47).
pub fn enable_msi(vector: u32, handler: Handler) -> Result<Interrupt, InterruptError> {
    if !(FIRST_MSI..=LAST_VECTOR).contains(&vector) {
        return Err(InterruptError::BadMsiVector(vector));
    }
    register(vector, handler)?;
    Ok(Interrupt::Msi {
        vector: vector as u8,
    })
}

/// The MSI address that reaches this vCPU: 0xFEE0_0000 | (APIC ID << 12).
pub fn msi_address() -> u64 {
    msi_address_of(x2apic::id())
}

/// The MSI address of APIC ID `apic_id` (physical destination, fixed delivery).
pub fn msi_address_of(apic_id: u32) -> u64 {
    0xfee0_0000 | (u64::from(apic_id & 0xff) << 12)
}

/// The MSI message (address, data) that raises `interrupt` on this vCPU: data = vector.
pub fn msi_message(interrupt: &Interrupt) -> (u64, u32) {
    (msi_address(), interrupt.key())
}

/// Whether interrupts were on, as [`disable_interrupts`] found them.
pub type SavedInterrupts = bool;

/// Turns interrupts off; returns the previous state for [`restore_interrupts`].
pub fn disable_interrupts() -> SavedInterrupts {
    interrupts::save_and_disable()
}

/// Puts back what [`disable_interrupts`] returned.
pub fn restore_interrupts(saved: SavedInterrupts) {
    interrupts::restore(saved)
}

/// Turns interrupts on.
pub fn enable_interrupts() {
    interrupts::enable()
}

/// Called with interrupts off: `sti; hlt` (an interrupt pending since before still ends the
/// HLT), its handler runs, then `cli`.
pub fn idle() {
    interrupts::wait()
}

/// Bulkhead's read-only MSR with this vCPU's VM exits so far (before the RDMSR itself).
const EXIT_COUNT_MSR: u32 = 0x4000_0100;

/// This vCPU's VM exits so far, as the hypervisor counts them.
pub fn vm_exits() -> Option<u64> {
    Some(x2apic::read(EXIT_COUNT_MSR))
}

/// Bulkhead's read-only MSR with the TSC ticks this vCPU spent in its guest (SVM; all-ones
/// where not counted), then five with its exits by class (NPF, HLT, physical interrupt,
/// RDMSR/WRMSR, other).
const GUEST_TIME_MSR: u32 = 0x4000_0101;
const EXIT_CLASS_MSRS: u32 = 0x4000_0102;

/// The TSC (the whole machine's instructions under QEMU's `-icount shift=0`), this vCPU's
/// exits, its time in the guest and its exits by class, read in that order; the last two
/// `None` where the hypervisor does not count them.
pub fn hypervisor_counters() -> Option<crate::exchange::Counters> {
    let tsc = time::tsc();
    let exits = x2apic::read(EXIT_COUNT_MSR);
    let guest_time = Some(x2apic::read(GUEST_TIME_MSR)).filter(|&time| time != u64::MAX);
    let classes = guest_time.map(|_| {
        let mut classes = [0; crate::exchange::EXIT_CLASSES.len()];
        for (msr, count) in (EXIT_CLASS_MSRS..).zip(classes.iter_mut()) {
            *count = x2apic::read(msr);
        }
        classes
    });
    Some(crate::exchange::Counters {
        tsc,
        exits,
        guest_time,
        classes,
    })
}

/// The time-stamp counter.
pub fn counter() -> u64 {
    time::tsc()
}

/// TSC ticks in `ms` milliseconds (from the rate CPUID gives: see `bulkhead_guest_x86::time`).
pub fn ticks_from_ms(ms: u64) -> u64 {
    time::ticks_from_ms(ms)
}

/// The TSC value at which the one-shot wait timer fires, as armed (0: not armed, or fired).
/// Shared-memory guests wait on one vCPU.
static ARMED_UNTIL: AtomicU64 = AtomicU64::new(0);

/// Installs `handler` for the wait timer's vector and sets the timer up (one-shot, TSC ticks):
/// arming it is then one TMICT write.
pub fn install_timer(handler: Handler) -> Result<(), InterruptError> {
    register(u32::from(TIMER_VECTOR), handler)?;
    x2apic::configure_timer(TIMER_VECTOR, false);
    ARMED_UNTIL.store(0, Ordering::Relaxed);
    Ok(())
}

/// Fires the timer interrupt `ticks` TSC ticks from now (at most 2^32 - 1: the caller
/// re-arms after an early wake-up), or earlier: a timer still armed from an earlier wait for
/// a time before then is left running (it wakes the wait early, which re-arms). Each TMICT
/// write costs a VM exit, so waits that follow each other quickly arm the timer once.
pub fn arm_timer(ticks: u64) {
    let now = time::tsc();
    let count = u32::try_from(ticks).unwrap_or(u32::MAX).max(1);
    let until = now.saturating_add(u64::from(count));
    let armed = ARMED_UNTIL.load(Ordering::Relaxed);
    if armed > now && armed <= until {
        return;
    }
    x2apic::set_timer_count(count);
    ARMED_UNTIL.store(until, Ordering::Relaxed);
}

/// Lets the wait timer go: one that has fired (its handler calls this) is no longer armed;
/// one still armed stays armed for the next wait (see [`arm_timer`]): its one interrupt at
/// most ends a later sleep early, which the wait loop tells from its condition.
pub fn stop_timer() {
    let armed = ARMED_UNTIL.load(Ordering::Relaxed);
    if armed != 0 && time::tsc() >= armed {
        ARMED_UNTIL.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_address_has_enable_slot_and_dword() {
        assert_eq!(config_address(0, 0), 0x8000_0000);
        assert_eq!(config_address(1, 0x3c), 0x8000_083c);
        assert_eq!(config_address(31, 0xff), 0x8000_f8fc);
        assert_eq!(config_address(33, 0x10), 0x8000_0810);
    }

    #[test]
    fn msi_address_names_the_apic() {
        assert_eq!(msi_address_of(0), 0xfee0_0000);
        assert_eq!(msi_address_of(1), 0xfee0_1000);
        assert_eq!(msi_address_of(0x1ff), 0xfeef_f000);
    }

    #[test]
    fn pins_get_distinct_vectors_once() {
        let first = pin_vector(17).unwrap();
        assert_eq!(pin_vector(17).unwrap(), first);
        let second = pin_vector(10).unwrap();
        assert_ne!(first, second);
        assert!(u32::from(second) < FIRST_MSI);
        assert!(pin_vector(24).is_err());
    }

    #[test]
    fn interrupts_show_their_kind() {
        extern crate std;
        use std::string::ToString;
        assert_eq!(wired(10).to_string(), "IOAPIC pin 10");
        let routed = Interrupt::Pin {
            pin: 17,
            vector: Some(0x21),
        };
        assert_eq!(routed.to_string(), "IOAPIC pin 17 (vector 0x21)");
        assert_eq!(routed.key(), 0x21);
        assert_eq!(Interrupt::Msi { vector: 0x28 }.to_string(), "vector 0x28");
        assert_eq!(Interrupt::Unrouted.number(), 0xff);
    }
}
