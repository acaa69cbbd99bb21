//! UEFI loader: boots the embedded Bulkhead Image at EL2 the way the Linux EFI stub boots Linux.
//!
//! Steps: check the Image header; take the device tree the firmware publishes in the EFI
//! configuration table; place the image at RAM base + text_offset (its link address, as it is
//! not relocatable); copy the device tree into pages of our own; exit boot services; turn the
//! MMU and caches off and jump to the image with x0 = device tree, x1 = "UEFI".
//!
//! Placement strategy. The image first asks for its exact pages with
//! AllocatePages(AllocateAddress); if the firmware already uses some of them (AAVMF keeps
//! boot-time data low in RAM), the pages overlapping the destination are listed and the loader
//! falls back to what the Linux EFI stub does for a non-relocatable kernel, deferring the
//! placement past ExitBootServices:
//! - every memory-map entry overlapping the destination must be conventional, boot-services
//!   code/data or loader data (memory that is free once boot services are gone), and together
//!   they must cover the destination (it is RAM). Runtime-services, ACPI, reserved or MMIO
//!   memory there is an error: the machine would still need it, so the loader stops while it
//!   can still report and return to the firmware;
//! - the free parts of the destination are allocated, so nothing the loader allocates later
//!   (staging copy, device-tree copy, the memory map of ExitBootServices) lands there; the
//!   staging copy and the device-tree copy are then checked to be clear of it anyway;
//! - the image (.bss zeroed) is staged in pages allocated anywhere;
//! - after ExitBootServices the final memory map is checked the same way, and the hand-off
//!   routine copies the image into place only after turning the MMU off. It uses no stack and
//!   runs from this application's own code (loader code, never in the destination), so the
//!   copy may overwrite the firmware's former stack and page tables, which the boot-services
//!   memory in the destination may well hold.
#![no_std]
#![no_main]

mod handoff;
mod image;

use core::convert::Infallible;
use core::fmt;

use fdt::Fdt;
use uefi::boot::{self, AllocateType, MemoryType};
use uefi::mem::memory_map::{MemoryDescriptor, MemoryMap};
use uefi::{Guid, Status, entry, guid, println};

use handoff::Handoff;
use image::{HeaderError, ImageHeader};

/// The hypervisor: a raw arm64 Image, linked at RAM base + text_offset.
static IMAGE: &[u8] = include_bytes!(env!("BULKHEAD_IMAGE"));

/// EFI configuration table entry of a flattened device tree (`EFI_DTB_TABLE_GUID`).
const DEVICE_TREE_GUID: Guid = guid!("b1b621d5-f19c-41a5-830b-d9152c69aae0");
/// Flattened device tree magic (big-endian in the blob).
const DEVICE_TREE_MAGIC: u32 = 0xd00d_feed;
/// Room left after the device-tree copy (its `totalsize` stays as it was).
const DEVICE_TREE_SLACK: u64 = 4096;
/// UEFI page size.
const PAGE_SIZE: u64 = 4096;
/// The Image goes at text_offset from a base aligned to this, as close to the start of RAM as
/// possible (Linux boot protocol, flags bit 3 clear).
const BASE_ALIGN: u64 = 2 << 20;

/// A physical address range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Range {
    start: u64,
    end: u64,
}

impl Range {
    fn new(start: u64, len: u64) -> Option<Self> {
        Some(Self {
            start,
            end: start.checked_add(len)?,
        })
    }

    fn of(descriptor: &MemoryDescriptor) -> Option<Self> {
        Self::new(
            descriptor.phys_start,
            descriptor.page_count.checked_mul(PAGE_SIZE)?,
        )
    }

