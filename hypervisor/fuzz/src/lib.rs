//! Bulkhead's fuzz targets, run on the host by `cargo xtask fuzz` (and, with a short budget,
//! by `cargo xtask test`).
//!
//! Why a deterministic, structure-aware harness and not `cargo fuzz` (libFuzzer): cargo-fuzz
//! documents that `--sanitizer none` can build on a stable compiler, so the pinned toolchain
//! was not the obstacle; what decided it: `cargo fuzz` needs `cargo install cargo-fuzz` and
//! `libfuzzer-sys` (which compiles libFuzzer's C++ sources) fetched from crates.io on every
//! machine that runs `cargo xtask test`, while the test run must work from a fresh clone
//! with only the pinned toolchain; libFuzzer's byte-string inputs would need an `Arbitrary`
//! layer to become the structured inputs these targets need anyway (qvm statements,
//! instruction encodings, a guest's access sequences with state between accesses); and a
//! CI budget of seconds per target gains little from coverage feedback. (Not measured here:
//! cargo-fuzz was not installed on the development machine.) So each target is a generator
//! that knows its input's structure and draws from a seeded generator ([`random::Rng`]) with
//! a bias toward interesting values. Runs are reproducible: a finding names its seed and
//! session, and `--session N` replays that session with a trace of every step. Moving to
//! libFuzzer later means wrapping each target's session function in a `fuzz_target!` that
//! seeds the generator from the input bytes.
//!
//! Design:
//! - A target runs *sessions*: a fresh state (a configuration text, a set of partitions with
//!   their devices) driven for a number of steps; one step is one execution (one parse, one
//!   decode, one guest access). Sessions are independent, so a finding replays from its
//!   session's seed alone.
//! - A finding is a panic (caught, with its message and location) or a broken invariant the
//!   target checks (a model of what must stay true); resident memory that keeps growing
//!   across sessions is a finding too.
//! - Code under test is used through its public API only, as the image uses it.
#![forbid(unsafe_code)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        reason = "tests assert by panicking"
    )
)]

pub mod config;
pub mod decode;
pub mod devices;
pub mod random;

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use random::session_seed;

/// What a session returns: the steps it executed, or the invariant it found broken.
pub type SessionResult = Result<u64, String>;

/// One fuzz target.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// Name used on the command line and in reports.
    pub name: &'static str,
    /// What it drives.
    pub description: &'static str,
    /// Steps per session.
    pub session_length: u64,
    /// Runs one session from `seed` for up to `steps` steps.
    pub session: fn(seed: u64, steps: u64, trace: &mut Trace) -> SessionResult,
}

/// Every target, in the order `cargo xtask fuzz` runs them.
pub fn targets() -> Vec<Target> {
    let mut all = Vec::new();
    all.extend(config::targets());
    all.extend(decode::targets());
    all.extend(devices::targets());
    all
}

/// The steps of a session, kept only when a finding is replayed.
#[derive(Debug, Default)]
pub struct Trace {
    enabled: bool,
    keep: usize,
    lines: VecDeque<String>,
}

impl Trace {
    /// A trace that records nothing (the fast path).
    pub fn off() -> Trace {
        Trace::default()
    }

    /// A trace that keeps the last `keep` steps.
    pub fn keeping(keep: usize) -> Trace {
        Trace {
            enabled: true,
            keep,
            lines: VecDeque::new(),
        }
    }

    /// Records a step; `describe` runs only when the trace is on.
    pub fn note(&mut self, describe: impl FnOnce() -> String) {
        if self.enabled {
            if self.lines.len() == self.keep {
                self.lines.pop_front();
            }
            self.lines.push_back(describe());
        }
    }

    /// The recorded steps, oldest first.
    pub fn lines(&self) -> impl Iterator<Item = &String> {
        self.lines.iter()
    }
}

/// Findings already known and reported where they must be fixed (files another person is
/// changing at the time, see the report): (message prefix, where and why). A known finding
/// is counted and printed with every run but does not fail the target; fixing it means
/// deleting its line here, after which the target fails again if the fix is incomplete.
pub const KNOWN: &[(&str, &str)] = &[];

