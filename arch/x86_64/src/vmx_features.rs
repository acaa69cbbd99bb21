//! What Bulkhead requires of a CPU's VMX, decided from CPUID and the VMX capability MSRs.
//!
//! Pure code: the MSR values are read elsewhere (`vmx.rs`) and handed over, so the decision and
//! its wording are tested on the host with values measured on Bochs and QEMU.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// IA32_FEATURE_CONTROL (0x3a): lock bit.
pub const FEATURE_CONTROL_LOCKED: u64 = 1 << 0;
/// IA32_FEATURE_CONTROL: VMXON allowed outside SMX operation.
pub const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;

/// Primary processor-based control: activate the secondary controls.
const PRIMARY_SECONDARY_CONTROLS: u64 = 1 << 31;
/// Secondary processor-based controls.
const SECONDARY_EPT: u64 = 1 << 1;
const SECONDARY_VPID: u64 = 1 << 5;
const SECONDARY_UNRESTRICTED_GUEST: u64 = 1 << 7;
/// IA32_VMX_BASIC: the TRUE_* control MSRs exist.
const BASIC_TRUE_CONTROLS: u64 = 1 << 55;
/// IA32_VMX_EPT_VPID_CAP bits.
const EPT_WALK_LENGTH_4: u64 = 1 << 6;
const EPT_WRITE_BACK: u64 = 1 << 14;
const EPT_2MIB_PAGES: u64 = 1 << 16;
const EPT_1GIB_PAGES: u64 = 1 << 17;
const EPT_INVEPT: u64 = 1 << 20;
const EPT_INVEPT_SINGLE_CONTEXT: u64 = 1 << 25;
const VPID_INVVPID: u64 = 1 << 32;

/// The CPUID bits and MSR values that decide whether Bulkhead can use VMX on a CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmxProbe {
    /// CPUID.1:ECX.VMX.
    pub cpuid_vmx: bool,
    /// CPUID.80000001H:ECX.SVM (reported in the refusal, as the other backend's hint).
    pub cpuid_svm: bool,
    /// IA32_FEATURE_CONTROL as found (before Bulkhead touches it).
    pub feature_control: u64,
    /// IA32_VMX_BASIC.
    pub basic: u64,
    /// IA32_VMX_TRUE_PROCBASED_CTLS (or IA32_VMX_PROCBASED_CTLS without true controls).
    pub primary_controls: u64,
    /// IA32_VMX_PROCBASED_CTLS2 (0 when the secondary controls cannot be activated).
    pub secondary_controls: u64,
    /// IA32_VMX_EPT_VPID_CAP (0 without EPT and VPID).
    pub ept_vpid_capabilities: u64,
}

/// What the CPU offers, once it passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmxFeatures {
    /// VMCS revision identifier (IA32_VMX_BASIC bits 30:0), written into VMXON and VMCS regions.
    pub revision: u32,
    /// EPT can map 1 GiB pages.
    pub ept_1gib_pages: bool,
    /// IA32_FEATURE_CONTROL must be written (it was unlocked) with this value before VMXON.
    pub feature_control_to_write: Option<u64>,
}

/// Why Bulkhead will not use VMX on a CPU: everything missing, in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmxRefusal {
    /// Each missing feature, most fundamental first.
    pub missing: Vec<String>,
}

impl fmt::Display for VmxRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.missing.join("; "))
    }
}

impl VmxProbe {
    /// Decides: the features to use, or the refusal naming what is missing.
    pub fn evaluate(&self) -> Result<VmxFeatures, VmxRefusal> {
        let mut missing: Vec<String> = Vec::new();
        if !self.cpuid_vmx {
            let mut reason = String::from("CPUID.1:ECX.VMX is clear (the CPU has no VMX)");
            if self.cpuid_svm {
                reason
                    .push_str("; it offers AMD SVM instead, which Bulkhead has no backend for yet");
            }
            return Err(VmxRefusal {
                missing: alloc::vec![reason],
            });
        }
        let locked = self.feature_control & FEATURE_CONTROL_LOCKED != 0;
        let enabled = self.feature_control & FEATURE_CONTROL_VMX_OUTSIDE_SMX != 0;
        if locked && !enabled {
            missing.push(
                "IA32_FEATURE_CONTROL is locked with VMX outside SMX disabled (enable VT-x in \
                 the firmware setup)"
                    .into(),
            );
        }
        if self.basic & BASIC_TRUE_CONTROLS == 0 {
            missing.push("the TRUE VMX control MSRs (IA32_VMX_BASIC bit 55)".into());
        }
        let allowed_primary = self.primary_controls >> 32;
        let allowed_secondary = if allowed_primary & PRIMARY_SECONDARY_CONTROLS != 0 {
            self.secondary_controls >> 32
        } else {
            missing.push("secondary processor-based controls".into());
            0
        };
        for (bit, name) in [
            (SECONDARY_EPT, "EPT"),
            (SECONDARY_VPID, "VPID"),
            (SECONDARY_UNRESTRICTED_GUEST, "unrestricted guest"),
        ] {
            if allowed_secondary & bit == 0 {
                missing.push(name.into());
            }
        }
        let capabilities = self.ept_vpid_capabilities;
        if allowed_secondary & SECONDARY_EPT != 0 {
            for (bit, name) in [
                (EPT_WALK_LENGTH_4, "4-level EPT walks"),
                (EPT_WRITE_BACK, "write-back EPT structures"),
                (EPT_2MIB_PAGES, "2 MiB EPT pages"),
                (EPT_INVEPT, "INVEPT"),
                (EPT_INVEPT_SINGLE_CONTEXT, "single-context INVEPT"),
            ] {
                if capabilities & bit == 0 {
                    missing.push(name.into());
                }
            }
        }
        if allowed_secondary & SECONDARY_VPID != 0 && capabilities & VPID_INVVPID == 0 {
            missing.push("INVVPID".into());
        }
        if !missing.is_empty() {
            return Err(VmxRefusal { missing });
        }
        Ok(VmxFeatures {
            revision: (self.basic & 0x7fff_ffff) as u32,
            ept_1gib_pages: capabilities & EPT_1GIB_PAGES != 0,
            feature_control_to_write: (!locked).then_some(
                self.feature_control | FEATURE_CONTROL_LOCKED | FEATURE_CONTROL_VMX_OUTSIDE_SMX,
            ),
        })
    }
}

