//! x86_64: boots the embedded Bulkhead image (an ELF) in 64-bit mode with Multiboot2 boot
//! information, so the image reads what its UEFI boot left it through the same parser as under
//! GRUB. The contract with the image is `boot/src/x86_64_handoff.rs`.
//!
//! Steps: check the ELF; refuse 5-level paging; place the image at its link address (see the
//! crate documentation for when that memory is taken); make sure the AP trampoline's fixed low
//! page is free once boot services are gone; take a heap below 4 GiB; read the command line
//! from `\EFI\BOOT\bulkhead.cmdline` on the loader's own volume (none if it is missing); copy
//! out the ACPI RSDP; prepare an identity map of the low 4 GiB and the hand-off routine; write
//! the image; exit boot services; build the boot information from the final memory map; switch
//! to the loader's page tables, copy a staged image into place and jump to the entry with
//! EAX = the Multiboot2 magic, EBX = the boot information.

mod boot_information;
mod handoff;
mod heap;
mod image;

use alloc::string::String;
use alloc::vec::Vec;
use core::convert::Infallible;
use core::fmt;

use uefi::boot::{self, AllocateType, MemoryType};
use uefi::fs::FileSystem;
use uefi::mem::memory_map::MemoryMap;
use uefi::{CStr16, Status, cstr16, println};
use x86_64::registers::control::{Cr4, Cr4Flags};

use crate::{PAGE_SIZE, Placement, Range, allocate, check_destination, reusable};
use ::boot::x86_64_handoff::TRAMPOLINE_ADDRESS;
use boot_information::RsdpError;
use handoff::{Handoff, Jump};
use image::{ElfImage, ImageError};

/// The hypervisor: an ELF64 linked at its physical addresses, entry = its 64-bit entry.
static IMAGE: &[u8] = include_bytes!(env!("BULKHEAD_IMAGE"));

/// The optional command line, on the volume the firmware loaded this application from.
const COMMAND_LINE_FILE: &CStr16 = cstr16!("\\EFI\\BOOT\\bulkhead.cmdline");
/// Everything the hand-off touches lies below this (EBX is 32 bits; the page tables of both
/// the loader and the image's entry map the low 4 GiB).
const BELOW_4GIB: u64 = (1 << 32) - 1;

/// What only the x86_64 loader refuses.
#[derive(Debug)]
pub enum Error {
    Image(ImageError),
    Rsdp(RsdpError),
    FiveLevelPaging,
    TrampolineInUse(MemoryType),
    TrampolineNotRam,
    CommandLine(uefi::fs::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Image(error) => write!(f, "the embedded image is unusable: {error}"),
            Self::Rsdp(error) => error.fmt(f),
            Self::FiveLevelPaging => f.write_str(
                "the firmware runs with 5-level paging (CR4.LA57), which cannot be turned off \
                 in long mode; the image's entry needs 4-level paging",
            ),
            Self::TrampolineInUse(ty) => write!(
                f,
                "the page at {TRAMPOLINE_ADDRESS:#x}, which the image needs for starting the \
                 other CPUs, is {ty:?} memory, still in use after ExitBootServices"
            ),
            Self::TrampolineNotRam => write!(
                f,
                "the page at {TRAMPOLINE_ADDRESS:#x}, which the image needs for starting the \
                 other CPUs, is not RAM in the UEFI memory map"
            ),
            Self::CommandLine(error) => write!(
                f,
                "cannot read the command line {COMMAND_LINE_FILE}: {error} ({error:?})"
            ),
        }
    }
}

