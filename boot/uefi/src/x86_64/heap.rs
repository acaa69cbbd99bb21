//! The loader's heap on x86_64: one arena of loader-data pages below 4 GiB, taken from the
//! firmware once and never given back. The multiboot2 crate's builder allocates, and the boot
//! information must be built after ExitBootServices (from the final memory map), when the
//! firmware's allocator is gone; it then also lies where the 32-bit EBX of the hand-off reaches.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{NonNull, null_mut};

use linked_list_allocator::Heap;
use spin::Mutex;
use uefi::boot::{AllocateType, MemoryType};

use crate::{Error, Range, allocate};

/// Bytes in the arena: the boot information of a memory map with thousands of entries, the
/// command line and the builder's temporary copies fit many times over.
const ARENA_SIZE: u64 = 256 << 10;

/// The arena behind a lock (the loader runs on one CPU; the lock only makes it `Sync`).
struct Arena(Mutex<Heap>);

#[global_allocator]
static ARENA: Arena = Arena(Mutex::new(Heap::empty()));

// SAFETY: `Heap` hands out disjoint blocks of the arena it was given, each with the size and
// alignment of its layout (or fails, which becomes a null pointer), and takes back only the
// blocks `dealloc`'s caller got from `alloc` with the same layout. Before `init` it has no
// memory and every allocation fails.
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.0
            .lock()
            .allocate_first_fit(layout)
            .map_or(null_mut(), NonNull::as_ptr)
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        if let Some(block) = NonNull::new(pointer) {
            // SAFETY: `GlobalAlloc` requires `pointer` to come from `alloc` with `layout`.
            unsafe { self.0.lock().deallocate(block, layout) };
        }
    }
}

/// Takes the arena's pages from the firmware (below `limit`) and starts the heap on them.
/// Call once, before anything allocates.
pub fn init(limit: u64) -> Result<Range, Error> {
    let address = allocate(
        AllocateType::MaxAddress(limit),
        ARENA_SIZE,
        MemoryType::LOADER_DATA,
    )
    .map_err(|status| Error::Allocate("the loader's heap", ARENA_SIZE, status))?;
    let range = Range::new(address, ARENA_SIZE).ok_or(Error::AddressOverflow)?;
    // SAFETY: the pages were just allocated to the loader, identity-mapped and writable, and
    // are never freed; the heap is initialised once, here, before any allocation.
    unsafe { ARENA.0.lock().init(address as *mut u8, ARENA_SIZE as usize) };
    Ok(range)
}
