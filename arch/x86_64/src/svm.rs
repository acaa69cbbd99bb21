//! Pure AMD SVM helpers that build and test on the host (AMD64 APM vol. 2, chapter 15 and
//! appendix B): what Bulkhead requires of a CPU's SVM, the VMCB's field offsets and intercept
//! bits, exit codes and their names, the I/O and MSR permission maps, and the IOIO exit's
//! EXITINFO1 format. The privileged side (EFER.SVME, VMRUN) is `svm_vcpu.rs`.

use core::fmt;

/// CPUID.80000001H:ECX.SVM.
pub const CPUID_SVM: u32 = 1 << 2;
/// CPUID.8000000AH:EDX.NP (nested paging).
pub const CPUID_NESTED_PAGING: u32 = 1 << 0;
/// CPUID.8000000AH:EDX.NRIPS (next RIP saved on #VMEXIT; optional: QEMU's TCG lacks it).
pub const CPUID_NRIPS: u32 = 1 << 3;
/// CPUID.80000001H:EDX.Page1GB (NPT uses 1 GiB pages).
pub const CPUID_PAGE_1GB: u32 = 1 << 26;
/// VM_CR (0xc001_0114): SVMDIS, SVM disabled by firmware.
pub const VM_CR_SVMDIS: u64 = 1 << 4;

/// What the CPU says about SVM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SvmProbe {
    /// CPUID.80000001H:ECX.SVM.
    pub cpuid_svm: bool,
    /// VM_CR (read only when SVM is there).
    pub vm_cr: u64,
    /// CPUID.8000000AH:EDX (0 without SVM).
    pub features: u32,
    /// CPUID.8000000AH:EBX: the number of ASIDs.
    pub asids: u32,
    /// CPUID.80000001H:EDX.Page1GB.
    pub page_1gb: bool,
}

/// What SVM offers on a CPU Bulkhead accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SvmFeatures {
    /// ASIDs the CPU has.
    pub asids: u32,
    /// Whether #VMEXIT saves the next RIP (unused: RIP is advanced by Bulkhead either way).
    pub nrips: bool,
}

/// Why Bulkhead refuses SVM on a CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SvmRefusal {
    /// CPUID.80000001H:ECX.SVM is clear.
    NoSvm,
    /// Firmware disabled SVM (VM_CR.SVMDIS).
    DisabledByFirmware,
    /// These required features are missing.
    Missing(Missing),
}

/// Required SVM features a CPU lacks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Missing {
    /// Nested paging.
    pub nested_paging: bool,
    /// 1 GiB pages (NPT maps large RAM with them).
    pub page_1gb: bool,
    /// Fewer than 2 ASIDs (ASID 0 is the host's).
    pub asids: bool,
}

impl fmt::Display for SvmRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSvm => f.write_str("CPUID.80000001H:ECX.SVM is clear"),
            Self::DisabledByFirmware => f.write_str("SVM disabled by firmware (VM_CR.SVMDIS)"),
            Self::Missing(missing) => {
                f.write_str("missing")?;
                let mut separator = " ";
                for (lacking, name) in [
                    (
                        missing.nested_paging,
                        "nested paging (CPUID.8000000AH:EDX.NP)",
                    ),
                    (
                        missing.page_1gb,
                        "1 GiB pages (CPUID.80000001H:EDX.Page1GB)",
                    ),
                    (missing.asids, "ASIDs (CPUID.8000000AH:EBX < 2)"),
                ] {
                    if lacking {
                        write!(f, "{separator}{name}")?;
                        separator = ", ";
                    }
                }
                Ok(())
            }
        }
    }
}

impl SvmProbe {
    /// Decides whether Bulkhead runs partitions with SVM on this CPU.
    pub fn check(&self) -> Result<SvmFeatures, SvmRefusal> {
        if !self.cpuid_svm {
            return Err(SvmRefusal::NoSvm);
        }
        if self.vm_cr & VM_CR_SVMDIS != 0 {
            return Err(SvmRefusal::DisabledByFirmware);
        }
        let missing = Missing {
            nested_paging: self.features & CPUID_NESTED_PAGING == 0,
            page_1gb: !self.page_1gb,
            asids: self.asids < 2,
        };
        if missing != Missing::default() {
            return Err(SvmRefusal::Missing(missing));
        }
        Ok(SvmFeatures {
            asids: self.asids,
            nrips: self.features & CPUID_NRIPS != 0,
        })
    }
}

