//! The bootable Bulkhead image: glue between the entry code (`boot/`), arch support (`arch/`)
//! and the arch-neutral core (`hypervisor/`). Built for bare-metal targets by `cargo xtask
//! build`; on the host it is only a stub that says so.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(all(target_os = "none", target_arch = "aarch64"))]
mod aarch64;
#[cfg(target_os = "none")]
mod allocator;
#[cfg(target_os = "none")]
mod heap_tables;
#[cfg(target_os = "none")]
mod shared_memory;
#[cfg(all(target_os = "none", target_arch = "x86_64"))]
mod x86_64;

#[cfg(all(
    target_os = "none",
    not(any(target_arch = "aarch64", target_arch = "x86_64"))
))]
compile_error!("Bulkhead's bare-metal image supports aarch64 and x86_64 only");

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "bulkhead is a bare-metal image: build and boot it with `cargo xtask build` / `cargo xtask run`"
    );
    std::process::exit(2);
}
