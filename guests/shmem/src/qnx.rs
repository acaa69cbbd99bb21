//! The QNX `vdev shmem` personality: a 4 KiB factory page (PCI 1C05:0001 BAR0, or MMIO at the
//! `loc` of the VM file) that creates, attaches and finds named regions; each attached region
//! is a control page (status, index, notify, detach) followed by its data pages.
//!
//! The device's interrupt (INTx, or the `intr` of the MMIO form) is level-sensitive: asserted
//! while any attached region has unread "notified by" bits or an unacknowledged membership
//! change; reading that region's status acknowledges both. [`Region::watch`] installs a
//! handler that does this and keeps what it read in a [`RegionEvents`].

use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use crate::arch::{self, Interrupt, InterruptError, mmio};
use crate::memory::{self, SharedMemory};
use crate::pci::{Bus, PciDevice, PciError};

/// PCI vendor ID (BlackBerry QNX).
pub const VENDOR_ID: u16 = 0x1c05;
/// PCI device ID of the guest shared-memory device.
pub const DEVICE_ID: u16 = 0x0001;
/// The factory page's signature.
pub const SIGNATURE: u64 = 0x4d53_4732_474d_5651;
/// Longest region name (the factory page holds 32 bytes with the NUL).
pub const NAME_MAX: usize = 31;
/// Page size the sizes count in.
pub const PAGE_SIZE: usize = 0x1000;
/// Clients a region can have (bits 0-15 of a mask).
pub const MAX_CLIENTS: u32 = 16;
/// `notify` mask meaning "every client but me".
pub const NOTIFY_ALL_OTHERS: u32 = u32::MAX;

const FACTORY_SIGNATURE: usize = 0x00;
const FACTORY_SHMEM: usize = 0x08;
const FACTORY_VECTOR: usize = 0x10;
const FACTORY_STATUS: usize = 0x14;
const FACTORY_SIZE: usize = 0x18;
const FACTORY_NAME: usize = 0x1c;
const FACTORY_FIND: usize = 0x3c;
const FACTORY_NAME_BYTES: usize = 32;

const CONTROL_STATUS: usize = 0x0;
const CONTROL_INDEX: usize = 0x4;
const CONTROL_NOTIFY: usize = 0x8;
const CONTROL_DETACH: usize = 0xc;

/// The factory page's status after a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// 0: done.
    Ok,
    /// 1: failed for another reason.
    UnknownFailure,
    /// 2: no memory for the region.
    NoMem,
    /// 3: the region has its 16 clients already.
    ClientMax,
    /// 4: empty, too long, unterminated, glob or non-printable characters.
    IllegalName,
    /// 5: refused by the VM's allow/deny list.
    NoPermission,
    /// 6: `find` of a region that does not exist.
    DoesNotExist,
    /// Any other value.
    Other(u32),
}

impl Status {
    /// The status register's value decoded.
    pub fn from_raw(raw: u32) -> Self {
        match raw {
            0 => Status::Ok,
            1 => Status::UnknownFailure,
            2 => Status::NoMem,
            3 => Status::ClientMax,
            4 => Status::IllegalName,
            5 => Status::NoPermission,
            6 => Status::DoesNotExist,
            other => Status::Other(other),
        }
    }

    /// The register value.
    pub fn raw(self) -> u32 {
        match self {
            Status::Ok => 0,
            Status::UnknownFailure => 1,
            Status::NoMem => 2,
            Status::ClientMax => 3,
            Status::IllegalName => 4,
            Status::NoPermission => 5,
            Status::DoesNotExist => 6,
            Status::Other(raw) => raw,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Status::Ok => "OK",
            Status::UnknownFailure => "UNKNOWN_FAILURE",
            Status::NoMem => "NOMEM",
            Status::ClientMax => "CLIENT_MAX",
            Status::IllegalName => "ILLEGAL_NAME",
            Status::NoPermission => "NO_PERMISSION",
            Status::DoesNotExist => "DOES_NOT_EXIST",
            Status::Other(raw) => return write!(f, "status {raw}"),
        };
        f.write_str(name)
    }
}