/// Whether a CPUID vendor string (EBX, EDX, ECX of leaf 0) names a CPU with SVM rather than
/// VMX: AMD's and Hygon's.
pub fn vendor_has_svm(vendor: &[u8; 12]) -> bool {
    vendor == b"AuthenticAMD" || vendor == b"HygonGenuine"
}

/// Byte offsets of the VMCB fields Bulkhead uses (control area, then the state-save area at
/// 0x400).
#[allow(missing_docs)]
pub mod vmcb {
    pub const INTERCEPT_CR: usize = 0x000;
    pub const INTERCEPT_DR: usize = 0x004;
    pub const INTERCEPT_EXCEPTIONS: usize = 0x008;
    pub const INTERCEPT_MISC1: usize = 0x00c;
    pub const INTERCEPT_MISC2: usize = 0x010;
    pub const IOPM_BASE: usize = 0x040;
    pub const MSRPM_BASE: usize = 0x048;
    pub const TSC_OFFSET: usize = 0x050;
    pub const ASID: usize = 0x058;
    pub const TLB_CONTROL: usize = 0x05c;
    pub const INTERRUPT_CONTROL: usize = 0x060;
    pub const INTERRUPT_SHADOW: usize = 0x068;
    pub const EXIT_CODE: usize = 0x070;
    pub const EXIT_INFO1: usize = 0x078;
    pub const EXIT_INFO2: usize = 0x080;
    pub const EXIT_INTERRUPT_INFO: usize = 0x088;
    pub const NESTED_CONTROL: usize = 0x090;
    pub const EVENT_INJECTION: usize = 0x0a8;
    pub const NESTED_CR3: usize = 0x0b0;
    pub const CLEAN_BITS: usize = 0x0c0;
    pub const NEXT_RIP: usize = 0x0c8;
    /// ES; CS, SS, DS, FS, GS, GDTR, LDTR, IDTR, TR follow at 16-byte strides (selector u16,
    /// attributes u16, limit u32, base u64).
    pub const ES: usize = 0x400;
    pub const CS: usize = 0x410;
    pub const SS: usize = 0x420;
    pub const DS: usize = 0x430;
    pub const FS: usize = 0x440;
    pub const GS: usize = 0x450;
    pub const GDTR: usize = 0x460;
    pub const LDTR: usize = 0x470;
    pub const IDTR: usize = 0x480;
    pub const TR: usize = 0x490;
    pub const CPL: usize = 0x4cb;
    pub const EFER: usize = 0x4d0;
    pub const CR4: usize = 0x548;
    pub const CR3: usize = 0x550;
    pub const CR0: usize = 0x558;
    pub const DR7: usize = 0x560;
    pub const DR6: usize = 0x568;
    pub const RFLAGS: usize = 0x570;
    pub const RIP: usize = 0x578;
    pub const RSP: usize = 0x5d8;
    pub const RAX: usize = 0x5f8;
    pub const STAR: usize = 0x600;
    pub const LSTAR: usize = 0x608;
    pub const CSTAR: usize = 0x610;
    pub const SFMASK: usize = 0x618;
    pub const KERNEL_GS_BASE: usize = 0x620;
    pub const SYSENTER_CS: usize = 0x628;
    pub const SYSENTER_ESP: usize = 0x630;
    pub const SYSENTER_EIP: usize = 0x638;
    pub const CR2: usize = 0x640;
    pub const GUEST_PAT: usize = 0x668;
    pub const DEBUG_CONTROL: usize = 0x670;
}