/// Applies the VMX fixed bits to a CR0 or CR4 value: bits set in `fixed0` must be 1, bits
/// clear in `fixed1` must be 0.
pub fn apply_fixed_bits(value: u64, fixed0: u64, fixed1: u64) -> u64 {
    (value | fixed0) & fixed1
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    /// Bochs 2.7, `cpu: model=corei7_skylake_x` (shared/EMULATORS.md and measured).
    fn skylake_x() -> VmxProbe {
        VmxProbe {
            cpuid_vmx: true,
            cpuid_svm: false,
            feature_control: 0x5,
            basic: 0x00d8_1000_0000_002b,
            primary_controls: 0xfff9_fffe_0401_e172,
            secondary_controls: 0x0053_7cff_0000_0000,
            ept_vpid_capabilities: 0x0000_0f01_0633_4141,
        }
    }

    #[test]
    fn bochs_skylake_passes_with_everything() {
        let features = skylake_x().evaluate().unwrap();
        assert_eq!(features.revision, 0x2b);
        assert!(features.ept_1gib_pages);
        assert_eq!(features.feature_control_to_write, None, "already locked on");
    }

    #[test]
    fn no_vmx_names_svm_when_present() {
        let probe = VmxProbe {
            cpuid_svm: true,
            ..VmxProbe::default()
        };
        let refusal = probe.evaluate().unwrap_err().to_string();
        assert!(refusal.contains("CPUID.1:ECX.VMX is clear"), "{refusal}");
        assert!(refusal.contains("AMD SVM"), "{refusal}");
    }

    #[test]
    fn locked_off_feature_control_is_refused() {
        let probe = VmxProbe {
            feature_control: 0x1,
            ..skylake_x()
        };
        let refusal = probe.evaluate().unwrap_err().to_string();
        assert!(refusal.contains("locked with VMX outside SMX disabled"));
    }

    #[test]
    fn unlocked_feature_control_is_written_locked_and_on() {
        let probe = VmxProbe {
            feature_control: 0,
            ..skylake_x()
        };
        assert_eq!(
            probe.evaluate().unwrap().feature_control_to_write,
            Some(0x5)
        );
    }

    #[test]
    fn every_missing_feature_is_named() {
        let probe = VmxProbe {
            secondary_controls: (SECONDARY_EPT) << 32,
            ept_vpid_capabilities: EPT_WALK_LENGTH_4,
            ..skylake_x()
        };
        let refusal = probe.evaluate().unwrap_err();
        assert_eq!(
            refusal.missing,
            [
                "VPID",
                "unrestricted guest",
                "write-back EPT structures",
                "2 MiB EPT pages",
                "INVEPT",
                "single-context INVEPT"
            ]
        );
        let probe = VmxProbe {
            primary_controls: 0,
            basic: 0x2b,
            ..skylake_x()
        };
        let refusal = probe.evaluate().unwrap_err().to_string();
        assert!(
            refusal.starts_with("the TRUE VMX control MSRs"),
            "{refusal}"
        );
        assert!(refusal.contains("secondary processor-based controls; EPT; VPID"));
    }

    #[test]
    fn fixed_bits() {
        assert_eq!(
            apply_fixed_bits(0x11, 0x8000_0021, 0xffff_ffff),
            0x8000_0031
        );
        assert_eq!(apply_fixed_bits(0x2020, 0x2000, 0x003f_ffff), 0x2020);
        assert_eq!(apply_fixed_bits(0x40_2000, 0x2000, 0x3f_ffff), 0x2000);
    }
}
