//! `cargo xtask run`: build the image and boot it in QEMU with the serial console on the terminal.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use crate::build::{self, Arch, BootMethod, CargoProfileArgs};
use crate::error::{Context, Error, Result};
use crate::profile::{Boot, Console, EmulatorKind, Launch, Profile};
use crate::{setup, workspace};

/// Options of `cargo xtask run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Architecture to build for.
    #[arg(long, value_enum, default_value_t)]
    arch: Arch,
    /// Machine profile: a name from qemu/ (virt-gicv3, virt-gicv2, zcu102, bochs-vmx, q35-tcg,
    /// q35-kvm) or the path of a profile file [default: virt-gicv3 on aarch64; on x86_64
    /// q35-kvm when the host's KVM offers nested VMX or SVM, else bochs-vmx; q35-tcg with --boot uefi].
    #[arg(long, value_name = "PROFILE")]
    machine: Option<String>,
    /// Boot method: `image` (aarch64: QEMU -kernel; x86_64: GRUB ISO with the Multiboot2 image),
    /// `uefi` (UEFI firmware starts the loader: AAVMF on aarch64, OVMF on x86_64) or `u-boot`
    /// (aarch64: Debian's U-Boot fetches a boot script over QEMU's TFTP, which loads the image at
    /// the profile's load address and `booti`s it).
    #[arg(long, value_enum, default_value_t)]
    boot: BootMethod,
    /// Number of CPUs (default: the profile's).
    #[arg(long, value_name = "N")]
    smp: Option<u32>,
    /// Memory size in QEMU's syntax, e.g. 512M or 2G (default: the profile's).
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,
    /// Kernel command-line words, e.g. "bulkhead.poweroff" (on x86_64 they go on GRUB's
    /// multiboot2 line, or with --boot uefi into the loader's EFI/BOOT/bulkhead.cmdline; with
    /// --boot u-boot into the script's bootargs; aarch64 UEFI boot takes none).
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    append: Option<String>,
    /// Wait for gdb on TCP port 1234 before the first instruction, and print the gdb command.
    #[arg(long)]
    gdb: bool,
    /// Leave out `bulkhead.exit=semihosting` and QEMU's -semihosting (x86_64:
    /// `bulkhead.exit=debug-exit`).
    #[arg(long)]
    no_semihosting: bool,
    /// System configuration (a board file, see hypervisor/config/README.md), compiled into
    /// the image; `none` boots without partitions [default: the machine profile's
    /// `default-config`, else qemu/systems/demo/board.board on aarch64,
    /// qemu/systems/x86-shmem-demo/board.board on x86_64].
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(flatten)]
    cargo_profile: CargoProfileArgs,
}

/// The x86_64 profile `run` picks when the host's KVM offers nested virtualization (`-cpu
/// host`: an Intel host gives Bulkhead VMX, an AMD one SVM, and the image picks its backend
/// by the CPU's vendor).
const NESTED_KVM_PROFILE: &str = "q35-kvm";

/// Whether this host can run Bulkhead under KVM with nested VMX or SVM: the CPU flag, the
/// vendor's KVM module loaded with `nested` on, and `/dev/kvm` readable and writable; else
/// why not. Returns the extension found.
fn nested_kvm() -> std::result::Result<&'static str, String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let extension = nested_choice(
        &cpuinfo,
        read("/sys/module/kvm_intel/parameters/nested").as_deref(),
        read("/sys/module/kvm_amd/parameters/nested").as_deref(),
    )?;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|_| String::from("/dev/kvm is not usable by this user"))?;
    Ok(extension)
}