/// Why no factory page could be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FindError {
    /// No such device (PCI, or one the platform describes).
    NotFound,
    /// A PCI problem (BAR, interrupt pin).
    Pci(PciError),
    /// The MMIO location is not a page where device registers can be (aarch64: the first
    /// GiB; x86_64: below 1 TiB) outside RAM.
    BadLocation(u64),
    /// The factory page's signature is wrong.
    Signature(u64),
}

impl fmt::Display for FindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FindError::NotFound => f.write_str("no QNX shmem device"),
            FindError::Pci(error) => write!(f, "{error}"),
            FindError::BadLocation(address) => {
                write!(f, "factory page location {address:#x} is not usable")
            }
            FindError::Signature(signature) => {
                write!(
                    f,
                    "factory page signature {signature:#x}, not {SIGNATURE:#x}"
                )
            }
        }
    }
}

impl From<PciError> for FindError {
    fn from(error: PciError) -> Self {
        FindError::Pci(error)
    }
}

/// How the guest reaches the factory page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// PCI device in this slot of bus 0.
    Pci(u8),
    /// MMIO (`loc` and `intr` in the VM file).
    Mmio,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Pci(slot) => write!(f, "PCI slot {slot}"),
            Location::Mmio => f.write_str("MMIO"),
        }
    }
}

/// One QNX shmem device: its factory page and interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QnxShmem {
    factory: usize,
    interrupt: Interrupt,
    location: Location,
}

impl QnxShmem {
    /// The `nth` PCI device 1C05:0001: BAR0 is the factory page (memory decoding is turned
    /// on), INTx gives the interrupt.
    pub fn pci(bus: &Bus, nth: usize) -> Result<Self, FindError> {
        let device = bus
            .find(VENDOR_ID, DEVICE_ID, nth)
            .ok_or(FindError::NotFound)?;
        Self::from_pci(device)
    }

    /// The factory page of this PCI device.
    pub fn from_pci(device: PciDevice) -> Result<Self, FindError> {
        let bar = device.assigned_bar(0)?;
        let factory = usable_factory(bar.address)?;
        let interrupt = device.intx()?;
        device.enable_memory();
        Self::checked(factory, interrupt, Location::Pci(device.slot()))
    }

    /// The factory page at `loc` with the wired interrupt `number` (the MMIO form: `loc` and
    /// `intr` of the VM file; aarch64 a GIC INTID, x86_64 an I/O APIC pin). `loc` must be a
    /// page where device registers can be, outside RAM.
    pub fn mmio(loc: u64, number: u32) -> Result<Self, FindError> {
        Self::mmio_with(loc, arch::wired(number))
    }

    fn mmio_with(loc: u64, interrupt: Interrupt) -> Result<Self, FindError> {
        let factory = usable_factory(loc)?;
        Self::checked(factory, interrupt, Location::Mmio)
    }

    /// The `nth` MMIO factory page the platform describes: aarch64 a device-tree node whose
    /// `compatible` mentions `shm` (e.g. `qvm,guest_shm`) with `reg` and a GIC SPI in
    /// `interrupts`; x86_64 a QNX shmem entry of the boot information's device list.
    pub fn from_platform(nth: usize) -> Result<Self, FindError> {
        let (loc, interrupt) = arch::mmio_shmem(nth).ok_or(FindError::NotFound)?;
        Self::mmio_with(loc, interrupt)
    }

    fn checked(
        factory: usize,
        interrupt: Interrupt,
        location: Location,
    ) -> Result<Self, FindError> {
        let device = Self {
            factory,
            interrupt,
            location,
        };
        let signature = device.signature();
        if signature != SIGNATURE {
            return Err(FindError::Signature(signature));
        }
        Ok(device)
    }

    /// Guest-physical address of the factory page.
    pub fn factory_address(&self) -> u64 {
        self.factory as u64
    }

    /// The interrupt the device raises (aarch64: its INTID; x86_64: its I/O APIC pin).
    pub fn interrupt(&self) -> Interrupt {
        self.interrupt
    }

    /// PCI or MMIO.
    pub fn location(&self) -> Location {
        self.location
    }

