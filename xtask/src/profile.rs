//! Machine profiles (`qemu/*.toml`): which emulator and board to run, and the command line for it.
//! QEMU is driven by its command line; Bochs by a generated bochsrc (see `profile/bochs.rs`).

mod bochs;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::build::{Arch, BootMethod};
use crate::error::{Context, Error, Result};
use crate::setup::Requirement;
use crate::workspace;

/// Which emulator program a profile drives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmulatorKind {
    /// QEMU (`qemu-system-*`), configured on its command line.
    #[default]
    Qemu,
    /// Bochs, configured through a bochsrc; it always exits with status 1, so scenarios on it
    /// judge by serial markers.
    Bochs,
}

/// One machine profile, read from a TOML file in `qemu/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Profile {
    /// File stem (`virt-gicv3`), or the path given on the command line.
    #[serde(skip)]
    pub name: String,
    /// One line for people.
    pub description: String,
    /// Architecture of the emulated machine.
    pub arch: Arch,
    /// Which emulator program this is (`qemu`, the default, or `bochs`).
    #[serde(default)]
    pub emulator_kind: EmulatorKind,
    /// Emulator program: a name looked up on `$PATH`, or a path.
    pub emulator: String,
    /// Debian/Ubuntu package that provides the emulator.
    pub emulator_package: String,
    /// QEMU `-M` value (required for QEMU; Bochs has no machine types).
    #[serde(default)]
    pub machine: String,
    /// QEMU `-cpu` value, or the Bochs CPU model (`cpu: model=...`).
    pub cpu: String,
    /// Default CPU count (`-smp`).
    pub smp: u32,
    /// Most CPUs the machine supports, if it has a limit below QEMU's own.
    #[serde(default)]
    pub max_smp: Option<u32>,
    /// Default memory size (`-m`), in QEMU's syntax (`512M`).
    pub memory: String,
    /// Further emulator arguments, added before the boot arguments.
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// Firmware for `--boot uefi`; a profile without it cannot boot through UEFI.
    #[serde(default)]
    pub uefi: Option<UefiFirmware>,
    /// U-Boot for `--boot u-boot`; a profile without it cannot boot through U-Boot.
    #[serde(default, rename = "u-boot")]
    pub uboot: Option<UBootFirmware>,
    /// Bochs settings (required with `emulator-kind = "bochs"`).
    #[serde(default)]
    pub bochs: Option<bochs::BochsSettings>,
    /// A board device tree from Debian's arm64 kernel package, by its path below
    /// `usr/lib/linux-image-VERSION/` (`xilinx/zynqmp-zcu102-rev1.0.dtb`): fetched like the Linux
    /// guests' kernel and passed with `-dtb` (QEMU then adds its own edits: memory, /psci,
    /// /chosen/bootargs).
    #[serde(default)]
    pub device_tree: Option<String>,
    /// The board file `cargo xtask run` compiles in on this machine without `--config`
    /// (relative to the repository; default: the architecture's demo for QEMU virt or x86).
    #[serde(default)]
    pub default_config: Option<String>,
}

/// The UEFI firmware a profile boots with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct UefiFirmware {
    /// Firmware image, passed as `interface` says.
    pub firmware: PathBuf,
    /// Debian/Ubuntu package that provides it.
    pub package: String,
    /// How QEMU gets the firmware (default `bios`).
    #[serde(default)]
    pub interface: FirmwareInterface,
    /// Options appended to `-M` when booting through UEFI.
    #[serde(default)]
    pub machine_options: Vec<String>,
    /// Further emulator arguments for UEFI boot only.
    #[serde(default)]
    pub extra_args: Vec<String>,
}

/// The U-Boot a profile boots with (`-bios`), and where its script loads the image.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct UBootFirmware {
    /// U-Boot binary, passed with `-bios`.
    pub firmware: PathBuf,
    /// Debian/Ubuntu package that provides it.
    pub package: String,
    /// Where the boot script puts the image: 2 MiB-aligned, not the link address, and clear of
    /// the partitions' RAM of the configurations booted this way (the image refuses to start a
    /// partition over itself) and of U-Boot's own memory at the top of RAM.
    pub load_address: u64,
}

/// How the firmware image reaches QEMU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirmwareInterface {
    /// `-bios FILE` (AAVMF).
    #[default]
    Bios,
    /// A read-only flash drive, `-drive if=pflash,format=raw,readonly=on,file=FILE` (OVMF's
    /// code image, which expects to run from flash; without a variable store beside it, it
    /// keeps its variables in memory).
    Pflash,
}

