//! The Multiboot2 boot information the image reads through the same parser as under GRUB
//! (`boot::x86_64::read_multiboot2`), built with the multiboot2 crate's builder: the final UEFI
//! memory map as a Multiboot2 memory map, the ACPI RSDP, the command line, the loader's name
//! and the EFI system table.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

use multiboot2::{
    BootInformationHeader, BootLoaderNameTag, Builder, CommandLineTag, DynSizedStructure,
    EFISdt64Tag, MemoryArea, MemoryAreaType, MemoryMapTag, RsdpV1Tag, RsdpV2Tag,
};
use uefi::boot::MemoryType;
use uefi::mem::memory_map::MemoryMap;
use uefi::table::cfg::ConfigTableEntry;

use crate::Range;

/// The loader's name in the boot information; the image prints it after `boot method: uefi`.
const LOADER_NAME: &str = boot::x86_64_handoff::UEFI_LOADER_NAME;

/// Why the firmware's ACPI root pointer is unusable.
#[derive(Clone, Copy, Debug)]
pub enum RsdpError {
    /// Neither an ACPI 2.0 nor an ACPI 1.0 entry in the EFI configuration table.
    Missing,
    /// The `acpi` crate refused it (signature, OEM ID or a checksum).
    Invalid,
}

impl fmt::Display for RsdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str(
                "the firmware publishes no ACPI RSDP in the EFI configuration table; Bulkhead \
                 finds its CPUs and power-off registers through ACPI",
            ),
            Self::Invalid => {
                f.write_str("the firmware's ACPI RSDP is invalid (signature, OEM ID or a checksum)")
            }
        }
    }
}

/// The firmware's RSDP, copied out while boot services still run.
#[derive(Clone, Copy, Debug)]
pub enum Rsdp {
    /// ACPI 1.0: an RSDT.
    V1 {
        oem_id: [u8; 6],
        revision: u8,
        rsdt: u32,
    },
    /// ACPI 2.0 or later: an XSDT.
    V2 {
        oem_id: [u8; 6],
        revision: u8,
        rsdt: u32,
        length: u32,
        xsdt: u64,
    },
}

/// Reads the RSDP the EFI configuration table points at (the ACPI 2.0 entry first).
pub fn find_rsdp() -> Result<Rsdp, RsdpError> {
    let address = uefi::system::with_config_table(|table| {
        [ConfigTableEntry::ACPI2_GUID, ConfigTableEntry::ACPI_GUID]
            .iter()
            .find_map(|guid| table.iter().find(|entry| entry.guid == *guid))
            .map(|entry| entry.address.cast::<acpi::rsdp::Rsdp>())
    })
    .filter(|address| !address.is_null())
    .ok_or(RsdpError::Missing)?;
    // SAFETY: the configuration table entry points at an RSDP, which the firmware keeps in
    // ACPI memory; `Rsdp` is packed (alignment 1), and `validate` reads no more than the
    // structure's own `length` (the 20-byte ACPI 1.0 part for revision 0).
    let rsdp = unsafe { &*address };
    rsdp.validate().map_err(|_| RsdpError::Invalid)?;
    // `validate` checked that the OEM ID is UTF-8, and the extended fields exist only from
    // revision 2 on (the accessors assert that).
    let oem_id = <[u8; 6]>::try_from(rsdp.oem_id().as_bytes()).map_err(|_| RsdpError::Invalid)?;
    let revision = rsdp.revision();
    Ok(if revision >= 2 {
        Rsdp::V2 {
            oem_id,
            revision,
            rsdt: rsdp.rsdt_address(),
            length: rsdp.length(),
            xsdt: rsdp.xsdt_address(),
        }
    } else {
        Rsdp::V1 {
            oem_id,
            revision,
            rsdt: rsdp.rsdt_address(),
        }
    })
}

/// The Multiboot2 type of UEFI memory once boot services are gone and the loader has handed
/// over: boot-services and loader memory are free RAM (the image keeps its own and the boot
/// information's ranges out of use itself); runtime services, MMIO and reserved memory stay
/// reserved.
fn area_type(ty: MemoryType) -> MemoryAreaType {
    match ty {
        MemoryType::CONVENTIONAL
        | MemoryType::BOOT_SERVICES_CODE
        | MemoryType::BOOT_SERVICES_DATA
        | MemoryType::LOADER_CODE
        | MemoryType::LOADER_DATA => MemoryAreaType::Available,
        MemoryType::ACPI_RECLAIM => MemoryAreaType::AcpiAvailable,
        MemoryType::ACPI_NON_VOLATILE => MemoryAreaType::ReservedHibernate,
        MemoryType::UNUSABLE => MemoryAreaType::Defective,
        _ => MemoryAreaType::Reserved,
    }
}

/// The memory map as Multiboot2 areas: sorted, and neighbours of the same type merged (a UEFI
/// map lists every allocation on its own).
fn memory_areas(map: &impl MemoryMap) -> Vec<MemoryArea> {
    let mut ranges: Vec<(Range, MemoryAreaType)> = map
        .entries()
        .filter_map(|descriptor| Some((Range::of(descriptor)?, area_type(descriptor.ty))))
        .filter(|(range, _)| range.len() > 0)
        .collect();
    ranges.sort_unstable_by_key(|(range, _)| range.start);
    let mut merged: Vec<(Range, MemoryAreaType)> = Vec::with_capacity(ranges.len());
    for (range, ty) in ranges {
        match merged.last_mut() {
            Some((last, last_ty)) if *last_ty == ty && last.end == range.start => {
                last.end = range.end;
            }
            _ => merged.push((range, ty)),
        }
    }
    merged
        .into_iter()
        .map(|(range, ty)| MemoryArea::new(range.start, range.len(), ty))
        .collect()
}

/// Builds the boot information (on the loader's heap, below 4 GiB).
pub fn build(
    map: &impl MemoryMap,
    rsdp: Rsdp,
    command_line: &str,
    system_table: u64,
) -> Box<DynSizedStructure<BootInformationHeader>> {
    let builder = Builder::new()
        .bootloader(BootLoaderNameTag::new(LOADER_NAME))
        .cmdline(CommandLineTag::new(command_line))
        .mmap(MemoryMapTag::new(&memory_areas(map)))
        .efi64(EFISdt64Tag::new(system_table));
    let builder = match rsdp {
        Rsdp::V1 {
            oem_id,
            revision,
            rsdt,
        } => builder.rsdpv1(RsdpV1Tag::new(oem_id, revision, rsdt)),
        Rsdp::V2 {
            oem_id,
            revision,
            rsdt,
            length,
            xsdt,
        } => builder.rsdpv2(RsdpV2Tag::new(oem_id, revision, rsdt, length, xsdt)),
    };
    builder.build()
}