/// Intercept bits of the VMCB's first miscellaneous intercept word (offset 0x00c).
#[allow(missing_docs)]
pub mod misc1 {
    pub const INTR: u32 = 1 << 0;
    pub const NMI: u32 = 1 << 1;
    pub const SMI: u32 = 1 << 2;
    pub const INIT: u32 = 1 << 3;
    pub const VINTR: u32 = 1 << 4;
    pub const CPUID: u32 = 1 << 18;
    pub const INVD: u32 = 1 << 22;
    pub const HLT: u32 = 1 << 24;
    pub const INVLPGA: u32 = 1 << 26;
    pub const IOIO_PROT: u32 = 1 << 27;
    pub const MSR_PROT: u32 = 1 << 28;
    pub const TASK_SWITCH: u32 = 1 << 29;
    pub const SHUTDOWN: u32 = 1 << 31;
}

/// Intercept bits of the second miscellaneous intercept word (offset 0x010).
#[allow(missing_docs)]
pub mod misc2 {
    pub const VMRUN: u32 = 1 << 0;
    pub const VMMCALL: u32 = 1 << 1;
    pub const VMLOAD: u32 = 1 << 2;
    pub const VMSAVE: u32 = 1 << 3;
    pub const STGI: u32 = 1 << 4;
    pub const CLGI: u32 = 1 << 5;
    pub const SKINIT: u32 = 1 << 6;
    pub const XSETBV: u32 = 1 << 13;
}

/// The interrupt-control word (offset 0x060).
#[allow(missing_docs)]
pub mod interrupt_control {
    pub const V_IRQ: u64 = 1 << 8;
    pub const V_INTR_PRIORITY_SHIFT: u32 = 16;
    pub const V_IGNORE_TPR: u64 = 1 << 20;
    pub const V_INTR_MASKING: u64 = 1 << 24;
    pub const V_INTR_VECTOR_SHIFT: u32 = 32;
}

/// Exit codes (APM vol. 2, appendix C) Bulkhead handles or names.
#[allow(missing_docs)]
pub mod exit {
    pub const EXCEPTION_BASE: u64 = 0x40;
    pub const INTR: u64 = 0x60;
    pub const NMI: u64 = 0x61;
    pub const SMI: u64 = 0x62;
    pub const INIT: u64 = 0x63;
    pub const VINTR: u64 = 0x64;
    pub const CPUID: u64 = 0x72;
    pub const HLT: u64 = 0x78;
    pub const IOIO: u64 = 0x7b;
    pub const MSR: u64 = 0x7c;
    pub const TASK_SWITCH: u64 = 0x7d;
    pub const SHUTDOWN: u64 = 0x7f;
    pub const VMRUN: u64 = 0x80;
    pub const VMMCALL: u64 = 0x81;
    pub const XSETBV: u64 = 0x8d;
    pub const NPF: u64 = 0x400;
    /// VMRUN refused the VMCB's state.
    pub const INVALID: u64 = u64::MAX;
}

/// Exits counted per code for the closing report: codes 0..0x8f, then NPF and INVALID in the
/// last two slots.
pub const EXIT_SLOTS: usize = 0x92;

/// The counter slot of exit code `code` (`None`: not counted by code).
pub fn exit_slot(code: u64) -> Option<usize> {
    match code {
        exit::NPF => Some(EXIT_SLOTS - 2),
        exit::INVALID => Some(EXIT_SLOTS - 1),
        0..0x90 => Some(code as usize),
        _ => None,
    }
}

/// The exit code counted in `slot` (inverse of [`exit_slot`]).
pub fn slot_code(slot: usize) -> u64 {
    match slot {
        s if s == EXIT_SLOTS - 2 => exit::NPF,
        s if s == EXIT_SLOTS - 1 => exit::INVALID,
        s => s as u64,
    }
}