    fn read32(&self, offset: usize) -> u32 {
        // SAFETY: a register of the factory page, a 4 KiB device page where the identity map
        // has device registers (checked by `usable_factory`); reads have no effect on memory.
        unsafe { mmio::read32(self.factory + offset) }
    }

    fn read64(&self, offset: usize) -> u64 {
        // SAFETY: as for `read32`; the 64-bit registers (signature, shmem) are 8-byte aligned,
        // and a volatile u64 read is one access (`ldr x` / `mov r64`).
        unsafe { core::ptr::read_volatile((self.factory + offset) as *const u64) }
    }

    fn write32(&self, offset: usize, value: u32) {
        // SAFETY: a register of the factory page; writing it asks the hypervisor for a region
        // and never touches guest RAM.
        unsafe { mmio::write32(self.factory + offset, value) }
    }

    /// The signature register.
    pub fn signature(&self) -> u64 {
        self.read64(FACTORY_SIGNATURE)
    }

    /// The vector register (the device's interrupt as the hypervisor reports it).
    pub fn vector(&self) -> u32 {
        self.read32(FACTORY_VECTOR)
    }

    /// Creates region `name` with `pages` data pages, or attaches to it if it exists (then its
    /// size is the existing one). Names longer than [`NAME_MAX`] are refused here with
    /// [`Status::IllegalName`]; everything else is the hypervisor's verdict.
    pub fn attach(&self, name: &str, pages: u32) -> Result<Region, Status> {
        self.request(name, FACTORY_SIZE, pages)
    }

    /// Attaches to region `name` only if it exists ([`Status::DoesNotExist`] otherwise).
    pub fn find(&self, name: &str) -> Result<Region, Status> {
        self.request(name, FACTORY_FIND, 0)
    }

    fn request(&self, name: &str, register: usize, value: u32) -> Result<Region, Status> {
        let bytes = name.as_bytes();
        if bytes.len() > NAME_MAX {
            return Err(Status::IllegalName);
        }
        let mut field = [0u8; FACTORY_NAME_BYTES];
        if let Some(prefix) = field.get_mut(..bytes.len()) {
            prefix.copy_from_slice(bytes);
        }
        // The name goes in as eight aligned words, NUL-padded, before the request register.
        for (index, word) in field.chunks_exact(4).enumerate() {
            let word = u32::from_le_bytes(word.try_into().unwrap_or([0; 4]));
            self.write32(FACTORY_NAME + index * 4, word);
        }
        self.write32(register, value);
        let status = Status::from_raw(self.read32(FACTORY_STATUS));
        if status != Status::Ok {
            return Err(status);
        }
        let control = self.read64(FACTORY_SHMEM);
        let pages = self.read32(FACTORY_SIZE);
        let len = (pages as usize).saturating_mul(PAGE_SIZE);
        let data = control.checked_add(PAGE_SIZE as u64);
        let fits = data.and_then(|data| data.checked_add(len as u64));
        let reachable = control.is_multiple_of(PAGE_SIZE as u64)
            && fits.is_some_and(|end| arch::is_shared_memory_range(control, end - control));
        if !reachable {
            return Err(Status::UnknownFailure);
        }
        let mut stored = [0u8; NAME_MAX];
        if let Some(prefix) = stored.get_mut(..bytes.len()) {
            prefix.copy_from_slice(bytes);
        }
        Ok(Region {
            control: control as usize,
            // SAFETY: the hypervisor maps the data pages right after the control page while
            // the region is attached (the range was checked to be where the identity map has
            // normal memory for it); `Region::detach` consumes the region, and no Rust object
            // lives there.
            data: unsafe { SharedMemory::new(control as usize + PAGE_SIZE, len) },
            pages,
            interrupt: self.interrupt,
            name: stored,
            name_len: bytes.len(),
        })
    }
}

