//! The machine as ACPI describes it: CPUs and their APIC IDs (MADT), the local and I/O APICs,
//! and how to power off (FADT PM1 control blocks, the DSDT's `_S5_` sleep type).
//!
//! The tables are read once at boot through the `acpi` crate, while the boot page tables still
//! identity-map the low 4 GiB, into plain values; nothing keeps a pointer into them.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::ptr::NonNull;

use acpi::address::AddressSpace;
use acpi::fadt::Fadt;
use acpi::madt::{Madt, MadtEntry};
use acpi::{AcpiError, AcpiHandler, AcpiTables, PhysicalMapping};

use crate::sleep_state;

/// Where the ACPI tables start, as the boot loader reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootTable {
    /// The RSDP's revision: 0 = ACPI 1.0 (an RSDT), 2 or more = an XSDT.
    pub revision: u8,
    /// Physical address of the RSDT (revision 0) or XSDT.
    pub address: u64,
}

/// One CPU the MADT lists as usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpu {
    /// Its local APIC ID.
    pub apic_id: u32,
    /// The ACPI processor UID.
    pub processor_uid: u32,
}

/// One I/O APIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoApic {
    /// Its APIC ID.
    pub id: u8,
    /// Its register window (one page).
    pub address: u64,
    /// The first global system interrupt it handles.
    pub interrupt_base: u32,
}

/// How software turns the machine off through ACPI.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SoftOff {
    /// PM1a control block I/O port.
    pub pm1a_control: Option<u16>,
    /// PM1b control block I/O port.
    pub pm1b_control: Option<u16>,
    /// SLP_TYP values for S5 (PM1a, PM1b); (0, 0) when the DSDT does not say.
    pub sleep_types: (u8, u8),
    /// SMI command port and the value that hands ACPI to the OS (0 = already in ACPI mode).
    pub acpi_enable: Option<(u16, u8)>,
}

/// Everything Bulkhead takes from the ACPI tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// The OEM ID of the MADT.
    pub oem: String,
    /// Usable CPUs in MADT order; the index is Bulkhead's CPU index.
    pub cpus: Vec<Cpu>,
    /// The local APICs' physical base.
    pub local_apic_address: u64,
    /// The I/O APICs.
    pub io_apics: Vec<IoApic>,
    /// Power-off through the PM1 control registers.
    pub soft_off: SoftOff,
}

impl Platform {
    /// Bulkhead's index of the CPU with local APIC ID `apic_id`.
    pub fn cpu_index(&self, apic_id: u32) -> Option<usize> {
        self.cpus.iter().position(|cpu| cpu.apic_id == apic_id)
    }
}

/// Why the ACPI tables do not describe a machine Bulkhead can run on.
#[derive(Debug)]
pub enum PlatformError {
    /// The `acpi` crate refused the tables.
    Acpi(AcpiError),
    /// The MADT lists no usable CPU.
    NoCpus,
}

impl fmt::Display for PlatformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlatformError::Acpi(AcpiError::TableMissing(signature)) => {
                write!(f, "the ACPI tables have no {signature}")
            }
            PlatformError::Acpi(AcpiError::NoValidRsdp) => {
                write!(
                    f,
                    "no ACPI RSDP (neither from the boot loader nor in the BIOS area)"
                )
            }
            PlatformError::Acpi(error) => write!(f, "ACPI tables refused: {error:?}"),
            PlatformError::NoCpus => write!(f, "the MADT lists no usable CPU"),
        }
    }
}

/// The tables are reached through the boot identity map: a physical address is its own
/// virtual address.
#[derive(Clone, Copy, Debug)]
struct IdentityMapped;

/// Stands in for the table at physical address 0, which no firmware has: reads see zeros.
static NOTHING: [u64; 512] = [0; 512];

