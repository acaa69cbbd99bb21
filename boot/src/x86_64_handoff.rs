//! The x86_64 image's side of the hand-off from a 64-bit boot loader (Bulkhead's UEFI loader,
//! `boot/uefi`), stated once for both: the image's entry code follows it, the loader obeys it.
//!
//! The image is an ELF64 linked at its physical addresses. GRUB enters `_start` (the ELF entry
//! of the image on the GRUB ISO) in 32-bit protected mode. The UEFI loader embeds a copy whose
//! ELF entry is [`UEFI_ENTRY_SYMBOL`] (xtask rewrites `e_entry`) and jumps there with:
//! - the CPU in 64-bit mode on identity-mapping 4-level page tables that cover the low 4 GiB,
//!   writable and executable (the loader's own; 5-level paging is refused before then);
//! - EAX = [`MULTIBOOT2_BOOTLOADER_MAGIC`] and EBX = the physical address of Multiboot2 boot
//!   information below 4 GiB, as in the Multiboot2 machine state for EFI amd64 images, but with
//!   boot services already exited: a memory-map tag from the final UEFI memory map, an ACPI
//!   RSDP tag, a command line and the boot loader name [`UEFI_LOADER_NAME`];
//! - every `PT_LOAD` segment at its physical address, the rest of its memory size zeroed;
//! - interrupts possibly on, and the GDT, IDT and stack the firmware's: the entry uses none of
//!   them (it disables interrupts, loads its own GDT, a null IDT, its stack and page tables);
//! - the page at [`TRAMPOLINE_ADDRESS`] RAM that nothing needs any more (available in the
//!   memory map): the image copies its application-processor trampoline there.

/// Physical address the AP trampoline is copied to (below 1 MiB, page-aligned): the STARTUP
/// IPI's vector is its page number. A loader must leave this page free.
pub const TRAMPOLINE_ADDRESS: u64 = 0x8000;

/// The image's 64-bit entry: what the UEFI loader's copy of the ELF has as `e_entry`.
pub const UEFI_ENTRY_SYMBOL: &str = "bulkhead_x86_uefi_entry";

/// The boot loader name the UEFI loader puts in the boot information.
pub const UEFI_LOADER_NAME: &str = "Bulkhead UEFI loader";

/// What a Multiboot2 boot loader passes in EAX.
pub const MULTIBOOT2_BOOTLOADER_MAGIC: u32 = 0x36d7_6289;
