//! UEFI loader (see Cargo.toml description).
#![no_std]
#![no_main]
