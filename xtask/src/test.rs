//! `cargo xtask test`: host unit tests, the short fuzz runs, clippy, then every system-test
//! scenario; one `N passed, N failed`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};

use clap::Args;

use crate::build::{self, Arch, BootMethod, CargoProfile, Image, Loader};
use crate::error::{Context, Error, Result};
use crate::profile::{Boot, Console, Launch};
use crate::scenario::{self, Scenario};
use crate::{clippy, fuzz, harness};
use crate::{setup, workspace};

/// Options of `cargo xtask test`.
#[derive(Debug, Clone, Args)]
pub struct TestArgs {
    /// Run only scenarios and clippy checks whose names contain SUBSTR, and only host tests
    /// whose paths contain it.
    #[arg(long, value_name = "SUBSTR")]
    filter: Option<String>,
    /// Skip the host unit tests (`cargo test`).
    #[arg(long)]
    no_host: bool,
    /// Skip the system-test scenarios.
    #[arg(long)]
    no_system: bool,
    /// Skip the short fuzz runs (`cargo xtask fuzz`, each target one test named `fuzz-...`).
    #[arg(long)]
    no_fuzz: bool,
    /// Skip clippy (host crates, both images, both UEFI loaders; otherwise each is one test,
    /// named `clippy-...` and selected by --filter like a scenario).
    #[arg(long)]
    no_clippy: bool,
}

/// Passed and failed tests, host and system together.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
}

/// Run `cargo xtask test`.
pub fn command(args: &TestArgs) -> Result<ExitCode> {
    setup::toolchain()?;
    // Scenario files are read first: a broken one stops the run before the long part.
    let scenarios: Vec<Scenario> = if args.no_system {
        Vec::new()
    } else {
        scenario::load_all(&scenario::directory())?
            .into_iter()
            .filter(|scenario| {
                args.filter
                    .as_deref()
                    .is_none_or(|filter| scenario.name.contains(filter))
            })
            .collect()
    };
    let mut tally = Tally::default();
    if !args.no_host {
        host_tests(args.filter.as_deref(), &mut tally)?;
    }
    if !args.no_fuzz {
        fuzz::run_short(args.filter.as_deref(), &mut tally)?;
    }
    if !args.no_clippy {
        clippy::run(args.filter.as_deref(), &mut tally)?;
    }
    if !args.no_system {
        system_tests(&scenarios, &mut tally)?;
    }
    println!("{} passed, {} failed", tally.passed, tally.failed);
    Ok(if tally.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `cargo test` over the workspace's default members (the host crates), then over the guest
/// crates' pure logic (the shared-memory driver, the x86 guest runtime) built for the host;
/// output streamed, counts taken from libtest's `test result:` lines.
fn host_tests(filter: Option<&str>, tally: &mut Tally) -> Result<()> {
    println!("==> host unit tests");
    let mut counted = Tally::default();
    let host = host_triple()?;
    let guests = crate::guests::directory();
    let runs = [
        (workspace::root(), Vec::new()),
        (
            guests.clone(),
            vec!["--target", host.as_str(), "-p", "bulkhead-shmem"],
        ),
        (
            guests.join("x86"),
            vec!["--target", host.as_str(), "-p", "bulkhead-guest-x86"],
        ),
    ];
    for (directory, extra) in runs {
        let mut cargo = workspace::cargo();
        cargo.current_dir(&directory);
        cargo.args(["test", "--no-fail-fast"]).args(&extra);
        if let Some(filter) = filter {
            cargo.args(["--", filter]);
        }
        cargo_test(cargo, &mut counted)?;
    }
    println!(
        "==> host unit tests: {} passed, {} failed",
        counted.passed, counted.failed
    );
    tally.passed += counted.passed;
    tally.failed += counted.failed;
    Ok(())
}

/// The host's target triple (`rustc -vV`), for building guest crates' tests on the host.
fn host_triple() -> Result<String> {
    let output = std::process::Command::new("rustc")
        .current_dir(workspace::root())
        .arg("-vV")
        .output()
        .context(|| "cannot run rustc -vV".to_string())?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_string)
        .ok_or_else(|| Error::new("rustc -vV names no host triple"))
}

/// Runs one `cargo test`, adding its counts to `counted`.
fn cargo_test(mut cargo: std::process::Command, counted: &mut Tally) -> Result<()> {
    println!("$ {}", workspace::display(&cargo));
    let mut child = cargo
        .stdout(Stdio::piped())
        .spawn()
        .context(|| "cannot start cargo test".to_string())?;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.context(|| "cannot read cargo test's output".to_string())?;
            println!("{line}");
            if let Some(result) = parse_test_result(&line) {
                counted.passed += result.passed;
                counted.failed += result.failed;
            }
        }
    }
    let status = child
        .wait()
        .context(|| "cannot wait for cargo test".to_string())?;
    if !status.success() && counted.failed == 0 {
        // A build error or a crashed test binary: no libtest line says so.
        println!(
            "FAIL host unit tests: cargo test exited with {status} and reported no failing test"
        );
        counted.failed += 1;
    }
    Ok(())
}