/// A short name of an exit code, for reports.
pub fn exit_name(code: u64) -> &'static str {
    match code {
        0x00..=0x0f => "CR read",
        0x10..=0x1f => "CR write",
        0x20..=0x3f => "DR access",
        0x46 => "exception #UD",
        0x4e => "exception #PF",
        0x4d => "exception #GP",
        0x48 => "exception #DF",
        0x40..=0x5f => "exception",
        exit::INTR => "physical interrupt",
        exit::NMI => "NMI",
        exit::SMI => "SMI",
        exit::INIT => "INIT signal",
        exit::VINTR => "interrupt window",
        exit::CPUID => "CPUID",
        0x6e => "RDTSC",
        0x76 => "INVD",
        0x77 => "PAUSE",
        exit::HLT => "HLT",
        0x79 => "INVLPG",
        0x7a => "INVLPGA",
        exit::IOIO => "I/O instruction",
        exit::MSR => "RDMSR/WRMSR",
        exit::TASK_SWITCH => "task switch",
        exit::SHUTDOWN => "triple fault (shutdown)",
        exit::VMRUN => "VMRUN",
        exit::VMMCALL => "VMMCALL",
        0x82 => "VMLOAD",
        0x83 => "VMSAVE",
        0x84 => "STGI",
        0x85 => "CLGI",
        0x86 => "SKINIT",
        0x8a => "MONITOR",
        0x8b => "MWAIT",
        exit::XSETBV => "XSETBV",
        exit::NPF => "nested page fault",
        exit::INVALID => "VMRUN with invalid guest state",
        _ => "#VMEXIT",
    }
}

/// EXITINFO1 of an IOIO exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoInfo {
    /// Bytes accessed (1, 2 or 4; 0 if the CPU named none).
    pub size: u8,
    /// `in` (true) or `out`.
    pub input: bool,
    /// INS/OUTS.
    pub string: bool,
    /// REP prefixed.
    pub repeat: bool,
    /// The port.
    pub port: u16,
}

impl IoInfo {
    /// Decodes bit 0 (TYPE: 1 = IN), 2 (STR), 3 (REP), 6:4 (SZ32, SZ16, SZ8), 31:16 (port).
    pub fn decode(info: u64) -> IoInfo {
        let size = if info & (1 << 4) != 0 {
            1
        } else if info & (1 << 5) != 0 {
            2
        } else if info & (1 << 6) != 0 {
            4
        } else {
            0
        };
        IoInfo {
            size,
            input: info & 1 != 0,
            string: info & (1 << 2) != 0,
            repeat: info & (1 << 3) != 0,
            port: (info >> 16) as u16,
        }
    }
}

/// EXITINFO1 bits of a nested page fault.
#[allow(missing_docs)]
pub mod npf {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const RESERVED: u64 = 1 << 3;
    pub const FETCH: u64 = 1 << 4;
    pub const FINAL_ADDRESS: u64 = 1 << 32;
    pub const TABLE_WALK: u64 = 1 << 33;
}

/// The 12 KiB I/O permission map: one bit per port (and the bits past port 0xffff that a
/// multi-byte access at the top reaches); a set bit intercepts.
pub const IOPM_SIZE: usize = 12 << 10;
/// The 8 KiB MSR permission map: two bits per MSR (read, then write) for 0-0x1fff,
/// 0xc000_0000-0xc000_1fff and 0xc001_0000-0xc001_1fff; every other MSR always intercepts.
pub const MSRPM_SIZE: usize = 8 << 10;

/// The byte and bit of port `port` in the IOPM.
pub fn iopm_position(port: u16) -> (usize, u8) {
    (usize::from(port / 8), 1 << (port % 8))
}

/// The byte and bit of `msr`'s read (`write` false) or write intercept in the MSRPM; `None`
/// for an MSR outside its three ranges.
pub fn msrpm_position(msr: u32, write: bool) -> Option<(usize, u8)> {
    let (base, offset) = match msr {
        0..0x2000 => (0, msr),
        0xc000_0000..0xc000_2000 => (0x800, msr - 0xc000_0000),
        0xc001_0000..0xc001_2000 => (0x1000, msr - 0xc001_0000),
        _ => return None,
    };
    let bit = offset * 2 + u32::from(write);
    Some((base + (bit / 8) as usize, 1 << (bit % 8)))
}

