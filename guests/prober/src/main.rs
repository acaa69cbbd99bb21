//! `prober`: reads its own RAM, then reads an address outside its partition's memory map
//! (`BULKHEAD_PROBER_ADDRESS` at build time, default 0x7000_0000). Bulkhead must stop the
//! partition at that read; if the guest survives it prints what it read and fails.

#![no_std]
#![no_main]

use bulkhead_guest::{exit_fail, exit_fail_with, platform, println};

bulkhead_guest::entry!(main);

/// Parses a build-time address: `0x`-prefixed hex or decimal, `_` separators allowed.
const fn parse_address(text: &str) -> Option<usize> {
    let (mut digits, radix) = match text.as_bytes() {
        [b'0', b'x' | b'X', rest @ ..] => (rest, 16),
        all => (all, 10),
    };
    if digits.is_empty() {
        return None;
    }
    let mut value: usize = 0;
    while let [digit, rest @ ..] = digits {
        digits = rest;
        let digit = match *digit {
            b'_' => continue,
            b'0'..=b'9' => *digit - b'0',
            b'a'..=b'f' if radix == 16 => *digit - b'a' + 10,
            b'A'..=b'F' if radix == 16 => *digit - b'A' + 10,
            _ => return None,
        };
        value = match value.checked_mul(radix) {
            Some(shifted) => match shifted.checked_add(digit as usize) {
                Some(sum) => sum,
                None => return None,
            },
            None => return None,
        };
    }
    Some(value)
}

/// The address probed: outside the partition's RAM and devices.
#[allow(clippy::panic, reason = "a bad build setting must stop the build")]
const PROBE_ADDRESS: usize = match parse_address(match option_env!("BULKHEAD_PROBER_ADDRESS") {
    Some(text) => text,
    None => "0x7000_0000",
}) {
    Some(address) if address.is_multiple_of(4) && address < 0x1_0000_0000 => address,
    _ => panic!("BULKHEAD_PROBER_ADDRESS must be a 4-byte aligned address below 4 GiB"),
};

/// A value in the guest's own RAM (.data).
static OWN_WORD: u32 = 0x5a5a_a5a5;

fn main() -> ! {
    // SAFETY: OWN_WORD is a live static of this image.
    let own = unsafe { core::ptr::read_volatile(&raw const OWN_WORD) };
    if own != 0x5a5a_a5a5 {
        exit_fail_with(format_args!("prober: own RAM read {own:#x}"));
    }
    if let Some((base, size)) = platform::ram() {
        let last = (base + size - 4) as usize;
        // SAFETY: the last word of the RAM the device tree gives this partition: mapped
        // (identity map) and not used by anything the read could disturb.
        let _ = unsafe { core::ptr::read_volatile(last as *const u32) };
    }
    println!("prober: reading its own RAM ok");
    println!("prober: touching {PROBE_ADDRESS:#x} outside its map");
    // SAFETY: deliberately reads outside the partition; the hypervisor stops the guest (or,
    // on bare QEMU, the read aborts into the runtime's fatal-exception report). Reading has
    // no effect on the guest's own memory either way.
    let value = unsafe { core::ptr::read_volatile(PROBE_ADDRESS as *const u32) };
    println!("prober: survived, read {value:#x}");
    exit_fail("prober: the read outside its map was not stopped")
}
