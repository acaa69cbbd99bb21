//! The two entries of the boot CPU (Multiboot2 from GRUB in 32-bit protected mode; 64-bit
//! mode from Bulkhead's UEFI loader), the real-mode trampoline that brings application
//! processors into long mode, and reading the Multiboot2 boot information into one
//! [`BootInfo`].
//!
//! Through GRUB the boot CPU arrives at `_start` in 32-bit protected mode with paging off,
//! EAX = the Multiboot2 magic and EBX = the boot information's physical address. The assembly
//! zeroes .bss, identity-maps the low 4 GiB with 2 MiB pages, enables long mode (with NX and
//! CR0.WP), loads a GDT with a 64-bit code segment and calls
//! `bulkhead_x86_primary_main(boot_information, EntryPath::Multiboot2)`.
//!
//! Through the UEFI loader it arrives at `bulkhead_x86_uefi_entry` already in long mode, on the
//! loader's page tables, with the same two registers (see [`crate::x86_64_handoff`]). That
//! entry leaves everything of the firmware's behind (interrupts off, a null IDT until the
//! hypervisor installs its own), then does what the 32-bit path does from the same tables on:
//! zeroed .bss, the boot page tables, CR0/CR4/EFER as that path leaves them, the boot GDT and
//! stack, and calls `bulkhead_x86_primary_main(boot_information, EntryPath::Uefi)`.

use alloc::string::String;
use alloc::vec::Vec;
use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};

pub use crate::x86_64_handoff::TRAMPOLINE_ADDRESS;
/// The STARTUP IPI vector that starts a CPU at [`TRAMPOLINE_ADDRESS`].
pub const TRAMPOLINE_VECTOR: u8 = (TRAMPOLINE_ADDRESS >> 12) as u8;

/// The stack the next application processor takes (0: none; it halts). Claimed with an
/// exchange, so a CPU that starts late never shares a stack.
static AP_STACK_TOP: AtomicU64 = AtomicU64::new(0);
/// What the next application processor passes to `bulkhead_x86_secondary_main`.
static AP_CONTEXT: AtomicU64 = AtomicU64::new(0);

/// Which entry the boot CPU came through: the second argument of `bulkhead_x86_primary_main`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryPath {
    /// `_start`, from a Multiboot2 boot loader (GRUB) in 32-bit protected mode.
    Multiboot2,
    /// `bulkhead_x86_uefi_entry`, from Bulkhead's UEFI loader in 64-bit mode.
    Uefi,
}

impl EntryPath {
    /// What the entry code passes (0 from `_start`, 1 from the 64-bit entry).
    pub fn from_register(value: u64) -> Self {
        if value == ENTRY_PATH_UEFI {
            Self::Uefi
        } else {
            Self::Multiboot2
        }
    }
}

/// The 64-bit entry's value for [`EntryPath::Uefi`].
const ENTRY_PATH_UEFI: u64 = 1;