/// The MSR permission map every vCPU shares: every access intercepts but reads of the TSC
/// (RDTSC does not exit either). VMRUN does not switch the MSRs the VMX bitmap passes through
/// (SYSCALL's, SYSENTER's, the segment bases: VMLOAD/VMSAVE do), so none passes here: the
/// guest's accesses to them get #GP, as on hardware lacking them.
pub fn build_msrpm() -> [u8; MSRPM_SIZE] {
    let mut map = [0xff; MSRPM_SIZE];
    if let Some((byte, bit)) = msrpm_position(crate::msr_bitmap::TSC, false)
        && let Some(slot) = map.get_mut(byte)
    {
        *slot &= !bit;
    }
    map
}

/// Whether an access to `msr` intercepts with map `map` (as the CPU decides).
pub fn msr_intercepted(map: &[u8; MSRPM_SIZE], msr: u32, write: bool) -> bool {
    msrpm_position(msr, write)
        .and_then(|(byte, bit)| map.get(byte).map(|b| b & bit != 0))
        .unwrap_or(true)
}

/// EVENTINJ for external interrupt `vector`.
pub fn inject_interrupt(vector: u8) -> u64 {
    (1 << 31) | u64::from(vector)
}

/// EVENTINJ for hardware exception `vector`, with `error_code` when it has one.
pub fn inject_exception(vector: u8, error_code: Option<u32>) -> u64 {
    const EXCEPTION: u64 = 3 << 8;
    const ERROR_CODE_VALID: u64 = 1 << 11;
    let mut event = (1 << 31) | EXCEPTION | u64::from(vector);
    if let Some(code) = error_code {
        event |= ERROR_CODE_VALID | (u64::from(code) << 32);
    }
    event
}

/// The VMCB's compressed segment attributes (bits 7:0 = access byte, 11:8 = AVL, L, D/B, G)
/// of VMX-style access rights (bits 7:0 and 15:12).
pub const fn segment_attributes(access_rights: u16) -> u16 {
    (access_rights & 0xff) | ((access_rights >> 4) & 0xf00)
}

/// What CPUID returns to vCPU `vcpu` for leaf `leaf` given the host's answer: as VMX's
/// filter ([`crate::vmx_exit::filter_cpuid`]: x2APIC and hypervisor-present shown, TSC
/// deadline hidden, the APIC IDs the vCPU's), and SVM hidden (CPUID.80000001H:ECX.SVM, leaf
/// 0x8000000a all zero).
pub fn filter_cpuid(leaf: u32, vcpu: u32, host: [u32; 4]) -> [u32; 4] {
    let [eax, ebx, ecx, edx] = crate::vmx_exit::filter_cpuid(leaf, vcpu, host);
    match leaf {
        0x8000_0001 => [eax, ebx, ecx & !CPUID_SVM, edx],
        0x8000_000a => [0; 4],
        _ => [eax, ebx, ecx, edx],
    }
}

