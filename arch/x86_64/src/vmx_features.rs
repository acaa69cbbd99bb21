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
/// Primary processor-based controls of interrupt virtualization.
const PRIMARY_TPR_SHADOW: u64 = 1 << 21;
const PRIMARY_MSR_BITMAPS: u64 = 1 << 28;
/// Secondary processor-based controls of interrupt virtualization.
const SECONDARY_VIRTUALIZE_X2APIC: u64 = 1 << 4;
const SECONDARY_APIC_REGISTER_VIRTUALIZATION: u64 = 1 << 8;
const SECONDARY_VIRTUAL_INTERRUPT_DELIVERY: u64 = 1 << 9;
/// Pin-based control: process posted interrupts.
const PIN_POSTED_INTERRUPTS: u64 = 1 << 7;
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
    /// IA32_VMX_TRUE_PINBASED_CTLS (or IA32_VMX_PINBASED_CTLS without true controls).
    pub pin_controls: u64,
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
    /// The interrupt-virtualization controls the CPU offers.
    pub interrupts: InterruptVirtualization,
}

/// The VMX controls that let a guest's x2APIC accesses and interrupts bypass VM exits, as the
/// capability MSRs allow them (bits 63:32: may be 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterruptVirtualization {
    /// Primary control 28: "use MSR bitmaps" (RDMSR/WRMSR exit only where the bitmap says).
    pub msr_bitmaps: bool,
    /// Primary control 21: "use TPR shadow" (a virtual-APIC page).
    pub tpr_shadow: bool,
    /// Secondary control 4: "virtualize x2APIC mode" (x2APIC MSR accesses the bitmap lets
    /// through go to the virtual-APIC page, not the physical APIC; without APIC-register
    /// virtualization only TPR does).
    pub virtualize_x2apic: bool,
    /// Secondary control 8: "APIC-register virtualization" (x2APIC reads served from the
    /// virtual-APIC page).
    pub apic_register_virtualization: bool,
    /// Secondary control 9: "virtual-interrupt delivery" (the CPU delivers a pending virtual
    /// interrupt and virtualizes EOI without an exit).
    pub virtual_interrupt_delivery: bool,
    /// Pin-based control 7: "process posted interrupts" (another CPU posts a vector with a
    /// notification IPI; the running guest gets it without an exit).
    pub posted_interrupts: bool,
}

impl InterruptVirtualization {
    /// Reads the controls' allowed-1 halves of the pin-based, primary and secondary capability
    /// MSRs.
    pub fn from_capabilities(pin: u64, primary: u64, secondary: u64) -> InterruptVirtualization {
        let (pin, primary, secondary) = (pin >> 32, primary >> 32, secondary >> 32);
        let secondary = if primary & PRIMARY_SECONDARY_CONTROLS != 0 {
            secondary
        } else {
            0
        };
        InterruptVirtualization {
            msr_bitmaps: primary & PRIMARY_MSR_BITMAPS != 0,
            tpr_shadow: primary & PRIMARY_TPR_SHADOW != 0,
            virtualize_x2apic: secondary & SECONDARY_VIRTUALIZE_X2APIC != 0,
            apic_register_virtualization: secondary & SECONDARY_APIC_REGISTER_VIRTUALIZATION != 0,
            virtual_interrupt_delivery: secondary & SECONDARY_VIRTUAL_INTERRUPT_DELIVERY != 0,
            posted_interrupts: pin & PIN_POSTED_INTERRUPTS != 0,
        }
    }

    /// Whether guests get their interrupts through virtual-interrupt delivery (a virtual-APIC
    /// page per vCPU, see `vmcs::Vmcs::set_controls`): the CPU offers MSR bitmaps, TPR shadow,
    /// virtualize x2APIC mode, APIC-register virtualization and virtual-interrupt delivery.
    /// Otherwise the hypervisor injects them at VM entry.
    pub fn virtual_delivery(&self) -> bool {
        self.msr_bitmaps
            && self.tpr_shadow
            && self.virtualize_x2apic
            && self.apic_register_virtualization
            && self.virtual_interrupt_delivery
    }

    /// How interrupts reach guests, in words.
    pub fn delivery(&self) -> &'static str {
        if self.virtual_delivery() {
            "interrupts reach guests by virtual-interrupt delivery"
        } else {
            "interrupts reach guests by event injection"
        }
    }

    fn named(&self) -> [(bool, &'static str); 6] {
        [
            (self.msr_bitmaps, "MSR bitmaps"),
            (self.tpr_shadow, "TPR shadow"),
            (self.virtualize_x2apic, "virtualize x2APIC mode"),
            (
                self.apic_register_virtualization,
                "APIC-register virtualization",
            ),
            (
                self.virtual_interrupt_delivery,
                "virtual-interrupt delivery",
            ),
            (self.posted_interrupts, "posted interrupts"),
        ]
    }
}

