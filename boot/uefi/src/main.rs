//! UEFI loader: boots the embedded Bulkhead image, on aarch64 at EL2 the way the Linux EFI stub
//! boots Linux, on x86_64 in 64-bit mode with Multiboot2 boot information.
//!
//! The steps per architecture are in `aarch64/mod.rs` and `x86_64/mod.rs`; what they share is
//! here: the image is not relocatable, so it must land at its link address, which the firmware
//! may be using.
//!
//! Placement strategy. The image first asks for its exact pages with
//! AllocatePages(AllocateAddress); if the firmware already uses some of them (AAVMF keeps
//! boot-time data low in RAM), the pages overlapping the destination are listed and the loader
//! falls back to what the Linux EFI stub does for a non-relocatable kernel, deferring the
//! placement past ExitBootServices:
//! - every memory-map entry overlapping the destination must be conventional, boot-services
//!   code/data or loader code/data (memory that is free once boot services are gone), and
//!   together they must cover the destination (it is RAM). Runtime-services, ACPI, reserved or
//!   MMIO memory there is an error: the machine would still need it, so the loader stops while
//!   it can still report and return to the firmware;
//! - the free parts of the destination are allocated, so nothing the loader allocates later
//!   (staging copy, boot information, the memory map of ExitBootServices) lands there; the
//!   staging copy and the rest are then checked to be clear of it anyway;
//! - the image (.bss zeroed) is staged in pages allocated elsewhere;
//! - after ExitBootServices the final memory map is checked the same way, and the hand-off
//!   routine copies the image into place with the firmware's paging out of the way (aarch64:
//!   MMU off; x86_64: the loader's own page tables). It uses no stack and runs from memory of
//!   the loader's own (loader code, never in the destination), so the copy may overwrite the
//!   firmware's former stack and page tables, which the boot-services memory in the
//!   destination may well hold.
#![no_std]
#![no_main]

#[cfg(target_arch = "x86_64")]
extern crate alloc;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
use self::aarch64 as platform;
#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
use self::x86_64 as platform;

#[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
compile_error!("bulkhead-uefi supports aarch64-unknown-uefi and x86_64-unknown-uefi only");

use core::fmt;

use uefi::boot::{self, AllocateType, MemoryType};
use uefi::mem::memory_map::{MemoryDescriptor, MemoryMap};
use uefi::{Status, entry, println};

/// UEFI page size.
const PAGE_SIZE: u64 = 4096;

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
    /// What only one architecture checks (the image format, the firmware's tables).
    Platform(platform::Error),
    AddressOverflow,
    Allocate(&'static str, u64, Status),
    MemoryMap(Status),
    DestinationInUse(Range, MemoryType),
    DestinationNotRam(Range),
    Overlap(&'static str, Range, Range),
}

impl From<platform::Error> for Error {
    fn from(error: platform::Error) -> Self {
        Self::Platform(error)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Platform(error) => error.fmt(f),
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
    match platform::run() {
        Ok(never) => match never {},
        Err(error) => {
            println!("bulkhead-uefi: cannot boot Bulkhead: {error}");
            Status::LOAD_ERROR
        }
    }
}

/// Where the image waits until the firmware's paging is out of the way.
#[derive(Clone, Copy, Debug)]
enum Placement {
    /// Allocated at its link address and written there now.
    InPlace,
    /// Staged here, copied to the link address by the hand-off.
    Staged(u64),
}

impl Placement {
    /// Allocates `destination` at its address, or else (see the crate documentation) checks
    /// it, claims its free pages and allocates a staging area where `staging` says.
    fn choose(destination: Range, staging: AllocateType) -> Result<Self, Error> {
        match allocate(
            AllocateType::Address(destination.start),
            destination.len(),
            MemoryType::LOADER_DATA,
        ) {
            Ok(_) => Ok(Self::InPlace),
            Err(status) => {
                println!(
                    "bulkhead-uefi: {destination} is not free ({status:?}); the firmware has there:"
                );
                Ok(Self::Staged(stage(destination, staging)?))
            }
        }
    }

    /// Where the image's bytes go now: the destination itself or the staging copy.
    fn address(self, destination: Range) -> u64 {
        match self {
            Self::InPlace => destination.start,
            Self::Staged(address) => address,
        }
    }
}

/// AllocatePages of `ty` for `len` bytes (rounded up to pages), where `kind` says.
fn allocate(kind: AllocateType, len: u64, ty: MemoryType) -> Result<u64, Status> {
    let pages = usize::try_from(len.div_ceil(PAGE_SIZE)).map_err(|_| Status::OUT_OF_RESOURCES)?;
    boot::allocate_pages(kind, ty, pages)
        .map(|pointer| pointer.as_ptr() as u64)
        .map_err(|error| error.status())
}

/// Whether memory of this type is free for the taking once boot services are gone. Loader code
/// is not: the hand-off runs from it, so the destination must never hold it.
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
/// free pages so nothing else lands there, and returns a staging area of the same size,
/// allocated where `staging` says.
fn stage(destination: Range, staging: AllocateType) -> Result<u64, Error> {
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
        allocate(
            AllocateType::Address(free.start),
            free.len(),
            MemoryType::LOADER_DATA,
        )
        .map_err(|status| Error::Allocate("a free part of the destination", free.len(), status))?;
    }
    let address = allocate(staging, destination.len(), MemoryType::LOADER_DATA)
        .map_err(|status| Error::Allocate("the staging copy", destination.len(), status))?;
    let staging_range = Range::new(address, destination.len()).ok_or(Error::AddressOverflow)?;
    if staging_range.intersect(destination).is_some() {
        return Err(Error::Overlap(
            "the staging copy",
            staging_range,
            destination,
        ));
    }
    println!(
        "bulkhead-uefi: staging the image at {address:#x}; it moves into place after ExitBootServices"
    );
    drop(map);
    Ok(address)
}
