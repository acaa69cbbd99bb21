//! Links the guest with its runtime's linker script (found on the runtime's search path):
//! `bulkhead-guest.ld` for aarch64, `bulkhead-guest-x86.ld` (fixed address, no PIE) for
//! x86_64. The x86 guest workspace builds this same program with this script.

fn main() {
    match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => {
            println!("cargo::rustc-link-arg-bins=-Tbulkhead-guest-x86.ld");
            println!("cargo::rustc-link-arg-bins=--no-pie");
        }
        _ => println!("cargo::rustc-link-arg-bins=-Tbulkhead-guest.ld"),
    }
}
