//! Building the test and demo guests into flat images that partitions load:
//! `guests/target/images/NAME.bin`. The aarch64 guests are the cargo workspace `guests/` (flat
//! arm64 Images); the x86_64 guests the workspace `guests/x86/` (flat images linked at
//! guest-physical 0x200000, their directory names end in `-x86`).

use std::path::{Path, PathBuf};

use crate::build::{Arch, flatten};
use crate::error::{Context, Result};
use crate::workspace;

/// The guests' target triple for an architecture (aarch64 guests may use FP/SIMD; the
/// hypervisor never touches it).
fn guest_target(arch: Arch) -> &'static str {
    match arch {
        Arch::Aarch64 => "aarch64-unknown-none",
        Arch::X86_64 => "x86_64-unknown-none",
    }
}

/// The guest workspace of an architecture.
fn workspace_directory(arch: Arch) -> PathBuf {
    match arch {
        Arch::Aarch64 => directory(),
        Arch::X86_64 => directory().join("x86"),
    }
}

/// The directory holding the guest workspace.
pub fn directory() -> PathBuf {
    workspace::root().join("guests")
}

/// Where built guest images go; build.rs resolves `load guests/NAME` there.
pub fn images_directory() -> PathBuf {
    directory().join("target").join("images")
}

/// Builds every guest of `arch` (a directory of its workspace with `src/main.rs`, or whose
/// `Cargo.toml` has a `[[bin]]` elsewhere: the x86 workspace builds the aarch64 workspace's
/// shared-memory programs from their sources; the binary is named after the directory) and
/// writes its flat image. Returns the images directory.
pub fn build(arch: Arch) -> Result<PathBuf> {
    let target = guest_target(arch);
    let workspace_directory = workspace_directory(arch);
    println!("==> building the guests ({target})");
    let mut cargo = workspace::cargo();
    cargo
        .current_dir(&workspace_directory)
        .args(["build", "--release", "--target", target])
        .env_remove("CARGO_TARGET_DIR");
    workspace::run(&mut cargo)?;
    let images = images_directory();
    std::fs::create_dir_all(&images).context(|| format!("cannot create {}", images.display()))?;
    let binaries = workspace_directory
        .join("target")
        .join(target)
        .join("release");
    let entries = std::fs::read_dir(&workspace_directory)
        .context(|| format!("cannot list {}", workspace_directory.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .filter(|entry| is_guest_directory(&entry.path()))
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let elf_path = binaries.join(&name);
        let elf =
            std::fs::read(&elf_path).context(|| format!("cannot read {}", elf_path.display()))?;
        let flat = flatten(&elf, arch).context(|| elf_path.display().to_string())?;
        let image = images.join(format!("{name}.bin"));
        std::fs::write(&image, &flat.bytes)
            .context(|| format!("cannot write {}", image.display()))?;
    }
    Ok(images)
}

/// Whether `directory` holds a guest program: `src/main.rs`, or a manifest with a `[[bin]]`
/// table (whose `path` may point at another workspace's sources).
fn is_guest_directory(directory: &Path) -> bool {
    directory.join("src").join("main.rs").is_file()
        || std::fs::read_to_string(directory.join("Cargo.toml"))
            .is_ok_and(|manifest| manifest.lines().any(|line| line.trim() == "[[bin]]"))
}
