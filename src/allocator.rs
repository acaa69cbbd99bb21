//! The hypervisor heap: a small bootstrap region inside the image until the memory map is
//! known, then the main heap carved from free RAM. Frees go back to whichever region holds
//! the block.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};

use linked_list_allocator::Heap;
use spin::Mutex;

/// Two first-fit heaps: bootstrap (in the image) and main (carved from RAM at boot).
pub struct BootAllocator {
    bootstrap: Mutex<Heap>,
    main: Mutex<Heap>,
}

impl BootAllocator {
    /// Two empty heaps.
    pub const fn new() -> Self {
        Self {
            bootstrap: Mutex::new(Heap::empty()),
            main: Mutex::new(Heap::empty()),
        }
    }

    /// Hands the bootstrap region to the allocator.
    ///
    /// # Safety
    /// `[start, start + size)` must be writable memory used by nothing else, for the whole run.
    /// Call once.
    pub unsafe fn init_bootstrap(&self, start: u64, size: u64) {
        // SAFETY: forwarded from the caller.
        unsafe { self.bootstrap.lock().init(start as *mut u8, size as usize) };
    }

    /// Hands the main heap region to the allocator; later allocations come from it.
    ///
    /// # Safety
    /// As for [`BootAllocator::init_bootstrap`].
    pub unsafe fn init_main(&self, start: u64, size: u64) {
        // SAFETY: forwarded from the caller.
        unsafe { self.main.lock().init(start as *mut u8, size as usize) };
    }

    fn owns(heap: &Heap, pointer: *mut u8) -> bool {
        let address = pointer as usize;
        let bottom = heap.bottom() as usize;
        bottom <= address && address < bottom.saturating_add(heap.size())
    }
}

// SAFETY: both heaps hand out disjoint blocks of memory they own (their `init` contracts);
// every operation happens under the heap's lock; `dealloc` returns a block to the heap whose
// region contains it, which is the heap that allocated it.
unsafe impl GlobalAlloc for BootAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut main = self.main.lock();
        if main.size() > 0 {
            return main
                .allocate_first_fit(layout)
                .map_or(ptr::null_mut(), NonNull::as_ptr);
        }
        drop(main);
        self.bootstrap
            .lock()
            .allocate_first_fit(layout)
            .map_or(ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        let Some(block) = NonNull::new(pointer) else {
            return;
        };
        let mut bootstrap = self.bootstrap.lock();
        if Self::owns(&bootstrap, pointer) {
            // SAFETY: the block came from this heap (it lies in its region) with `layout`.
            unsafe { bootstrap.deallocate(block, layout) };
            return;
        }
        drop(bootstrap);
        // SAFETY: not the bootstrap heap's, so the main heap allocated it with `layout`.
        unsafe { self.main.lock().deallocate(block, layout) };
    }
}