    fn len(self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    fn intersect(self, other: Self) -> Option<Self> {
        let start = self.start.max(other.start);
        let end = self.end.min(other.end);
        (start < end).then_some(Self { start, end })
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#012x}-{:#012x}", self.start, self.end)
    }
}

/// Why the loader gives up (always before ExitBootServices: it returns to the firmware).
#[derive(Debug)]
enum Error {
    Header(HeaderError),
    NoDeviceTree,
    BadDeviceTree(&'static str),
    NoMemoryNode,
    AddressOverflow,
    Allocate(&'static str, u64, Status),
    MemoryMap(Status),
    DestinationInUse(Range, MemoryType),
    DestinationNotRam(Range),
    Overlap(&'static str, Range, Range),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Header(error) => write!(f, "the embedded image is unusable: {error}"),
            Self::NoDeviceTree => f.write_str(
                "the firmware publishes no device tree in the EFI configuration table. Bulkhead \
                 needs one; under QEMU add `acpi=off` to -M virt so AAVMF passes QEMU's on",
            ),
            Self::BadDeviceTree(why) => write!(f, "the firmware's device tree is invalid: {why}"),
            Self::NoMemoryNode => f.write_str(
                "the firmware's device tree has no /memory node with a non-empty reg, so the \
                 RAM base (and the image's load address) is unknown",
            ),
            Self::AddressOverflow => f.write_str("load address arithmetic overflows"),
            Self::Allocate(what, bytes, status) => {
                write!(f, "cannot allocate {bytes:#x} bytes for {what}: {status:?}")
            }
            Self::MemoryMap(status) => write!(f, "cannot read the memory map: {status:?}"),
            Self::DestinationInUse(range, ty) => write!(
                f,
                "the image's destination overlaps {ty:?} memory at {range}, which stays in use \
                 after ExitBootServices; the image is linked there and cannot move"
            ),
            Self::DestinationNotRam(range) => write!(
                f,
                "the image's destination {range} is not entirely RAM in the UEFI memory map"
            ),
            Self::Overlap(what, a, b) => {
                write!(f, "{what} at {a} overlaps the image's destination {b}")
            }
        }
    }
}

#[entry]
fn main() -> Status {
    match run() {
        Ok(never) => match never {},
        Err(error) => {
            println!("bulkhead-uefi: cannot boot Bulkhead: {error}");
            Status::LOAD_ERROR
        }
    }
}

/// Where the image waits until the MMU is off.
#[derive(Clone, Copy, Debug)]
enum Placement {
    /// Allocated at its link address and written there now.
    InPlace,
    /// Staged here, copied to the link address by the hand-off.
    Staged(u64),
}

fn run() -> Result<Infallible, Error> {
    let header = ImageHeader::parse(IMAGE).map_err(Error::Header)?;
    let firmware_tree = find_device_tree()?;
    let tree_len = firmware_tree.len() as u64;
    let fdt = Fdt::new(firmware_tree).map_err(|_| Error::BadDeviceTree("unparsable"))?;
    let ram_base = ram_base(&fdt).ok_or(Error::NoMemoryNode)?;
    let load_address = ram_base
        .checked_next_multiple_of(BASE_ALIGN)
        .and_then(|base| base.checked_add(header.text_offset))
        .ok_or(Error::AddressOverflow)?;
    let image_len = header
        .image_size
        .checked_next_multiple_of(PAGE_SIZE)
        .ok_or(Error::AddressOverflow)?;
    let destination = Range::new(load_address, image_len).ok_or(Error::AddressOverflow)?;
    println!(
        "bulkhead-uefi: Bulkhead image {} bytes ({:#x} with .bss), RAM at {ram_base:#x}, \
         firmware device tree at {:#x} ({tree_len} bytes)",
        IMAGE.len(),
        header.image_size,
        firmware_tree.as_ptr() as u64,
    );

    let placement = match allocate(AllocateType::Address(destination.start), destination.len()) {
        Ok(_) => Placement::InPlace,
        Err(status) => {
            println!(
                "bulkhead-uefi: {destination} is not free ({status:?}); the firmware has there:"
            );
            Placement::Staged(stage(destination)?)
        }
    };

    let tree_copy_len = tree_len
        .saturating_add(DEVICE_TREE_SLACK)
        .checked_next_multiple_of(PAGE_SIZE)
        .ok_or(Error::AddressOverflow)?;
    let tree_address = allocate(AllocateType::AnyPages, tree_copy_len)
        .map_err(|status| Error::Allocate("the device-tree copy", tree_copy_len, status))?;
    let tree_copy = Range::new(tree_address, tree_copy_len).ok_or(Error::AddressOverflow)?;
    if tree_copy.intersect(destination).is_some() {
        return Err(Error::Overlap(
            "the device-tree copy",
            tree_copy,
            destination,
        ));
    }
    // SAFETY: the pages at `tree_address` were just allocated for this, `tree_copy.len()`
    // bytes, larger than the blob; UEFI identity-maps memory; the source is the firmware's blob
    // of `tree_len` bytes, which does not overlap a fresh allocation.
    unsafe { fill(tree_address, tree_copy.len(), firmware_tree) };

    let staging = match placement {
        Placement::InPlace => {
            // SAFETY: the destination's pages were allocated to the loader at their address.
            unsafe { fill(destination.start, destination.len(), IMAGE) };
            None
        }
        Placement::Staged(address) => {
            // SAFETY: `stage` allocated `destination.len()` bytes at `address` for this.
            unsafe { fill(address, destination.len(), IMAGE) };
            Some(address)
        }
    };

    println!(
        "bulkhead-uefi: image {} bytes -> {:#x}, device tree at {tree_address:#x}, exiting boot \
         services",
        IMAGE.len(),
        destination.start,
    );
    // SAFETY: nothing of boot services is used past this point: no protocol is open, the
    // console is not written again, and the memory map buffer is leaked, never freed.
    let memory_map = unsafe { boot::exit_boot_services(None) };
    if staging.is_some() && check_destination(&memory_map, destination, false).is_err() {
        // The firmware turned part of the destination into memory that outlives it between
        // the check above and ExitBootServices. No console is left to say so; stop here.
        halt();
    }
    core::mem::forget(memory_map);

    // SAFETY: boot services are gone. The device-tree copy and a staging copy are loader data
    // outside the destination (checked above); the destination holds only the image or
    // boot-time firmware memory; `destination.len()` is page-rounded; the hand-off code is
    // this application's, loader code, which the destination check refuses.
    unsafe {
        handoff::enter(Handoff {
            device_tree: tree_address,
            device_tree_len: tree_len,
            destination: destination.start,
            destination_len: destination.len(),
            staging,
        })
    }
}

/// The device tree the firmware published, as a slice of its `totalsize` bytes.
fn find_device_tree() -> Result<&'static [u8], Error> {
    let address = uefi::system::with_config_table(|table| {
        table
            .iter()
            .find(|entry| entry.guid == DEVICE_TREE_GUID)
            .map(|entry| entry.address.cast::<u8>())
    })
    .ok_or(Error::NoDeviceTree)?;
    if address.is_null() {
        return Err(Error::NoDeviceTree);
    }
    // SAFETY: the configuration table entry points at a flattened device tree, which begins
    // with a 40-byte header; only its first 8 bytes (magic, totalsize) are read here.
    let header = unsafe { core::ptr::read_unaligned(address.cast::<[u8; 8]>()) };
    let [m0, m1, m2, m3, s0, s1, s2, s3] = header;
    if u32::from_be_bytes([m0, m1, m2, m3]) != DEVICE_TREE_MAGIC {
        return Err(Error::BadDeviceTree("no FDT magic"));
    }
    let size = u32::from_be_bytes([s0, s1, s2, s3]) as usize;
    if size < 40 {
        return Err(Error::BadDeviceTree("totalsize smaller than its header"));
    }
    // SAFETY: the header says the blob spans `size` bytes; the firmware keeps it in place
    // (boot-services or runtime data) for as long as boot services run, and the loader reads
    // it only before ExitBootServices.
    Ok(unsafe { core::slice::from_raw_parts(address, size) })
}

/// The lowest address of RAM the device tree describes (`device_type = "memory"` nodes).
fn ram_base(fdt: &Fdt<'_>) -> Option<u64> {
    fdt.all_nodes()
        .filter(|node| {
            node.property("device_type")
                .and_then(|p| p.as_str())
                .is_some_and(|ty| ty == "memory")
        })
        .filter_map(|node| node.reg())
        .flatten()
        .filter(|region| region.size.is_some_and(|size| size > 0))
        .map(|region| region.starting_address as u64)
        .min()
}

/// AllocatePages of loader data for `len` bytes (rounded up to pages), where `kind` says.
fn allocate(kind: AllocateType, len: u64) -> Result<u64, Status> {
    let pages = usize::try_from(len.div_ceil(PAGE_SIZE)).map_err(|_| Status::OUT_OF_RESOURCES)?;
    boot::allocate_pages(kind, MemoryType::LOADER_DATA, pages)
        .map(|pointer| pointer.as_ptr() as u64)
        .map_err(|error| error.status())
}

/// Copies `data` to `address` and zeroes the rest of the `len` bytes there.
///
/// # Safety
///
/// `[address, address + len)` must be memory the loader owns, identity-mapped, at least
/// `data.len()` bytes, not overlapping `data`.
unsafe fn fill(address: u64, len: u64, data: &[u8]) {
    let target = address as *mut u8;
    let len = usize::try_from(len).unwrap_or(0);
    let copied = data.len().min(len);
    // SAFETY: the caller guarantees `target` is valid for `len >= copied` bytes and disjoint
    // from `data`.
    unsafe {
        core::ptr::copy_nonoverlapping(data.as_ptr(), target, copied);
        core::ptr::write_bytes(target.add(copied), 0, len - copied);
    }
}

/// Whether memory of this type is free for the taking once boot services are gone.
fn reusable(ty: MemoryType) -> bool {
    matches!(
        ty,
        MemoryType::CONVENTIONAL
            | MemoryType::BOOT_SERVICES_CODE
            | MemoryType::BOOT_SERVICES_DATA
            | MemoryType::LOADER_DATA
    )
}

/// Checks that `destination` is RAM that nothing needs after ExitBootServices, listing the
/// memory-map entries over it when `print` is set.
fn check_destination(map: &impl MemoryMap, destination: Range, print: bool) -> Result<(), Error> {
    let mut covered = 0u64;
    let mut refused = None;
    for descriptor in map.entries() {
        let Some(range) = Range::of(descriptor) else {
            continue;
        };
        let Some(overlap) = range.intersect(destination) else {
            continue;
        };
        if print {
            println!("bulkhead-uefi:   {range} {:?}", descriptor.ty);
        }
        covered = covered.saturating_add(overlap.len());
        if !reusable(descriptor.ty) && refused.is_none() {
            refused = Some(Error::DestinationInUse(overlap, descriptor.ty));
        }
    }
    if let Some(error) = refused {
        return Err(error);
    }
    if covered != destination.len() {
        return Err(Error::DestinationNotRam(destination));
    }
    Ok(())
}

/// The fallback placement (see the crate documentation): checks the destination, allocates its
/// free pages so nothing else lands there, and returns a staging area of the same size.
fn stage(destination: Range) -> Result<u64, Error> {
    // Held until the staging area is allocated, so its own buffer cannot be freed into the
    // destination before that.
    let map = boot::memory_map(MemoryType::LOADER_DATA)
        .map_err(|error| Error::MemoryMap(error.status()))?;
    check_destination(&map, destination, true)?;
    for descriptor in map.entries() {
        if descriptor.ty != MemoryType::CONVENTIONAL {
            continue;
        }
        let Some(free) = Range::of(descriptor).and_then(|r| r.intersect(destination)) else {
            continue;
        };
        allocate(AllocateType::Address(free.start), free.len()).map_err(|status| {
            Error::Allocate("a free part of the destination", free.len(), status)
        })?;
    }
    let staging = allocate(AllocateType::AnyPages, destination.len())
        .map_err(|status| Error::Allocate("the staging copy", destination.len(), status))?;
    let staging_range = Range::new(staging, destination.len()).ok_or(Error::AddressOverflow)?;
    if staging_range.intersect(destination).is_some() {
        return Err(Error::Overlap(
            "the staging copy",
            staging_range,
            destination,
        ));
    }
    println!(
        "bulkhead-uefi: staging the image at {staging:#x}; it moves into place after ExitBootServices"
    );
    drop(map);
    Ok(staging)
}

/// Parks the CPU for good (nothing left to report to).
fn halt() -> ! {
    loop {
        // SAFETY: waits for an event; touches no memory.
        unsafe { core::arch::asm!("wfe", options(nomem, nostack)) };
    }
}
