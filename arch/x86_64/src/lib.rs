//! Bulkhead's x86_64 support: everything that touches long-mode control registers, MSRs, the
//! local APIC and VMX.
//!
//! Design principles:
//! - Pure logic (page-table and EPT builders, VMX capability checks, exception names, the ACPI
//!   `_S5_` lookup) builds and tests on the host; modules that execute privileged instructions
//!   are compiled for bare-metal x86_64 only (`target_os = "none"`), so host builds of the
//!   workspace never see them.
//! - `unsafe` stays in small functions with a `// SAFETY:` line each; callers get safe APIs.
//! - Well-kept crates do the bookkeeping (`x86_64` for descriptor tables and registers,
//!   `uart_16550` for COM1, `acpi` for the MADT and FADT, `raw-cpuid` for CPUID); what they do
//!   not cover (exception entry stubs, INIT-SIPI-SIPI, VMXON) is written here.
#![no_std]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        reason = "tests assert by panicking"
    )
)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod decode;
pub mod fast_lane;
pub mod host_timer;
pub mod msr_bitmap;
pub mod paging;
pub mod sleep_state;
pub mod svm;
pub mod vapic;
pub mod vector;
pub mod vmx_exit;
pub mod vmx_features;
pub mod vx2apic;

#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub mod apic;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub mod cpu;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub mod descriptors;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub mod exception;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub(crate) mod guest_apic;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub mod mmu;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub mod pit;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub mod platform;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub mod power;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub mod serial;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub mod svm_vcpu;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub mod vmcs;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub mod vmx;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub mod vmx_vcpu;