global_asm!(
    r#"
.set BULKHEAD_MULTIBOOT2_MAGIC, 0xe85250d6
.set BULKHEAD_BOOTLOADER_MAGIC, {bootloader_magic}
.set BULKHEAD_TRAMPOLINE, {trampoline}

/* The boot page tables: PML4[0] -> PDPT; PDPT[0..4] -> four page directories of 2 MiB pages
   identity-mapping 0..4 GiB, present and writable. Assembles the same in 32-bit and 64-bit
   code (`index` is %ecx or %rcx); the tables lie in .bss, zeroed before. Clobbers EAX, ECX. */
.macro bulkhead_boot_tables index
    mov $bulkhead_boot_pdpt, %eax
    or $3, %eax
    mov %eax, bulkhead_boot_pml4
    xor %ecx, %ecx
1:  mov %ecx, %eax
    shl $12, %eax
    add $bulkhead_boot_directories, %eax
    or $3, %eax
    mov %eax, bulkhead_boot_pdpt(,\index,8)
    inc %ecx
    cmp $4, %ecx
    jb 1b
    xor %ecx, %ecx
2:  mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax                  /* present, writable, 2 MiB */
    mov %eax, bulkhead_boot_directories(,\index,8)
    inc %ecx
    cmp $2048, %ecx
    jb 2b
.endm

/* The Multiboot2 header: within the file's first 32 KiB, 8-byte aligned, no tags but the end. */
.section .multiboot2, "a"
.balign 8
bulkhead_multiboot2_header:
    .long BULKHEAD_MULTIBOOT2_MAGIC
    .long 0
    .long bulkhead_multiboot2_header_end - bulkhead_multiboot2_header
    .long 0x100000000 - (BULKHEAD_MULTIBOOT2_MAGIC + (bulkhead_multiboot2_header_end - bulkhead_multiboot2_header))
    .short 0
    .short 0
    .long 8
bulkhead_multiboot2_header_end:

.section .text.boot, "ax"
.code32
.global _start
_start:
    cli
    cld
    mov %eax, %ebp                  /* Multiboot2 magic */
    mov %ebx, %esi                  /* boot information */
    mov $__boot_stack_top, %esp
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb
    cmp $BULKHEAD_BOOTLOADER_MAGIC, %ebp
    jne 9f
    xor %ebp, %ebp                  /* EntryPath::Multiboot2 */

    bulkhead_boot_tables %ecx

    mov %cr4, %eax
    or $0x20, %eax                  /* PAE */
    mov %eax, %cr4
    mov $bulkhead_boot_pml4, %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx           /* EFER: long mode, no-execute */
    rdmsr
    or $0x900, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80010021, %eax            /* paging, write protect, native FPU errors, protection */
    and $0x9fffffff, %eax           /* caches on */
    mov %eax, %cr0
    lgdt bulkhead_boot_gdt_pointer
    ljmp $0x08, $bulkhead_boot_long_mode
9:  hlt
    jmp 9b

.code64
/* Both entries meet here: on the boot page tables and GDT, ESI = the boot information's
   address, EBP = the entry path. */
bulkhead_boot_long_mode:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %eax, %eax
    mov %ax, %fs
    mov %ax, %gs
    lea __boot_stack_top(%rip), %rsp
    mov %esi, %edi                  /* zero-extends: the boot information's address */
    mov %ebp, %esi                  /* the entry path */
    call bulkhead_x86_primary_main
3:  cli
    hlt
    jmp 3b

/* The 64-bit entry (Bulkhead's UEFI loader; the contract is boot/src/x86_64_handoff.rs): long
   mode on the loader's identity map of the low 4 GiB, EAX = the Multiboot2 magic, EBX = the
   boot information. Nothing of the firmware's is trusted: its IDT may point at code that is
   gone, so a null IDT makes any fault before the hypervisor's own IDT a triple fault (a reset)
   instead; its GDT is replaced before the first segment load. The stack is not touched until
   the boot stack is loaded. */
.global bulkhead_x86_uefi_entry
bulkhead_x86_uefi_entry:
    cli
    cld
    lidt bulkhead_boot_null_idt_pointer(%rip)
    mov %eax, %ebp                  /* Multiboot2 magic */
    mov %ebx, %esi                  /* boot information (below 4 GiB) */
    lea __bss_start(%rip), %rdi
    lea __bss_end(%rip), %rcx
    sub %rdi, %rcx
    xor %eax, %eax
    rep stosb
    cmp $BULKHEAD_BOOTLOADER_MAGIC, %ebp
    jne 8f

    bulkhead_boot_tables %rcx

    /* CR4 = PAE alone, what the 32-bit path leaves: drops whatever else the firmware turned on
       (PGE: clearing it flushes global TLB entries; PCIDE, SMEP, CET ...). */
    mov $0x20, %eax
    mov %rax, %cr4
    lea bulkhead_boot_pml4(%rip), %rax
    mov %rax, %cr3
    mov $0xc0000080, %ecx           /* EFER: long mode, no-execute */
    rdmsr
    or $0x900, %eax
    wrmsr
    mov %cr0, %rax
    or $0x80010021, %eax            /* paging, write protect, native FPU errors, protection */
    and $0x9fffffff, %eax           /* caches on */
    mov %rax, %cr0
    lgdt bulkhead_boot_gdt_pointer(%rip)
    lea __boot_stack_top(%rip), %rsp
    pushq $0x08                     /* reload CS from the boot GDT */
    lea 7f(%rip), %rax
    pushq %rax
    lretq
7:  mov ${entry_uefi}, %ebp
    jmp bulkhead_boot_long_mode
8:  cli
    hlt
    jmp 8b

/* Application processors arrive here from the trampoline, in 64-bit mode on the hypervisor's
   page tables, with the trampoline's GDT. */
.global bulkhead_x86_secondary_entry
bulkhead_x86_secondary_entry:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %eax, %eax
    mov %ax, %fs
    mov %ax, %gs
    xchg %rax, {stack_top}(%rip)
    test %rax, %rax
    jz 4f
    mov %rax, %rsp
    mov {context}(%rip), %rdi
    call bulkhead_x86_secondary_main
4:  cli
    hlt
    jmp 4b

/* The boot GDT: accessed bits preset, so the CPU never writes it (it may be read-only). */
.section .rodata, "a"
.balign 8
bulkhead_boot_gdt:
    .quad 0
    .quad 0x00af9b000000ffff        /* 0x08: 64-bit code */
    .quad 0x00cf93000000ffff        /* 0x10: data */
bulkhead_boot_gdt_end:
bulkhead_boot_gdt_pointer:
    .short bulkhead_boot_gdt_end - bulkhead_boot_gdt - 1
    .quad bulkhead_boot_gdt
.balign 8
bulkhead_boot_null_idt_pointer:
    .short 0
    .quad 0

/* The AP trampoline, copied to BULKHEAD_TRAMPOLINE and entered there in real mode (CS =
   0x800, IP = 0). Position-dependent on its copy: absolute addresses are computed from it. */
.balign 16
.global bulkhead_x86_trampoline_start
bulkhead_x86_trampoline_start:
.code16
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    lgdtl (bulkhead_x86_trampoline_gdt_pointer - bulkhead_x86_trampoline_start)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x08, $(BULKHEAD_TRAMPOLINE + (5f - bulkhead_x86_trampoline_start))
.code32
5:  mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    mov (BULKHEAD_TRAMPOLINE + (bulkhead_x86_trampoline_cr3 - bulkhead_x86_trampoline_start)), %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx
    rdmsr
    or $0x900, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80010021, %eax
    and $0x9fffffff, %eax
    mov %eax, %cr0
    ljmpl *(BULKHEAD_TRAMPOLINE + (bulkhead_x86_trampoline_target - bulkhead_x86_trampoline_start))
.balign 8
.global bulkhead_x86_trampoline_target
bulkhead_x86_trampoline_target:
    .long 0                         /* patched: bulkhead_x86_secondary_entry */
    .short 0x18
.balign 4
.global bulkhead_x86_trampoline_cr3
bulkhead_x86_trampoline_cr3:
    .long 0                         /* patched: the hypervisor's PML4 */
.balign 8
bulkhead_x86_trampoline_gdt:
    .quad 0
    .quad 0x00cf9b000000ffff        /* 0x08: 32-bit code */
    .quad 0x00cf93000000ffff        /* 0x10: data */
    .quad 0x00af9b000000ffff        /* 0x18: 64-bit code */
bulkhead_x86_trampoline_gdt_end:
bulkhead_x86_trampoline_gdt_pointer:
    .short bulkhead_x86_trampoline_gdt_end - bulkhead_x86_trampoline_gdt - 1
    .long BULKHEAD_TRAMPOLINE + (bulkhead_x86_trampoline_gdt - bulkhead_x86_trampoline_start)
.global bulkhead_x86_trampoline_end
bulkhead_x86_trampoline_end:
.code64

/* Boot page tables: PML4, PDPT, four page directories. */
.section .bss.boot_tables, "aw", @nobits
.balign 4096
bulkhead_boot_pml4:
    .skip 4096
bulkhead_boot_pdpt:
    .skip 4096
bulkhead_boot_directories:
    .skip 4 * 4096
"#,
    stack_top = sym AP_STACK_TOP,
    context = sym AP_CONTEXT,
    bootloader_magic = const crate::x86_64_handoff::MULTIBOOT2_BOOTLOADER_MAGIC,
    trampoline = const TRAMPOLINE_ADDRESS,
    entry_uefi = const ENTRY_PATH_UEFI,
    options(att_syntax)
);

