//! PSCI as a partition sees it: the firmware interface Bulkhead emulates for its guests
//! through trapped HVC and SMC. Decoding is pure; the effects on vCPUs are applied by
//! [`crate::partition::Partition`].

/// PSCI_VERSION.
pub const VERSION: u32 = 0x8400_0000;
/// CPU_SUSPEND (32-bit and 64-bit).
pub const CPU_SUSPEND: [u32; 2] = [0x8400_0001, 0xc400_0001];
/// CPU_OFF.
pub const CPU_OFF: u32 = 0x8400_0002;
/// CPU_ON (32-bit and 64-bit).
pub const CPU_ON: [u32; 2] = [0x8400_0003, 0xc400_0003];
/// AFFINITY_INFO (32-bit and 64-bit).
pub const AFFINITY_INFO: [u32; 2] = [0x8400_0004, 0xc400_0004];
/// MIGRATE_INFO_TYPE.
pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
/// SYSTEM_OFF.
pub const SYSTEM_OFF: u32 = 0x8400_0008;
/// SYSTEM_RESET.
pub const SYSTEM_RESET: u32 = 0x8400_0009;
/// PSCI_FEATURES.
pub const FEATURES: u32 = 0x8400_000a;

/// The version Bulkhead reports: PSCI 1.0.
pub const REPORTED_VERSION: u64 = 0x0001_0000;

/// PSCI return codes.
pub mod status {
    /// SUCCESS.
    pub const SUCCESS: i64 = 0;
    /// NOT_SUPPORTED.
    pub const NOT_SUPPORTED: i64 = -1;
    /// INVALID_PARAMETERS.
    pub const INVALID_PARAMETERS: i64 = -2;
    /// ALREADY_ON.
    pub const ALREADY_ON: i64 = -4;
    /// ON_PENDING.
    pub const ON_PENDING: i64 = -5;
}

/// A decoded PSCI request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// PSCI_VERSION.
    Version,
    /// CPU_SUSPEND: treated as a standby (like WFI).
    Suspend,
    /// CPU_OFF for the calling vCPU.
    CpuOff,
    /// CPU_ON: start `target` at `entry` with `context` in x0.
    CpuOn {
        /// Target MPIDR as the guest sees it.
        target: u64,
        /// Entry point (guest-physical address, the MMU is off on entry).
        entry: u64,
        /// Value for the target's x0.
        context: u64,
    },
    /// AFFINITY_INFO for `target` at `level`.
    AffinityInfo {
        /// Target MPIDR.
        target: u64,
        /// Lowest affinity level (only 0 is supported).
        level: u64,
    },
    /// MIGRATE_INFO_TYPE.
    MigrateInfoType,
    /// SYSTEM_OFF: this partition only.
    SystemOff,
    /// SYSTEM_RESET: this partition only.
    SystemReset,
    /// PSCI_FEATURES for a function ID.
    Features(u32),
    /// A function ID of the PSCI ranges Bulkhead does not implement (MIGRATE,
    /// SYSTEM_SUSPEND, CPU_FREEZE, the statistics ...): answered NOT_SUPPORTED.
    NotSupported,
}

/// Whether `function` lies in a PSCI function-ID range (SMC32 0x8400_0000..=0x8400_001f,
/// SMC64 0xc400_0000..=0xc400_001f).
fn in_psci_range(function: u32) -> bool {
    matches!(function, 0x8400_0000..=0x8400_001f | 0xc400_0000..=0xc400_001f)
}

impl Request {
    /// Decodes a call (function ID in x0, arguments x1..x3); `None` if it is not PSCI as
    /// Bulkhead implements it. SMC32 forms have their arguments truncated to 32 bits.
    pub fn decode(function: u64, arguments: [u64; 4]) -> Option<Request> {
        let function = u32::try_from(function).ok()?;
        let smc64 = function & 0x4000_0000 != 0;
        let argument = |i: usize| {
            let value = arguments.get(i).copied().unwrap_or(0);
            if smc64 { value } else { value & 0xffff_ffff }
        };
        Some(match function {
            VERSION => Request::Version,
            f if CPU_SUSPEND.contains(&f) => Request::Suspend,
            CPU_OFF => Request::CpuOff,
            f if CPU_ON.contains(&f) => Request::CpuOn {
                target: argument(0),
                entry: argument(1),
                context: argument(2),
            },
            f if AFFINITY_INFO.contains(&f) => Request::AffinityInfo {
                target: argument(0),
                level: argument(1),
            },
            MIGRATE_INFO_TYPE => Request::MigrateInfoType,
            SYSTEM_OFF => Request::SystemOff,
            SYSTEM_RESET => Request::SystemReset,
            FEATURES => Request::Features(u32::try_from(argument(0)).unwrap_or(0)),
            f if in_psci_range(f) => Request::NotSupported,
            _ => return None,
        })
    }
}

