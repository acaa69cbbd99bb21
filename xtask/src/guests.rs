//! Building the test and demo guests (`guests/`, a cargo workspace of its own) into flat arm64
//! Images that partitions load: `guests/target/images/NAME.bin`.

use std::path::PathBuf;

use crate::build::{Arch, flatten};
use crate::error::{Context, Result};
use crate::workspace;

/// The guests' target triple (they may use FP/SIMD; the hypervisor never touches it).
const GUEST_TARGET: &str = "aarch64-unknown-none";

/// The directory holding the guest workspace.
pub fn directory() -> PathBuf {
    workspace::root().join("guests")
}

/// Where built guest images go; build.rs resolves `load guests/NAME` there.
pub fn images_directory() -> PathBuf {
    directory().join("target").join("images")
}

/// Builds every guest (a directory of `guests/` with `src/main.rs`; the binary is named after
/// it) and writes its flat image. Returns the images directory.
pub fn build(arch: Arch) -> Result<PathBuf> {
    println!("==> building the guests ({GUEST_TARGET})");
    let mut cargo = workspace::cargo();
    cargo
        .current_dir(directory())
        .args(["build", "--release", "--target", GUEST_TARGET])
        .env_remove("CARGO_TARGET_DIR");
    workspace::run(&mut cargo)?;
    let images = images_directory();
    std::fs::create_dir_all(&images).context(|| format!("cannot create {}", images.display()))?;
    let binaries = directory()
        .join("target")
        .join(GUEST_TARGET)
        .join("release");
    let entries = std::fs::read_dir(directory())
        .context(|| format!("cannot list {}", directory().display()))?;
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join("src").join("main.rs").is_file())
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