unsafe extern "C" {
    static bulkhead_x86_secondary_entry: u8;
    static bulkhead_x86_trampoline_start: u8;
    static bulkhead_x86_trampoline_end: u8;
    static bulkhead_x86_trampoline_target: u8;
    static bulkhead_x86_trampoline_cr3: u8;
    static __bootstrap_heap_start: u8;
    static __bootstrap_heap_end: u8;
    static __image_start: u8;
    static __image_end: u8;
    static __text_end: u8;
    static __rodata_end: u8;
}

/// The image's sections as linked: `[start, text_end)` code, `[text_end, rodata_end)`
/// read-only data, `[rodata_end, end)` data, .bss, the bootstrap heap and the boot stack.
/// Identity-mapped.
#[derive(Clone, Copy, Debug)]
pub struct ImageLayout {
    /// First byte of the image (the Multiboot2 header).
    pub start: u64,
    /// End of code (page-aligned).
    pub text_end: u64,
    /// End of read-only data (page-aligned).
    pub rodata_end: u64,
    /// End of the image including .bss and the boot stack (page-aligned).
    pub end: u64,
}

/// Where the linker put the image's sections.
pub fn image_layout() -> ImageLayout {
    ImageLayout {
        start: core::ptr::addr_of!(__image_start) as u64,
        text_end: core::ptr::addr_of!(__text_end) as u64,
        rodata_end: core::ptr::addr_of!(__rodata_end) as u64,
        end: core::ptr::addr_of!(__image_end) as u64,
    }
}

