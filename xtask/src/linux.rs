//! Linux for the `linux-*` systems: Debian's arm64 kernel and busybox-static, fetched once into
//! `target/linux/` through a private apt configuration (the host's architectures and package
//! state stay untouched), and an initramfs (newc cpio) per system built from its `init`
//! script, busybox and the kernel's uio modules.
//!
//! A system directory named `linux-NAME` gets `target/linux/Image` (the raw arm64 Image) and
//! `target/linux/initrd-linux-NAME.cpio`; its VM file names both with `load` and `initrd`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Context, Error, Result};
use crate::workspace;

/// Debian release the packages come from (the project's machines run Debian 12).
const SUITE: &str = "bookworm";
/// Kernel package family: `linux-image-6.1.0-<ABI>-arm64-unsigned`, the newest ABI wins.
const KERNEL_PREFIX: &str = "linux-image-6.1.0-";
const KERNEL_SUFFIX: &str = "-arm64-unsigned";
/// Modules the initramfs carries, below `lib/modules/<version>/kernel/`.
const MODULES: [&str; 2] = ["drivers/uio/uio.ko", "drivers/uio/uio_pci_generic.ko"];

/// `target/linux/` in the repository (VM files name it relative to the repository).
pub fn directory() -> PathBuf {
    workspace::root().join("target").join("linux")
}