/// How the image reaches the machine.
#[derive(Debug, Clone)]
pub enum Boot {
    /// `-kernel BINARY`, with a kernel command line (empty: none).
    Image { binary: PathBuf, append: String },
    /// Firmware boots `EFI/BOOT/BOOTAA64.EFI` (or `BOOTX64.EFI`) from this directory, served
    /// as a FAT drive.
    Uefi { esp: PathBuf },
    /// The BIOS boots GRUB from this CD image, which boots the Multiboot2 image (x86_64).
    Iso { iso: PathBuf },
    /// U-Boot runs the boot script this directory holds (see `build::uboot`), served by QEMU's
    /// user-mode network over TFTP.
    UBootScript { tftp: PathBuf },
}

/// Where the serial console goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    /// `-nographic`: serial and monitor on the terminal, Ctrl-A X quits.
    Interactive,
    /// Serial on stdout only, no monitor, no reboot loop: for the test harness.
    Captured,
}

/// Everything one emulator launch needs beyond the profile.
#[derive(Debug, Clone)]
pub struct Launch {
    pub boot: Boot,
    pub smp: u32,
    pub memory: String,
    /// Add `-semihosting` (the image then exits QEMU with a status).
    pub semihosting: bool,
    pub console: Console,
    /// Stop at the first instruction and wait for gdb on TCP port 1234.
    pub gdb: bool,
}

impl Profile {
    /// Load a profile by name (`virt-gicv3` → `qemu/virt-gicv3.toml`) or by path.
    pub fn load(name_or_path: &str) -> Result<Self> {
        let looks_like_path = name_or_path.contains('/') || name_or_path.ends_with(".toml");
        let path = if looks_like_path {
            PathBuf::from(name_or_path)
        } else {
            directory().join(format!("{name_or_path}.toml"))
        };
        if !path.is_file() {
            return Err(Error::new(format!(
                "no machine profile `{name_or_path}` ({} does not exist); available: {}",
                path.display(),
                available().join(", ")
            )));
        }
        let mut profile = Self::read(&path)?;
        profile.name = name_or_path.to_string();
        Ok(profile)
    }

