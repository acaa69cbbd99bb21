//! aarch64: boots the embedded Bulkhead Image at EL2 the way the Linux EFI stub boots Linux.
//!
//! Steps: check the Image header; take the device tree the firmware publishes in the EFI
//! configuration table; place the image at RAM base + text_offset (its link address, as it is
//! not relocatable; see the crate documentation for when that memory is taken); copy the device
//! tree into pages of our own; exit boot services; turn the MMU and caches off and jump to the
//! image with x0 = device tree, x1 = "UEFI".

mod handoff;
mod image;

use core::convert::Infallible;
use core::fmt;

use fdt::Fdt;
use uefi::boot::{self, AllocateType, MemoryType};
use uefi::{Guid, guid, println};

use crate::{PAGE_SIZE, Placement, Range, allocate, check_destination};
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
/// The Image goes at text_offset from a base aligned to this, as close to the start of RAM as
/// possible (Linux boot protocol, flags bit 3 clear).
const BASE_ALIGN: u64 = 2 << 20;

/// What only the aarch64 loader refuses.
#[derive(Debug)]
pub enum Error {
    Header(HeaderError),
    NoDeviceTree,
    BadDeviceTree(&'static str),
    NoMemoryNode,
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
        }
    }
}

/// Loads the image and enters it; returns only with the reason it cannot.
pub fn run() -> Result<Infallible, crate::Error> {
    let header = ImageHeader::parse(IMAGE).map_err(Error::Header)?;
    let firmware_tree = find_device_tree()?;
    let tree_len = firmware_tree.len() as u64;
    let fdt = Fdt::new(firmware_tree).map_err(|_| Error::BadDeviceTree("unparsable"))?;
    let ram_base = ram_base(&fdt).ok_or(Error::NoMemoryNode)?;
    let load_address = ram_base
        .checked_next_multiple_of(BASE_ALIGN)
        .and_then(|base| base.checked_add(header.text_offset))
        .ok_or(crate::Error::AddressOverflow)?;
    let image_len = header
        .image_size
        .checked_next_multiple_of(PAGE_SIZE)
        .ok_or(crate::Error::AddressOverflow)?;
    let destination = Range::new(load_address, image_len).ok_or(crate::Error::AddressOverflow)?;
    println!(
        "bulkhead-uefi: Bulkhead image {} bytes ({:#x} with .bss), RAM at {ram_base:#x}, \
         firmware device tree at {:#x} ({tree_len} bytes)",
        IMAGE.len(),
        header.image_size,
        firmware_tree.as_ptr() as u64,
    );

    let placement = Placement::choose(destination, AllocateType::AnyPages)?;

    let tree_copy_len = tree_len
        .saturating_add(DEVICE_TREE_SLACK)
        .checked_next_multiple_of(PAGE_SIZE)
        .ok_or(crate::Error::AddressOverflow)?;
    let tree_address = allocate(
        AllocateType::AnyPages,
        tree_copy_len,
        MemoryType::LOADER_DATA,
    )
    .map_err(|status| crate::Error::Allocate("the device-tree copy", tree_copy_len, status))?;
    let tree_copy = Range::new(tree_address, tree_copy_len).ok_or(crate::Error::AddressOverflow)?;
    if tree_copy.intersect(destination).is_some() {
        return Err(crate::Error::Overlap(
            "the device-tree copy",
            tree_copy,
            destination,
        ));
    }
    // SAFETY: the pages at `tree_address` were just allocated for this, `tree_copy.len()`
    // bytes, larger than the blob; UEFI identity-maps memory; the source is the firmware's blob
    // of `tree_len` bytes, which does not overlap a fresh allocation.
    unsafe { fill(tree_address, tree_copy.len(), firmware_tree) };

    // SAFETY: `Placement::choose` allocated `destination.len()` bytes there for the image: the
    // destination itself or the staging copy.
    unsafe { fill(placement.address(destination), destination.len(), IMAGE) };
    let staging = match placement {
        Placement::InPlace => None,
        Placement::Staged(address) => Some(address),
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

/// Parks the CPU for good (nothing left to report to).
fn halt() -> ! {
    loop {
        // SAFETY: waits for an event; touches no memory.
        unsafe { core::arch::asm!("wfe", options(nomem, nostack)) };
    }
}
