//! `cargo xtask build`: the hypervisor image (ELF, then a flat Image binary on aarch64 or a
//! Multiboot2 ELF and a GRUB ISO on x86_64), the UEFI loader and the U-Boot TFTP directory.

pub mod iso;
pub mod uboot;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};
use serde::Deserialize;

use crate::error::{Context, Error, Result};
use crate::{setup, workspace};

/// The architecture to build for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// 64-bit Arm, hypervisor at EL2.
    #[default]
    Aarch64,
    /// x86-64 with VMX, booted through Multiboot2 (GRUB) or the UEFI loader.
    #[value(name = "x86_64")]
    #[serde(rename = "x86_64")]
    X86_64,
}

impl Arch {
    /// Target triple of the hypervisor image.
    pub fn image_target(self) -> &'static str {
        match self {
            Self::Aarch64 => "aarch64-unknown-none-softfloat",
            Self::X86_64 => "x86_64-unknown-none",
        }
    }

    /// Target triple of the UEFI loader.
    pub fn uefi_target(self) -> &'static str {
        match self {
            Self::Aarch64 => "aarch64-unknown-uefi",
            Self::X86_64 => "x86_64-unknown-uefi",
        }
    }

    /// Directory name under `target/esp/`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Aarch64 => "aarch64",
            Self::X86_64 => "x86_64",
        }
    }

    /// The file UEFI firmware boots from a removable medium.
    fn efi_boot_file(self) -> &'static str {
        match self {
            Self::Aarch64 => "BOOTAA64.EFI",
            Self::X86_64 => "BOOTX64.EFI",
        }
    }

    fn elf_machine(self) -> elf::Machine {
        match self {
            Self::Aarch64 => elf::EM_AARCH64,
            Self::X86_64 => elf::EM_X86_64,
        }
    }

    /// The machine profile `run` uses when `--machine` is not given: on x86_64 Bochs (VMX)
    /// for GRUB, QEMU q35 (OVMF, no VMX) for UEFI, as Bochs has no UEFI firmware here.
    pub fn default_profile(self, boot: BootMethod) -> &'static str {
        match (self, boot) {
            (Self::Aarch64, _) => "virt-gicv3",
            (Self::X86_64, BootMethod::Image) => "bochs-vmx",
            (Self::X86_64, BootMethod::Uefi) => "q35-tcg",
            // No x86_64 profile has U-Boot: the profile's check says so.
            (Self::X86_64, BootMethod::UBoot) => "q35-tcg",
        }
    }

    /// The boot option that makes a panic or fatal exception exit the emulator with a failure
    /// status: semihosting on aarch64 (QEMU also needs `-semihosting`), QEMU's isa-debug-exit
    /// device and Bochs's shutdown port on x86_64.
    pub fn failure_exit_option(self) -> &'static str {
        match self {
            Self::Aarch64 => "bulkhead.exit=semihosting",
            Self::X86_64 => "bulkhead.exit=debug-exit",
        }
    }
}

/// How firmware hands control to the image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMethod {
    /// The image itself: an arm64 Image (`-kernel bulkhead.bin`), or on x86_64 the Multiboot2
    /// image on a GRUB ISO.
    #[default]
    Image,
    /// UEFI firmware starts the loader (BOOTAA64.EFI, BOOTX64.EFI), which carries the image.
    Uefi,
    /// U-Boot (aarch64) fetches a script over TFTP that loads the arm64 Image at the profile's
    /// load address, away from its link address, and `booti`s it.
    #[value(name = "u-boot")]
    #[serde(rename = "u-boot")]
    UBoot,
}

/// Cargo profile of the image and loader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CargoProfile {
    /// `--release`: optimised, as the images ship.
    #[default]
    Release,
    /// cargo's dev profile: unoptimised, with overflow checks and debug assertions.
    Debug,
}

impl CargoProfile {
    /// The directory cargo puts this profile's artifacts in.
    fn directory(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Debug => "debug",
        }
    }
}

/// `--release` (the default) or `--debug`.
#[derive(Debug, Clone, Args)]
pub struct CargoProfileArgs {
    /// Build with the release profile (the default).
    #[arg(long, conflicts_with = "debug")]
    release: bool,
    /// Build with the dev profile (unoptimised).
    #[arg(long)]
    debug: bool,
}

impl CargoProfileArgs {
    pub fn profile(&self) -> CargoProfile {
        if self.debug {
            CargoProfile::Debug
        } else {
            CargoProfile::Release
        }
    }
}

