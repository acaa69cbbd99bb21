//! `cargo xtask`: builds Bulkhead and runs it in emulators (in progress).
fn main() {}
