//! `bulkhead-fuzz`: runs Bulkhead's host-side fuzz targets (see the library's doc for why a
//! structure-aware harness). `cargo xtask fuzz` builds and runs it.
//!
//! Usage: `bulkhead-fuzz [--time SECS] [--seed N] [--session N] [--list] [TARGET...]`.
//! Each target prints one line `fuzz TARGET: ok|FAILED, N executions in N sessions, ...`
//! and its findings; the exit status is 1 when any target has a finding.

use std::process::ExitCode;
use std::time::Duration;

use bulkhead_fuzz::{Target, Trace, install_panic_hook, run, run_session, targets};

/// Options from the command line.
struct Options {
    seconds: f64,
    seed: u64,
    session: Option<u64>,
    list: bool,
    names: Vec<String>,
}

fn parse(arguments: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        seconds: 2.0,
        seed: 0x5eed,
        session: None,
        list: false,
        names: Vec::new(),
    };
    let mut arguments = arguments;
    while let Some(argument) = arguments.next() {
        let mut value = |name: &str| {
            arguments
                .next()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match argument.as_str() {
            "--time" => {
                options.seconds = value("--time")?
                    .parse()
                    .map_err(|_| String::from("--time takes seconds"))?;
            }
            "--seed" => options.seed = parse_number(&value("--seed")?)?,
            "--session" => options.session = Some(parse_number(&value("--session")?)?),
            "--list" => options.list = true,
            name if name.starts_with('-') => return Err(format!("unknown option {name}")),
            name => options.names.push(name.to_owned()),
        }
    }
    Ok(options)
}

fn parse_number(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("not a number: {text}"))
}

fn replay(target: &Target, seed: u64, session: u64) -> bool {
    let mut trace = Trace::keeping(usize::MAX);
    let result = run_session(target, seed, session, &mut trace);
    for step in trace.lines() {
        for line in step.lines() {
            println!("  | {line}");
        }
    }
    match result {
        Ok(steps) => {
            println!(
                "fuzz {}: session {session} ok, {steps} executions",
                target.name
            );
            true
        }
        Err(message) => {
            println!("fuzz {}: session {session} FAILED: {message}", target.name);
            false
        }
    }
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("bulkhead-fuzz: {message}");
            return ExitCode::from(2);
        }
    };
    let all = targets();
    if options.list {
        for target in &all {
            println!("{:20} {}", target.name, target.description);
        }
        return ExitCode::SUCCESS;
    }
    let chosen: Vec<&Target> = all
        .iter()
        .filter(|target| {
            options.names.is_empty() || options.names.iter().any(|name| name == target.name)
        })
        .collect();
    if let Some(name) = options
        .names
        .iter()
        .find(|name| !all.iter().any(|target| target.name == name.as_str()))
    {
        eprintln!("bulkhead-fuzz: no target {name} (--list shows them)");
        return ExitCode::from(2);
    }
    install_panic_hook();
    let mut clean = true;
    for target in chosen {
        if let Some(session) = options.session {
            clean &= replay(target, options.seed, session);
            continue;
        }
        let report = run(
            target,
            options.seed,
            Duration::from_secs_f64(options.seconds),
        );
        let verdict = if report.finding_count == 0 {
            "ok"
        } else {
            "FAILED"
        };
        println!(
            "fuzz {}: {verdict}, {} executions in {} sessions, {} finding(s) ({} kind(s)), seed {:#x}, {:.1} s",
            report.target,
            report.executions,
            report.sessions,
            report.finding_count,
            report.findings.len(),
            options.seed,
            report.elapsed.as_secs_f64()
        );
        for finding in &report.findings {
            println!(
                "  finding in session {}: {}",
                finding.session, finding.message
            );
            for step in &finding.trace {
                for line in step.lines() {
                    println!("    | {line}");
                }
            }
            println!(
                "    replay: cargo xtask fuzz {} --seed {:#x} --session {}",
                report.target, options.seed, finding.session
            );
        }
        for (stem, count) in &report.known {
            let why = bulkhead_fuzz::KNOWN
                .iter()
                .find(|(known, _)| known == stem)
                .map_or("", |(_, why)| *why);
            println!("  known finding, {count} time(s), not fixed here: {stem} ({why})");
        }
        clean &= report.finding_count == 0;
    }
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
