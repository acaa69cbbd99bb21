//! How a CPU's local APIC timer is made to fire at a TSC value (pure logic, host-tested):
//! TSC-deadline mode takes the value as it is; the one-shot count-down every local APIC has
//! needs the TSC distance converted into timer ticks at a rate measured at boot
//! ([`crate::apic::LocalApic::calibrate_one_shot`]). QEMU's TCG CPUs have no TSC-deadline
//! mode.

/// How a CPU's local APIC timer wakes it at a TSC value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostTimer {
    /// TSC-deadline mode (CPUID.1:ECX bit 24): the deadline is written as it is.
    TscDeadline,
    /// One-shot count-down (every local APIC has it): the TSC distance is converted with the
    /// rate calibrated at boot, `ticks_per_tsc` timer ticks per TSC tick in 32.32 fixed point.
    OneShot {
        /// Timer ticks per TSC tick, 32.32 fixed point.
        ticks_per_tsc: u64,
    },
    /// Neither (the calibration failed): nothing wakes the CPU but interrupts.
    Absent,
}

/// The one-shot initial count that fires no earlier than TSC `deadline`, seen at TSC `now`,
/// at `ticks_per_tsc` (32.32), and the TSC value it fires at without the margin: the count is
/// rounded up and made 1/1024 longer, so that a rate measured a little high never makes the
/// timer fire before the deadline; a count beyond 2^32 - 1 is cut short (it fires earlier, at
/// the returned TSC value).
pub fn one_shot_count(now: u64, deadline: u64, ticks_per_tsc: u64) -> (u32, u64) {
    let distance = u128::from(deadline.saturating_sub(now));
    let ticks = (distance * u128::from(ticks_per_tsc)).div_ceil(1 << 32);
    let ticks = ticks + ticks / 1024 + 1;
    match u32::try_from(ticks) {
        Ok(count) => (count, deadline),
        Err(_) => {
            let reach =
                (u128::from(u32::MAX - u32::MAX / 1024) << 32) / u128::from(ticks_per_tsc.max(1));
            (
                u32::MAX,
                now.saturating_add(u64::try_from(reach).unwrap_or(u64::MAX)),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shot_counts_never_fire_before_the_deadline() {
        // One timer tick per TSC tick.
        let rate = 1 << 32;
        assert_eq!(one_shot_count(1000, 3000, rate), (2002, 3000));
        // A deadline already passed fires at once.
        assert_eq!(one_shot_count(5000, 3000, rate), (1, 3000));
        // Half a timer tick per TSC tick: 1000 TSC ticks are 500 timer ticks.
        assert_eq!(one_shot_count(0, 1000, rate / 2), (501, 1000));
        // Three TSC ticks are one timer tick: rounded up.
        assert_eq!(one_shot_count(0, 4, rate / 3).0, 3);
    }

    #[test]
    fn a_far_deadline_is_cut_to_the_longest_count() {
        let rate = 1 << 32;
        let (count, fires) = one_shot_count(100, 100 + (1 << 40), rate);
        assert_eq!(count, u32::MAX);
        assert!(fires > 100 && fires < 100 + (1 << 32), "{fires}");
    }
}