/// A factory page address where the identity map has device registers, not RAM.
fn usable_factory(address: u64) -> Result<usize, FindError> {
    let page = PAGE_SIZE as u64;
    let end = address.saturating_add(page);
    let in_device_part = address.is_multiple_of(page) && arch::is_device_range(address, page);
    let in_ram =
        arch::ram().is_some_and(|(base, size)| address < base.saturating_add(size) && base < end);
    if !in_device_part || in_ram {
        return Err(FindError::BadLocation(address));
    }
    Ok(address as usize)
}

/// A region's control-page status: who notified me since the last read, who is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionStatus(pub u32);

impl RegionStatus {
    /// Clients that notified me since my last status read (bit = client index).
    pub fn notified(self) -> u16 {
        self.0 as u16
    }

    /// Clients attached now (bit = client index), me included.
    pub fn active(self) -> u16 {
        (self.0 >> 16) as u16
    }
}

/// An attached region.
#[derive(Debug)]
pub struct Region {
    control: usize,
    data: SharedMemory,
    pages: u32,
    interrupt: Interrupt,
    name: [u8; NAME_MAX],
    name_len: usize,
}

impl Region {
    /// The name it was attached by.
    pub fn name(&self) -> &str {
        let bytes = self.name.get(..self.name_len).unwrap_or(&[]);
        core::str::from_utf8(bytes).unwrap_or("?")
    }

    /// Guest-physical address of the control page.
    pub fn control_address(&self) -> u64 {
        self.control as u64
    }

    /// The data pages.
    pub fn data(&self) -> SharedMemory {
        self.data
    }

    /// Data pages (the region's real size, which the first attacher chose).
    pub fn pages(&self) -> u32 {
        self.pages
    }

    /// The device's interrupt.
    pub fn interrupt(&self) -> Interrupt {
        self.interrupt
    }

    fn read32(&self, offset: usize) -> u32 {
        // SAFETY: a register of this region's control page, mapped (trapped) while attached;
        // `detach` consumes the region. Status reads clear notify bits, which is their
        // documented effect.
        unsafe { core::ptr::read_volatile((self.control + offset) as *const u32) }
    }

    fn write32(&self, offset: usize, value: u32) {
        // SAFETY: as for `read32`; control-page writes signal peers or detach, never touch RAM.
        unsafe { core::ptr::write_volatile((self.control + offset) as *mut u32, value) }
    }

    /// My client index (0-15).
    pub fn index(&self) -> u32 {
        self.read32(CONTROL_INDEX)
    }

    /// Reads (and so clears) the status. With [`watch`](Self::watch) active use
    /// [`RegionEvents::poll`] instead, or the handler's view and this one split the bits.
    pub fn status(&self) -> RegionStatus {
        RegionStatus(self.read32(CONTROL_STATUS))
    }

    /// Notifies the clients in `mask` (bit = client index; [`NOTIFY_ALL_OTHERS`] = all but
    /// me), after completing this vCPU's earlier writes to the region.
    pub fn notify(&self, mask: u32) {
        memory::complete_writes();
        self.write32(CONTROL_NOTIFY, mask);
    }

    /// Detaches: stops watching it (its interrupt handler no longer reads it), then tells the
    /// device. Its memory is gone for this partition afterwards.
    pub fn detach(self) {
        let saved = arch::disable_interrupts();
        for slot in &WATCHED {
            if slot.control.load(Ordering::Relaxed) == self.control {
                slot.control.store(0, Ordering::Relaxed);
            }
        }
        memory::complete_writes();
        self.write32(CONTROL_DETACH, 1);
        arch::restore_interrupts(saved);
    }

