//! The architectural exception vectors 0..32: names for reports, and which push an error code.

/// The mnemonic and name of exception `vector`.
pub fn name(vector: u64) -> (&'static str, &'static str) {
    match vector {
        0 => ("#DE", "divide error"),
        1 => ("#DB", "debug"),
        2 => ("NMI", "non-maskable interrupt"),
        3 => ("#BP", "breakpoint"),
        4 => ("#OF", "overflow"),
        5 => ("#BR", "bound range exceeded"),
        6 => ("#UD", "invalid opcode"),
        7 => ("#NM", "device not available"),
        8 => ("#DF", "double fault"),
        10 => ("#TS", "invalid TSS"),
        11 => ("#NP", "segment not present"),
        12 => ("#SS", "stack-segment fault"),
        13 => ("#GP", "general protection"),
        14 => ("#PF", "page fault"),
        16 => ("#MF", "x87 floating-point error"),
        17 => ("#AC", "alignment check"),
        18 => ("#MC", "machine check"),
        19 => ("#XM", "SIMD floating-point exception"),
        20 => ("#VE", "virtualization exception"),
        21 => ("#CP", "control protection"),
        28 => ("#HV", "hypervisor injection"),
        29 => ("#VC", "VMM communication"),
        30 => ("#SX", "security exception"),
        32.. => ("INT", "interrupt"),
        _ => ("#??", "reserved vector"),
    }
}

/// Whether the CPU pushes an error code for exception `vector`.
pub const fn has_error_code(vector: u64) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// Explains a page-fault error code: `(read|write|instruction fetch) of a (not-present page |
/// protection violation)`.
pub fn describe_page_fault(error_code: u64) -> &'static str {
    let present = error_code & 1 != 0;
    let write = error_code & 2 != 0;
    let fetch = error_code & 0x10 != 0;
    match (fetch, write, present) {
        (true, _, false) => "instruction fetch from a not-present page",
        (true, _, true) => "instruction fetch from a non-executable page",
        (false, true, false) => "write to a not-present page",
        (false, true, true) => "write to a read-only page",
        (false, false, false) => "read of a not-present page",
        (false, false, true) => "read denied by the page's protection",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_error_codes() {
        assert_eq!(name(14), ("#PF", "page fault"));
        assert_eq!(name(15).0, "#??");
        assert_eq!(name(40).1, "interrupt");
        assert!(has_error_code(14) && has_error_code(8) && has_error_code(13));
        assert!(!has_error_code(6) && !has_error_code(3) && !has_error_code(18));
    }

    #[test]
    fn page_fault_error_codes() {
        assert_eq!(describe_page_fault(0), "read of a not-present page");
        assert_eq!(describe_page_fault(3), "write to a read-only page");
        assert_eq!(
            describe_page_fault(0x11),
            "instruction fetch from a non-executable page"
        );
    }
}