    /// Parse and check one profile file.
    pub fn read(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).context(|| format!("cannot read {}", path.display()))?;
        let profile = Self::parse(&text).context(|| path.display().to_string())?;
        Ok(profile)
    }

    /// Parse and check profile text.
    pub fn parse(text: &str) -> Result<Self> {
        let profile: Self =
            toml::from_str(text).context(|| "invalid machine profile".to_string())?;
        profile.check_smp(profile.smp)?;
        if profile.emulator.is_empty() || profile.memory.is_empty() {
            return Err(Error::new("emulator and memory must not be empty"));
        }
        match profile.emulator_kind {
            EmulatorKind::Qemu if profile.machine.is_empty() => {
                return Err(Error::new("a QEMU profile needs `machine`"));
            }
            EmulatorKind::Qemu if profile.bochs.is_some() => {
                return Err(Error::new("[bochs] needs emulator-kind = \"bochs\""));
            }
            EmulatorKind::Bochs => {
                if profile.bochs.is_none() {
                    return Err(Error::new("a Bochs profile needs a [bochs] table"));
                }
                if profile.arch != Arch::X86_64 || profile.uefi.is_some() {
                    return Err(Error::new(
                        "Bochs profiles are x86_64 and boot a GRUB ISO (no [uefi])",
                    ));
                }
                bochs::megabytes(&profile.memory)?;
            }
            EmulatorKind::Qemu => {}
        }
        if let Some(uboot) = &profile.uboot {
            if profile.arch != Arch::Aarch64 {
                return Err(Error::new("[u-boot] is for aarch64 profiles (booti)"));
            }
            if !uboot
                .load_address
                .is_multiple_of(crate::build::uboot::LOAD_ALIGNMENT)
            {
                return Err(Error::new(format!(
                    "[u-boot] load-address {:#x} is not 2 MiB-aligned",
                    uboot.load_address
                )));
            }
        }
        Ok(profile)
    }

    /// Refuse a CPU count the machine cannot have.
    pub fn check_smp(&self, smp: u32) -> Result<()> {
        if smp == 0 {
            return Err(Error::new("the CPU count must be at least 1"));
        }
        match self.max_smp {
            Some(max) if smp > max => Err(Error::new(format!(
                "machine profile `{}` supports at most {max} CPUs, {smp} requested ({})",
                self.name, self.description
            ))),
            _ => Ok(()),
        }
    }

    /// The host programs and files a launch with this boot method needs.
    pub fn requirements(&self, boot: BootMethod) -> Result<Vec<Requirement>> {
        let mut requirements = vec![Requirement::Program {
            program: self.emulator.clone(),
            package: self.emulator_package.clone(),
        }];
        if let Some(settings) = &self.bochs {
            requirements.extend(settings.requirements());
        }
        if self.arch == Arch::X86_64 && boot == BootMethod::Image {
            requirements.extend(crate::build::iso::requirements());
        }
        if boot == BootMethod::Uefi {
            let firmware = self.uefi_firmware()?;
            requirements.push(Requirement::File {
                path: firmware.firmware.clone(),
                package: firmware.package.clone(),
            });
        }
        if boot == BootMethod::UBoot {
            let firmware = self.uboot_firmware()?;
            requirements.push(Requirement::File {
                path: firmware.firmware.clone(),
                package: firmware.package.clone(),
            });
            requirements.extend(crate::build::uboot::requirements());
        }
        Ok(requirements)
    }

    /// The profile's U-Boot, or why `--boot u-boot` cannot be used on it.
    pub fn uboot_firmware(&self) -> Result<&UBootFirmware> {
        self.uboot.as_ref().context(|| {
            format!(
                "machine profile `{}` has no [u-boot] firmware: it cannot boot with --boot u-boot",
                self.name
            )
        })
    }

    fn uefi_firmware(&self) -> Result<&UefiFirmware> {
        self.uefi.as_ref().context(|| {
            format!(
                "machine profile `{}` has no [uefi] firmware: it cannot boot with --boot uefi",
                self.name
            )
        })
    }

    /// The emulator command for one launch. For Bochs this writes the bochsrc next to the ISO.
    pub fn command(&self, launch: &Launch) -> Result<Command> {
        self.check_smp(launch.smp)?;
        if self.emulator_kind == EmulatorKind::Bochs {
            let settings = self
                .bochs
                .as_ref()
                .context(|| "a Bochs profile needs a [bochs] table".to_string())?;
            return bochs::command(self, settings, launch);
        }
        let mut machine = self.machine.clone();
        if let Boot::Uefi { .. } = launch.boot {
            for option in &self.uefi_firmware()?.machine_options {
                machine.push(',');
                machine.push_str(option);
            }
        }
        let mut command = Command::new(&self.emulator);
        command.args(["-M", &machine, "-cpu", &self.cpu]).args([
            "-smp",
            &launch.smp.to_string(),
            "-m",
            &launch.memory,
        ]);
        match launch.console {
            Console::Interactive => {
                command.arg("-nographic");
            }
            Console::Captured => {
                command.args(["-display", "none", "-serial", "stdio", "-monitor", "none"]);
                command.arg("-no-reboot");
            }
        }
        command.args(&self.extra_args);
        if launch.semihosting {
            command.arg("-semihosting");
        }
        if launch.gdb {
            command.args(["-S", "-gdb", "tcp::1234"]);
        }
        if let Some(device_tree) = &self.device_tree {
            command
                .arg("-dtb")
                .arg(crate::linux::board_device_tree(device_tree)?);
        }
        match &launch.boot {
            Boot::Image { binary, append } => {
                command.arg("-kernel").arg(binary);
                if !append.is_empty() {
                    command.args(["-append", append]);
                }
            }
            Boot::Uefi { esp } => {
                let firmware = self.uefi_firmware()?;
                match firmware.interface {
                    FirmwareInterface::Bios => {
                        command.arg("-bios").arg(&firmware.firmware);
                    }
                    FirmwareInterface::Pflash => {
                        let mut flash =
                            std::ffi::OsString::from("if=pflash,format=raw,readonly=on,file=");
                        flash.push(&firmware.firmware);
                        command.arg("-drive").arg(flash);
                    }
                }
                let mut drive = std::ffi::OsString::from("file=fat:rw:");
                drive.push(esp);
                drive.push(",format=raw");
                command.arg("-drive").arg(drive);
                command.args(["-boot", "menu=on,splash-time=0"]);
                command.args(&firmware.extra_args);
            }
            Boot::Iso { iso } => {
                command.arg("-cdrom").arg(iso);
            }
            Boot::UBootScript { tftp } => {
                command.arg("-bios").arg(&self.uboot_firmware()?.firmware);
                // QEMU's option syntax: a comma inside a value is written twice.
                let mut netdev = std::ffi::OsString::from("user,id=net0,tftp=");
                netdev.push(tftp.to_string_lossy().replace(',', ",,"));
                command.arg("-netdev").arg(netdev);
                command.args(["-device", "virtio-net-device,netdev=net0"]);
            }
        }
        Ok(command)
    }
}