thread_local! {
    /// Known findings seen by a session that carried on past them.
    static KNOWN_SEEN: RefCell<BTreeMap<&'static str, u64>> = const { RefCell::new(BTreeMap::new()) };
}

/// Records one occurrence of the known finding `stem` (an entry of [`KNOWN`]) and lets the
/// session carry on.
pub fn known(stem: &'static str) {
    KNOWN_SEEN.with(|seen| *seen.borrow_mut().entry(stem).or_default() += 1);
}

/// The entry of [`KNOWN`] `message` is an occurrence of, if any.
pub fn known_stem(message: &str) -> Option<&'static str> {
    KNOWN
        .iter()
        .map(|(stem, _)| *stem)
        .find(|stem| message.starts_with(stem))
}

/// One finding of a run.
#[derive(Debug, Clone)]
pub struct Finding {
    /// Session number (replay with `--session`).
    pub session: u64,
    /// What went wrong.
    pub message: String,
    /// The last steps before it (from a replay of the session).
    pub trace: Vec<String>,
}

/// The outcome of running one target.
#[derive(Debug, Clone)]
pub struct Report {
    /// The target's name.
    pub target: &'static str,
    /// Executions (steps) in all.
    pub executions: u64,
    /// Sessions run.
    pub sessions: u64,
    /// Distinct findings (by message), first occurrence each.
    pub findings: Vec<Finding>,
    /// Findings in all, repeats included.
    pub finding_count: u64,
    /// Known findings ([`KNOWN`]) met, by prefix: counted, not failing.
    pub known: BTreeMap<&'static str, u64>,
    /// Wall-clock time spent.
    pub elapsed: Duration,
}

/// Distinct findings kept per target; the rest are counted.
const DISTINCT_FINDINGS: usize = 8;
/// Steps of a failing session shown in a report.
const TRACE_STEPS: usize = 12;
/// Growth of resident memory across sessions that counts as unbounded allocation.
const MEMORY_GROWTH_LIMIT: u64 = 256 << 20;

/// The message of the last panic (set by the hook [`install_panic_hook`] installs).
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Replaces the default panic output with a record of the message and location, which the
/// runner turns into a finding (a panic inside a target is caught, not fatal).
pub fn install_panic_hook() {
    panic::set_hook(Box::new(|info| {
        if let Ok(mut last) = LAST_PANIC.lock() {
            *last = Some(format!("panic: {info}"));
        }
    }));
}

fn take_panic() -> String {
    LAST_PANIC
        .lock()
        .ok()
        .and_then(|mut last| last.take())
        .unwrap_or_else(|| String::from("panic (no message)"))
}

/// Runs one session, turning a panic into a finding.
pub fn run_session(target: &Target, seed: u64, session: u64, trace: &mut Trace) -> SessionResult {
    let seed = session_seed(seed, session);
    match panic::catch_unwind(AssertUnwindSafe(|| {
        (target.session)(seed, target.session_length, trace)
    })) {
        Ok(result) => result,
        Err(_) => Err(take_panic()),
    }
}

/// Runs `target` for `budget` (wall-clock), sessions numbered from 0, each seeded from
/// `seed` and its number.
pub fn run(target: &Target, seed: u64, budget: Duration) -> Report {
    let start = Instant::now();
    let mut report = Report {
        target: target.name,
        executions: 0,
        sessions: 0,
        findings: Vec::new(),
        finding_count: 0,
        known: BTreeMap::new(),
        elapsed: Duration::ZERO,
    };
    KNOWN_SEEN.with(|seen| seen.borrow_mut().clear());
    let mut baseline = None;
    let mut memory_reported = false;
    while start.elapsed() < budget || report.sessions == 0 {
        let session = report.sessions;
        let result = run_session(target, seed, session, &mut Trace::off());
        report.sessions += 1;
        match result {
            Ok(steps) => report.executions += steps,
            Err(message) => {
                report.executions += 1;
                match known_stem(&message) {
                    Some(stem) => known(stem),
                    None => record(&mut report, target, seed, session, message),
                }
            }
        }
        // Resident memory after the first session is the baseline: sessions are
        // independent, so memory must not keep growing.
        if let Some(resident) = resident_bytes() {
            let base = *baseline.get_or_insert(resident);
            if !memory_reported && resident > base.saturating_add(MEMORY_GROWTH_LIMIT) {
                memory_reported = true;
                let message = format!(
                    "resident memory grew from {} MiB to {} MiB over {} sessions",
                    base >> 20,
                    resident >> 20,
                    report.sessions
                );
                record(&mut report, target, seed, session, message);
            }
        }
    }
    report.known = KNOWN_SEEN.with(|seen| std::mem::take(&mut *seen.borrow_mut()));
    report.elapsed = start.elapsed();
    report
}