/// Loads the image and enters it; returns only with the reason it cannot.
pub fn run() -> Result<Infallible, crate::Error> {
    let image = ElfImage::parse(IMAGE).map_err(Error::Image)?;
    let destination = image.destination;
    println!(
        "bulkhead-uefi: Bulkhead image {} bytes, runs at {destination}, entry {:#x}",
        IMAGE.len(),
        image.entry
    );
    if Cr4::read().contains(Cr4Flags::L5_PAGING) {
        return Err(Error::FiveLevelPaging.into());
    }
    // First, before any other allocation can land in the destination or the trampoline's page.
    let placement = Placement::choose(destination, AllocateType::MaxAddress(BELOW_4GIB))?;
    match reserve_trampoline_page()? {
        None => println!("bulkhead-uefi: AP trampoline page {TRAMPOLINE_ADDRESS:#x} reserved"),
        Some(ty) => println!(
            "bulkhead-uefi: AP trampoline page {TRAMPOLINE_ADDRESS:#x} is the firmware's {ty:?} \
             memory, free after ExitBootServices"
        ),
    }
    let heap = heap::init(BELOW_4GIB)?;
    let command_line = read_command_line()?;
    let rsdp = boot_information::find_rsdp().map_err(Error::Rsdp)?;
    let handoff = Handoff::prepare(BELOW_4GIB)?;
    for (what, range) in [
        ("the loader's heap", heap),
        ("the hand-off page tables", handoff.ranges[0]),
        ("the hand-off routine", handoff.ranges[1]),
    ] {
        if range.intersect(destination).is_some() {
            return Err(crate::Error::Overlap(what, range, destination));
        }
    }
    let staged = match placement {
        Placement::InPlace => None,
        Placement::Staged(address) => Some((address, destination.len())),
    };
    // SAFETY: `Placement::choose` allocated `destination.len()` bytes there for the image (the
    // destination itself or the staging copy), apart from the embedded file.
    unsafe { image.write(placement.address(destination)) };
    println!(
        "bulkhead-uefi: image -> {:#x}, command line \"{command_line}\", exiting boot services",
        destination.start,
    );
    let system_table = uefi::table::system_table_raw().map_or(0, |table| table.as_ptr() as u64);

    // SAFETY: nothing of boot services is used past this point: no protocol is open (the file
    // system was closed after reading), the console is not written again, and the memory map
    // buffer is leaked, never freed. The heap is the loader's own arena.
    let memory_map = unsafe { boot::exit_boot_services(None) };
    // No console is left to report to from here on: anything wrong stops the CPU.
    if staged.is_some() && check_destination(&memory_map, destination, false).is_err() {
        // The firmware turned part of the destination into memory that outlives it between
        // the check before and ExitBootServices.
        halt();
    }
    if !trampoline_page_type(&memory_map).is_some_and(free_after_handoff) {
        halt();
    }
    let information = boot_information::build(&memory_map, rsdp, &command_line, system_table);
    core::mem::forget(memory_map);
    let information_len = core::mem::size_of_val(information.as_ref()) as u64;
    let information = alloc::boxed::Box::into_raw(information).cast::<u8>() as u64;
    let in_heap = Range::new(information, information_len)
        .is_some_and(|range| range.start >= heap.start && range.end <= heap.end);
    if !in_heap {
        halt();
    }

    // SAFETY: boot services are gone. The destination, a staged copy (allocated below 4 GiB,
    // clear of the destination), the boot information (in the heap, below 4 GiB and clear of
    // the destination) and the entry (inside the destination, checked by `ElfImage::parse`)
    // all lie below 4 GiB; the routine and its tables are clear of the destination (checked
    // above); the destination holds only the image or boot-time firmware memory.
    unsafe {
        handoff.enter(Jump {
            destination: destination.start,
            staged,
            entry: image.entry,
            boot_information: information,
        })
    }
}

/// Claims the page the image copies its AP trampoline to (`None`). If the firmware has it, it
/// must be memory that is free once boot services are gone (checked again in the final memory
/// map): its type is returned.
fn reserve_trampoline_page() -> Result<Option<MemoryType>, crate::Error> {
    if allocate(
        AllocateType::Address(TRAMPOLINE_ADDRESS),
        PAGE_SIZE,
        MemoryType::LOADER_DATA,
    )
    .is_ok()
    {
        return Ok(None);
    }
    let map = boot::memory_map(MemoryType::LOADER_DATA)
        .map_err(|error| crate::Error::MemoryMap(error.status()))?;
    match trampoline_page_type(&map) {
        Some(ty) if free_after_handoff(ty) => Ok(Some(ty)),
        Some(ty) => Err(Error::TrampolineInUse(ty).into()),
        None => Err(Error::TrampolineNotRam.into()),
    }
}

/// The type of the memory-map entry holding the whole trampoline page, if one does.
fn trampoline_page_type(map: &impl MemoryMap) -> Option<MemoryType> {
    let page = Range::new(TRAMPOLINE_ADDRESS, PAGE_SIZE)?;
    map.entries()
        .find(|descriptor| {
            Range::of(descriptor)
                .is_some_and(|range| range.start <= page.start && range.end >= page.end)
        })
        .map(|descriptor| descriptor.ty)
}

/// Whether memory of this type is the image's once the loader has jumped (loader code
/// included: nothing runs from it any more by the time the image starts other CPUs).
fn free_after_handoff(ty: MemoryType) -> bool {
    reusable(ty) || ty == MemoryType::LOADER_CODE
}

/// The words of `\EFI\BOOT\bulkhead.cmdline` on the loader's volume, joined by single spaces;
/// empty if the file or the volume's file system is missing.
fn read_command_line() -> Result<String, crate::Error> {
    let Ok(volume) = boot::get_image_file_system(boot::image_handle()) else {
        return Ok(String::new());
    };
    let bytes = match FileSystem::new(volume).read(COMMAND_LINE_FILE) {
        Ok(bytes) => bytes,
        Err(uefi::fs::Error::Io(error)) if error.uefi_error.status() == Status::NOT_FOUND => {
            return Ok(String::new());
        }
        Err(error) => return Err(Error::CommandLine(error).into()),
    };
    let text = String::from_utf8_lossy(&bytes);
    Ok(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Parks the CPU for good (nothing left to report to).
fn halt() -> ! {
    loop {
        // SAFETY: stops the CPU until an interrupt, and interrupts are off; touches no memory.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
