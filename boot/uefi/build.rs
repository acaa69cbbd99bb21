//! Build script: checks that `BULKHEAD_IMAGE` names the hypervisor Image to embed.
use std::path::Path;
use std::process::exit;

fn main() {
    println!("cargo:rerun-if-env-changed=BULKHEAD_IMAGE");
    let Some(path) = std::env::var_os("BULKHEAD_IMAGE").filter(|p| !p.is_empty()) else {
        eprintln!(
            "error: BULKHEAD_IMAGE is not set. bulkhead-uefi embeds the hypervisor: set \
             BULKHEAD_IMAGE to the absolute path of the raw arm64 Image (llvm-objcopy -O binary \
             of target/aarch64-unknown-none-softfloat/release/bulkhead), or build it through \
             `cargo xtask`."
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