fn record(report: &mut Report, target: &Target, seed: u64, session: u64, message: String) {
    report.finding_count += 1;
    let known = report
        .findings
        .iter()
        .any(|finding| same_kind(&finding.message, &message));
    if known || report.findings.len() >= DISTINCT_FINDINGS {
        return;
    }
    // Replay the session with a trace to show the steps that led there.
    let mut trace = Trace::keeping(TRACE_STEPS);
    let _ = run_session(target, seed, session, &mut trace);
    report.findings.push(Finding {
        session,
        message,
        trace: trace.lines().cloned().collect(),
    });
}

/// Two findings are the same kind when their messages agree up to the first digit (values
/// and addresses differ from one occurrence to the next).
fn same_kind(a: &str, b: &str) -> bool {
    let stem = |text: &str| -> String {
        text.chars()
            .take_while(|c| !c.is_ascii_digit())
            .collect::<String>()
    };
    stem(a) == stem(b)
}

/// This process's resident memory (Linux `/proc/self/statm`), if known.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages.saturating_mul(4096))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn always_fine(_seed: u64, steps: u64, trace: &mut Trace) -> SessionResult {
        trace.note(|| String::from("step"));
        Ok(steps)
    }

    fn panics_on_odd(seed: u64, _steps: u64, trace: &mut Trace) -> SessionResult {
        trace.note(|| format!("seed {seed}"));
        if seed % 2 == 1 {
            panic!("odd seed {seed}");
        }
        Err(format!("even seed {seed}"))
    }

    #[test]
    fn a_clean_target_counts_its_executions() {
        let target = Target {
            name: "fine",
            description: "",
            session_length: 10,
            session: always_fine,
        };
        let report = run(&target, 1, Duration::ZERO);
        assert_eq!(report.sessions, 1);
        assert_eq!(report.executions, 10);
        assert!(report.findings.is_empty());
    }

    #[test]
    fn panics_and_broken_invariants_become_findings_with_a_trace() {
        install_panic_hook();
        let target = Target {
            name: "bad",
            description: "",
            session_length: 1,
            session: panics_on_odd,
        };
        let mut kinds = std::collections::BTreeSet::new();
        for session in 0..8 {
            let mut report = Report {
                target: "bad",
                executions: 0,
                sessions: 0,
                findings: Vec::new(),
                finding_count: 0,
                known: BTreeMap::new(),
                elapsed: Duration::ZERO,
            };
            let message = run_session(&target, 3, session, &mut Trace::off()).unwrap_err();
            record(&mut report, &target, 3, session, message);
            let finding = &report.findings[0];
            assert_eq!(finding.trace.len(), 1);
            kinds.insert(finding.message.split(' ').next().unwrap().to_owned());
        }
        // Both kinds show up over eight sessions: caught panics and returned errors.
        assert!(kinds.contains("panic:"), "{kinds:?}");
        assert!(kinds.contains("even"), "{kinds:?}");
    }

    #[test]
    fn findings_of_one_kind_differ_only_in_numbers() {
        assert!(same_kind("read at 0x10 failed", "read at 0x20 failed"));
        assert!(!same_kind("read at 0x10", "write at 0x10"));
    }
}
