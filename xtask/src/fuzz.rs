//! `cargo xtask fuzz`: builds the host fuzz targets (hypervisor/fuzz, cargo profile `fuzz`:
//! optimised, overflow checks on) and runs each for a fixed time. `cargo xtask test` runs
//! every target for [`SHORT_BUDGET_SECONDS`] and counts each as one test, named
//! `fuzz-TARGET` and selected by `--filter` like a scenario.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use clap::Args;

use crate::error::{Context, Error, Result};
use crate::test::Tally;
use crate::{setup, workspace};

/// Seconds each target runs in `cargo xtask test` and by default here.
pub const SHORT_BUDGET_SECONDS: f64 = 2.0;

/// Options of `cargo xtask fuzz`.
#[derive(Debug, Clone, Args)]
pub struct FuzzArgs {
    /// Seconds per target (a long run: `--time 600`).
    #[arg(long, value_name = "SECS", default_value_t = SHORT_BUDGET_SECONDS)]
    time: f64,
    /// Seed of the run (decimal or 0x-hex); a finding names the seed and session to replay.
    #[arg(long, value_name = "N")]
    seed: Option<String>,
    /// Replay one session of each chosen target with a trace of every step.
    #[arg(long, value_name = "N")]
    session: Option<u64>,
    /// List the targets and what each drives.
    #[arg(long)]
    list: bool,
    /// Targets to run (all without any).
    targets: Vec<String>,
}

/// Run `cargo xtask fuzz`.
pub fn command(args: &FuzzArgs) -> Result<ExitCode> {
    setup::toolchain()?;
    let binary = build()?;
    let mut fuzz = Command::new(&binary);
    fuzz.current_dir(workspace::root());
    if args.list {
        fuzz.arg("--list");
    } else {
        fuzz.args(["--time", &args.time.to_string()]);
        if let Some(seed) = &args.seed {
            fuzz.args(["--seed", seed]);
        }
        if let Some(session) = args.session {
            fuzz.args(["--session", &session.to_string()]);
        }
    }
    fuzz.args(&args.targets);
    println!("$ {}", workspace::display(&fuzz));
    let status = fuzz
        .status()
        .context(|| format!("running {}", binary.display()))?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Builds the fuzz binary; returns its path.
fn build() -> Result<PathBuf> {
    let mut cargo = workspace::cargo();
    cargo.args(["build", "--profile", "fuzz", "-p", "bulkhead-fuzz"]);
    workspace::run(&mut cargo)?;
    Ok(workspace::target_dir().join("fuzz").join("bulkhead-fuzz"))
}

/// The targets the binary offers.
fn target_names(binary: &PathBuf) -> Result<Vec<String>> {
    let output = Command::new(binary)
        .arg("--list")
        .output()
        .context(|| format!("running {} --list", binary.display()))?;
    if !output.status.success() {
        return Err(Error::new(format!("{} --list failed", binary.display())));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect())
}

/// The fuzz stage of `cargo xtask test`: every target whose test name (`fuzz-TARGET`)
/// contains `filter` runs for the short budget in one process, output streamed; each target
/// counts as passed when it reports `ok`, failed when it reports findings or never reports
/// (the process died).
pub fn run_short(filter: Option<&str>, tally: &mut Tally) -> Result<()> {
    let binary = build()?;
    let chosen: Vec<String> = target_names(&binary)?
        .into_iter()
        .filter(|name| filter.is_none_or(|filter| format!("fuzz-{name}").contains(filter)))
        .collect();
    if chosen.is_empty() {
        return Ok(());
    }
    println!("==> fuzz ({SHORT_BUDGET_SECONDS} s per target)");
    let mut fuzz = Command::new(&binary);
    fuzz.current_dir(workspace::root())
        .args(["--time", &SHORT_BUDGET_SECONDS.to_string()])
        .args(&chosen)
        .stdout(Stdio::piped());
    println!("$ {}", workspace::display(&fuzz));
    let mut child = fuzz
        .spawn()
        .context(|| format!("running {}", binary.display()))?;
    let mut verdicts: Vec<(String, bool)> = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.context(|| String::from("reading the fuzz output"))?;
            println!("{line}");
            if let Some(verdict) = verdict(&line) {
                verdicts.push(verdict);
            }
        }
    }
    let status = child
        .wait()
        .context(|| format!("waiting for {}", binary.display()))?;
    let mut counted = Tally::default();
    for name in &chosen {
        match verdicts.iter().find(|(reported, _)| reported == name) {
            Some((_, true)) => {
                println!("PASS fuzz-{name}");
                counted.passed += 1;
            }
            Some((_, false)) => {
                println!("FAIL fuzz-{name}: findings (above)");
                counted.failed += 1;
            }
            None => {
                println!("FAIL fuzz-{name}: no result (the fuzz process ended with {status})");
                counted.failed += 1;
            }
        }
    }
    println!(
        "==> fuzz: {} passed, {} failed",
        counted.passed, counted.failed
    );
    tally.passed += counted.passed;
    tally.failed += counted.failed;
    Ok(())
}

/// `fuzz NAME: ok, ...` or `fuzz NAME: FAILED, ...` → (NAME, ok).
fn verdict(line: &str) -> Option<(String, bool)> {
    let rest = line.strip_prefix("fuzz ")?;
    let (name, outcome) = rest.split_once(": ")?;
    if outcome.starts_with("ok,") {
        Some((name.to_owned(), true))
    } else if outcome.starts_with("FAILED,") {
        Some((name.to_owned(), false))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_lines_are_read() {
        assert_eq!(
            verdict("fuzz esr: ok, 10 executions in 1 sessions, 0 finding(s)"),
            Some((String::from("esr"), true))
        );
        assert_eq!(
            verdict("fuzz pl011: FAILED, 10 executions in 1 sessions, 2 finding(s)"),
            Some((String::from("pl011"), false))
        );
        assert_eq!(verdict("  finding in session 3: fuzz x: ok,"), None);
        assert_eq!(verdict("fuzz esr: session 3 ok, 10 executions"), None);
    }
}