/// The bootstrap heap the linker reserved inside the image: what the allocator uses before the
/// memory map is known. Returns (start, size).
pub fn bootstrap_heap() -> (u64, u64) {
    let start = core::ptr::addr_of!(__bootstrap_heap_start) as u64;
    let end = core::ptr::addr_of!(__bootstrap_heap_end) as u64;
    (start, end.saturating_sub(start))
}

/// Why the trampoline could not be installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrampolineError {
    /// The page tables' root is above 4 GiB: the 32-bit trampoline cannot load it.
    RootAbove4GiB,
    /// The trampoline does not fit its page.
    TooLarge,
}

/// Copies the AP trampoline to [`TRAMPOLINE_ADDRESS`] and points it at `page_table_root` (the
/// CR3 the application processors use) and at the 64-bit secondary entry.
///
/// # Safety
/// The page at [`TRAMPOLINE_ADDRESS`] must be identity-mapped writable (the boot page tables),
/// RAM nothing else uses, and no CPU may be executing it.
pub unsafe fn install_trampoline(page_table_root: u64) -> Result<(), TrampolineError> {
    let root = u32::try_from(page_table_root).map_err(|_| TrampolineError::RootAbove4GiB)?;
    let start = core::ptr::addr_of!(bulkhead_x86_trampoline_start) as u64;
    let end = core::ptr::addr_of!(bulkhead_x86_trampoline_end) as u64;
    let size = end.saturating_sub(start);
    if size > 4096 {
        return Err(TrampolineError::TooLarge);
    }
    let offset_of = |symbol: *const u8| (symbol as u64).saturating_sub(start);
    let target = offset_of(core::ptr::addr_of!(bulkhead_x86_trampoline_target));
    let cr3 = offset_of(core::ptr::addr_of!(bulkhead_x86_trampoline_cr3));
    let entry = u32::try_from(core::ptr::addr_of!(bulkhead_x86_secondary_entry) as u64)
        .map_err(|_| TrampolineError::RootAbove4GiB)?;
    let destination = TRAMPOLINE_ADDRESS as *mut u8;
    // SAFETY: the caller guarantees the destination page is writable RAM nobody uses; the
    // source is the trampoline's bytes in the image; `size` fits the page (checked), and both
    // patch offsets lie inside the copied bytes (the symbols are between start and end).
    unsafe {
        core::ptr::copy_nonoverlapping(start as *const u8, destination, size as usize);
        destination
            .add(target as usize)
            .cast::<u32>()
            .write_unaligned(entry);
        destination
            .add(cr3 as usize)
            .cast::<u32>()
            .write_unaligned(root);
    }
    Ok(())
}

