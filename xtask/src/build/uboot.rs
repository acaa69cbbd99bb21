//! The U-Boot boot medium on aarch64: a directory QEMU's user-mode network serves over TFTP, with
//! the flat image and a U-Boot script (`boot.scr.uimg`, made by `mkimage`) that loads the image
//! at a chosen address and `booti`s it with the device tree U-Boot has.
//!
//! Nothing needs typing: U-Boot's distro boot (Debian's qemu_arm64 build) ends its scan with
//! `dhcp`, which fetches `boot.scr.uimg` from the TFTP server (QEMU's, at 10.0.2.2) and runs it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Context, Error, Result};
use crate::setup::Requirement;
use crate::workspace;

/// The script U-Boot's distro boot asks the DHCP/TFTP server for (`boot_script_dhcp`).
pub const SCRIPT_FILE: &str = "boot.scr.uimg";
/// The image's name on the TFTP server.
pub const IMAGE_FILE: &str = "bulkhead.bin";
/// The script's source, kept beside it for people to read.
const SCRIPT_SOURCE_FILE: &str = "boot.cmd";

/// The arm64 Image protocol's alignment: the image (text_offset included) may start at any
/// multiple of it when its header sets flags bit 3, as Bulkhead's does.
pub const LOAD_ALIGNMENT: u64 = 2 << 20;

/// The host tools `make` needs, with the Debian/Ubuntu packages providing them.
pub fn requirements() -> Vec<Requirement> {
    vec![Requirement::Program {
        program: "mkimage".to_string(),
        package: "u-boot-tools".to_string(),
    }]
}

/// The U-Boot script: kernel command line, TFTP the image to `load_address`, `booti` it with
/// U-Boot's own device tree (`$fdtcontroladdr`: the one QEMU gave U-Boot, which `booti` copies
/// and fixes up with /chosen/bootargs). The command line goes in single quotes, where U-Boot's
/// shell expands nothing, so only a quote or a control character is refused.
pub fn script(load_address: u64, command_line: &str) -> Result<String> {
    if !load_address.is_multiple_of(LOAD_ALIGNMENT) {
        return Err(Error::new(format!(
            "the U-Boot load address {load_address:#x} is not 2 MiB-aligned (the arm64 Image \
             protocol)"
        )));
    }
    if command_line.contains('\'') || command_line.chars().any(char::is_control) {
        return Err(Error::new(format!(
            "the command line `{command_line}` cannot go into a U-Boot script (quote or control \
             character)"
        )));
    }
    let words: Vec<&str> = command_line.split_whitespace().collect();
    Ok(format!(
        "# Written by `cargo xtask`: load Bulkhead at {load_address:#x} and boot it.\n\
         setenv bootargs '{}'\n\
         tftpboot {load_address:#x} {IMAGE_FILE}\n\
         booti {load_address:#x} - ${{fdtcontroladdr}}\n",
        words.join(" ")
    ))
}

/// Lays out `directory` (cleared first) for QEMU's TFTP server: `image` as `bulkhead.bin`, the
/// script source `boot.cmd` and `boot.scr.uimg` made from it by `mkimage`.
pub fn make(
    image: &Path,
    load_address: u64,
    command_line: &str,
    directory: &Path,
) -> Result<PathBuf> {
    let text = script(load_address, command_line)?;
    if directory.exists() {
        std::fs::remove_dir_all(directory)
            .context(|| format!("cannot clear {}", directory.display()))?;
    }
    std::fs::create_dir_all(directory)
        .context(|| format!("cannot create {}", directory.display()))?;
    let copy = directory.join(IMAGE_FILE);
    std::fs::copy(image, &copy)
        .context(|| format!("cannot copy {} to {}", image.display(), copy.display()))?;
    let source = directory.join(SCRIPT_SOURCE_FILE);
    std::fs::write(&source, text).context(|| format!("cannot write {}", source.display()))?;
    let mut command = Command::new("mkimage");
    command
        .args(["-A", "arm64", "-T", "script", "-C", "none", "-d"])
        .arg(&source)
        .arg(directory.join(SCRIPT_FILE));
    let result = command
        .output()
        .context(|| "cannot run mkimage".to_string())?;
    if !result.status.success() {
        return Err(Error::new(format!(
            "`{}` failed ({}):\n{}",
            workspace::display(&command),
            result.status,
            String::from_utf8_lossy(&result.stderr).trim()
        )));
    }
    Ok(directory.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_loads_at_the_address_and_boots_with_the_command_line() {
        let text = script(0x5000_0000, "bulkhead.exit=semihosting  bulkhead.poweroff").unwrap();
        let commands: Vec<&str> = text.lines().filter(|line| !line.starts_with('#')).collect();
        assert_eq!(
            commands,
            [
                "setenv bootargs 'bulkhead.exit=semihosting bulkhead.poweroff'",
                "tftpboot 0x50000000 bulkhead.bin",
                "booti 0x50000000 - ${fdtcontroladdr}",
            ]
        );
    }

    #[test]
    fn unaligned_addresses_and_quotes_are_refused() {
        let error = script(0x5010_0000, "").unwrap_err().to_string();
        assert!(error.contains("2 MiB-aligned"), "{error}");
        let error = script(0x5000_0000, "a='b'").unwrap_err().to_string();
        assert!(error.contains("quote"), "{error}");
        assert!(script(0x5000_0000, "a\nb").is_err());
    }
}
