//! The VMX MSR bitmap (pure logic, host-tested): which RDMSR/WRMSR exit.
//!
//! With "use MSR bitmaps" an MSR access exits only when its bit is set (Intel SDM vol. 3,
//! 25.6.9): four 1 KiB bitmaps in one 4 KiB page: reads of 0-0x1fff, reads of
//! 0xc000_0000-0xc000_1fff, writes of the low range, writes of the high range. Every other
//! MSR always exits.
//!
//! Passed through, both ways, are only MSRs the VMCS itself switches at every entry and exit,
//! so a guest's value never reaches the hypervisor or another partition, and the few the
//! hypervisor never uses and [`PASSED_THROUGH_RESET`] lists (the vCPU loop zeroes them
//! before a guest starts, as a CPU reset would). Reads of the TSC pass too (RDTSC does not exit
//! either); its writes exit. Everything else, the x2APIC range, IA32_APIC_BASE, EFER, PAT,
//! the MTRRs, the VMX, debug and performance MSRs included, exits to the hypervisor: those are
//! either emulated (the virtual x2APIC, Bulkhead's exit counter) or refused with #GP(0).

/// IA32_TSC.
pub const TSC: u32 = 0x10;
/// IA32_SYSENTER_CS, _ESP, _EIP: guest-state fields of the VMCS.
pub const SYSENTER_CS: u32 = 0x174;
/// IA32_SYSENTER_ESP.
pub const SYSENTER_ESP: u32 = 0x175;
/// IA32_SYSENTER_EIP.
pub const SYSENTER_EIP: u32 = 0x176;
/// IA32_STAR: SYSCALL's segments (the hypervisor never executes SYSCALL).
pub const STAR: u32 = 0xc000_0081;
/// IA32_LSTAR: SYSCALL's 64-bit target.
pub const LSTAR: u32 = 0xc000_0082;
/// IA32_CSTAR: SYSCALL's compatibility-mode target.
pub const CSTAR: u32 = 0xc000_0083;
/// IA32_FMASK: RFLAGS bits SYSCALL clears.
pub const FMASK: u32 = 0xc000_0084;
/// IA32_FS_BASE: a guest-state field of the VMCS.
pub const FS_BASE: u32 = 0xc000_0100;
/// IA32_GS_BASE: a guest-state field of the VMCS.
pub const GS_BASE: u32 = 0xc000_0101;
/// IA32_KERNEL_GS_BASE: SWAPGS's other base (the hypervisor runs in ring 0 only and never
/// executes SWAPGS).
pub const KERNEL_GS_BASE: u32 = 0xc000_0102;

/// Read and written by the guest without exits: the VMCS loads and saves them.
pub const PASSED_THROUGH_SWITCHED: [u32; 5] =
    [SYSENTER_CS, SYSENTER_ESP, SYSENTER_EIP, FS_BASE, GS_BASE];
/// Read and written by the guest without exits although the VMCS does not switch them: the
/// hypervisor never uses them (no SYSCALL, no SWAPGS) and each physical CPU runs one vCPU
/// of one partition for good, so they hold that vCPU's values only. The vCPU loop zeroes them
/// before each (re)start of the guest.
pub const PASSED_THROUGH_RESET: [u32; 5] = [STAR, LSTAR, CSTAR, FMASK, KERNEL_GS_BASE];
/// Read by the guest without exits (writes exit).
pub const READ_ONLY: [u32; 1] = [TSC];

/// Offsets of the four bitmaps in the page.
const READ_LOW: usize = 0;
const READ_HIGH: usize = 1024;
const WRITE_LOW: usize = 2048;
const WRITE_HIGH: usize = 3072;
const HIGH_BASE: u32 = 0xc000_0000;
const RANGE: u32 = 0x2000;

/// The byte and bit of `msr` in the read (`write` false) or write bitmap; `None` for an MSR
/// outside both ranges (it always exits).
fn position(msr: u32, write: bool) -> Option<(usize, u8)> {
    let (base, offset) = if msr < RANGE {
        (if write { WRITE_LOW } else { READ_LOW }, msr)
    } else if (HIGH_BASE..HIGH_BASE + RANGE).contains(&msr) {
        (if write { WRITE_HIGH } else { READ_HIGH }, msr - HIGH_BASE)
    } else {
        return None;
    };
    Some((base + (offset / 8) as usize, 1 << (offset % 8)))
}