impl Request {
    /// [`Request::decode`] for the calls that read and change nothing (VERSION, FEATURES,
    /// MIGRATE_INFO_TYPE) only, in a few compares for the fast lane; `None` for any other
    /// call (which [`Request::decode`] then takes).
    #[inline]
    pub fn decode_pure(function: u64, argument: u64) -> Option<Request> {
        match u32::try_from(function).ok()? {
            VERSION => Some(Request::Version),
            // SMC32: the argument is truncated to 32 bits.
            FEATURES => Some(Request::Features(argument as u32)),
            MIGRATE_INFO_TYPE => Some(Request::MigrateInfoType),
            _ => None,
        }
    }
}

/// Whether PSCI_FEATURES reports `function` as implemented.
pub fn implemented(function: u32) -> bool {
    Request::decode(u64::from(function), [0; 4])
        .is_some_and(|request| request != Request::NotSupported)
}

/// The MPIDR a partition's vCPU `index` sees (Aff0 = index, Aff1 = index / 16 as GICv3
/// target lists address 16 CPUs per Aff1 cluster; bit 31 RES1).
pub fn virtual_mpidr(index: usize) -> u64 {
    let index = index as u64;
    (1 << 31) | ((index / 16) << 8) | (index % 16)
}

/// The vCPU index a guest-given MPIDR names, if it is well-formed (Aff3/Aff2 zero).
pub fn vcpu_index(mpidr: u64) -> Option<usize> {
    let affinity = mpidr & 0xff_00ff_ffff;
    if affinity >> 16 != 0 || affinity & 0xff >= 16 {
        return None;
    }
    usize::try_from(((affinity >> 8) & 0xff) * 16 + (affinity & 0xff)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_calls() {
        assert_eq!(Request::decode(0x8400_0000, [0; 4]), Some(Request::Version));
        for function in [
            VERSION,
            FEATURES,
            MIGRATE_INFO_TYPE,
            CPU_OFF,
            0x8400_001f,
            0xc600_0001,
        ] {
            for argument in [0, 0x8400_0003, 0xffff_ffff_8400_0000] {
                let pure = Request::decode_pure(u64::from(function), argument);
                let full = Request::decode(u64::from(function), [argument, 0, 0, 0]);
                assert!(
                    pure.is_none() || pure == full,
                    "{function:#x} {argument:#x}"
                );
            }
        }
        assert!(Request::decode_pure(u64::from(VERSION) | 1 << 32, 0).is_none());
        assert_eq!(
            Request::decode(0xc400_0003, [1, 0x4020_0000, 7, 0]),
            Some(Request::CpuOn {
                target: 1,
                entry: 0x4020_0000,
                context: 7
            })
        );
        // SMC32 CPU_ON truncates arguments.
        assert_eq!(
            Request::decode(0x8400_0003, [0x1_0000_0001, 0x1_4020_0000, 0, 0]),
            Some(Request::CpuOn {
                target: 1,
                entry: 0x4020_0000,
                context: 0
            })
        );
        assert_eq!(
            Request::decode(0x8400_000a, [0x8400_0008, 0, 0, 0]),
            Some(Request::Features(0x8400_0008))
        );
        assert_eq!(Request::decode(0x8600_ff01, [0; 4]), None);
        assert_eq!(Request::decode(u64::MAX, [0; 4]), None);
        assert!(implemented(SYSTEM_OFF));
        assert!(!implemented(0x8000_0000));
    }

    #[test]
    fn mpidr_round_trip() {
        for index in [0, 1, 15, 16, 17, 40] {
            assert_eq!(vcpu_index(virtual_mpidr(index)), Some(index));
        }
        assert_eq!(vcpu_index(0x1_0000), None);
        assert_eq!(vcpu_index(0x1f), None);
    }
}
