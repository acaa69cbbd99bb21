//! Pure VMX helpers that build and test on the host: control-field adjustment against the
//! capability MSRs, basic exit reasons and their names, and the exit-qualification format of
//! I/O instructions.

/// Basic exit reasons (Intel SDM vol. 3, appendix C) Bulkhead handles or names.
pub mod reason {
    /// An exception or NMI the exception bitmap selected.
    pub const EXCEPTION_OR_NMI: u16 = 0;
    /// An external interrupt.
    pub const EXTERNAL_INTERRUPT: u16 = 1;
    /// The guest triple-faulted.
    pub const TRIPLE_FAULT: u16 = 2;
    /// INIT signal.
    pub const INIT: u16 = 3;
    /// Interrupt window: the guest can take an interrupt now.
    pub const INTERRUPT_WINDOW: u16 = 7;
    /// CPUID.
    pub const CPUID: u16 = 10;
    /// HLT.
    pub const HLT: u16 = 12;
    /// VMCALL.
    pub const VMCALL: u16 = 18;
    /// Control-register access.
    pub const CR_ACCESS: u16 = 28;
    /// IN, OUT, INS, OUTS.
    pub const IO_INSTRUCTION: u16 = 30;
    /// RDMSR.
    pub const RDMSR: u16 = 31;
    /// WRMSR.
    pub const WRMSR: u16 = 32;
    /// VM entry failed: invalid guest state.
    pub const INVALID_GUEST_STATE: u16 = 33;
    /// EPT violation.
    pub const EPT_VIOLATION: u16 = 48;
    /// EPT misconfiguration.
    pub const EPT_MISCONFIGURATION: u16 = 49;
    /// Virtualized EOI: the guest ended a vector its EOI-exit bitmap names (trap-like: RIP is
    /// already past the WRMSR; the qualification holds the vector).
    pub const VIRTUALIZED_EOI: u16 = 45;
    /// XSETBV.
    pub const XSETBV: u16 = 55;
    /// APIC write: a write to a virtual-APIC register the CPU does not virtualize (trap-like).
    pub const APIC_WRITE: u16 = 56;
}

/// A short name of a basic exit reason, for reports.
pub fn reason_name(basic: u16) -> &'static str {
    match basic {
        reason::EXCEPTION_OR_NMI => "exception or NMI",
        reason::EXTERNAL_INTERRUPT => "external interrupt",
        reason::TRIPLE_FAULT => "triple fault",
        reason::INIT => "INIT signal",
        reason::INTERRUPT_WINDOW => "interrupt window",
        reason::CPUID => "CPUID",
        reason::HLT => "HLT",
        reason::VMCALL => "VMCALL",
        reason::CR_ACCESS => "control-register access",
        reason::IO_INSTRUCTION => "I/O instruction",
        reason::RDMSR => "RDMSR",
        reason::WRMSR => "WRMSR",
        reason::INVALID_GUEST_STATE => "VM entry with invalid guest state",
        reason::EPT_VIOLATION => "EPT violation",
        reason::EPT_MISCONFIGURATION => "EPT misconfiguration",
        reason::XSETBV => "XSETBV",
        reason::VIRTUALIZED_EOI => "virtualized EOI",
        reason::APIC_WRITE => "APIC write",
        9 => "task switch",
        14 => "INVLPG",
        16 => "RDTSC",
        19..=27 => "VMX instruction",
        34 => "VM entry failure: MSR loading",
        36 => "MWAIT",
        39 => "MONITOR",
        40 => "PAUSE",
        41 => "VM entry failure: machine check",
        _ => "VM exit",
    }
}

/// Why a VMX control cannot take the value Bulkhead wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlMismatch {
    /// Bits Bulkhead wants set that the CPU forces to 0.
    pub unsupported: u32,
}

/// Adjusts a control value to a capability MSR (`allowed` = the TRUE_* MSR: bits 31:0 must be
/// 1, bits 63:32 may be 1): forces the required ones on; fails if a wanted bit is not allowed.
pub fn adjust_controls(wanted: u32, allowed: u64) -> Result<u32, ControlMismatch> {
    let must_be_one = allowed as u32;
    let may_be_one = (allowed >> 32) as u32;
    let unsupported = wanted & !may_be_one;
    if unsupported != 0 {
        return Err(ControlMismatch { unsupported });
    }
    Ok((wanted | must_be_one) & may_be_one)
}

/// The exit qualification of an I/O-instruction exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoQualification {
    /// Bytes accessed (1, 2 or 4).
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

