//! What differs between the architectures, chosen here once: each module below offers the
//! same items, and the rest of the crate uses only those.
//!
//! - The runtime: `runtime` (the arch's guest runtime crate), its `mmio` module, `exit_pass`,
//!   `exit_fail`, `exit_fail_with`, `partition_name`, `boot_option`, `command_line`, `ram`.
//! - The memory map: `is_device_range` (where device registers may be), `is_shared_memory_range`
//!   (where region memory and ivshmem BAR2 may be), `complete_writes` (the barrier before a
//!   doorbell).
//! - PCI: `default_mechanism`, `ecam`, `pci_window`, `config_port_read`/`config_port_write`
//!   (mechanism #1), `intx` (a function's INTx as an [`Interrupt`]).
//! - Platform discovery: `mmio_shmem` (the `nth` MMIO QNX factory page and its interrupt),
//!   `wired` (an interrupt by its platform number).
//! - Interrupts: [`Interrupt`], [`InterruptError`], `init_interrupts`, `enable_level`,
//!   `enable_msi`, `msi_message`, `FIRST_MSI`, `disable_interrupts`/`restore_interrupts`/
//!   `enable_interrupts`, `idle`.
//! - The wait timer: `counter`, `ticks_from_ms`, `install_timer`, `arm_timer`, `stop_timer`.

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
pub use aarch64::*;

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use x86_64::*;

#[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
compile_error!("bulkhead-shmem supports aarch64 and x86_64 guests");

/// A handler the interrupt dispatch calls with the interrupt's key ([`Interrupt::key`]).
pub type Handler = fn(key: u32);