/// Options of `cargo xtask build`.
#[derive(Debug, Clone, Args)]
pub struct BuildArgs {
    /// Architecture to build for.
    #[arg(long, value_enum, default_value_t)]
    arch: Arch,
    /// Boot method: `image` builds the image; `uefi` also builds the loader and the ESP;
    /// `u-boot` also lays out the TFTP directory (image and boot script) for the default
    /// aarch64 machine's load address.
    #[arg(long, value_enum, default_value_t)]
    boot: BootMethod,
    #[command(flatten)]
    cargo_profile: CargoProfileArgs,
    /// System configuration, passed to the image build as BULKHEAD_CONFIG (absolute path).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

/// The hypervisor image, as cargo built it and as the emulator boots it.
#[derive(Debug, Clone)]
pub struct Image {
    /// With symbols, for gdb.
    pub elf: PathBuf,
    /// What the boot loader takes: on aarch64 a flat binary starting with the arm64 Image
    /// header; on x86_64 an ELF with only its loadable segments (GRUB's `multiboot2` loads it).
    pub binary: PathBuf,
    /// What the UEFI loader embeds: on aarch64 the same flat binary; on x86_64 the same lean
    /// ELF with the 64-bit entry as its entry (`.uefi.elf`).
    pub uefi_payload: PathBuf,
}

/// The UEFI loader and the directory QEMU serves as the EFI system partition.
#[derive(Debug, Clone)]
pub struct Loader {
    pub efi: PathBuf,
    pub esp: PathBuf,
}

/// Run `cargo xtask build`.
pub fn command(args: &BuildArgs) -> Result<ExitCode> {
    setup::toolchain()?;
    let config = args
        .config
        .as_deref()
        .map(|path| workspace::absolute_existing(path, "configuration file"))
        .transpose()?;
    let profile = args.cargo_profile.profile();
    let image = image(args.arch, profile, config.as_deref())?;
    let loader = match args.boot {
        BootMethod::Image | BootMethod::UBoot => None,
        BootMethod::Uefi => Some(loader(args.arch, profile, &image)?),
    };
    let tftp = match args.boot {
        BootMethod::UBoot => Some(uboot_directory(args.arch, &image)?),
        BootMethod::Image | BootMethod::Uefi => None,
    };
    println!("image ELF (symbols): {}", image.elf.display());
    if args.arch == Arch::X86_64 {
        setup::emulators(&iso::requirements())?;
        let iso_path = image.binary.with_extension("iso");
        iso::make(&image.binary, "", &iso_path)?;
        println!("Multiboot2 ELF:      {}", image.binary.display());
        println!("GRUB ISO:            {}", iso_path.display());
    } else {
        println!("image binary:        {}", image.binary.display());
    }
    if let Some(loader) = loader {
        println!("UEFI loader:         {}", loader.efi.display());
        println!("EFI system partition: {}", loader.esp.display());
    }
    if let Some((directory, load_address)) = tftp {
        println!(
            "U-Boot TFTP directory: {} (loads the image at {load_address:#x})",
            directory.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `target/u-boot/ARCH`: the TFTP directory for the default machine's U-Boot, with no kernel
/// command line; returns it and the load address.
fn uboot_directory(arch: Arch, image: &Image) -> Result<(PathBuf, u64)> {
    let profile = crate::profile::Profile::load(arch.default_profile(BootMethod::UBoot))?;
    setup::emulators(&profile.requirements(BootMethod::UBoot)?)?;
    let load_address = profile.uboot_firmware()?.load_address;
    let directory = workspace::target_dir().join("u-boot").join(arch.name());
    uboot::make(&image.binary, load_address, "", &directory)?;
    Ok((directory, load_address))
}

/// Build the hypervisor image and convert it to a flat binary next to the ELF.
pub fn image(arch: Arch, profile: CargoProfile, config: Option<&Path>) -> Result<Image> {
    let target = arch.image_target();
    println!(
        "==> building the Bulkhead image ({}, {target})",
        profile.directory()
    );
    let mut cargo = image_command(arch, profile, config)?;
    workspace::run(&mut cargo)?;

    let directory = workspace::target_dir()
        .join(target)
        .join(profile.directory());
    let elf_path = directory.join("bulkhead");
    let extension = match arch {
        Arch::Aarch64 => "bin",
        Arch::X86_64 => "elf",
    };
    // One binary per configuration, so images of several configurations can coexist.
    let binary_path = directory.join(match config {
        Some(config) => format!("bulkhead-{}.{extension}", config_tag(config)),
        None => format!("bulkhead.{extension}"),
    });
    let elf = std::fs::read(&elf_path).context(|| format!("cannot read {}", elf_path.display()))?;
    if arch == Arch::X86_64 {
        let context = || elf_path.display().to_string();
        let loadable = iso::loadable_elf(&elf, None).context(context)?;
        iso::check_multiboot2_header(&loadable).context(context)?;
        std::fs::write(&binary_path, &loadable)
            .context(|| format!("cannot write {}", binary_path.display()))?;
        println!(
            "==> {} ({} bytes, Multiboot2)",
            binary_path.display(),
            loadable.len()
        );
        let entry = iso::symbol_address(&elf, iso::UEFI_ENTRY_SYMBOL).context(context)?;
        let uefi_payload = binary_path.with_extension("uefi.elf");
        std::fs::write(
            &uefi_payload,
            iso::loadable_elf(&elf, Some(entry)).context(context)?,
        )
        .context(|| format!("cannot write {}", uefi_payload.display()))?;
        return Ok(Image {
            elf: elf_path,
            binary: binary_path,
            uefi_payload,
        });
    }
    let flat = flatten(&elf, arch).context(|| elf_path.display().to_string())?;
    check_image_header(&flat.bytes).context(|| elf_path.display().to_string())?;
    check_relocations(&elf).context(|| elf_path.display().to_string())?;
    std::fs::write(&binary_path, &flat.bytes)
        .context(|| format!("cannot write {}", binary_path.display()))?;
    println!(
        "==> {} ({} bytes, linked at {:#x}{})",
        binary_path.display(),
        flat.bytes.len(),
        flat.load_address,
        if arch == Arch::Aarch64 {
            "; relocates itself to wherever it is loaded"
        } else {
            ""
        }
    );
    Ok(Image {
        elf: elf_path,
        uefi_payload: binary_path.clone(),
        binary: binary_path,
    })
}

/// The cargo command that builds the image for `config`: guests are built first, and
/// build.rs gets the configuration and the guest images' directory.
pub fn image_command(
    arch: Arch,
    profile: CargoProfile,
    config: Option<&Path>,
) -> Result<std::process::Command> {
    image_cargo("build", arch, profile, config)
}

/// `cargo SUBCOMMAND` (`build`, `clippy`) over the image for `config`, with the target,
/// profile and environment of [`image_command`].
pub fn image_cargo(
    subcommand: &str,
    arch: Arch,
    profile: CargoProfile,
    config: Option<&Path>,
) -> Result<std::process::Command> {
    let mut cargo = workspace::cargo();
    cargo.args([
        subcommand,
        "--package",
        "bulkhead",
        "--target",
        arch.image_target(),
    ]);
    if profile == CargoProfile::Release {
        cargo.arg("--release");
    }
    match config {
        Some(config) => {
            let images = crate::guests::build(arch)?;
            crate::linux::prepare_for(config)?;
            cargo
                .env("BULKHEAD_CONFIG", config)
                .env("BULKHEAD_GUEST_IMAGES", images);
        }
        None => {
            cargo.env_remove("BULKHEAD_CONFIG");
        }
    }
    Ok(cargo)
}

/// A file-name-safe tag for a configuration path: its directory and stem below the repository.
pub fn config_tag(config: &Path) -> String {
    let relative = config.strip_prefix(workspace::root()).unwrap_or(config);
    let text = relative.with_extension("").to_string_lossy().into_owned();
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect::<String>()
        .trim_matches('-')
        .to_string()
}

/// Build the UEFI loader around `image` and lay out the EFI system partition.
pub fn loader(arch: Arch, profile: CargoProfile, image: &Image) -> Result<Loader> {
    let target = arch.uefi_target();
    println!(
        "==> building the UEFI loader ({}, {target})",
        profile.directory()
    );
    let binary = workspace::absolute_existing(&image.uefi_payload, "image for the UEFI loader")?;
    workspace::run(&mut loader_cargo("build", arch, profile, &binary))?;

    let built = workspace::target_dir()
        .join(target)
        .join(profile.directory())
        .join("bulkhead-uefi.efi");
    // Cargo writes every loader to the same file; each image's loader is kept beside the
    // image (`IMAGE.uefi.efi`), so that scenarios built one after the other and run later
    // each boot their own (the next build would overwrite the shared file).
    let efi = binary.with_extension("efi");
    std::fs::copy(&built, &efi)
        .context(|| format!("cannot copy {} to {}", built.display(), efi.display()))?;
    let esp = workspace::target_dir().join("esp").join(arch.name());
    let boot_directory = esp.join("EFI").join("BOOT");
    std::fs::create_dir_all(&boot_directory)
        .context(|| format!("cannot create {}", boot_directory.display()))?;
    let boot_file = boot_directory.join(arch.efi_boot_file());
    std::fs::copy(&efi, &boot_file)
        .context(|| format!("cannot copy {} to {}", efi.display(), boot_file.display()))?;
    println!("==> {}", boot_file.display());
    Ok(Loader { efi, esp })
}

/// `cargo SUBCOMMAND` (`build`, `clippy`) over the UEFI loader of `arch` embedding `payload`
/// (an absolute path: the loader's build script refuses anything else).
pub fn loader_cargo(
    subcommand: &str,
    arch: Arch,
    profile: CargoProfile,
    payload: &Path,
) -> std::process::Command {
    let mut cargo = workspace::cargo();
    cargo
        .args([
            subcommand,
            "--package",
            "bulkhead-uefi",
            "--target",
            arch.uefi_target(),
        ])
        .env("BULKHEAD_IMAGE", payload);
    if profile == CargoProfile::Release {
        cargo.arg("--release");
    }
    cargo
}

/// The file the x86_64 UEFI loader reads its command line from, in `EFI/BOOT/` of its volume.
pub const UEFI_COMMAND_LINE_FILE: &str = "bulkhead.cmdline";

/// An EFI system partition in `directory` with the loader and, for x86_64, the command line
/// (`EFI/BOOT/bulkhead.cmdline`; an empty line writes no file). The aarch64 loader takes no
/// command line: asking it for one is an error.
pub fn esp_with_command_line(
    arch: Arch,
    loader: &Loader,
    command_line: &str,
    directory: &Path,
) -> Result<PathBuf> {
    if arch == Arch::Aarch64 && !command_line.is_empty() {
        return Err(Error::new(
            "the aarch64 UEFI loader passes no kernel command line; use --boot image",
        ));
    }
    let boot_directory = directory.join("EFI").join("BOOT");
    if directory.exists() {
        std::fs::remove_dir_all(directory)
            .context(|| format!("cannot clear {}", directory.display()))?;
    }
    std::fs::create_dir_all(&boot_directory)
        .context(|| format!("cannot create {}", boot_directory.display()))?;
    let boot_file = boot_directory.join(arch.efi_boot_file());
    std::fs::copy(&loader.efi, &boot_file).context(|| {
        format!(
            "cannot copy {} to {}",
            loader.efi.display(),
            boot_file.display()
        )
    })?;
    if !command_line.is_empty() {
        let file = boot_directory.join(UEFI_COMMAND_LINE_FILE);
        std::fs::write(&file, format!("{command_line}\n"))
            .context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(directory.to_path_buf())
}

/// A flat binary and the physical address its first byte loads at.
#[derive(Debug, PartialEq, Eq)]
pub struct FlatImage {
    pub bytes: Vec<u8>,
    pub load_address: u64,
}

/// The aarch64 image relocates itself at entry and applies only R_AARCH64_RELATIVE entries
/// (boot/src/aarch64: before any Rust runs, nothing else can be resolved); any other dynamic
/// relocation in the ELF would be left unapplied and the image would stop at entry, so the
/// build fails instead, naming it.
pub fn check_relocations(elf_bytes: &[u8]) -> Result<()> {
    use object::read::elf::SectionHeader;
    let header = elf::FileHeader64::<object::Endianness>::parse(elf_bytes)
        .context(|| "not a 64-bit ELF file".to_string())?;
    let endian = header
        .endian()
        .context(|| "unknown ELF byte order".to_string())?;
    let sections = header
        .sections(endian, elf_bytes)
        .context(|| "bad section headers".to_string())?;
    for section in sections.iter() {
        let Some((relocations, _)) = section
            .rela(endian, elf_bytes)
            .context(|| "bad relocation section".to_string())?
        else {
            continue;
        };
        if let Some(other) = relocations
            .iter()
            .map(|relocation| relocation.r_type(endian, false))
            .find(|&kind| kind != elf::R_AARCH64_RELATIVE)
        {
            return Err(Error::new(format!(
                "relocation type {other} in {}: the image applies only R_AARCH64_RELATIVE \
                 ({}) at entry",
                String::from_utf8_lossy(sections.section_name(endian, section).unwrap_or(b"?")),
                elf::R_AARCH64_RELATIVE
            )));
        }
    }
    Ok(())
}

/// Largest flat binary accepted: a bigger one means a stray segment far from the image.
const MAX_FLAT_SIZE: u64 = 256 << 20;

/// Lay the file bytes of every PT_LOAD segment out at (p_paddr - lowest p_paddr), zero-filling
/// gaps. Memory past a segment's file bytes (.bss) is left out: the Image header's image_size
/// tells the loader how much memory to reserve.
pub fn flatten(elf_bytes: &[u8], arch: Arch) -> Result<FlatImage> {
    let header = elf::FileHeader64::<object::Endianness>::parse(elf_bytes)
        .context(|| "not a 64-bit ELF file".to_string())?;
    let endian = header
        .endian()
        .context(|| "unknown ELF byte order".to_string())?;
    if header.e_machine(endian) != arch.elf_machine() {
        return Err(Error::new(format!(
            "ELF machine {} is not {}",
            header.e_machine(endian),
            arch.name()
        )));
    }
    let program_headers = header
        .program_headers(endian, elf_bytes)
        .context(|| "bad program headers".to_string())?;
    let mut segments = Vec::new();
    for program_header in program_headers {
        if program_header.p_type(endian) != elf::PT_LOAD || program_header.p_filesz(endian) == 0 {
            continue;
        }
        let data = program_header
            .data(endian, elf_bytes)
            .map_err(|()| Error::new("a PT_LOAD segment lies outside the file"))?;
        segments.push((program_header.p_paddr(endian), data));
    }
    let load_address = segments
        .iter()
        .map(|(address, _)| *address)
        .min()
        .context(|| "no PT_LOAD segment with file data".to_string())?;
    let mut end = load_address;
    for (address, data) in &segments {
        let segment_end = address
            .checked_add(data.len() as u64)
            .context(|| "segment address overflows".to_string())?;
        end = end.max(segment_end);
    }
    let size = end - load_address;
    if size > MAX_FLAT_SIZE {
        return Err(Error::new(format!(
            "PT_LOAD segments span {size:#x} bytes from {load_address:#x}: a segment is far \
             from the image"
        )));
    }
    let size = usize::try_from(size).context(|| "image too large".to_string())?;
    let mut bytes = vec![0_u8; size];
    for (address, data) in segments {
        let offset =
            usize::try_from(address - load_address).context(|| "image too large".to_string())?;
        bytes
            .get_mut(offset..offset + data.len())
            .context(|| "segment outside the image".to_string())?
            .copy_from_slice(data);
    }
    Ok(FlatImage {
        bytes,
        load_address,
    })
}

/// Offset and value of the arm64 Image header magic ("ARM\x64").
const IMAGE_MAGIC_OFFSET: usize = 0x38;
const IMAGE_MAGIC: u32 = 0x644d_5241;
/// Offset of the header's image_size field (bytes of memory the image needs, .bss included).
const IMAGE_SIZE_OFFSET: usize = 0x10;

/// QEMU boots a file without the header as a raw blob at the wrong address; catch that here.
fn check_image_header(binary: &[u8]) -> Result<()> {
    let read = |offset: usize, length: usize| binary.get(offset..offset + length);
    let magic = read(IMAGE_MAGIC_OFFSET, 4)
        .and_then(|bytes| <[u8; 4]>::try_from(bytes).ok())
        .map(u32::from_le_bytes);
    if magic != Some(IMAGE_MAGIC) {
        return Err(Error::new(format!(
            "the image does not start with an arm64 Image header (magic {IMAGE_MAGIC:#x} at \
             offset {IMAGE_MAGIC_OFFSET:#x})"
        )));
    }
    let image_size = read(IMAGE_SIZE_OFFSET, 8)
        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
        .map(u64::from_le_bytes)
        .unwrap_or_default();
    if image_size < binary.len() as u64 {
        return Err(Error::new(format!(
            "the Image header's image_size ({image_size:#x}) is smaller than the file data \
             ({:#x}); it must cover the whole image including .bss",
            binary.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal little-endian ELF64 with the given (p_type, p_paddr, file bytes, memsz) segments.
    fn elf_with(segments: &[(u32, u64, &[u8], u64)], machine: elf::Machine) -> Vec<u8> {
        const HEADER: usize = 64;
        const PROGRAM_HEADER: usize = 56;
        let mut data_offset = HEADER + PROGRAM_HEADER * segments.len();
        let mut file = Vec::new();
        file.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
        file.extend_from_slice(&2_u16.to_le_bytes()); // e_type: EXEC
        file.extend_from_slice(&machine.0.to_le_bytes());
        file.extend_from_slice(&1_u32.to_le_bytes()); // e_version
        file.extend_from_slice(&0x4020_0000_u64.to_le_bytes()); // e_entry
        file.extend_from_slice(&(HEADER as u64).to_le_bytes()); // e_phoff
        file.extend_from_slice(&0_u64.to_le_bytes()); // e_shoff
        file.extend_from_slice(&0_u32.to_le_bytes()); // e_flags
        file.extend_from_slice(&(HEADER as u16).to_le_bytes());
        file.extend_from_slice(&(PROGRAM_HEADER as u16).to_le_bytes());
        file.extend_from_slice(&(segments.len() as u16).to_le_bytes());
        file.extend_from_slice(&64_u16.to_le_bytes()); // e_shentsize
        file.extend_from_slice(&0_u16.to_le_bytes()); // e_shnum
        file.extend_from_slice(&0_u16.to_le_bytes()); // e_shstrndx
        for (kind, paddr, data, memsz) in segments {
            file.extend_from_slice(&kind.to_le_bytes());
            file.extend_from_slice(&7_u32.to_le_bytes()); // p_flags
            file.extend_from_slice(&(data_offset as u64).to_le_bytes());
            file.extend_from_slice(&(paddr + 0xffff_0000_0000_0000).to_le_bytes()); // p_vaddr
            file.extend_from_slice(&paddr.to_le_bytes());
            file.extend_from_slice(&(data.len() as u64).to_le_bytes());
            file.extend_from_slice(&memsz.to_le_bytes());
            file.extend_from_slice(&0x1000_u64.to_le_bytes());
            data_offset += data.len();
        }
        for (_, _, data, _) in segments {
            file.extend_from_slice(data);
        }
        file
    }

    #[test]
    fn segments_land_at_their_physical_offsets_with_gaps_zeroed_and_no_bss() {
        let elf = elf_with(
            &[
                (1, 0x4020_1000, b"data", 4),
                (1, 0x4020_0000, b"text", 4),
                (1, 0x4020_2000, b"", 0x10_0000), // .bss only: not in the file
                (4, 0x0, b"note", 4),             // PT_NOTE: ignored
                (1, 0x4020_1008, b"rw", 0x8000),  // file bytes then .bss
            ],
            elf::EM_AARCH64,
        );
        let flat = flatten(&elf, Arch::Aarch64).unwrap();
        assert_eq!(flat.load_address, 0x4020_0000);
        assert_eq!(flat.bytes.len(), 0x100a);
        assert_eq!(&flat.bytes[..4], b"text");
        assert!(flat.bytes[4..0x1000].iter().all(|byte| *byte == 0));
        assert_eq!(&flat.bytes[0x1000..0x1004], b"data");
        assert_eq!(&flat.bytes[0x1008..], b"rw");
    }

    #[test]
    fn wrong_machine_and_stray_segments_are_refused() {
        let elf = elf_with(&[(1, 0x4020_0000, b"text", 4)], elf::EM_X86_64);
        assert!(flatten(&elf, Arch::Aarch64).is_err());
        let elf = elf_with(
            &[(1, 0x4020_0000, b"text", 4), (1, 0x8000_0000, b"far", 3)],
            elf::EM_AARCH64,
        );
        let error = flatten(&elf, Arch::Aarch64).unwrap_err().to_string();
        assert!(error.contains("far from the image"), "{error}");
        assert!(flatten(b"not an elf", Arch::Aarch64).is_err());
    }

    #[test]
    fn the_image_header_is_checked() {
        let mut binary = vec![0_u8; 0x40];
        binary[0x38..0x3c].copy_from_slice(b"ARM\x64");
        binary[0x10..0x18].copy_from_slice(&0x10_0000_u64.to_le_bytes());
        check_image_header(&binary).unwrap();
        binary[0x10..0x18].copy_from_slice(&0x20_u64.to_le_bytes());
        let error = check_image_header(&binary).unwrap_err().to_string();
        assert!(error.contains("image_size"), "{error}");
        binary[0x38] = 0;
        let error = check_image_header(&binary).unwrap_err().to_string();
        assert!(error.contains("arm64 Image header"), "{error}");
    }
}