impl IoQualification {
    /// Decodes bits 2:0 (size - 1), 3 (direction), 4 (string), 5 (REP), 31:16 (port).
    pub fn decode(qualification: u64) -> IoQualification {
        IoQualification {
            size: (qualification & 7) as u8 + 1,
            input: qualification & (1 << 3) != 0,
            string: qualification & (1 << 4) != 0,
            repeat: qualification & (1 << 5) != 0,
            port: (qualification >> 16) as u16,
        }
    }
}

/// RAX after an `in` of `size` bytes returned `value`: AL and AX merge into RAX, EAX
/// zero-extends (as a 32-bit register write does).
pub fn merge_input(rax: u64, size: u8, value: u64) -> u64 {
    match size {
        1 => (rax & !0xff) | (value & 0xff),
        2 => (rax & !0xffff) | (value & 0xffff),
        _ => value & 0xffff_ffff,
    }
}

/// What CPUID returns to vCPU `vcpu` for leaf `leaf` given the host's answer: leaf 1 with VMX
/// (ECX bit 5) and TSC deadline (bit 24) hidden, x2APIC (bit 21) and hypervisor-present (bit 31)
/// set, the initial APIC ID (EBX 31:24) = `vcpu`; leaves 0xb and 0x1f give `vcpu` as the x2APIC
/// ID (EDX); the rest passes through.
pub fn filter_cpuid(leaf: u32, vcpu: u32, [eax, ebx, ecx, edx]: [u32; 4]) -> [u32; 4] {
    const VMX: u32 = 1 << 5;
    const X2APIC: u32 = 1 << 21;
    const TSC_DEADLINE: u32 = 1 << 24;
    const HYPERVISOR: u32 = 1 << 31;
    match leaf {
        1 => [
            eax,
            (ebx & 0x00ff_ffff) | (vcpu << 24),
            (ecx & !VMX & !TSC_DEADLINE) | X2APIC | HYPERVISOR,
            edx,
        ],
        0xb | 0x1f => [eax, ebx, ecx, vcpu],
        _ => [eax, ebx, ecx, edx],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_take_required_bits_and_refuse_unsupported_ones() {
        // Bits 1, 2 must be one; bits 0..=7 may be one.
        let allowed = (0xff_u64 << 32) | 0x6;
        assert_eq!(adjust_controls(0x80, allowed), Ok(0x86));
        assert_eq!(
            adjust_controls(0x180, allowed),
            Err(ControlMismatch { unsupported: 0x100 })
        );
    }

    #[test]
    fn io_qualifications_decode() {
        // out dx, al with DX = 0x3f8.
        assert_eq!(
            IoQualification::decode(0x03f8_0000),
            IoQualification {
                size: 1,
                input: false,
                string: false,
                repeat: false,
                port: 0x3f8
            }
        );
        // in eax, dx (port 0xcfc); rep insb.
        let input = IoQualification::decode(0x0cfc_0000 | 8 | 3);
        assert_eq!((input.size, input.input, input.port), (4, true, 0xcfc));
        let string = IoQualification::decode(0x3f8_0000 | 0x38);
        assert!(string.string && string.repeat && string.input);
    }

    #[test]
    fn inputs_merge_into_rax_like_the_instruction() {
        let rax = 0x1122_3344_5566_7788;
        assert_eq!(merge_input(rax, 1, 0x1ab), 0x1122_3344_5566_77ab);
        assert_eq!(merge_input(rax, 2, 0xabcd), 0x1122_3344_5566_abcd);
        assert_eq!(merge_input(rax, 4, 0xdead_beef), 0xdead_beef);
    }

    #[test]
    fn cpuid_hides_vmx_and_says_hypervisor() {
        let host = [0x506e3, 0, 0x7ffa_fbbf, 0xbfeb_fbff];
        let [_, ebx, ecx, _] = filter_cpuid(1, 1, host);
        assert_eq!(ecx & (1 << 5), 0);
        assert_ne!(ecx & (1 << 31), 0);
        assert_ne!(ecx & (1 << 21), 0);
        assert_eq!(ebx >> 24, 1);
        assert_eq!(filter_cpuid(0, 1, host), host);
        assert_eq!(filter_cpuid(0xb, 1, host)[3], 1);
    }

    #[test]
    fn reasons_have_names() {
        assert_eq!(reason_name(reason::EPT_VIOLATION), "EPT violation");
        assert_eq!(reason_name(reason::TRIPLE_FAULT), "triple fault");
        assert_eq!(reason_name(200), "VM exit");
    }
}
