//! VMX on this CPU: probe CPUID and the capability MSRs, decide (`vmx_features`), fix CR0/CR4,
//! and execute VMXON with a 4 KiB region of its own.

use alloc::alloc::{Layout, alloc_zeroed};
use core::arch::asm;

use raw_cpuid::CpuId;
use x86_64::registers::control::{Cr0, Cr4};

use crate::cpu::{read_msr, write_msr};
use crate::vmx_features::{VmxFeatures, VmxProbe, VmxRefusal, apply_fixed_bits};

const IA32_FEATURE_CONTROL: u32 = 0x3a;
const IA32_VMX_BASIC: u32 = 0x480;
const IA32_VMX_PINBASED_CTLS: u32 = 0x481;
const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
const IA32_VMX_CR0_FIXED0: u32 = 0x486;
const IA32_VMX_CR0_FIXED1: u32 = 0x487;
const IA32_VMX_CR4_FIXED0: u32 = 0x488;
const IA32_VMX_CR4_FIXED1: u32 = 0x489;
const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48b;
const IA32_VMX_EPT_VPID_CAP: u32 = 0x48c;
const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48d;
const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48e;
const CR4_VMXE: u64 = 1 << 13;

/// Reads CPUID and the VMX capability MSRs (each only when the previous one says it exists).
pub fn probe() -> VmxProbe {
    let cpuid = CpuId::new();
    let cpuid_vmx = cpuid.get_feature_info().is_some_and(|f| f.has_vmx());
    let cpuid_svm = cpuid
        .get_extended_processor_and_feature_identifiers()
        .is_some_and(|f| f.has_svm());
    let mut probe = VmxProbe {
        cpuid_vmx,
        cpuid_svm,
        ..VmxProbe::default()
    };
    if !cpuid_vmx {
        return probe;
    }
    // SAFETY: CPUID.1:ECX.VMX is set, so IA32_FEATURE_CONTROL and the basic VMX capability MSRs
    // exist; the later ones are read only when the earlier ones announce them. Reads only.
    unsafe {
        probe.feature_control = read_msr(IA32_FEATURE_CONTROL);
        probe.basic = read_msr(IA32_VMX_BASIC);
        const TRUE_CONTROLS: u64 = 1 << 55;
        let true_controls = probe.basic & TRUE_CONTROLS != 0;
        probe.primary_controls = if true_controls {
            read_msr(IA32_VMX_TRUE_PROCBASED_CTLS)
        } else {
            read_msr(IA32_VMX_PROCBASED_CTLS)
        };
        probe.pin_controls = if true_controls {
            read_msr(IA32_VMX_TRUE_PINBASED_CTLS)
        } else {
            read_msr(IA32_VMX_PINBASED_CTLS)
        };
        const SECONDARY_CONTROLS: u64 = 1 << 63;
        if probe.primary_controls & SECONDARY_CONTROLS != 0 {
            probe.secondary_controls = read_msr(IA32_VMX_PROCBASED_CTLS2);
            const EPT_OR_VPID: u64 = (1 << 33) | (1 << 37);
            if probe.secondary_controls & EPT_OR_VPID != 0 {
                probe.ept_vpid_capabilities = read_msr(IA32_VMX_EPT_VPID_CAP);
            }
        }
    }
    probe
}

/// Why VMXON did not happen on a CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmxError {
    /// The CPU lacks something Bulkhead requires.
    Refused(VmxRefusal),
    /// No memory for the VMXON region.
    OutOfMemory,
    /// VMXON itself failed (VMfailInvalid or VMfailValid).
    VmxonFailed,
}

impl core::fmt::Display for VmxError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VmxError::Refused(refusal) => write!(f, "{refusal}"),
            VmxError::OutOfMemory => write!(f, "no memory for the VMXON region"),
            VmxError::VmxonFailed => write!(f, "VMXON failed"),
        }
    }
}

/// Enters VMX root operation on this CPU if it offers everything Bulkhead requires.
pub fn enable_this_cpu() -> Result<VmxFeatures, VmxError> {
    let features = probe().evaluate().map_err(VmxError::Refused)?;
    if let Some(value) = features.feature_control_to_write {
        // SAFETY: IA32_FEATURE_CONTROL was unlocked (so writable); the value only adds the lock
        // and VMX-outside-SMX bits to what was there.
        unsafe { write_msr(IA32_FEATURE_CONTROL, value) };
    }
    let layout = Layout::from_size_align(4096, 4096).map_err(|_| VmxError::OutOfMemory)?;
    // SAFETY: non-zero size. The region is never freed: the CPU owns it while in VMX operation,
    // which lasts the whole run.
    let region = unsafe { alloc_zeroed(layout) };
    if region.is_null() {
        return Err(VmxError::OutOfMemory);
    }
    // SAFETY: the region is 4 KiB, aligned, ours; its first word is the VMCS revision
    // identifier (bit 31 clear).
    unsafe { region.cast::<u32>().write_volatile(features.revision) };
    // SAFETY: the fixed-bit MSRs exist with VMX; setting the bits they require (CR0.NE, PE,
    // PG are already on in long mode) and CR4.VMXE changes nothing the running code relies on.
    unsafe {
        let cr0 = apply_fixed_bits(
            Cr0::read_raw(),
            read_msr(IA32_VMX_CR0_FIXED0),
            read_msr(IA32_VMX_CR0_FIXED1),
        );
        Cr0::write_raw(cr0);
        let cr4 = apply_fixed_bits(
            Cr4::read_raw() | CR4_VMXE,
            read_msr(IA32_VMX_CR4_FIXED0),
            read_msr(IA32_VMX_CR4_FIXED1),
        );
        Cr4::write_raw(cr4);
    }
    // The region is identity-mapped heap: its address is its physical address.
    let physical = region as u64;
    let failed: u8;
    // SAFETY: VMX is supported and enabled (checked above), CR0/CR4 satisfy the fixed bits,
    // the operand holds the physical address of a VMXON region with the right revision. On
    // failure the CPU stays out of VMX operation and sets CF or ZF.
    unsafe {
        asm!(
            "vmxon qword ptr [{region}]",
            "setna {failed}",
            region = in(reg) &physical,
            failed = out(reg_byte) failed,
            options(nostack)
        );
    }
    if failed != 0 {
        return Err(VmxError::VmxonFailed);
    }
    Ok(features)
}

/// Drops this CPU's cached translations derived from the EPT `pointer` names (INVEPT
/// single-context), after entries were removed or changed. Harmless without VMX operation
/// being on: the instruction then faults, so callers only use it in VMX operation.
pub fn invalidate_ept(pointer: u64) {
    let descriptor: [u64; 2] = [pointer, 0];
    // SAFETY: executed in VMX root operation (the vCPU loop runs only after VMXON on this
    // CPU), with a valid 128-bit descriptor in memory; type 1 = single-context, which the EPT
    // capabilities Bulkhead requires include (EPT_VPID_CAP bit 25). Only TLB state changes.
    unsafe {
        asm!(
            "invept {kind}, [{descriptor}]",
            kind = in(reg) 1_u64,
            descriptor = in(reg) &descriptor,
            options(nostack, readonly)
        );
    }
}
