//! Build script of the x86_64 guest runtime: publishes the linker script to every guest
//! binary (copied into OUT_DIR, which is on the link search path of everything that depends on
//! this crate; each guest's own build.rs passes `-Tbulkhead-guest-x86.ld`).

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let script = manifest.join("bulkhead-guest-x86.ld");
    if let Err(error) = std::fs::copy(&script, out.join("bulkhead-guest-x86.ld")) {
        println!("cargo::error=cannot copy {}: {error}", script.display());
    }
    println!("cargo::rustc-link-search={}", out.display());
    println!("cargo::rerun-if-changed=bulkhead-guest-x86.ld");
    println!("cargo::rerun-if-changed=build.rs");
}