impl AcpiHandler for IdentityMapped {
    unsafe fn map_physical_region<T>(
        &self,
        physical_address: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        let pointer = NonNull::new(physical_address as *mut T)
            .unwrap_or_else(|| NonNull::from(&NOTHING).cast());
        // SAFETY: the caller (the acpi crate) asks for a region holding a T; the low 4 GiB are
        // identity-mapped while the tables are read, so the physical address is the pointer.
        unsafe { PhysicalMapping::new(physical_address, pointer, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// Reads the platform from the tables at `root`, or from an RSDP found in the BIOS area.
///
/// # Safety
/// The low 4 GiB must be identity-mapped and `root` (if given) must come from the boot loader's
/// RSDP tag.
pub unsafe fn read(root: Option<RootTable>) -> Result<Platform, PlatformError> {
    // SAFETY: forwarded from the caller: the address is the RSDT/XSDT the RSDP names, or the
    // BIOS area (identity-mapped) is searched for an RSDP.
    let tables = unsafe {
        match root {
            Some(root) => {
                AcpiTables::from_rsdt(IdentityMapped, root.revision, root.address as usize)
            }
            None => AcpiTables::search_for_rsdp_bios(IdentityMapped),
        }
    }
    .map_err(PlatformError::Acpi)?;
    let madt = tables.find_table::<Madt>().map_err(PlatformError::Acpi)?;
    let header = { madt.get().header };
    let oem = String::from(header.oem_id().trim());
    let mut local_apic_address = u64::from(madt.get().local_apic_address);
    let mut cpus = Vec::new();
    let mut io_apics = Vec::new();
    const ENABLED: u32 = 1 << 0;
    const ONLINE_CAPABLE: u32 = 1 << 1;
    for entry in madt.get().entries() {
        match entry {
            MadtEntry::LocalApic(apic) if apic.flags & (ENABLED | ONLINE_CAPABLE) != 0 => {
                cpus.push(Cpu {
                    apic_id: u32::from(apic.apic_id),
                    processor_uid: u32::from(apic.processor_id),
                });
            }
            MadtEntry::LocalX2Apic(apic) if apic.flags & (ENABLED | ONLINE_CAPABLE) != 0 => {
                cpus.push(Cpu {
                    apic_id: apic.x2apic_id,
                    processor_uid: apic.processor_uid,
                });
            }
            MadtEntry::IoApic(io_apic) => io_apics.push(IoApic {
                id: io_apic.io_apic_id,
                address: u64::from(io_apic.io_apic_address),
                interrupt_base: io_apic.global_system_interrupt_base,
            }),
            MadtEntry::LocalApicAddressOverride(entry) => {
                local_apic_address = entry.local_apic_address;
            }
            _ => {}
        }
    }
    if cpus.is_empty() {
        return Err(PlatformError::NoCpus);
    }
    let soft_off = soft_off(&tables);
    Ok(Platform {
        oem,
        cpus,
        local_apic_address,
        io_apics,
        soft_off,
    })
}

fn io_port(address: acpi::address::GenericAddress) -> Option<u16> {
    (address.address_space == AddressSpace::SystemIo)
        .then(|| u16::try_from(address.address).ok())
        .flatten()
        .filter(|&port| port != 0)
}

fn soft_off(tables: &AcpiTables<IdentityMapped>) -> SoftOff {
    let Ok(fadt) = tables.find_table::<Fadt>() else {
        return SoftOff::default();
    };
    let pm1a_control = fadt.pm1a_control_block().ok().and_then(io_port);
    let pm1b_control = fadt.pm1b_control_block().ok().flatten().and_then(io_port);
    let smi_command = fadt.smi_cmd_port;
    let enable = fadt.acpi_enable;
    let acpi_enable = (smi_command != 0 && enable != 0)
        .then(|| u16::try_from(smi_command).ok().map(|port| (port, enable)))
        .flatten();
    let sleep_types = tables
        .dsdt()
        .ok()
        .and_then(|dsdt| {
            // SAFETY: the DSDT's AML stream as the FADT locates it, identity-mapped, read only
            // here while nothing writes it.
            let aml = unsafe {
                core::slice::from_raw_parts(dsdt.address as *const u8, dsdt.length as usize)
            };
            sleep_state::s5_sleep_types(aml)
        })
        .unwrap_or((0, 0));
    SoftOff {
        pm1a_control,
        pm1b_control,
        sleep_types,
        acpi_enable,
    }
}