/// The decision of [`nested_kvm`] from `/proc/cpuinfo` and the `nested` parameters of
/// `kvm_intel` and `kvm_amd` (`None`: the module is not loaded).
fn nested_choice(
    cpuinfo: &str,
    intel_nested: Option<&str>,
    amd_nested: Option<&str>,
) -> std::result::Result<&'static str, String> {
    let has_flag = |wanted: &str| {
        cpuinfo
            .lines()
            .filter(|line| line.starts_with("flags"))
            .any(|line| line.split_whitespace().any(|flag| flag == wanted))
    };
    let on = |value: &str| matches!(value.trim(), "Y" | "y" | "1");
    let (extension, module, nested) = if has_flag("vmx") {
        ("VMX", "kvm_intel", intel_nested)
    } else if has_flag("svm") {
        ("SVM", "kvm_amd", amd_nested)
    } else {
        return Err(String::from("the CPU shows neither a vmx nor an svm flag"));
    };
    match nested {
        None => Err(format!("{module} is not loaded")),
        Some(value) if !on(value) => Err(format!(
            "{module} has nested=N (modprobe {module} nested=1)"
        )),
        Some(_) => Ok(extension),
    }
}

/// The configuration `cargo xtask run` boots unless told otherwise.
pub const DEFAULT_CONFIG: &str = "qemu/systems/demo/board.board";
/// The same on x86_64.
pub const DEFAULT_CONFIG_X86: &str = "qemu/systems/x86-shmem-demo/board.board";

/// The configuration `cargo xtask run` boots on `arch` (relative to the repository).
pub fn default_config(arch: Arch) -> &'static str {
    match arch {
        Arch::Aarch64 => DEFAULT_CONFIG,
        Arch::X86_64 => DEFAULT_CONFIG_X86,
    }
}