/// Prepares what the system of `config` (its board file) needs: nothing unless its directory
/// is named `linux-*`.
pub fn prepare_for(config: &Path) -> Result<()> {
    let Some(system) = config
        .parent()
        .and_then(|directory| directory.file_name())
        .map(|name| name.to_string_lossy().into_owned())
    else {
        return Ok(());
    };
    if !system.starts_with("linux-") {
        return Ok(());
    }
    let linux = directory();
    let root = fetch(&linux)?;
    let init = config.with_file_name("init");
    let script = std::fs::read(&init)
        .context(|| format!("cannot read the init script {}", init.display()))?;
    let archive = initramfs(&root, &script)?;
    let path = linux.join(format!("initrd-{system}.cpio"));
    if std::fs::read(&path).ok().as_deref() != Some(archive.as_slice()) {
        std::fs::write(&path, &archive).context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The board device tree `name` (a path below `usr/lib/linux-image-VERSION/` of Debian's arm64
/// kernel package, e.g. `xilinx/zynqmp-zcu102-rev1.0.dtb`), fetching the package if needed.
pub fn board_device_tree(name: &str) -> Result<PathBuf> {
    if name.split('/').any(|part| part.is_empty() || part == "..") {
        return Err(Error::new(format!(
            "device tree `{name}`: expected a relative path such as xilinx/zynqmp-zcu102-rev1.0.dtb"
        )));
    }
    let root = fetch(&directory())?;
    let lib = root.join("usr").join("lib");
    let entries = std::fs::read_dir(&lib).context(|| format!("cannot list {}", lib.display()))?;
    let found = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.file_name()
                .is_some_and(|file| file.to_string_lossy().starts_with("linux-image-"))
        })
        .map(|path| path.join(name))
        .find(|path| path.is_file());
    found.context(|| {
        format!(
            "Debian's kernel package in {} has no device tree {name} below {}/linux-image-*/",
            directory().display(),
            lib.display()
        )
    })
}

/// Downloads and unpacks the packages unless done before; returns the unpacked tree.
fn fetch(linux: &Path) -> Result<PathBuf> {
    let root = linux.join("root");
    let image = linux.join("Image");
    let done = linux.join("fetched");
    if done.is_file() && image.is_file() {
        return Ok(root);
    }
    println!(
        "==> fetching Debian's arm64 kernel and busybox-static into {}",
        linux.display()
    );
    let state = linux.join("apt-state");
    let cache = linux.join("apt-cache");
    let debs = linux.join("debs");
    for directory in [
        state.join("lists").join("partial"),
        cache.join("archives").join("partial"),
        debs.clone(),
        linux.join("apt-parts"),
    ] {
        std::fs::create_dir_all(&directory)
            .context(|| format!("cannot create {}", directory.display()))?;
    }
    let sources = linux.join("sources.list");
    let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
    let mirror = "http://deb.debian.org/debian";
    let lines = [
        format!("deb [arch=arm64 signed-by={keyring}] {mirror} {SUITE} main"),
        format!("deb [arch=arm64 signed-by={keyring}] {mirror} {SUITE}-updates main"),
        format!("deb [arch=arm64 signed-by={keyring}] {mirror}-security {SUITE}-security main"),
    ];
    write(&sources, &(lines.join("\n") + "\n"))?;
    let config = linux.join("apt.conf");
    let settings = [
        format!("Dir::State \"{}\";", state.display()),
        format!("Dir::Cache \"{}\";", cache.display()),
        format!("Dir::Etc::SourceList \"{}\";", sources.display()),
        format!(
            "Dir::Etc::SourceParts \"{}\";",
            linux.join("apt-parts").display()
        ),
        "APT::Architectures \"arm64\";".to_string(),
        "APT::Architecture \"arm64\";".to_string(),
        "Debug::NoLocking \"true\";".to_string(),
        "APT::Sandbox::User \"root\";".to_string(),
        // A mirror's passing hiccup must not fail a test run: apt retries each download.
        "Acquire::Retries \"5\";".to_string(),
    ];
    write(&config, &(settings.join("\n") + "\n"))?;
    let apt = |program: &str| {
        let mut command = Command::new(program);
        command.env("APT_CONFIG", &config).current_dir(&debs);
        command
    };
    retry(|| workspace::run(apt("apt-get").args(["-q", "--error-on=any", "update"])))
        .map_err(|error| Error::new(format!("cannot fetch Debian's package lists: {error}")))?;
    let kernel = newest_kernel(&apt("apt-cache"))?;
    for entry in std::fs::read_dir(&debs).context(|| format!("cannot list {}", debs.display()))? {
        let path = entry.context(|| debs.display().to_string())?.path();
        std::fs::remove_file(&path).context(|| format!("cannot remove {}", path.display()))?;
    }
    retry(|| {
        workspace::run(apt("apt-get").args([
            "-q",
            "download",
            &format!("{kernel}:arm64"),
            "busybox-static:arm64",
        ]))
    })
    .map_err(|error| Error::new(format!("cannot download {kernel}: {error}")))?;
    if root.exists() {
        std::fs::remove_dir_all(&root).context(|| format!("cannot remove {}", root.display()))?;
    }
    for entry in std::fs::read_dir(&debs).context(|| format!("cannot list {}", debs.display()))? {
        let path = entry.context(|| debs.display().to_string())?.path();
        workspace::run(Command::new("dpkg-deb").arg("-x").arg(&path).arg(&root))?;
    }
    let boot = root.join("boot");
    let vmlinuz = std::fs::read_dir(&boot)
        .context(|| format!("cannot list {}", boot.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .find(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("vmlinuz-"))
        })
        .context(|| format!("{kernel} has no boot/vmlinuz-*"))?;
    std::fs::copy(&vmlinuz, &image)
        .context(|| format!("cannot copy {} to {}", vmlinuz.display(), image.display()))?;
    write(&done, &format!("{kernel}\n"))?;
    Ok(root)
}

/// The newest `linux-image-6.1.0-<ABI>-arm64-unsigned` the package lists offer.
fn newest_kernel(apt_cache: &Command) -> Result<String> {
    let mut command = Command::new(apt_cache.get_program());
    for (key, value) in apt_cache.get_envs() {
        if let Some(value) = value {
            command.env(key, value);
        }
    }
    let pattern = format!("^{KERNEL_PREFIX}[0-9]+{KERNEL_SUFFIX}$");
    let output = command
        .args(["search", "--names-only", &pattern])
        .output()
        .context(|| "cannot run apt-cache".to_string())?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|name| {
            let abi = name
                .strip_prefix(KERNEL_PREFIX)?
                .strip_suffix(KERNEL_SUFFIX)?;
            Some((abi.parse::<u32>().ok()?, name.to_string()))
        })
        .max()
        .map(|(_, name)| name)
        .context(|| {
            format!(
                "no package matching {pattern} in Debian {SUITE} (arm64): did `apt-get update` reach deb.debian.org?"
            )
        })
}

/// Runs `step` up to three times, waiting 5 s and then 10 s between attempts (network
/// hiccups); returns the last error.
fn retry(mut step: impl FnMut() -> Result<()>) -> Result<()> {
    let mut result = step();
    for wait in [5, 10] {
        if result.is_ok() {
            break;
        }
        println!("==> retrying in {wait} s");
        std::thread::sleep(std::time::Duration::from_secs(wait));
        result = step();
    }
    result
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).context(|| format!("cannot write {}", path.display()))
}