/// `qemu/` in the repository.
pub fn directory() -> PathBuf {
    workspace::root().join("qemu")
}

/// Names of the profiles in `qemu/`, sorted.
pub fn available() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(directory())
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "toml")
        })
        .filter_map(|path| Some(path.file_stem()?.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arguments(command: &Command) -> Vec<String> {
        command
            .get_args()
            .map(|argument| argument.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn every_shipped_profile_parses() {
        let names = available();
        assert!(names.contains(&"virt-gicv3".to_string()), "{names:?}");
        assert!(names.contains(&"virt-gicv2".to_string()), "{names:?}");
        assert!(names.contains(&"bochs-vmx".to_string()), "{names:?}");
        assert!(names.contains(&"q35-tcg".to_string()), "{names:?}");
        assert!(names.contains(&"q35-svm".to_string()), "{names:?}");
        for name in names {
            Profile::load(&name).unwrap();
        }
    }

    #[test]
    fn unknown_fields_are_errors() {
        let text = "description = \"x\"\narch = \"aarch64\"\nemulator = \"q\"\n\
                    emulator-package = \"p\"\nmachine = \"virt\"\ncpu = \"max\"\nsmp = 1\n\
                    memory = \"64M\"\ncolour = \"blue\"\n";
        let error = Profile::parse(text).unwrap_err().to_string();
        assert!(error.contains("colour"), "{error}");
    }

    #[test]
    fn gicv2_is_capped_at_eight_cpus() {
        let profile = Profile::load("virt-gicv2").unwrap();
        profile.check_smp(8).unwrap();
        let error = profile.check_smp(9).unwrap_err().to_string();
        assert!(error.contains("at most 8 CPUs"), "{error}");
    }

    #[test]
    fn image_boot_command_line() {
        let profile = Profile::load("virt-gicv3").unwrap();
        let command = profile
            .command(&Launch {
                boot: Boot::Image {
                    binary: PathBuf::from("/t/bulkhead.bin"),
                    append: "bulkhead.exit=semihosting bulkhead.poweroff".to_string(),
                },
                smp: 4,
                memory: "512M".to_string(),
                semihosting: true,
                console: Console::Captured,
                gdb: false,
            })
            .unwrap();
        assert_eq!(command.get_program(), "qemu-system-aarch64");
        let mut arguments = arguments(&command);
        assert_eq!(
            arguments.pop().unwrap(),
            "bulkhead.exit=semihosting bulkhead.poweroff"
        );
        assert_eq!(
            arguments.join(" "),
            "-M virt,virtualization=on,gic-version=3 -cpu max -smp 4 -m 512M \
             -display none -serial stdio -monitor none -no-reboot -semihosting \
             -kernel /t/bulkhead.bin -append"
        );
    }

    #[test]
    fn uefi_boot_command_line() {
        let profile = Profile::load("virt-gicv3").unwrap();
        let command = profile
            .command(&Launch {
                boot: Boot::Uefi {
                    esp: PathBuf::from("/t/esp/aarch64"),
                },
                smp: 2,
                memory: "1G".to_string(),
                semihosting: false,
                console: Console::Interactive,
                gdb: true,
            })
            .unwrap();
        assert_eq!(
            arguments(&command).join(" "),
            "-M virt,virtualization=on,gic-version=3,acpi=off -cpu max -smp 2 -m 1G -nographic \
             -S -gdb tcp::1234 -bios /usr/share/AAVMF/AAVMF_CODE.fd \
             -drive file=fat:rw:/t/esp/aarch64,format=raw -boot menu=on,splash-time=0"
        );
    }

    #[test]
    fn uboot_boot_command_line() {
        let profile = Profile::load("virt-gicv3").unwrap();
        let command = profile
            .command(&Launch {
                boot: Boot::UBootScript {
                    tftp: PathBuf::from("/t/u-boot,1"),
                },
                smp: 4,
                memory: "512M".to_string(),
                semihosting: true,
                console: Console::Captured,
                gdb: false,
            })
            .unwrap();
        assert_eq!(
            arguments(&command).join(" "),
            "-M virt,virtualization=on,gic-version=3 -cpu max -smp 4 -m 512M \
             -display none -serial stdio -monitor none -no-reboot -semihosting \
             -bios /usr/lib/u-boot/qemu_arm64/u-boot.bin \
             -netdev user,id=net0,tftp=/t/u-boot,,1 -device virtio-net-device,netdev=net0"
        );
        let requirements = profile.requirements(BootMethod::UBoot).unwrap();
        for package in ["u-boot-qemu", "u-boot-tools"] {
            assert!(
                requirements.iter().any(|requirement| matches!(
                    requirement,
                    Requirement::File { package: wanted, .. }
                        | Requirement::Program { package: wanted, .. } if wanted == package
                )),
                "{requirements:?}"
            );
        }
        let uboot = profile.uboot_firmware().unwrap();
        assert_ne!(uboot.load_address, 0x4020_0000, "the link address");
        let error = Profile::load("q35-tcg")
            .unwrap()
            .requirements(BootMethod::UBoot)
            .unwrap_err()
            .to_string();
        assert!(error.contains("no [u-boot]"), "{error}");
    }

    #[test]
    fn x86_qemu_boots_the_iso_with_isa_debug_exit() {
        let profile = Profile::load("q35-svm").unwrap();
        assert_eq!(profile.arch, Arch::X86_64);
        let command = profile
            .command(&Launch {
                boot: Boot::Iso {
                    iso: PathBuf::from("/t/x.iso"),
                },
                smp: 2,
                memory: "256M".to_string(),
                semihosting: false,
                console: Console::Captured,
                gdb: false,
            })
            .unwrap();
        assert_eq!(command.get_program(), "qemu-system-x86_64");
        assert_eq!(
            arguments(&command).join(" "),
            "-M q35 -cpu max -smp 2 -m 256M -display none -serial stdio -monitor none \
             -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=0x04 -cdrom /t/x.iso"
        );
        let requirements = profile.requirements(BootMethod::Image).unwrap();
        assert!(
            requirements.iter().any(|requirement| matches!(
                requirement,
                Requirement::Program { program, .. } if program == "grub-mkrescue"
            )),
            "{requirements:?}"
        );
    }

    #[test]
    fn x86_uefi_boots_ovmf_from_flash() {
        let profile = Profile::load("q35-svm").unwrap();
        let command = profile
            .command(&Launch {
                boot: Boot::Uefi {
                    esp: PathBuf::from("/t/esp"),
                },
                smp: 2,
                memory: "256M".to_string(),
                semihosting: false,
                console: Console::Captured,
                gdb: false,
            })
            .unwrap();
        assert_eq!(
            arguments(&command).join(" "),
            "-M q35 -cpu max -smp 2 -m 256M -display none -serial stdio -monitor none \
             -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
             -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd \
             -drive file=fat:rw:/t/esp,format=raw -boot menu=on,splash-time=0 -net none"
        );
        let requirements = profile.requirements(BootMethod::Uefi).unwrap();
        assert!(
            requirements.iter().any(|requirement| matches!(
                requirement,
                Requirement::File { package, .. } if package == "ovmf"
            )),
            "{requirements:?}"
        );
        assert!(
            !requirements.iter().any(|requirement| matches!(
                requirement,
                Requirement::Program { program, .. } if program == "grub-mkrescue"
            )),
            "{requirements:?}"
        );
    }

    #[test]
    fn bochs_profiles_need_their_table_and_no_machine_type() {
        let text = "description = \"x\"\narch = \"x86_64\"\nemulator-kind = \"bochs\"\n\
                    emulator = \"bochs\"\nemulator-package = \"bochs\"\n\
                    cpu = \"corei7_skylake_x\"\nsmp = 2\nmemory = \"256M\"\n";
        let error = Profile::parse(text).unwrap_err().to_string();
        assert!(error.contains("[bochs]"), "{error}");
        let error = Profile::parse(&text.replace("bochs\"\nemulator =", "qemu\"\nemulator ="))
            .unwrap_err()
            .to_string();
        assert!(error.contains("needs `machine`"), "{error}");
    }
}
