//! Build script of the bootable image: picks the linker script for bare-metal targets.
//! (The system configuration will be compiled into static tables here as well.)

fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    if target.starts_with("aarch64-unknown-none") {
        println!("cargo:rustc-link-arg=-T{root}/boot/aarch64.ld");
        println!("cargo:rerun-if-changed=boot/aarch64.ld");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
