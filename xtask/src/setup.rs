//! Prerequisites, checked at the start of every command: toolchain, targets, emulators, firmware.
//!
//! The toolchain is the one pinned in rust-toolchain.toml, with every target and component it
//! lists; emulators and firmware are those of the machine profiles a command is about to use.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use serde::Deserialize;

use crate::error::{Context, Error, Result};
use crate::workspace;

/// The package command `.ci/run` and the README name; `emulators()` installs a subset of it.
pub const APT_INSTALL: &str = "apt-get install -y --no-install-recommends";

/// Something on the host that a command needs, with the Debian/Ubuntu package that provides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// A program on `$PATH` (or at a path).
    Program { program: String, package: String },
    /// A file, such as a firmware image.
    File { path: PathBuf, package: String },
}

impl Requirement {
    fn present(&self) -> bool {
        match self {
            Self::Program { program, .. } => workspace::find_program(program).is_some(),
            Self::File { path, .. } => path.is_file(),
        }
    }

    fn package(&self) -> &str {
        match self {
            Self::Program { package, .. } | Self::File { package, .. } => package,
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Program { program, package } => format!("`{program}` (package {package})"),
            Self::File { path, package } => format!("{} (package {package})", path.display()),
        }
    }
}

/// The `[toolchain]` table of rust-toolchain.toml, as far as xtask needs it.
#[derive(Debug, Deserialize)]
struct ToolchainFile {
    toolchain: PinnedToolchain,
}

#[derive(Debug, Deserialize)]
struct PinnedToolchain {
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    components: Vec<String>,
}

/// Make sure the pinned toolchain is installed with every target and component it lists.
///
/// xtask already runs under that toolchain, so normally this only runs three quick `rustup`
/// queries. Without rustup (a distribution's cargo) it assumes the toolchain is complete.
pub fn toolchain() -> Result<()> {
    let active = rustup().args(["show", "active-toolchain"]).output();
    match active {
        Err(error) => {
            // A distribution's cargo without rustup: cargo itself reports a missing target.
            println!(
                "note: cannot run rustup ({error}); assuming the toolchain running xtask is \
                 complete"
            );
            return Ok(());
        }
        Ok(output) if !output.status.success() => {
            println!("==> installing the toolchain pinned in rust-toolchain.toml");
            workspace::run(rustup().args(["toolchain", "install"]))?;
        }
        Ok(_) => {}
    }

    let path = workspace::root().join("rust-toolchain.toml");
    let text =
        std::fs::read_to_string(&path).context(|| format!("cannot read {}", path.display()))?;
    let pinned: ToolchainFile = toml::from_str(&text).context(|| path.display().to_string())?;

    let installed_targets = rustup_list(&["target", "list", "--installed"])?;
    let missing_targets: Vec<&String> = pinned
        .toolchain
        .targets
        .iter()
        .filter(|target| !installed_targets.contains(*target))
        .collect();
    if !missing_targets.is_empty() {
        println!("==> adding Rust targets pinned in rust-toolchain.toml");
        workspace::run(rustup().args(["target", "add"]).args(missing_targets))?;
    }

    let installed_components = rustup_list(&["component", "list", "--installed"])?;
    let missing_components: Vec<&String> = pinned
        .toolchain
        .components
        .iter()
        .filter(|component| !component_installed(component, &installed_components))
        .collect();
    if !missing_components.is_empty() {
        println!("==> adding Rust components pinned in rust-toolchain.toml");
        workspace::run(rustup().args(["component", "add"]).args(missing_components))?;
    }
    Ok(())
}

/// `rustup` run in the repository, so rust-toolchain.toml selects the toolchain.
fn rustup() -> Command {
    let mut command = Command::new("rustup");
    command.current_dir(workspace::root());
    command
}

fn rustup_list(arguments: &[&str]) -> Result<Vec<String>> {
    let output = rustup()
        .args(arguments)
        .output()
        .context(|| format!("cannot run `rustup {}`", arguments.join(" ")))?;
    if !output.status.success() {
        return Err(Error::new(format!(
            "`rustup {}` failed: {}",
            arguments.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.trim().to_string())
        .collect())
}

/// rustup lists host components with the host triple appended (`clippy-x86_64-unknown-linux-gnu`)
/// and target-independent ones bare (`rust-src`).
fn component_installed(component: &str, installed: &[String]) -> bool {
    let with_triple = format!("{component}-");
    installed
        .iter()
        .any(|line| line == component || line.starts_with(&with_triple))
}

/// Make sure every requirement is present; install the missing ones with apt when this user may
/// (root, or passwordless sudo), else stop with the exact command to run.
pub fn emulators(requirements: &[Requirement]) -> Result<()> {
    let missing: Vec<&Requirement> = requirements
        .iter()
        .filter(|requirement| !requirement.present())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages: BTreeSet<&str> = missing
        .iter()
        .map(|requirement| requirement.package())
        .collect();
    let packages: Vec<&str> = packages.into_iter().collect();
    let what: Vec<String> = missing
        .iter()
        .map(|requirement| requirement.describe())
        .collect();
    let what = what.join(", ");

    if workspace::find_program("apt-get").is_none() {
        return Err(Error::new(format!(
            "missing {what}; this host has no apt-get: install the equivalent of the Debian \
             packages {} with its package manager",
            packages.join(" ")
        )));
    }
    let sudo = if is_root() {
        false
    } else if passwordless_sudo() {
        true
    } else {
        return Err(Error::new(format!(
            "missing {what}; install with:\n  sudo apt-get update && sudo {APT_INSTALL} {}",
            packages.join(" ")
        )));
    };

    println!("==> missing {what}: installing {}", packages.join(" "));
    let apt = |arguments: &[&str]| {
        let mut command = if sudo {
            let mut command = Command::new("sudo");
            command.arg("apt-get");
            command
        } else {
            Command::new("apt-get")
        };
        command
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(arguments);
        command
    };
    workspace::run(&mut apt(&["update"]))?;
    let mut install: Vec<&str> = APT_INSTALL.split(' ').skip(1).collect();
    install.extend(packages.iter().copied());
    workspace::run(&mut apt(&install))?;

    let still_missing: Vec<String> = requirements
        .iter()
        .filter(|requirement| !requirement.present())
        .map(Requirement::describe)
        .collect();
    if still_missing.is_empty() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "still missing after installing: {}",
            still_missing.join(", ")
        )))
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) takes no arguments, cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

fn passwordless_sudo() -> bool {
    workspace::find_program("sudo").is_some()
        && Command::new("sudo")
            .args(["-n", "true"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_match_with_or_without_the_host_triple() {
        let installed = vec![
            "clippy-x86_64-unknown-linux-gnu".to_string(),
            "rust-src".to_string(),
            "rust-std-aarch64-unknown-none".to_string(),
        ];
        assert!(component_installed("clippy", &installed));
        assert!(component_installed("rust-src", &installed));
        assert!(!component_installed("rustfmt", &installed));
        assert!(!component_installed("llvm-tools", &installed));
    }

    #[test]
    fn the_repository_toolchain_file_parses() {
        let path = workspace::root().join("rust-toolchain.toml");
        let pinned: ToolchainFile =
            toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert!(
            pinned
                .toolchain
                .targets
                .contains(&"aarch64-unknown-none-softfloat".to_string())
        );
    }

    #[test]
    fn present_requirements_need_nothing() {
        let requirements = [Requirement::Program {
            program: "sh".to_string(),
            package: "dash".to_string(),
        }];
        emulators(&requirements).unwrap();
    }
}