/// The counts of one libtest summary such as
/// `test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0s`.
pub fn parse_test_result(line: &str) -> Option<Tally> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let (_verdict, counts) = rest.split_once(". ")?;
    let mut passed = None;
    let mut failed = None;
    for part in counts.split(';') {
        let mut words = part.split_whitespace();
        let (Some(number), Some(label)) = (words.next(), words.next()) else {
            continue;
        };
        match label {
            "passed" => passed = number.parse().ok(),
            "failed" => failed = number.parse().ok(),
            _ => {}
        }
    }
    Some(Tally {
        passed: passed?,
        failed: failed?,
    })
}

/// What the scenarios boot, built once per architecture (image) and boot method (loader).
/// What an image is built from: architecture, cargo profile and configuration.
type ImageKey = (Arch, CargoProfile, Option<PathBuf>);
/// What a scenario needs built: an image, and for UEFI boot a loader around it.
type Needed = (Arch, BootMethod, CargoProfile, Option<PathBuf>);

#[derive(Default)]
struct Artifacts {
    images: BTreeMap<ImageKey, Result<Image, String>>,
    loaders: BTreeMap<ImageKey, Result<Loader, String>>,
}

impl Artifacts {
    fn build(needed: &BTreeSet<Needed>) -> Self {
        let mut artifacts = Self::default();
        for (arch, boot, profile, config) in needed {
            let (arch, boot, profile) = (*arch, *boot, *profile);
            let key = (arch, profile, config.clone());
            let image = artifacts.images.entry(key.clone()).or_insert_with(|| {
                build::image(arch, profile, config.as_deref()).map_err(|error| {
                    println!("==> image build failed: {error}");
                    "not run: the image build failed (see above)".to_string()
                })
            });
            if boot == BootMethod::Uefi {
                let loader = match image {
                    Ok(image) => build::loader(arch, profile, image).map_err(|error| {
                        println!("==> UEFI loader build failed: {error}");
                        "not run: the UEFI loader build failed (see above)".to_string()
                    }),
                    Err(reason) => Err(reason.clone()),
                };
                artifacts.loaders.insert(key, loader);
            }
        }
        artifacts
    }

    /// How `scenario` boots, or why it cannot. An x86_64 scenario gets its own GRUB ISO (the
    /// command line lives in its grub.cfg) or EFI system partition (the command line lives in
    /// `EFI/BOOT/bulkhead.cmdline`) in `directory`; a U-Boot scenario its own TFTP directory
    /// (the command line lives in its boot script).
    fn boot(&self, scenario: &Scenario, directory: &std::path::Path) -> Result<Boot, String> {
        let arch = scenario.profile.arch;
        let key = (arch, scenario.cargo_profile, scenario.config.clone());
        let missing = || Err("not built".to_string());
        let mut append = arch.failure_exit_option().to_string();
        if !scenario.append.is_empty() {
            append.push(' ');
            append.push_str(&scenario.append);
        }
        match scenario.boot {
            BootMethod::Image => match self.images.get(&key) {
                Some(Ok(image)) => {
                    if arch == Arch::X86_64 {
                        std::fs::create_dir_all(directory).map_err(|error| {
                            format!("cannot create {}: {error}", directory.display())
                        })?;
                        let iso = directory.join(format!("{}.iso", scenario.name));
                        return build::iso::make(&image.binary, &append, &iso)
                            .map(|iso| Boot::Iso { iso })
                            .map_err(|error| error.to_string());
                    }
                    Ok(Boot::Image {
                        binary: image.binary.clone(),
                        append,
                    })
                }
                Some(Err(reason)) => Err(reason.clone()),
                None => missing(),
            },
            BootMethod::UBoot => match self.images.get(&key) {
                Some(Ok(image)) => {
                    let load_address = scenario
                        .profile
                        .uboot_firmware()
                        .map_err(|error| error.to_string())?
                        .load_address;
                    let tftp = directory.join(format!("{}.tftp", scenario.name));
                    build::uboot::make(&image.binary, load_address, &append, &tftp)
                        .map(|tftp| Boot::UBootScript { tftp })
                        .map_err(|error| error.to_string())
                }
                Some(Err(reason)) => Err(reason.clone()),
                None => missing(),
            },
            BootMethod::Uefi => match self.loaders.get(&key) {
                Some(Ok(loader)) if arch == Arch::X86_64 => {
                    let esp = directory.join(format!("{}.esp", scenario.name));
                    build::esp_with_command_line(arch, loader, &append, &esp)
                        .map(|esp| Boot::Uefi { esp })
                        .map_err(|error| error.to_string())
                }
                Some(Ok(loader)) => Ok(Boot::Uefi {
                    esp: loader.esp.clone(),
                }),
                Some(Err(reason)) => Err(reason.clone()),
                None => missing(),
            },
        }
    }
}

