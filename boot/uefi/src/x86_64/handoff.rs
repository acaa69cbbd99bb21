//! The last step on x86_64: the loader's own identity map of the low 4 GiB, the image into
//! place, and the jump to the image's 64-bit entry with EAX = the Multiboot2 magic and EBX = the
//! boot information (`boot/src/x86_64_handoff.rs`).
//!
//! After ExitBootServices the firmware's page tables, GDT and stack may lie in the destination
//! (boot-services memory, free now), and a staged copy overwrites them. So the routine below
//! switches to page tables of the loader's before it copies, uses no stack and loads no segment
//! register (the cached descriptors stay valid; interrupts are off). It is position-independent
//! and runs from a copy in a page of loader code below 4 GiB, which is mapped, executable, the
//! same under the firmware's tables and the loader's, wherever the firmware loaded this
//! application.

use core::arch::global_asm;

use uefi::boot::{AllocateType, MemoryType};
use x86_64::PhysAddr;
use x86_64::structures::paging::{PageTable, PageTableFlags};

use crate::{Error, PAGE_SIZE, Range, allocate};

// Arguments: rdi = page-table root, rsi = staging copy, rdx = destination, rcx = bytes to copy
// (0 when the image is in place), r8 = entry, r9 = boot information.
global_asm!(
    r#"
.text
.balign 16
.global bulkhead_uefi_x86_handoff_start
bulkhead_uefi_x86_handoff_start:
    cli
    mov %rdi, %cr3
    mov %rdx, %rdi
    cld
    rep movsb
    mov %r9, %rbx
    mov ${magic}, %eax
    jmp *%r8
.global bulkhead_uefi_x86_handoff_end
bulkhead_uefi_x86_handoff_end:
"#,
    magic = const boot::x86_64_handoff::MULTIBOOT2_BOOTLOADER_MAGIC,
    options(att_syntax)
);

unsafe extern "C" {
    static bulkhead_uefi_x86_handoff_start: u8;
    static bulkhead_uefi_x86_handoff_end: u8;
}

/// Page tables: a PML4, a PDPT and four page directories of 2 MiB pages.
const TABLE_PAGES: u64 = 6;
/// Bytes one page-directory entry maps.
const LARGE_PAGE: u64 = 2 << 20;

/// The hand-off routine and the page tables it switches to, ready in memory below 4 GiB.
#[derive(Clone, Copy, Debug)]
pub struct Handoff {
    /// The copy of the routine (loader code).
    routine: u64,
    /// The PML4 of the loader's identity map of the low 4 GiB.
    root: u64,
    /// Everything above, for overlap checks.
    pub ranges: [Range; 2],
}

/// Where the jump goes and what it takes along.
#[derive(Clone, Copy, Debug)]
pub struct Jump {
    /// The image's link address.
    pub destination: u64,
    /// A staged copy of the whole image and its length, or `None` when it is in place.
    pub staged: Option<(u64, u64)>,
    /// The image's 64-bit entry.
    pub entry: u64,
    /// The Multiboot2 boot information (below 4 GiB).
    pub boot_information: u64,
}

impl Handoff {
    /// Allocates and fills the page tables and the routine's page below `limit` (4 GiB).
    pub fn prepare(limit: u64) -> Result<Self, Error> {
        let tables_len = TABLE_PAGES * PAGE_SIZE;
        let tables = allocate(
            AllocateType::MaxAddress(limit),
            tables_len,
            MemoryType::LOADER_DATA,
        )
        .map_err(|status| Error::Allocate("the hand-off page tables", tables_len, status))?;
        // SAFETY: `TABLE_PAGES` pages were just allocated at `tables`, page-aligned,
        // identity-mapped and owned by the loader.
        unsafe { identity_map_low_4gib(tables) };

        let routine = allocate(
            AllocateType::MaxAddress(limit),
            PAGE_SIZE,
            MemoryType::LOADER_CODE,
        )
        .map_err(|status| Error::Allocate("the hand-off routine", PAGE_SIZE, status))?;
        let start = core::ptr::addr_of!(bulkhead_uefi_x86_handoff_start);
        let end = core::ptr::addr_of!(bulkhead_uefi_x86_handoff_end);
        let len = (end as usize)
            .saturating_sub(start as usize)
            .min(PAGE_SIZE as usize);
        // SAFETY: the routine's bytes lie between the two labels in this application's code,
        // at most a page of them is copied into the page just allocated for it.
        unsafe { core::ptr::copy_nonoverlapping(start, routine as *mut u8, len) };

        Ok(Self {
            routine,
            root: tables,
            ranges: [
                Range::new(tables, tables_len).ok_or(Error::AddressOverflow)?,
                Range::new(routine, PAGE_SIZE).ok_or(Error::AddressOverflow)?,
            ],
        })
    }

    /// Jumps to the image.
    ///
    /// # Safety
    ///
    /// Boot services must have been exited. The destination, a staged copy, the boot
    /// information and the image's entry lie below 4 GiB; the routine and the tables (this
    /// `Handoff`) are clear of the destination; the destination holds only the image or memory
    /// the firmware no longer needs.
    pub unsafe fn enter(self, jump: Jump) -> ! {
        let (source, len) = jump.staged.unwrap_or((0, 0));
        // SAFETY: the caller guarantees the layout above; the routine switches to the loader's
        // identity map (which covers all of it), copies, and never returns.
        unsafe {
            core::arch::asm!(
                "jmp {routine}",
                routine = in(reg) self.routine,
                in("rdi") self.root,
                in("rsi") source,
                in("rdx") jump.destination,
                in("rcx") len,
                in("r8") jump.entry,
                in("r9") jump.boot_information,
                options(noreturn)
            )
        }
    }
}

/// Writes an identity map of the low 4 GiB (2 MiB pages, writable, executable) into the six
/// pages at `base`: PML4, PDPT, four page directories.
///
/// # Safety
///
/// `base` must be six page-aligned, identity-mapped, writable pages the loader owns.
unsafe fn identity_map_low_4gib(base: u64) {
    let table_at = |index: u64| (base + index * PAGE_SIZE) as *mut PageTable;
    for index in 0..TABLE_PAGES {
        // SAFETY: each of the six pages holds exactly one 4 KiB-aligned `PageTable`.
        unsafe { table_at(index).write(PageTable::new()) };
    }
    let link = PageTableFlags::PRESENT | PageTableFlags::WRITABLE;
    // SAFETY: the tables were initialised above; each reference is to a distinct page, and
    // none outlives this function.
    let (pml4, pdpt) = unsafe { (&mut *table_at(0), &mut *table_at(1)) };
    if let Some(entry) = pml4.iter_mut().next() {
        entry.set_addr(PhysAddr::new(base + PAGE_SIZE), link);
    }
    for (directory_index, entry) in pdpt.iter_mut().take(4).enumerate() {
        let directory_index = directory_index as u64;
        let directory_address = base + (2 + directory_index) * PAGE_SIZE;
        entry.set_addr(PhysAddr::new(directory_address), link);
        // SAFETY: as above: page `2 + directory_index` is one of the four directories.
        let directory = unsafe { &mut *table_at(2 + directory_index) };
        for (page_index, page) in directory.iter_mut().enumerate() {
            let address = (directory_index * 512 + page_index as u64) * LARGE_PAGE;
            page.set_addr(PhysAddr::new(address), link | PageTableFlags::HUGE_PAGE);
        }
    }
}
