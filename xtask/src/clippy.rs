//! The clippy stage of `cargo xtask test`: the workspace lints (Cargo.toml `[workspace.lints]`)
//! and clippy's defaults over the host crates, both bare-metal images and both UEFI loaders,
//! built the way `cargo xtask build` builds them. Any warning fails (`-D warnings`). Each of the
//! five checks counts as one test, named `clippy-...` and selected by `--filter` like a scenario.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::build::{self, Arch, CargoProfile};
use crate::error::{Context, Result};
use crate::test::Tally;
use crate::workspace;

/// What one check lints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    /// The workspace's default members (every crate that builds for the host, xtask
    /// included) with their tests (`--all-targets`).
    Host,
    /// The bootable image with everything it links from the workspace, for the image target,
    /// with the configuration `cargo xtask run` boots compiled in (build.rs generates its
    /// tables) and cargo's dev profile (what the debug-boot scenarios run).
    Image(Arch),
    /// The UEFI loader, for the UEFI target.
    Loader(Arch),
}

/// The checks, in the order they run.
const CHECKS: [(&str, Subject); 5] = [
    ("clippy-host", Subject::Host),
    ("clippy-image-aarch64", Subject::Image(Arch::Aarch64)),
    ("clippy-image-x86_64", Subject::Image(Arch::X86_64)),
    ("clippy-uefi-aarch64", Subject::Loader(Arch::Aarch64)),
    ("clippy-uefi-x86_64", Subject::Loader(Arch::X86_64)),
];

/// Runs every check whose name contains `filter` (all without one), streaming clippy's
/// output, and counts each as passed or failed.
pub fn run(filter: Option<&str>, tally: &mut Tally) -> Result<()> {
    let selected: Vec<(&str, Subject)> = CHECKS
        .into_iter()
        .filter(|(name, _)| filter.is_none_or(|filter| name.contains(filter)))
        .collect();
    if selected.is_empty() {
        return Ok(());
    }
    println!("==> clippy");
    let mut counted = Tally::default();
    for (name, subject) in selected {
        let started = Instant::now();
        match check(subject) {
            Ok(()) => {
                println!("PASS {name} ({:.1}s)", started.elapsed().as_secs_f64());
                counted.passed += 1;
            }
            Err(reason) => {
                println!("FAIL {name}: {reason}");
                counted.failed += 1;
            }
        }
    }
    println!(
        "==> clippy: {} passed, {} failed",
        counted.passed, counted.failed
    );
    tally.passed += counted.passed;
    tally.failed += counted.failed;
    Ok(())
}

/// Runs one check; a finding, a build error or a failure to prepare is an `Err` with the reason
/// (clippy's own diagnostics are already on the terminal).
fn check(subject: Subject) -> std::result::Result<(), String> {
    let mut cargo = command(subject).map_err(|error| error.to_string())?;
    // Every crate's findings, not only the first failing crate's.
    cargo.args(["--keep-going", "--", "-D", "warnings"]);
    println!("$ {}", workspace::display(&cargo));
    let status = cargo
        .status()
        .map_err(|error| format!("cannot run cargo clippy: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "cargo clippy exited with {status} (its findings are above)"
        ))
    }
}

/// The `cargo clippy` command of a check, without the lint arguments.
fn command(subject: Subject) -> Result<Command> {
    match subject {
        Subject::Host => {
            let mut cargo = workspace::cargo();
            cargo.args(["clippy", "--all-targets"]);
            Ok(cargo)
        }
        Subject::Image(arch) => {
            let config = workspace::root().join(crate::run::default_config(arch));
            build::image_cargo("clippy", arch, CargoProfile::Debug, Some(&config))
        }
        Subject::Loader(arch) => Ok(build::loader_cargo(
            "clippy",
            arch,
            CargoProfile::Debug,
            &placeholder_payload(arch)?,
        )),
    }
}

/// A stand-in for the image the loader embeds (`include_bytes!` of `BULKHEAD_IMAGE`): linting
/// needs a file there, not the image, which would cost a release build of it.
fn placeholder_payload(arch: Arch) -> Result<PathBuf> {
    let directory = workspace::target_dir().join("clippy");
    std::fs::create_dir_all(&directory)
        .context(|| format!("cannot create {}", directory.display()))?;
    let path = directory.join(format!("placeholder-image-{}", arch.name()));
    write_if_changed(
        &path,
        b"not an image: cargo xtask test lints the UEFI loader with this\n",
    )?;
    Ok(path)
}

/// Writes `bytes` to `path` unless it already holds them (so cargo sees no change).
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::read(path).ok().as_deref() == Some(bytes) {
        return Ok(());
    }
    std::fs::write(path, bytes).context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_cover_host_images_and_loaders_of_both_architectures() {
        for arch in [Arch::Aarch64, Arch::X86_64] {
            assert!(
                CHECKS
                    .iter()
                    .any(|(_, subject)| *subject == Subject::Image(arch))
            );
            assert!(
                CHECKS
                    .iter()
                    .any(|(_, subject)| *subject == Subject::Loader(arch))
            );
        }
        assert!(CHECKS.iter().any(|(_, subject)| *subject == Subject::Host));
        assert!(CHECKS.iter().all(|(name, _)| name.starts_with("clippy-")));
    }

    #[test]
    fn loader_and_host_commands_name_what_they_lint() {
        let image = command(Subject::Loader(Arch::X86_64)).unwrap();
        let line = workspace::display(&image);
        assert!(line.contains("clippy --package bulkhead-uefi --target x86_64-unknown-uefi"));
        assert!(line.contains("BULKHEAD_IMAGE="));
        assert!(!line.contains("--release"));
        let host = workspace::display(&command(Subject::Host).unwrap());
        assert!(host.ends_with("clippy --all-targets"), "{host}");
    }
}