/// x2APIC registers a guest reads from the virtual-APIC page without an exit when the vCPU
/// runs with APIC-register virtualization and virtual-interrupt delivery: the CPU's own
/// (TPR, PPR, ISR, TMR, IRR) and those the hypervisor mirrors into the page after each
/// emulated write (ID, version, LDR, SVR, ESR, the six LVTs, TMICT, TDCR). The current count
/// (0x839), ICR and every other register keep exiting: the CPU would read whatever the page
/// holds at their offset.
pub const APIC_READS: [u32; 39] = [
    0x802, 0x803, 0x808, 0x80a, 0x80d, 0x80f, // ID, version, TPR, PPR, LDR, SVR
    0x810, 0x811, 0x812, 0x813, 0x814, 0x815, 0x816, 0x817, // ISR
    0x818, 0x819, 0x81a, 0x81b, 0x81c, 0x81d, 0x81e, 0x81f, // TMR
    0x820, 0x821, 0x822, 0x823, 0x824, 0x825, 0x826, 0x827, // IRR
    0x828, // ESR
    0x832, 0x833, 0x834, 0x835, 0x836, 0x837, // LVT timer .. error
    0x838, 0x83e, // TMICT, TDCR
];
/// x2APIC registers a guest writes without an exit under virtual-interrupt delivery: the CPU
/// virtualizes TPR, EOI (an exit only for vectors in the EOI-exit bitmap) and self IPIs.
/// Every other x2APIC write exits (the CPU would write the physical APIC).
pub const APIC_WRITES: [u32; 3] = [0x808, 0x80b, 0x83f];

/// A 4 KiB MSR bitmap: every bit set (every access exits) but those of the MSRs passed through.
pub fn build() -> [u8; 4096] {
    build_for(false)
}

/// [`build`], and with `virtual_apic` the x2APIC accesses a virtual-APIC page serves
/// ([`APIC_READS`], [`APIC_WRITES`]) pass too.
pub fn build_for(virtual_apic: bool) -> [u8; 4096] {
    let mut page = [0xff; 4096];
    let mut pass = |msr: u32, write: bool| {
        if let Some((byte, bit)) = position(msr, write)
            && let Some(slot) = page.get_mut(byte)
        {
            *slot &= !bit;
        }
    };
    for msr in PASSED_THROUGH_SWITCHED
        .into_iter()
        .chain(PASSED_THROUGH_RESET)
    {
        pass(msr, false);
        pass(msr, true);
    }
    for msr in READ_ONLY {
        pass(msr, false);
    }
    if virtual_apic {
        for msr in APIC_READS {
            pass(msr, false);
        }
        for msr in APIC_WRITES {
            pass(msr, true);
        }
    }
    page
}

/// Whether an access to `msr` exits with bitmap `page` (as the CPU decides).
pub fn exits(page: &[u8; 4096], msr: u32, write: bool) -> bool {
    position(msr, write)
        .and_then(|(byte, bit)| page.get(byte).map(|b| b & bit != 0))
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_listed_msrs_pass() {
        let page = build();
        for msr in [FS_BASE, GS_BASE, KERNEL_GS_BASE, LSTAR, SYSENTER_EIP] {
            assert!(!exits(&page, msr, false), "{msr:#x}");
            assert!(!exits(&page, msr, true), "{msr:#x}");
        }
        assert!(!exits(&page, TSC, false));
        assert!(exits(&page, TSC, true));
        // The x2APIC, APIC base, EFER, PAT, the exit counter and anything out of range exit.
        for msr in (0x800..=0x8ff).chain([0x1b, 0xc000_0080, 0x277, 0x4000_0100, 0xffff_ffff]) {
            assert!(exits(&page, msr, false), "{msr:#x}");
            assert!(exits(&page, msr, true), "{msr:#x}");
        }
        let cleared: u32 = page.iter().map(|b| b.count_zeros()).sum();
        assert_eq!(cleared, 2 * 10 + 1);
    }

    #[test]
    fn virtual_apic_passes_served_registers_only() {
        let page = build_for(true);
        for msr in [0x802, 0x808, 0x80a, 0x817, 0x820, 0x832, 0x838, 0x83e] {
            assert!(!exits(&page, msr, false), "{msr:#x}");
        }
        for msr in [0x1b, 0x800, 0x82f, 0x830, 0x839, 0x83f, 0x8ff, 0x4000_0100] {
            assert!(exits(&page, msr, false), "{msr:#x}");
        }
        for msr in [0x808, 0x80b, 0x83f] {
            assert!(!exits(&page, msr, true), "{msr:#x}");
        }
        for msr in (0x800..=0x8ff).filter(|m| ![0x808, 0x80b, 0x83f].contains(m)) {
            assert!(exits(&page, msr, true), "{msr:#x}");
        }
        let cleared: u32 = page.iter().map(|b| b.count_zeros()).sum();
        assert_eq!(cleared, 2 * 10 + 1 + 39 + 3);
    }

    #[test]
    fn positions_follow_the_sdm_layout() {
        assert_eq!(position(0x10, false), Some((2, 1)));
        assert_eq!(position(0x10, true), Some((2048 + 2, 1)));
        assert_eq!(position(0xc000_0082, false), Some((1024 + 16, 4)));
        assert_eq!(position(0xc000_0082, true), Some((3072 + 16, 4)));
        assert_eq!(position(0x2000, false), None);
    }
}
