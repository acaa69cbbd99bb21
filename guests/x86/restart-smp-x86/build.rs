//! Links the guest with the runtime's linker script at a fixed address (no PIE).

fn main() {
    println!("cargo::rustc-link-arg-bins=-Tbulkhead-guest-x86.ld");
    println!("cargo::rustc-link-arg-bins=--no-pie");
}