    /// Makes the device's interrupt read this region's status into the returned
    /// [`RegionEvents`] (and so acknowledge it): registers the handler, configures the
    /// interrupt level-sensitive and enables it on this vCPU (x86_64: routes the I/O APIC pin
    /// to a vector of its own). Call with interrupts masked, after
    /// [`init_interrupts`](crate::init_interrupts); every region attached through a device
    /// with an enabled interrupt must be watched, or its unacknowledged changes keep the line
    /// asserted.
    pub fn watch(&self) -> Result<&'static RegionEvents, WatchError> {
        let saved = arch::disable_interrupts();
        let slot = WATCHED.iter().find(|slot| {
            slot.control
                .compare_exchange(0, self.control, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        });
        let Some(slot) = slot else {
            arch::restore_interrupts(saved);
            return Err(WatchError::TooMany);
        };
        slot.key.store(0, Ordering::Relaxed);
        slot.notified.store(0, Ordering::Relaxed);
        slot.membership_changes.store(0, Ordering::Relaxed);
        slot.interrupts.store(0, Ordering::Relaxed);
        let status = self.status();
        slot.notified
            .store(u32::from(status.notified()), Ordering::Relaxed);
        slot.active
            .store(u32::from(status.active()), Ordering::Relaxed);
        let result =
            arch::enable_level(self.interrupt, on_interrupt).map_err(WatchError::Interrupt);
        match result {
            Ok(routed) => slot.key.store(routed.key(), Ordering::Relaxed),
            Err(_) => slot.control.store(0, Ordering::Relaxed),
        }
        arch::restore_interrupts(saved);
        result.map(|_| slot)
    }
}

/// Why [`Region::watch`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchError {
    /// All watch slots are taken.
    TooMany,
    /// The interrupt could not be set up (GIC, I/O APIC).
    Interrupt(InterruptError),
}

impl fmt::Display for WatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WatchError::TooMany => f.write_str("too many watched regions"),
            WatchError::Interrupt(error) => write!(f, "{error}"),
        }
    }
}

/// What the device's interrupt found in one region's status, accumulated.
#[derive(Debug)]
pub struct RegionEvents {
    control: AtomicUsize,
    /// The interrupt's key ([`Interrupt::key`]) once watched.
    key: AtomicU32,
    notified: AtomicU32,
    active: AtomicU32,
    membership_changes: AtomicU32,
    interrupts: AtomicU32,
}

impl RegionEvents {
    const fn new() -> Self {
        Self {
            control: AtomicUsize::new(0),
            key: AtomicU32::new(0),
            notified: AtomicU32::new(0),
            active: AtomicU32::new(0),
            membership_changes: AtomicU32::new(0),
            interrupts: AtomicU32::new(0),
        }
    }

    /// Reads the region's status now (as the handler does) and folds it in.
    pub fn poll(&self) {
        let saved = arch::disable_interrupts();
        self.read_status();
        arch::restore_interrupts(saved);
    }

    fn read_status(&self) {
        let control = self.control.load(Ordering::Relaxed);
        if control == 0 {
            return;
        }
        // SAFETY: `control` is the control page of a watched, still attached region
        // (`Region::detach` clears it with IRQs masked before detaching).
        let raw = unsafe { core::ptr::read_volatile((control + CONTROL_STATUS) as *const u32) };
        let status = RegionStatus(raw);
        self.notified
            .fetch_or(u32::from(status.notified()), Ordering::AcqRel);
        let active = u32::from(status.active());
        if self.active.swap(active, Ordering::AcqRel) != active {
            self.membership_changes.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Clients that notified me since the last [`take_notified`](Self::take_notified).
    pub fn notified(&self) -> u16 {
        self.notified.load(Ordering::Acquire) as u16
    }

    /// Returns and clears the accumulated "notified by" bits.
    pub fn take_notified(&self) -> u16 {
        self.notified.swap(0, Ordering::AcqRel) as u16
    }

    /// Active clients as last read.
    pub fn active(&self) -> u16 {
        self.active.load(Ordering::Acquire) as u16
    }

    /// Times the active-client bits were seen to change.
    pub fn membership_changes(&self) -> u32 {
        self.membership_changes.load(Ordering::Acquire)
    }

    /// Device interrupts taken for this region.
    pub fn interrupts(&self) -> u32 {
        self.interrupts.load(Ordering::Acquire)
    }
}

/// Regions the interrupt handler reads.
static WATCHED: [RegionEvents; 4] = [const { RegionEvents::new() }; 4];

fn on_interrupt(key: u32) {
    for slot in &WATCHED {
        if slot.control.load(Ordering::Relaxed) != 0 && slot.key.load(Ordering::Relaxed) == key {
            slot.read_status();
            slot.interrupts.fetch_add(1, Ordering::AcqRel);
        }
    }
}
