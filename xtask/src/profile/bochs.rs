//! Bochs launches: a bochsrc written from the profile, and a small shell wrapper so the serial
//! console reaches stdout (Bochs's own `term` display takes the terminal; COM1 goes to fd 3).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use super::{Boot, Launch, Profile};
use crate::error::{Context, Error, Result};
use crate::setup::Requirement;

/// The `[bochs]` table of a Bochs profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BochsSettings {
    /// Emulated instructions per second; keep it low (10M): with `clock: sync=none` the guest's
    /// timers run on instruction counts, and a high value only slows every timed wait.
    pub ips: u64,
    /// The system BIOS image (`romimage:`).
    pub bios: PathBuf,
    /// Debian/Ubuntu package that provides it.
    pub bios_package: String,
    /// The VGA BIOS image (`vgaromimage:`).
    pub vga_bios: PathBuf,
    /// Debian/Ubuntu package that provides it.
    pub vga_bios_package: String,
    /// The `term` display plugin (Debian's Bochs has no `nogui`): runs Bochs without a window.
    pub display_plugin: PathBuf,
    /// Debian/Ubuntu package that provides it.
    pub display_package: String,
}

impl BochsSettings {
    /// The firmware and plugin files a launch needs.
    pub fn requirements(&self) -> Vec<Requirement> {
        vec![
            Requirement::File {
                path: self.bios.clone(),
                package: self.bios_package.clone(),
            },
            Requirement::File {
                path: self.vga_bios.clone(),
                package: self.vga_bios_package.clone(),
            },
            Requirement::File {
                path: self.display_plugin.clone(),
                package: self.display_package.clone(),
            },
        ]
    }
}

/// Memory in MiB from QEMU's size syntax (`256M`, `1G`, plain MiB).
pub fn megabytes(size: &str) -> Result<u64> {
    let size = size.trim();
    let (number, factor) = match size.char_indices().last() {
        Some((at, 'M' | 'm')) => (size.get(..at).unwrap_or_default(), 1),
        Some((at, 'G' | 'g')) => (size.get(..at).unwrap_or_default(), 1024),
        _ => (size, 1),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|value| value.checked_mul(factor))
        .filter(|&megabytes| megabytes > 0)
        .context(|| format!("memory size `{size}` is not a number of MiB or GiB (256M, 1G)"))
}

/// The bochsrc for one launch.
fn bochsrc(
    profile: &Profile,
    settings: &BochsSettings,
    launch: &Launch,
    iso: &Path,
    log: &Path,
) -> Result<String> {
    let megabytes = megabytes(&launch.memory)?;
    let mut text = format!(
        "# Written by `cargo xtask` from the machine profile `{name}`.\n\
         megs: {megabytes}\n\
         cpu: model={model}, count={smp}, ips={ips}, reset_on_triple_fault=0\n\
         romimage: file={bios}\n\
         vgaromimage: file={vga_bios}\n\
         ata0-master: type=cdrom, path={iso}, status=inserted\n\
         boot: cdrom\n\
         com1: enabled=1, mode=file, dev=/dev/fd/3\n\
         display_library: term\n\
         log: {log}\n\
         panic: action=fatal\n\
         speaker: enabled=0\n\
         clock: sync=none, time0=local\n",
        name = profile.name,
        model = profile.cpu,
        smp = launch.smp,
        ips = settings.ips,
        bios = settings.bios.display(),
        vga_bios = settings.vga_bios.display(),
        iso = iso.display(),
        log = log.display(),
    );
    for line in &profile.extra_args {
        text.push_str(line);
        text.push('\n');
    }
    Ok(text)
}

/// The Bochs command for one launch: writes `NAME.bochsrc` and `NAME.bochs-continue` next to
/// the ISO; Bochs's log goes to `NAME.bochs.log`, its display to `NAME.bochs-display.txt`.
pub fn command(profile: &Profile, settings: &BochsSettings, launch: &Launch) -> Result<Command> {
    let Boot::Iso { iso } = &launch.boot else {
        return Err(Error::new(format!(
            "machine profile `{}` (Bochs) boots a GRUB ISO only",
            profile.name
        )));
    };
    if launch.gdb {
        return Err(Error::new(
            "--gdb needs a QEMU profile (Bochs has its own debugger: run bochs by hand)",
        ));
    }
    let rc = iso.with_extension("bochsrc");
    let continue_file = iso.with_extension("bochs-continue");
    let log = iso.with_extension("bochs.log");
    let display = iso.with_extension("bochs-display.txt");
    std::fs::write(&rc, bochsrc(profile, settings, launch, iso, &log)?)
        .context(|| format!("cannot write {}", rc.display()))?;
    // Debian's Bochs has its debugger built in and stops before the first instruction: this
    // file tells it to continue.
    std::fs::write(&continue_file, "c\n")
        .context(|| format!("cannot write {}", continue_file.display()))?;
    let mut command = Command::new("sh");
    command
        .env("TERM", "xterm")
        .arg("-c")
        .arg(r#"exec "$0" -q -f "$1" -rc "$2" 3>&1 >"$3" </dev/null"#)
        .arg(&profile.emulator)
        .arg(&rc)
        .arg(&continue_file)
        .arg(&display);
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Console;

    #[test]
    fn memory_sizes() {
        assert_eq!(megabytes("256M").unwrap(), 256);
        assert_eq!(megabytes("1G").unwrap(), 1024);
        assert_eq!(megabytes("64").unwrap(), 64);
        assert!(megabytes("lots").is_err());
        assert!(megabytes("0M").is_err());
    }

    #[test]
    fn bochs_launch_writes_its_configuration() {
        let profile = Profile::load("bochs-vmx").unwrap();
        let directory = crate::workspace::target_dir().join("xtask-tests");
        std::fs::create_dir_all(&directory).unwrap();
        let iso = directory.join("bochs-unit.iso");
        let command = profile
            .command(&Launch {
                boot: Boot::Iso { iso: iso.clone() },
                smp: 2,
                memory: "256M".to_string(),
                semihosting: false,
                console: Console::Captured,
                gdb: false,
            })
            .unwrap();
        assert_eq!(command.get_program(), "sh");
        let rc = std::fs::read_to_string(iso.with_extension("bochsrc")).unwrap();
        assert!(
            rc.contains("cpu: model=corei7_skylake_x, count=2, ips=10000000"),
            "{rc}"
        );
        assert!(rc.contains("megs: 256\n"), "{rc}");
        assert!(
            rc.contains(&format!("path={}, status=inserted", iso.display())),
            "{rc}"
        );
        assert!(
            rc.contains("com1: enabled=1, mode=file, dev=/dev/fd/3"),
            "{rc}"
        );
        let error = profile
            .command(&Launch {
                boot: Boot::Image {
                    binary: PathBuf::from("/t/bulkhead.elf"),
                    append: String::new(),
                },
                smp: 2,
                memory: "256M".to_string(),
                semihosting: false,
                console: Console::Captured,
                gdb: false,
            })
            .unwrap_err()
            .to_string();
        assert!(error.contains("GRUB ISO"), "{error}");
    }
}
