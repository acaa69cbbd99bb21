//! Build script: checks that `BULKHEAD_IMAGE` names the hypervisor image to embed.
use std::path::Path;
use std::process::exit;

fn main() {
    println!("cargo:rerun-if-env-changed=BULKHEAD_IMAGE");
    let Some(path) = std::env::var_os("BULKHEAD_IMAGE").filter(|p| !p.is_empty()) else {
        let what = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
            Ok("x86_64") => {
                "the x86_64 image as an ELF of its loadable segments whose entry is \
                 `bulkhead_x86_uefi_entry` (xtask writes it as \
                 target/x86_64-unknown-none/release/bulkhead.uefi.elf)"
            }
            _ => {
                "the raw arm64 Image (llvm-objcopy -O binary of \
                 target/aarch64-unknown-none-softfloat/release/bulkhead)"
            }
        };
        eprintln!(
            "error: BULKHEAD_IMAGE is not set. bulkhead-uefi embeds the hypervisor: set \
             BULKHEAD_IMAGE to the absolute path of {what}, or build it through `cargo xtask`."
        );
        exit(1)
    };
    let path = Path::new(&path);
    if !path.is_absolute() {
        eprintln!(
            "error: BULKHEAD_IMAGE must be an absolute path (include_bytes! resolves relative \
             paths against boot/uefi/src), got {}",
            path.display()
        );
        exit(1)
    }
    if !path.is_file() {
        eprintln!(
            "error: BULKHEAD_IMAGE names {}, which is not a readable file",
            path.display()
        );
        exit(1)
    }
    println!("cargo:rerun-if-changed={}", path.display());
}