fn system_tests(scenarios: &[Scenario], tally: &mut Tally) -> Result<()> {
    println!("==> system tests");
    if scenarios.is_empty() {
        println!("no scenario selected");
        return Ok(());
    }
    let mut requirements = Vec::new();
    for scenario in scenarios {
        for requirement in scenario.profile.requirements(scenario.boot)? {
            if !requirements.contains(&requirement) {
                requirements.push(requirement);
            }
        }
    }
    setup::emulators(&requirements)?;

    let needed: BTreeSet<Needed> = scenarios
        .iter()
        .filter(|scenario| scenario.build_error.is_none())
        .map(|scenario| {
            (
                scenario.profile.arch,
                scenario.boot,
                scenario.cargo_profile,
                scenario.config.clone(),
            )
        })
        .collect();
    let artifacts = Artifacts::build(&needed);
    let logs = workspace::target_dir().join("system-tests");

    for scenario in scenarios {
        let log_path = logs.join(format!("{}.log", scenario.name));
        if scenario.description.is_empty() {
            println!("---- {}", scenario.name);
        } else {
            println!("---- {}: {}", scenario.name, scenario.description);
        }
        if let Some(expected) = &scenario.build_error {
            match expect_build_failure(scenario, expected, &log_path) {
                Ok(elapsed) => {
                    println!("PASS {} ({:.1}s)", scenario.name, elapsed.as_secs_f64());
                    tally.passed += 1;
                }
                Err(reason) => {
                    println!("FAIL {}: {reason}", scenario.name);
                    tally.failed += 1;
                }
            }
            continue;
        }
        let outcome = artifacts.boot(scenario, &logs).and_then(|boot| {
            let command = scenario
                .profile
                .command(&Launch {
                    boot,
                    smp: scenario.smp,
                    memory: scenario.memory.clone(),
                    semihosting: scenario.profile.arch == Arch::Aarch64,
                    console: Console::Captured,
                    gdb: false,
                })
                .map_err(|error| error.to_string())?;
            harness::run(command, &scenario.expectation, &log_path)
                .map_err(|error| error.to_string())
        });
        match outcome {
            Ok(outcome) => match outcome.failure {
                None => {
                    println!(
                        "PASS {} ({:.1}s)",
                        scenario.name,
                        outcome.elapsed.as_secs_f64()
                    );
                    tally.passed += 1;
                }
                Some(reason) => {
                    println!("FAIL {}: {reason}", scenario.name);
                    println!(
                        "  last {} lines of {}:",
                        harness::TAIL_LINES,
                        log_path.display()
                    );
                    for line in outcome.tail {
                        println!("  | {line}");
                    }
                    tally.failed += 1;
                }
            },
            Err(reason) => {
                println!("FAIL {}: {reason}", scenario.name);
                tally.failed += 1;
            }
        }
    }
    Ok(())
}

/// Builds the image for a configuration that must be refused, and checks the build failed
/// printing every expected text. The output is saved as the scenario's log.
fn expect_build_failure(
    scenario: &Scenario,
    expected: &[String],
    log_path: &std::path::Path,
) -> std::result::Result<std::time::Duration, String> {
    let started = std::time::Instant::now();
    let mut command = build::image_command(
        scenario.profile.arch,
        scenario.cargo_profile,
        scenario.config.as_deref(),
    )
    .map_err(|error| error.to_string())?;
    let output = command
        .output()
        .map_err(|error| format!("cannot run cargo: {error}"))?;
    let text = format!(
        "{}\n{}{}",
        workspace::display(&command),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if let Some(parent) = log_path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let _ = std::fs::write(log_path, &text);
    if output.status.success() {
        return Err("the image built, but the configuration should have been refused".into());
    }
    match expected
        .iter()
        .find(|needle| !text.contains(needle.as_str()))
    {
        Some(missing) => {
            let tail: Vec<&str> = text.lines().rev().take(harness::TAIL_LINES).collect();
            for line in tail.iter().rev() {
                println!("  | {line}");
            }
            Err(format!("the build failed without printing `{missing}`"))
        }
        None => Ok(started.elapsed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_summaries_are_counted() {
        assert_eq!(
            parse_test_result(
                "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; \
                 finished in 0.01s"
            ),
            Some(Tally {
                passed: 12,
                failed: 0
            })
        );
        assert_eq!(
            parse_test_result(
                "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out"
            ),
            Some(Tally {
                passed: 3,
                failed: 2
            })
        );
        assert_eq!(parse_test_result("test tests::x ... ok"), None);
        assert_eq!(parse_test_result("running 3 tests"), None);
        assert_eq!(parse_test_result("3 passed, 0 failed"), None);
    }
}
