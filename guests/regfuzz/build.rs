//! Links the guest with the runtime's linker script (found on the runtime's search path).

fn main() {
    println!("cargo::rustc-link-arg-bins=-Tbulkhead-guest.ld");
}