/// `offered: A, B; absent: C, D` (either part left out when empty).
impl fmt::Display for InterruptVirtualization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let named = self.named();
        let list = |wanted: bool| {
            named
                .iter()
                .filter(|(has, _)| *has == wanted)
                .map(|(_, name)| *name)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (offered, absent) = (list(true), list(false));
        match (offered.is_empty(), absent.is_empty()) {
            (false, false) => write!(f, "offered: {offered}; absent: {absent}"),
            (false, true) => write!(f, "offered: {offered}"),
            _ => write!(f, "absent: {absent}"),
        }
    }
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
                reason.push_str("; it offers SVM, which Bulkhead runs only on AMD and Hygon CPUs");
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
            interrupts: InterruptVirtualization::from_capabilities(
                self.pin_controls,
                self.primary_controls,
                self.secondary_controls,
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

    /// Bochs 2.7 (Debian 2.7+dfsg-4+deb12u1), `cpu: model=corei7_skylake_x`: the allowed-1
    /// halves as Bulkhead prints them at boot (pin-based 0x7f, primary 0xf7f9fffe, secondary
    /// 0x2177fff).
    fn skylake_x() -> VmxProbe {
        VmxProbe {
            cpuid_vmx: true,
            cpuid_svm: false,
            feature_control: 0x5,
            basic: 0x00d8_1000_0000_002b,
            primary_controls: 0xf7f9_fffe_0401_e172,
            secondary_controls: 0x0217_7fff_0000_0000,
            pin_controls: 0x0000_007f_0000_0016,
            ept_vpid_capabilities: 0x0000_0f01_0633_4141,
        }
    }

    #[test]
    fn bochs_skylake_passes_with_everything() {
        let features = skylake_x().evaluate().unwrap();
        assert_eq!(features.revision, 0x2b);
        assert!(features.ept_1gib_pages);
        assert_eq!(features.feature_control_to_write, None, "already locked on");
        let interrupts = features.interrupts;
        assert!(interrupts.msr_bitmaps && interrupts.tpr_shadow && interrupts.virtualize_x2apic);
        assert!(interrupts.apic_register_virtualization);
        assert!(interrupts.virtual_interrupt_delivery);
        assert!(!interrupts.posted_interrupts);
        assert_eq!(
            interrupts.to_string(),
            "offered: MSR bitmaps, TPR shadow, virtualize x2APIC mode, APIC-register \
             virtualization, virtual-interrupt delivery; absent: posted interrupts"
        );
        assert_eq!(
            interrupts.delivery(),
            "interrupts reach guests by virtual-interrupt delivery"
        );
    }

    #[test]
    fn interrupt_virtualization_reads_each_control() {
        let all = InterruptVirtualization::from_capabilities(
            PIN_POSTED_INTERRUPTS << 32,
            (PRIMARY_SECONDARY_CONTROLS | PRIMARY_TPR_SHADOW | PRIMARY_MSR_BITMAPS) << 32,
            (SECONDARY_VIRTUALIZE_X2APIC
                | SECONDARY_APIC_REGISTER_VIRTUALIZATION
                | SECONDARY_VIRTUAL_INTERRUPT_DELIVERY)
                << 32,
        );
        assert!(all.posted_interrupts && all.virtual_interrupt_delivery);
        assert!(all.to_string().starts_with("offered: MSR bitmaps"));
        assert!(!all.to_string().contains("absent"));
        // The secondary controls count only when they can be activated.
        let none = InterruptVirtualization::from_capabilities(0, 0, u64::MAX);
        assert_eq!(none, InterruptVirtualization::default());
        assert!(none.to_string().starts_with("absent: MSR bitmaps"));
        assert!(all.virtual_delivery() && !none.virtual_delivery());
        assert_eq!(
            none.delivery(),
            "interrupts reach guests by event injection"
        );
        // Virtual-interrupt delivery without APIC-register virtualization is not used.
        let partial = InterruptVirtualization {
            apic_register_virtualization: false,
            ..all
        };
        assert!(!partial.virtual_delivery());
    }

    #[test]
    fn no_vmx_names_svm_when_present() {
        let probe = VmxProbe {
            cpuid_svm: true,
            ..VmxProbe::default()
        };
        let refusal = probe.evaluate().unwrap_err().to_string();
        assert!(refusal.contains("CPUID.1:ECX.VMX is clear"), "{refusal}");
        assert!(
            refusal.contains("it offers SVM, which Bulkhead runs only on AMD and Hygon CPUs"),
            "{refusal}"
        );
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