/// Length of an instruction the CPU intercepted without saving the next RIP (no NRIPS):
/// CPUID (0f a2), RDMSR/WRMSR (0f 32 / 0f 30), HLT (f4), VMMCALL (0f 01 d9). `None` for
/// any other exit (IOIO gives the next RIP in EXITINFO2; MMIO is decoded).
pub fn instruction_length(code: u64) -> Option<u64> {
    match code {
        exit::CPUID | exit::MSR => Some(2),
        exit::HLT => Some(1),
        exit::VMMCALL => Some(3),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmcb_offsets_follow_the_apm() {
        assert_eq!(vmcb::EXIT_CODE, 0x70);
        assert_eq!(vmcb::NESTED_CR3, 0xb0);
        assert_eq!(vmcb::TR - vmcb::ES, 9 * 16);
        assert_eq!(vmcb::RAX, 0x400 + 0x1f8);
        assert_eq!(vmcb::GUEST_PAT, 0x400 + 0x268);
        assert_eq!(vmcb::EFER, 0x400 + 0xd0);
        assert_eq!(vmcb::RIP, 0x400 + 0x178);
    }

    #[test]
    fn permission_maps_place_ports_and_msrs() {
        assert_eq!(iopm_position(0x3f8), (0x7f, 1));
        assert_eq!(iopm_position(0xcfc), (0x19f, 1 << 4));
        assert_eq!(msrpm_position(0, false), Some((0, 1)));
        assert_eq!(msrpm_position(0, true), Some((0, 2)));
        assert_eq!(msrpm_position(0x10, false), Some((4, 1)));
        assert_eq!(msrpm_position(0x830, true), Some((0x20c, 2)));
        assert_eq!(msrpm_position(0xc000_0080, false), Some((0x820, 1)));
        assert_eq!(msrpm_position(0xc001_0114, true), Some((0x1045, 1 << 1)));
        assert_eq!(msrpm_position(0x4000_0100, false), None);
        let map = build_msrpm();
        assert!(!msr_intercepted(&map, 0x10, false));
        assert!(msr_intercepted(&map, 0x10, true));
        assert!(msr_intercepted(&map, 0x830, true));
        assert!(msr_intercepted(&map, 0xc000_0100, false));
        assert!(msr_intercepted(&map, 0x4000_0100, false));
    }

    #[test]
    fn io_exit_info_decodes() {
        // out dx, al with DX = 0x3f8.
        assert_eq!(
            IoInfo::decode(0x03f8_0010),
            IoInfo {
                size: 1,
                input: false,
                string: false,
                repeat: false,
                port: 0x3f8
            }
        );
        let input = IoInfo::decode(0x0cfc_0041);
        assert_eq!((input.size, input.input, input.port), (4, true, 0xcfc));
        let string = IoInfo::decode(0x03f8_0000 | 0x2d);
        assert!(string.string && string.repeat && string.input && string.size == 2);
    }

    #[test]
    fn events_encode() {
        assert_eq!(inject_interrupt(0x21), 0x8000_0021);
        assert_eq!(inject_exception(13, Some(0)), 0x8000_0b0d);
        assert_eq!(inject_exception(6, None), 0x8000_0306);
        assert_eq!(segment_attributes(0xa09b), 0xa9b);
        assert_eq!(segment_attributes(0xc093), 0xc93);
    }

    #[test]
    fn cpuid_hides_svm_and_vmx() {
        let host = [0, 0, 0x7ffa_fbbf | (1 << 5), 0];
        assert_eq!(filter_cpuid(1, 0, host)[2] & (1 << 5), 0);
        assert_eq!(
            filter_cpuid(0x8000_0001, 0, [0, 0, 0xffff_ffff, 0])[2] & CPUID_SVM,
            0
        );
        assert_eq!(filter_cpuid(0x8000_000a, 0, [1, 16, 0, 0xff]), [0; 4]);
    }

    #[test]
    fn exits_have_names_and_slots() {
        assert_eq!(exit_name(exit::NPF), "nested page fault");
        assert_eq!(exit_name(exit::SHUTDOWN), "triple fault (shutdown)");
        assert_eq!(exit_name(0x1234), "#VMEXIT");
        for code in [0, exit::HLT, exit::NPF, exit::INVALID] {
            assert_eq!(exit_slot(code).map(slot_code), Some(code));
        }
        assert_eq!(exit_slot(0x500), None);
        assert_eq!(instruction_length(exit::VMMCALL), Some(3));
    }

    #[test]
    fn refusals_name_what_is_missing() {
        let good = SvmProbe {
            cpuid_svm: true,
            vm_cr: 0,
            features: CPUID_NESTED_PAGING,
            asids: 16,
            page_1gb: true,
        };
        assert_eq!(
            good.check(),
            Ok(SvmFeatures {
                asids: 16,
                nrips: false
            })
        );
        assert_eq!(SvmProbe::default().check(), Err(SvmRefusal::NoSvm));
        let refusal = SvmProbe {
            features: 0,
            page_1gb: false,
            ..good
        }
        .check()
        .unwrap_err();
        assert_eq!(
            alloc::format!("{refusal}"),
            "missing nested paging (CPUID.8000000AH:EDX.NP), 1 GiB pages (CPUID.80000001H:EDX.Page1GB)"
        );
        assert_eq!(
            SvmProbe {
                vm_cr: VM_CR_SVMDIS,
                ..good
            }
            .check(),
            Err(SvmRefusal::DisabledByFirmware)
        );
        assert!(vendor_has_svm(b"AuthenticAMD"));
        assert!(!vendor_has_svm(b"GenuineIntel"));
    }
}
