//! Numbers and sizes: decimal or `0x` hex, sizes with an optional K/M/G suffix, overflow checked.

/// The page size every RAM range, region and MMIO window is a multiple of.
pub const PAGE_SIZE: u64 = 0x1000;

/// The block size the RAM allocator prefers for large ranges (one stage-2/EPT block).
pub const LARGE_PAGE_SIZE: u64 = 0x20_0000;

/// Why a number did not parse.
enum NumberError {
    /// Not decimal digits, nor `0x` and hex digits.
    Syntax,
    /// More than 64 bits.
    Overflow,
}

fn number(text: &str) -> Result<u64, NumberError> {
    let (digits, radix) = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (text, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(NumberError::Syntax);
    }
    u64::from_str_radix(digits, radix).map_err(|_| NumberError::Overflow)
}

fn too_large(text: &str) -> String {
    format!("`{text}` is too large (more than 64 bits)")
}

/// Parses a plain number: decimal (`4096`) or hex (`0x1000`); no sign, no suffix.
pub(crate) fn parse_number(text: &str) -> Result<u64, String> {
    number(text).map_err(|error| match error {
        NumberError::Syntax => format!("`{text}` is not a number (decimal, or hex with 0x)"),
        NumberError::Overflow => too_large(text),
    })
}

/// Parses a number that must fit in 32 bits.
pub(crate) fn parse_u32(text: &str) -> Result<u32, String> {
    let value = parse_number(text)?;
    u32::try_from(value).map_err(|_| format!("`{text}` is too large (more than 32 bits)"))
}

/// Parses a size: a number with an optional `K`, `M` or `G` suffix (either case), binary units.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let (number_text, shift) = match text.char_indices().last() {
        Some((index, 'k' | 'K')) => (text.get(..index), 10),
        Some((index, 'm' | 'M')) => (text.get(..index), 20),
        Some((index, 'g' | 'G')) => (text.get(..index), 30),
        _ => (Some(text), 0),
    };
    let value = number(number_text.unwrap_or_default()).map_err(|error| match error {
        NumberError::Syntax => {
            format!("`{text}` is not a size (decimal or 0x hex, optional K, M or G suffix)")
        }
        NumberError::Overflow => too_large(text),
    })?;
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| too_large(text))
}

/// Checks that `size` is a non-zero whole number of pages; `what` names it in the message.
pub(crate) fn check_page_size(size: u64, what: &str) -> Result<(), String> {
    if size == 0 {
        Err(format!("{what} must not be zero"))
    } else if !size.is_multiple_of(PAGE_SIZE) {
        Err(format!(
            "{what} {size:#x} is not a multiple of the 4 KiB page size"
        ))
    } else {
        Ok(())
    }
}

/// Checks that `address` is page-aligned; `what` names it in the message.
pub(crate) fn check_page_aligned(address: u64, what: &str) -> Result<(), String> {
    if address.is_multiple_of(PAGE_SIZE) {
        Ok(())
    } else {
        Err(format!("{what} {address:#x} is not 4 KiB page-aligned"))
    }
}

/// Checks that `size` bytes from `base` do not run past the end of the address space.
pub(crate) fn check_end(base: u64, size: u64, what: &str) -> Result<(), String> {
    match base.checked_add(size) {
        Some(_) => Ok(()),
        None => Err(format!(
            "{what} {base:#x} plus size {size:#x} overflows the 64-bit address space"
        )),
    }
}

/// Formats a byte count for messages: `64 MiB`, `4 KiB`, or hex when not a whole unit.
pub(crate) fn format_size(size: u64) -> String {
    const UNITS: [(u32, &str); 3] = [(30, "GiB"), (20, "MiB"), (10, "KiB")];
    for (shift, unit) in UNITS {
        let unit_size = 1u64 << shift;
        if size >= unit_size && size.is_multiple_of(unit_size) {
            return format!("{} {unit}", size >> shift);
        }
    }
    format!("{size:#x} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_decimal_or_hex() {
        assert_eq!(parse_number("4096"), Ok(4096));
        assert_eq!(parse_number("0x1000"), Ok(0x1000));
        assert_eq!(parse_number("0XfF"), Ok(0xff));
        assert_eq!(parse_number("010"), Ok(10));
        assert_eq!(parse_number("0xffffffffffffffff"), Ok(u64::MAX));
    }

    #[test]
    fn bad_numbers_are_refused() {
        for text in ["", "0x", "+5", "-1", "12a", "0x1g", "64M", "1_000", "0b101"] {
            let error = parse_number(text).unwrap_err();
            assert!(error.contains("is not a number"), "{text}: {error}");
        }
    }

    #[test]
    fn number_overflow_is_an_error() {
        let error = parse_number("0x10000000000000000").unwrap_err();
        assert!(error.contains("too large"), "{error}");
        let error = parse_number("18446744073709551616").unwrap_err();
        assert!(error.contains("too large"), "{error}");
        assert!(parse_u32("0x100000000").unwrap_err().contains("32 bits"));
        assert_eq!(parse_u32("0xffffffff"), Ok(u32::MAX));
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("0x10M"), Ok(16 << 20));
        assert_eq!(parse_size("0x100000"), Ok(0x10_0000));
        assert_eq!(parse_size("100"), Ok(100));
    }

    #[test]
    fn bad_sizes_are_refused() {
        for text in ["", "M", "64T", "64MB", "1.5G", "0xM", "-4K"] {
            let error = parse_size(text).unwrap_err();
            assert!(error.contains("is not a size"), "{text}: {error}");
        }
        let error = parse_size("17179869184G").unwrap_err();
        assert!(error.contains("too large"), "{error}");
        let error = parse_size("99999999999999999999K").unwrap_err();
        assert!(error.contains("too large"), "{error}");
    }

    #[test]
    fn page_checks() {
        assert!(check_page_size(0x2000, "size").is_ok());
        assert!(check_page_size(0, "size").unwrap_err().contains("zero"));
        assert!(
            check_page_size(0x1800, "size")
                .unwrap_err()
                .contains("page size")
        );
        assert!(check_page_aligned(0x4000_0000, "base").is_ok());
        assert!(
            check_page_aligned(0x4000_0800, "base")
                .unwrap_err()
                .contains("aligned")
        );
        assert!(
            check_end(u64::MAX - 0xfff, 0x1000, "base")
                .unwrap_err()
                .contains("overflows")
        );
        assert!(check_end(u64::MAX - 0x1fff, 0x1000, "base").is_ok());
    }

    #[test]
    fn sizes_format_in_whole_units() {
        assert_eq!(format_size(64 << 20), "64 MiB");
        assert_eq!(format_size(3 << 30), "3 GiB");
        assert_eq!(format_size(0x1000), "4 KiB");
        assert_eq!(format_size(0x1800), "6 KiB");
        assert_eq!(format_size(100), "0x64 bytes");
    }
}