/// Hands the next application processor its stack and the value its Rust entry receives.
/// Call before each STARTUP sequence, one CPU at a time.
pub fn prepare_secondary(stack_top: u64, context: u64) {
    AP_CONTEXT.store(context, Ordering::Release);
    AP_STACK_TOP.store(stack_top, Ordering::Release);
}

/// Withdraws a stack no application processor claimed (it did not start in time).
pub fn withdraw_secondary() {
    AP_STACK_TOP.store(0, Ordering::Release);
}

/// The boot information's magic in EAX (checked by the entry code).
pub const MULTIBOOT2_MAGIC: u32 = multiboot2::MAGIC;
const _: () = assert!(MULTIBOOT2_MAGIC == crate::x86_64_handoff::MULTIBOOT2_BOOTLOADER_MAGIC);

/// One memory-map entry from the boot loader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryArea {
    /// First byte.
    pub start: u64,
    /// Bytes.
    pub size: u64,
    /// RAM free for the operating system (Multiboot2 type 1).
    pub available: bool,
}

/// Where the ACPI tables begin, from the Multiboot2 RSDP tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcpiRoot {
    /// The RSDP's revision (0 for ACPI 1.0).
    pub revision: u8,
    /// The RSDT's (revision 0) or the XSDT's physical address.
    pub address: u64,
}

/// What the boot loader handed over, copied out of the Multiboot2 information.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootInfo {
    /// The boot information structure itself: `[start, end)`.
    pub range: (u64, u64),
    /// The boot loader's name (empty if it gave none).
    pub loader: String,
    /// The command line (`multiboot2 /boot/bulkhead.elf ARGS` in GRUB).
    pub command_line: String,
    /// The memory map.
    pub memory: Vec<MemoryArea>,
    /// The ACPI root table, if the boot loader passed an RSDP.
    pub acpi: Option<AcpiRoot>,
}

/// Why the boot information could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// The structure is malformed (the multiboot2 crate refused it).
    Invalid,
    /// It has no memory-map tag.
    NoMemoryMap,
}

/// Reads the Multiboot2 boot information at `address` into a [`BootInfo`].
///
/// # Safety
/// `address` must be what the boot loader passed in EBX (the magic was checked), identity-mapped
/// and not yet reused.
pub unsafe fn read_multiboot2(address: u64) -> Result<BootInfo, BootInfoError> {
    // SAFETY: forwarded from the caller; the crate checks the header before trusting sizes.
    let info = unsafe {
        multiboot2::BootInformation::load(address as *const multiboot2::BootInformationHeader)
    }
    .map_err(|_| BootInfoError::Invalid)?;
    let memory = info
        .memory_map_tag()
        .ok_or(BootInfoError::NoMemoryMap)?
        .memory_areas()
        .iter()
        .map(|area| MemoryArea {
            start: area.start_address(),
            size: area.size(),
            available: area.typ() == multiboot2::MemoryAreaType::Available,
        })
        .collect();
    let acpi = match (info.rsdp_v2_tag(), info.rsdp_v1_tag()) {
        (Some(v2), _) if v2.xsdt_address() != 0 => Some(AcpiRoot {
            revision: v2.revision().max(2),
            address: v2.xsdt_address() as u64,
        }),
        (_, Some(v1)) => Some(AcpiRoot {
            revision: 0,
            address: v1.rsdt_address() as u64,
        }),
        _ => None,
    };
    Ok(BootInfo {
        range: (info.start_address() as u64, info.end_address() as u64),
        loader: info
            .boot_loader_name_tag()
            .and_then(|tag| tag.name().ok())
            .map(String::from)
            .unwrap_or_default(),
        command_line: info
            .command_line_tag()
            .and_then(|tag| tag.cmdline().ok())
            .map(String::from)
            .unwrap_or_default(),
        memory,
        acpi,
    })
}
