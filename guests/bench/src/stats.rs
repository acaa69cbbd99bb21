//! Samples in both units, summarised (min / median / p90 / max) and printed as `bench:` lines.
//!
//! `cargo xtask bench` parses those lines.

use bulkhead_guest::println;

use crate::clock::Clock;

/// Order statistics of one series (nearest-rank percentiles).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub min: u64,
    pub median: u64,
    pub p90: u64,
    pub max: u64,
    pub count: usize,
}

/// The nearest-rank `percent` percentile of sorted `values`.
fn percentile(sorted: &[u64], percent: usize) -> u64 {
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted.get(rank - 1).copied().unwrap_or(0)
}

/// Summary of `values` (sorted in place); `None` if empty.
pub fn summarize(values: &mut [u64]) -> Option<Summary> {
    values.sort_unstable();
    Some(Summary {
        min: *values.first()?,
        median: percentile(values, 50),
        p90: percentile(values, 90),
        max: *values.last()?,
        count: values.len(),
    })
}

/// One measurement of up to `N` samples: virtual-counter ticks and cycles per sample. Lives on
/// the 16 KiB vCPU stack, so `N` is what the measurement needs, no more.
pub struct Samples<const N: usize> {
    ticks: [u64; N],
    cycles: [u64; N],
    len: usize,
}

impl<const N: usize> Samples<N> {
    pub const fn new() -> Self {
        Self {
            ticks: [0; N],
            cycles: [0; N],
            len: 0,
        }
    }

    /// Records one sample; beyond `N` samples are dropped.
    pub fn push(&mut self, (ticks, cycles): (u64, u64)) {
        if let (Some(tick_slot), Some(cycle_slot)) =
            (self.ticks.get_mut(self.len), self.cycles.get_mut(self.len))
        {
            *tick_slot = ticks;
            *cycle_slot = cycles;
            self.len += 1;
        }
    }

    /// Summaries in ns (from the virtual counter) and in cycles (`None` without a cycle
    /// counter).
    pub fn summaries(&mut self, clock: &Clock) -> (Option<Summary>, Option<Summary>) {
        let len = self.len;
        let ns = self.ticks.get_mut(..len).and_then(|ticks| {
            for value in ticks.iter_mut() {
                *value = clock.nanoseconds(*value);
            }
            summarize(ticks)
        });
        let cycles = if clock.has_cycles() {
            self.cycles.get_mut(..len).and_then(summarize)
        } else {
            None
        };
        (ns, cycles)
    }
}

/// Prints `bench: KIND NAME UNIT median=.. min=.. p90=.. max=.. n=..`, with `mib_per_s=..`
/// when each sample moved `bytes_per_sample` bytes, or `bench: KIND NAME UNIT n/a`.
pub fn print(
    kind: &str,
    name: &str,
    unit: &str,
    summary: Option<Summary>,
    bytes_per_sample: Option<u64>,
) {
    let Some(summary) = summary else {
        println!("bench: {kind} {name} {unit} n/a");
        return;
    };
    match bytes_per_sample {
        Some(bytes) => {
            // MiB per second of this unit's clock: ns, or cycles at 1 GHz.
            let per_second =
                u128::from(bytes) * 1_000_000_000 / (1 << 20) / u128::from(summary.median.max(1));
            println!(
                "bench: {kind} {name} {unit} median={} min={} p90={} max={} n={} mib_per_s={per_second}",
                summary.median, summary.min, summary.p90, summary.max, summary.count
            );
        }
        None => println!(
            "bench: {kind} {name} {unit} median={} min={} p90={} max={} n={}",
            summary.median, summary.min, summary.p90, summary.max, summary.count
        ),
    }
}

/// `numerator / denominator` with three decimals, as text parts (integer, thousandths).
pub fn ratio_thousandths(numerator: u64, denominator: u64) -> (u64, u64) {
    let thousandths = u128::from(numerator) * 1000 / u128::from(denominator.max(1)).max(1);
    let thousandths = u64::try_from(thousandths).unwrap_or(u64::MAX);
    (thousandths / 1000, thousandths % 1000)
}
