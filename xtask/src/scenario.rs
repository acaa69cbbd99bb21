//! System-test scenarios (`xtask/scenarios/*.toml`): one boot of the image and what it must print.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::build::{BootMethod, CargoProfile};
use crate::error::{Context, Error, Result};
use crate::markers::{ExitExpectation, Expectation, Marker};
use crate::profile::{EmulatorKind, Profile};
use crate::workspace;

/// Forbidden markers when a scenario does not list its own.
pub const DEFAULT_FORBIDDEN: [&str; 2] = ["panic", "unexpected exception"];

/// Longest timeout a scenario may ask for.
const MAX_TIMEOUT_SECONDS: u64 = 600;

/// A scenario file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ScenarioFile {
    name: String,
    #[serde(default)]
    description: String,
    machine: String,
    #[serde(default)]
    boot: BootMethod,
    smp: Option<u32>,
    memory: Option<String>,
    #[serde(default)]
    append: String,
    #[serde(default)]
    expect: Vec<Marker>,
    forbid: Option<Vec<String>>,
    exit: Option<ExitExpectation>,
    timeout_seconds: u64,
    /// System configuration (board file, relative to the repository) compiled into the image.
    config: Option<String>,
    /// The image build must fail with these texts in its output (a bad configuration's
    /// `file:line: message`); nothing is booted.
    build_error: Option<Vec<String>>,
    /// The cargo profile the image (and loader) is built with: `release` (the default) or
    /// `debug` (cargo's dev profile, with overflow checks and debug assertions).
    #[serde(default)]
    cargo_profile: CargoProfile,
}

/// A checked scenario with its machine profile resolved.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub profile: Profile,
    pub boot: BootMethod,
    pub smp: u32,
    pub memory: String,
    /// Kernel command line beyond `bulkhead.exit=semihosting` (Image boot only).
    pub append: String,
    pub expectation: Expectation,
    /// Absolute path of the board file compiled in, if any.
    pub config: Option<PathBuf>,
    /// Texts the failing image build must print (then nothing boots).
    pub build_error: Option<Vec<String>>,
    /// The cargo profile the image (and loader) is built with.
    pub cargo_profile: CargoProfile,
}

/// `xtask/scenarios/` in the repository.
pub fn directory() -> PathBuf {
    workspace::root().join("xtask").join("scenarios")
}

/// Every scenario in `directory`, sorted by name.
pub fn load_all(directory: &Path) -> Result<Vec<Scenario>> {
    let entries =
        std::fs::read_dir(directory).context(|| format!("cannot list {}", directory.display()))?;
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry
            .context(|| format!("cannot list {}", directory.display()))?
            .path();
        if path
            .extension()
            .is_some_and(|extension| extension == "toml")
        {
            paths.push(path);
        }
    }
    paths.sort();
    paths.iter().map(|path| load(path)).collect()
}

/// Read and check one scenario file; its name must be its file stem.
pub fn load(path: &Path) -> Result<Scenario> {
    let text =
        std::fs::read_to_string(path).context(|| format!("cannot read {}", path.display()))?;
    let stem = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    parse(&text, &stem).context(|| path.display().to_string())
}

/// Parse and check scenario text whose file is called `stem.toml`.
pub fn parse(text: &str, stem: &str) -> Result<Scenario> {
    let file: ScenarioFile = toml::from_str(text).context(|| "invalid scenario".to_string())?;
    if file.name != stem {
        return Err(Error::new(format!(
            "name `{}` differs from the file name `{stem}.toml`",
            file.name
        )));
    }
    if file.expect.is_empty() && file.build_error.is_none() {
        return Err(Error::new("`expect` lists no marker"));
    }
    if file.build_error.is_some() && file.config.is_none() {
        return Err(Error::new(
            "`build-error` needs the `config` that should fail",
        ));
    }
    let exit = match (file.exit, &file.build_error) {
        (Some(exit), _) => exit,
        (None, Some(_)) => ExitExpectation::Failure,
        (None, None) => return Err(Error::new("`exit` is missing")),
    };
    let config = file
        .config
        .as_deref()
        .map(|path| workspace::root().join(path));
    if !(1..=MAX_TIMEOUT_SECONDS).contains(&file.timeout_seconds) {
        return Err(Error::new(format!(
            "timeout-seconds must be 1 to {MAX_TIMEOUT_SECONDS}"
        )));
    }
    let forbidden = file.forbid.unwrap_or_else(|| {
        DEFAULT_FORBIDDEN
            .iter()
            .map(|text| text.to_string())
            .collect()
    });
    for marker in file.expect.iter().flat_map(texts) {
        if marker.is_empty() {
            return Err(Error::new("`expect` has an empty marker"));
        }
        if let Some(bad) = forbidden.iter().find(|bad| marker.contains(bad.as_str())) {
            return Err(Error::new(format!(
                "expected marker `{marker}` contains forbidden marker `{bad}`: the scenario \
                 could never pass (set `forbid`)"
            )));
        }
    }
    let profile = Profile::load(&file.machine)?;
    // The x86_64 UEFI loader reads a command line from the ESP; the aarch64 one passes none.
    if file.boot == BootMethod::Uefi
        && !file.append.is_empty()
        && profile.arch == crate::build::Arch::Aarch64
    {
        return Err(Error::new(
            "`append` needs boot = \"image\" on aarch64: its UEFI loader passes no kernel \
             command line",
        ));
    }
    if profile.emulator_kind == EmulatorKind::Bochs && exit != ExitExpectation::Markers {
        return Err(Error::new(format!(
            "machine profile `{}` runs Bochs, which always exits with status 1: judge by \
             markers (exit = \"markers\")",
            profile.name
        )));
    }
    let smp = file.smp.unwrap_or(profile.smp);
    profile.check_smp(smp)?;
    profile.requirements(file.boot)?;
    let memory = file.memory.unwrap_or_else(|| profile.memory.clone());
    Ok(Scenario {
        name: file.name,
        description: file.description,
        profile,
        boot: file.boot,
        smp,
        memory,
        append: file.append,
        expectation: Expectation {
            markers: file.expect,
            forbidden,
            exit,
            timeout: Duration::from_secs(file.timeout_seconds),
        },
        config,
        build_error: file.build_error,
        cargo_profile: file.cargo_profile,
    })
}

