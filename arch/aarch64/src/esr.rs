//! Exception syndrome (ESR_ELx) decoding: names for exception classes in reports.

/// The exception class, ESR bits 31:26.
pub fn exception_class(esr: u64) -> u8 {
    ((esr >> 26) & 0x3f) as u8
}

/// A short description of an exception class.
pub fn class_name(class: u8) -> &'static str {
    match class {
        0x00 => "unknown reason",
        0x01 => "WFI/WFE",
        0x07 => "FP/SIMD access",
        0x0e => "illegal execution state",
        0x15 => "SVC (AArch64)",
        0x16 => "HVC (AArch64)",
        0x17 => "SMC (AArch64)",
        0x18 => "system register access",
        0x20 => "instruction abort from a lower EL",
        0x21 => "instruction abort at the same EL",
        0x22 => "PC alignment fault",
        0x24 => "data abort from a lower EL",
        0x25 => "data abort at the same EL",
        0x26 => "SP alignment fault",
        0x2f => "SError",
        0x3c => "BRK",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_data_abort() {
        let esr = 0x9600_0046;
        assert_eq!(exception_class(esr), 0x25);
        assert_eq!(
            class_name(exception_class(esr)),
            "data abort at the same EL"
        );
        assert_eq!(class_name(0x3f), "other");
    }
}