/// Run `cargo xtask run`; exits with QEMU's status.
pub fn command(args: &RunArgs) -> Result<ExitCode> {
    setup::toolchain()?;
    let default = match (args.arch, args.boot) {
        (Arch::X86_64, BootMethod::Image) => match nested_kvm() {
            Ok(extension) => {
                println!(
                    "==> this host's KVM offers nested {extension}: booting under QEMU with KVM"
                );
                NESTED_KVM_PROFILE
            }
            Err(why) => {
                println!("==> Bochs (VMX emulated): no KVM with nested VMX or SVM here ({why})");
                args.arch.default_profile(args.boot)
            }
        },
        _ => args.arch.default_profile(args.boot),
    };
    let profile = Profile::load(args.machine.as_deref().unwrap_or(default))?;
    if profile.arch != args.arch {
        return Err(Error::new(format!(
            "machine profile `{}` is for {}, not {}",
            profile.name,
            profile.arch.name(),
            args.arch.name()
        )));
    }
    let smp = args.smp.unwrap_or(profile.smp);
    profile.check_smp(smp)?;
    let memory = args
        .memory
        .clone()
        .unwrap_or_else(|| profile.memory.clone());
    let config = match &args.config {
        Some(path) if path.as_os_str() == "none" => None,
        path => Some(workspace::absolute_existing(
            &workspace::root().join(
                path.as_deref().unwrap_or(Path::new(
                    profile
                        .default_config
                        .as_deref()
                        .unwrap_or(default_config(args.arch)),
                )),
            ),
            "configuration file",
        )?),
    };
    if args.arch == Arch::Aarch64 && args.boot == BootMethod::Uefi && args.append.is_some() {
        return Err(Error::new(
            "--append needs --boot image on aarch64: UEFI firmware boots the loader without a \
             kernel command line",
        ));
    }
    setup::emulators(&profile.requirements(args.boot)?)?;

    let cargo_profile = args.cargo_profile.profile();
    let image = build::image(args.arch, cargo_profile, config.as_deref())?;
    let failure_exit = !args.no_semihosting;
    let semihosting = failure_exit && args.arch == Arch::Aarch64;
    let mut words = Vec::new();
    if failure_exit {
        words.push(args.arch.failure_exit_option());
    }
    if let Some(append) = &args.append {
        words.push(append);
    }
    let append = words.join(" ");
    let boot = match args.boot {
        BootMethod::Image => {
            if args.arch == Arch::X86_64 {
                let iso = image.binary.with_file_name("bulkhead-run.iso");
                println!(
                    "==> {} (GRUB: multiboot2 /boot/bulkhead.elf {append})",
                    iso.display()
                );
                Boot::Iso {
                    iso: build::iso::make(&image.binary, &append, &iso)?,
                }
            } else {
                Boot::Image {
                    binary: image.binary.clone(),
                    append,
                }
            }
        }
        BootMethod::UBoot => {
            let load_address = profile.uboot_firmware()?.load_address;
            let tftp = workspace::target_dir().join("u-boot").join("run");
            println!(
                "==> {} (U-Boot script: image at {load_address:#x}, bootargs {append})",
                tftp.display()
            );
            Boot::UBootScript {
                tftp: build::uboot::make(&image.binary, load_address, &append, &tftp)?,
            }
        }
        BootMethod::Uefi => {
            let loader = build::loader(args.arch, cargo_profile, &image)?;
            match args.arch {
                Arch::Aarch64 => Boot::Uefi { esp: loader.esp },
                Arch::X86_64 => {
                    let esp = loader.esp.with_file_name("x86_64-run");
                    println!(
                        "==> {} (EFI/BOOT/{}: {append})",
                        esp.display(),
                        build::UEFI_COMMAND_LINE_FILE
                    );
                    Boot::Uefi {
                        esp: build::esp_with_command_line(args.arch, &loader, &append, &esp)?,
                    }
                }
            }
        }
    };
    let mut command = profile.command(&Launch {
        boot,
        smp,
        memory,
        semihosting,
        console: Console::Interactive,
        gdb: args.gdb,
    })?;

    println!(
        "==> booting on `{}` ({}), {smp} CPUs; quit with {}",
        profile.name,
        profile.description,
        match profile.emulator_kind {
            EmulatorKind::Qemu => "Ctrl-A X",
            EmulatorKind::Bochs => "Ctrl-C (Bochs exits with status 1 whatever happened)",
        }
    );
    if args.boot == BootMethod::Uefi && args.arch == Arch::Aarch64 {
        println!(
            "note: UEFI boot passes no kernel command line, so the image cannot exit QEMU itself"
        );
    }
    if args.gdb {
        print_gdb_instructions(&image.elf);
    }
    println!("$ {}", workspace::display(&command));
    let status = command
        .status()
        .context(|| format!("cannot start {}", profile.emulator))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => {
            println!("{} ended by {status}", profile.emulator);
            ExitCode::FAILURE
        }
    })
}

fn print_gdb_instructions(elf: &std::path::Path) {
    println!("==> QEMU waits for gdb on TCP port 1234. In another terminal:");
    println!(
        "    gdb-multiarch -ex 'target remote :1234' {}",
        workspace::quote(&elf.to_string_lossy())
    );
    if workspace::find_program("gdb-multiarch").is_none() {
        println!("    (gdb-multiarch is not installed: sudo apt-get install gdb-multiarch)");
    }
}

#[cfg(test)]
mod tests {
    use super::nested_choice;

    #[test]
    fn nested_kvm_is_found_for_either_vendor() {
        let intel = "processor : 0\nflags : fpu vmx sse\n";
        let amd = "processor : 0\nflags : fpu svm sse\n";
        assert_eq!(nested_choice(intel, Some("Y\n"), None), Ok("VMX"));
        assert_eq!(nested_choice(amd, None, Some("1\n")), Ok("SVM"));
        assert!(
            nested_choice(amd, None, Some("0\n"))
                .unwrap_err()
                .contains("kvm_amd")
        );
        assert!(
            nested_choice(amd, Some("Y"), None)
                .unwrap_err()
                .contains("not loaded")
        );
        assert!(nested_choice("flags : fpu\n", Some("Y"), Some("Y")).is_err());
    }
}