fn texts(marker: &Marker) -> Vec<&String> {
    match marker {
        Marker::Text(text) => vec![text],
        Marker::AnyOrder(texts) => texts.iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        name = "x"
        machine = "virt-gicv3"
        expect = ["boot complete", ["cpu 1 online", "cpu 0 online"]]
        exit = "poweroff"
        timeout-seconds = 5
    "#;

    #[test]
    fn every_shipped_scenario_loads() {
        let scenarios = load_all(&directory()).unwrap();
        let names: Vec<&str> = scenarios
            .iter()
            .map(|scenario| scenario.name.as_str())
            .collect();
        for expected in [
            "boot-gicv3-smp4",
            "boot-gicv3-smp1",
            "boot-gicv3-smp8",
            "boot-gicv2-smp4",
            "boot-uefi-gicv3",
            "boot-uboot-gicv3",
            "panic-reports-location",
            "fault-reports-syndrome",
            "boot-x86-bochs-vmx",
            "boot-x86-qemu-novmx",
            "partitions-x86-bochs",
            "fault-containment-x86-bochs",
            "restart-policy-x86-bochs",
            "bad-config-x86-pl011",
            "debug-boot-gicv3",
            "debug-shmem-demo-gicv3",
            "debug-shmem-demo-x86-bochs",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
    }

    #[test]
    fn defaults_come_from_the_profile() {
        let scenario = parse(MINIMAL, "x").unwrap();
        assert_eq!(scenario.smp, 4);
        assert_eq!(scenario.memory, "512M");
        assert_eq!(scenario.boot, BootMethod::Image);
        assert_eq!(scenario.cargo_profile, CargoProfile::Release);
        let debug = parse(&format!("{MINIMAL}\ncargo-profile = \"debug\"\n"), "x").unwrap();
        assert_eq!(debug.cargo_profile, CargoProfile::Debug);
        assert_eq!(scenario.expectation.forbidden, DEFAULT_FORBIDDEN);
        assert_eq!(
            scenario.expectation.markers[1],
            Marker::AnyOrder(vec!["cpu 1 online".to_string(), "cpu 0 online".to_string()])
        );
    }

    #[test]
    fn mistakes_are_reported() {
        let error = |text: &str| parse(text, "x").unwrap_err().to_string();
        assert!(error(&MINIMAL.replace("name = \"x\"", "name = \"y\"")).contains("differs"));
        assert!(error(&format!("{MINIMAL}\nsmpp = 3")).contains("smpp"));
        assert!(
            error(&MINIMAL.replace("boot complete", "bulkhead: panic at"))
                .contains("could never pass")
        );
        assert!(
            error(&format!(
                "{MINIMAL}\nboot = \"uefi\"\nappend = \"bulkhead.poweroff\"\n"
            ))
            .contains("needs boot = \"image\" on aarch64")
        );
        assert!(error(&MINIMAL.replace("virt-gicv3", "virt-gicv9")).contains("no machine profile"));
        let gicv2 = MINIMAL.replace("virt-gicv3", "virt-gicv2");
        assert!(error(&format!("{gicv2}\nsmp = 9\n")).contains("at most 8 CPUs"));
        assert!(
            error(&MINIMAL.replace("timeout-seconds = 5", "timeout-seconds = 0"))
                .contains("timeout")
        );
        assert!(error(&format!("{MINIMAL}\ncargo-profile = \"fast\"\n")).contains("fast"));
        let bochs = MINIMAL.replace("virt-gicv3", "bochs-vmx");
        assert!(error(&bochs).contains("exit = \"markers\""));
        parse(&bochs.replace("\"poweroff\"", "\"markers\""), "x").unwrap();
    }
}