/// The initramfs: directories, busybox, the uio modules (flat in `/lib/modules/`) and `init`.
fn initramfs(root: &Path, init: &[u8]) -> Result<Vec<u8>> {
    let busybox_path = root.join("bin").join("busybox");
    let busybox = std::fs::read(&busybox_path)
        .context(|| format!("cannot read {}", busybox_path.display()))?;
    let modules_root = root.join("lib").join("modules");
    let version = std::fs::read_dir(&modules_root)
        .context(|| format!("cannot list {}", modules_root.display()))?
        .filter_map(|entry| entry.ok())
        .find(|entry| entry.path().join("kernel").is_dir())
        .context(|| format!("no kernel modules under {}", modules_root.display()))?
        .path();
    let mut archive = Cpio::default();
    for directory in ["bin", "dev", "proc", "sys", "lib", "lib/modules"] {
        archive.directory(directory);
    }
    archive.file("bin/busybox", &busybox);
    for module in MODULES {
        let path = version.join("kernel").join(module);
        let bytes = std::fs::read(&path).context(|| format!("cannot read {}", path.display()))?;
        let name = Path::new(module)
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        archive.file(&format!("lib/modules/{name}"), &bytes);
    }
    archive.file("init", init);
    Ok(archive.finish())
}

/// A newc ("070701") cpio archive writer.
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    inode: u32,
}

impl Cpio {
    fn directory(&mut self, name: &str) {
        self.entry(name, 0o040_755, &[]);
    }

    fn file(&mut self, name: &str, data: &[u8]) {
        self.entry(name, 0o100_755, data);
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.inode += 1;
        let links = if mode & 0o040_000 != 0 { 2 } else { 1 };
        let fields = [
            self.inode,
            mode,
            0,
            0,
            links,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.inode = 0;
        self.entry("TRAILER!!!", 0, &[]);
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FNV-1a (32-bit), the checksum the `linux-*` init scripts store with a block.
    fn fnv1a(bytes: &[u8]) -> u32 {
        bytes.iter().fold(0x811c_9dc5, |hash, &byte| {
            (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
        })
    }

    /// The checksums linux-pair-gicv3 expects are those of the blocks its init script means
    /// to send (byte i = i * 29 + seed, one seed per exchange) and of the replies (reversed,
    /// XORed with 0xa5), computed here independently of the shell's arithmetic.
    #[test]
    fn linux_pair_markers_carry_the_checksums_of_the_blocks() {
        let path = workspace::root().join("xtask/scenarios/linux-pair-gicv3.toml");
        let scenario = std::fs::read_to_string(&path).unwrap();
        for (exchange, seed) in [("mmio shmem", 3u32), ("ivshmem", 5), ("pci shmem", 7)] {
            let block: Vec<u8> = (0..48u32).map(|i| (i * 29 + seed) as u8).collect();
            let reply: Vec<u8> = block.iter().rev().map(|byte| byte ^ 0xa5).collect();
            let sent = format!(
                "{exchange}: sent 48 bytes to second (checksum {:#010x})",
                fnv1a(&block)
            );
            let replied = format!("{exchange}: replied (checksum {:#010x})", fnv1a(&reply));
            assert!(
                scenario.contains(&sent),
                "{} lacks `{sent}`",
                path.display()
            );
            assert!(
                scenario.contains(&replied),
                "{} lacks `{replied}`",
                path.display()
            );
        }
    }

    #[test]
    fn newc_headers_names_and_padding() {
        let mut archive = Cpio::default();
        archive.directory("bin");
        archive.file("init", b"#!/bin/sh\n");
        let bytes = archive.finish();
        assert!(bytes.starts_with(b"070701"));
        assert_eq!(bytes.len() % 4, 0);
        // First header: inode 1, directory mode, name "bin\0" (size 4) right after 110 bytes.
        assert_eq!(&bytes[6..14], b"00000001");
        assert_eq!(&bytes[14..22], b"000041ed");
        assert_eq!(&bytes[94..102], b"00000004");
        assert_eq!(&bytes[110..114], b"bin\0");
        // The second header starts at the next multiple of 4 after header + name (114 -> 116).
        assert_eq!(&bytes[116..122], b"070701");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("init\0"));
        assert!(text.contains("#!/bin/sh\n"));
        assert!(text.contains("TRAILER!!!\0"));
    }
}
