//! CPU identification.

use core::arch::x86_64::{__cpuid, CpuidResult};

/// CPUID leaf `leaf`, subleaf 0.
pub fn cpuid(leaf: u32) -> CpuidResult {
    __cpuid(leaf)
}

/// The vendor string (CPUID 0: EBX, EDX, ECX).
pub fn vendor() -> [u8; 12] {
    let r = cpuid(0);
    let mut vendor = [0u8; 12];
    for (chunk, word) in vendor.chunks_exact_mut(4).zip([r.ebx, r.edx, r.ecx]) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    vendor
}

/// CPUID.1:ECX.VMX: whether the CPU offers VMX to this guest.
pub fn has_vmx() -> bool {
    cpuid(1).ecx & (1 << 5) != 0
}

/// CPUID.1:ECX bit 31: running under a hypervisor.
pub fn has_hypervisor_bit() -> bool {
    cpuid(1).ecx & (1 << 31) != 0
}
