//! `bulkhead-guest`: the runtime every Bulkhead test guest links, bare metal at EL1.
//!
//! Design principles:
//! - One image runs unchanged inside a Bulkhead partition and directly on QEMU `virt`
//!   (`-cpu max`, no virtualization): everything it needs comes from the device tree in x0,
//!   with `virt` defaults when there is none.
//! - No allocation, no global mutable state outside atomics and [`sync::SpinLock`]; unsafe is
//!   confined to entry/vector assembly, system registers and MMIO, each with its reason.
//! - A guest says how its run ended on its last line: `PASS`, or `FAIL: reason` (also from
//!   panics and unexpected exceptions), then powers off with PSCI SYSTEM_OFF.
//!
//! A guest is a `#![no_std] #![no_main]` binary that names its `fn main() -> !` with
//! [`entry!`]; vCPU 0 runs it after the runtime has read the device tree. Other vCPUs are
//! started with [`cpu::start_vcpu`].

#![no_std]

pub mod console;
pub mod cpu;
mod entry;
pub mod exit;
pub mod gic;
pub mod irq;
pub mod mmio;
pub mod platform;
pub mod psci;
pub mod sync;
pub mod timer;

pub use exit::{exit_fail, exit_fail_with, exit_pass};

/// Names the guest's `fn main() -> !`, which vCPU 0 runs with IRQs masked.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        /// The guest's entry, called by the runtime on vCPU 0.
        #[unsafe(export_name = "bulkhead_guest_main")]
        pub extern "C" fn __bulkhead_guest_main() -> ! {
            let main: fn() -> ! = $main;
            main()
        }
    };
}

unsafe extern "C" {
    /// Defined by the guest through [`entry!`].
    fn bulkhead_guest_main() -> !;
}

/// Rust side of the boot entry on vCPU 0: reads the device tree, then runs the guest.
#[unsafe(no_mangle)]
extern "C" fn bulkhead_guest_primary_start(device_tree: usize) -> ! {
    platform::init(device_tree);
    // SAFETY: `entry!` defines this symbol as a safe `extern "C" fn() -> !`; a guest
    // without it does not link.
    unsafe { bulkhead_guest_main() }
}
