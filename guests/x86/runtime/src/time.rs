//! Time from the time-stamp counter: [`tsc`] and its rate ([`tsc_hz`]), for delays and for the
//! x2APIC timer, which counts TSC ticks.
//!
//! The rate comes from the boot information (Bulkhead measures the TSC against the PIT at
//! boot, so it is the pace the TSC really keeps, also under an emulator: Bochs with
//! `clock: sync=none` ticks it at its `ips`), else from CPUID: leaf 0x15 (crystal clock times
//! the TSC/crystal ratio) when it names the crystal, else leaf 0x16's base frequency, else
//! [`DEFAULT_TSC_HZ`]. The CPUID figures are the modelled CPU's nominal ones.

use core::arch::x86_64::{__cpuid, _rdtsc};
use core::sync::atomic::{AtomicU64, Ordering};

/// Rate assumed when CPUID names none.
pub const DEFAULT_TSC_HZ: u64 = 1_000_000_000;

/// The rate, once worked out (0: not yet).
static TSC_HZ: AtomicU64 = AtomicU64::new(0);

/// The time-stamp counter.
pub fn tsc() -> u64 {
    // SAFETY: RDTSC only reads the time-stamp counter.
    unsafe { _rdtsc() }
}

/// The TSC rate in Hz, and where it came from.
pub fn tsc_source() -> (u64, &'static str) {
    if let Some(hz) = crate::boot_info::tsc_hz() {
        return (hz, "boot information");
    }
    let max_leaf = __cpuid(0).eax;
    if max_leaf >= 0x15 {
        let leaf = __cpuid(0x15);
        if let Some(hz) = from_crystal(leaf.eax, leaf.ebx, leaf.ecx) {
            return (hz, "CPUID 0x15");
        }
    }
    if max_leaf >= 0x16 {
        let base_mhz = u64::from(__cpuid(0x16).eax & 0xffff);
        if base_mhz != 0 {
            return (base_mhz * 1_000_000, "CPUID 0x16");
        }
    }
    (DEFAULT_TSC_HZ, "default")
}

/// CPUID leaf 0x15: TSC = crystal (ECX Hz) * EBX / EAX, if all three are given.
fn from_crystal(denominator: u32, numerator: u32, crystal_hz: u32) -> Option<u64> {
    if denominator == 0 || numerator == 0 || crystal_hz == 0 {
        return None;
    }
    Some(u64::from(crystal_hz) * u64::from(numerator) / u64::from(denominator))
}

/// The TSC rate in Hz (worked out once, see the module notes).
pub fn tsc_hz() -> u64 {
    let known = TSC_HZ.load(Ordering::Relaxed);
    if known != 0 {
        return known;
    }
    let (hz, _) = tsc_source();
    TSC_HZ.store(hz, Ordering::Relaxed);
    hz
}

/// TSC ticks in `ms` milliseconds.
pub fn ticks_from_ms(ms: u64) -> u64 {
    tsc_hz().saturating_mul(ms) / 1000
}

/// Milliseconds between two TSC values.
pub fn ms_between(start: u64, end: u64) -> u64 {
    end.wrapping_sub(start).saturating_mul(1000) / tsc_hz().max(1)
}

#[cfg(test)]
mod tests {
    use super::from_crystal;

    #[test]
    fn crystal_needs_all_three_values() {
        assert_eq!(from_crystal(2, 292, 0), None);
        assert_eq!(from_crystal(0, 292, 24_000_000), None);
        assert_eq!(from_crystal(2, 292, 24_000_000), Some(3_504_000_000));
    }
}
