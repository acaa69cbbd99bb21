//! The guest's entry: a stack, a zeroed .bss, then the guest's `main` (named with
//! [`entry!`](crate::entry!)).

#[cfg(target_os = "none")]
use core::arch::global_asm;

#[cfg(target_os = "none")]
use crate::boot_info;

// Bare metal only: a host unit-test binary has its own `_start`.
#[cfg(target_os = "none")]
global_asm!(
    ".section .text.entry, \"ax\"",
    ".global _start",
    "_start:",
    "    cld",
    "    lea rsp, [rip + __stack_top]",
    "    mov rbx, rdi",
    "    lea rdi, [rip + __bss_start]",
    "    lea rcx, [rip + __bss_end]",
    "    sub rcx, rdi",
    "    xor eax, eax",
    "    rep stosb",
    "    mov rdi, rbx",
    "    call {start}",
    "    ud2",
    start = sym start,
);

#[cfg(target_os = "none")]
unsafe extern "Rust" {
    /// The guest's main function, defined by [`entry!`](crate::entry!).
    safe fn bulkhead_guest_x86_main() -> !;
}

/// Rust entry: remembers the boot information, then runs the guest's `main`.
#[cfg(target_os = "none")]
extern "C" fn start(boot_information: u64) -> ! {
    boot_info::set_address(boot_information);
    bulkhead_guest_x86_main()
}

/// Names the guest's `fn main() -> !`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[unsafe(no_mangle)]
        fn bulkhead_guest_x86_main() -> ! {
            $main()
        }
    };
}
