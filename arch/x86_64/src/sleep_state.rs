//! The ACPI S5 (soft-off) sleep type, found in the DSDT's `_S5_` package without an AML
//! interpreter.
//!
//! Power-off writes SLP_TYP | SLP_EN to the PM1 control registers; SLP_TYP for S5 is the first
//! element(s) of the `\_S5_` package. The `acpi` crate's AML interpreter needs a nightly
//! compiler, so this recognises the one encoding firmware uses for it: `NameOp "_S5_"
//! PackageOp PkgLength NumElements {ByteConst | Zero | One}...`.

/// The S5 sleep types for PM1a and PM1b, if the AML defines `_S5_` in the usual form.
pub fn s5_sleep_types(aml: &[u8]) -> Option<(u8, u8)> {
    const NAME_OP: u8 = 0x08;
    const PACKAGE_OP: u8 = 0x12;
    let start = aml.windows(4).position(|window| window == b"_S5_")?;
    // `Name(_S5_, ...)` or `Name(\_S5_, ...)`.
    let before = aml.get(start.checked_sub(1)?).copied()?;
    let named = before == NAME_OP
        || (before == b'\\' && start >= 2 && aml.get(start - 2) == Some(&NAME_OP));
    if !named || aml.get(start + 4) != Some(&PACKAGE_OP) {
        return None;
    }
    let mut at = start + 5;
    // PkgLength: bits 7:6 of the lead byte say how many more bytes follow.
    let lead = *aml.get(at)?;
    at += 1 + usize::from(lead >> 6);
    at += 1; // NumElements
    let mut value = || -> Option<u8> {
        let byte = *aml.get(at)?;
        match byte {
            0x0a => {
                let value = *aml.get(at + 1)?;
                at += 2;
                Some(value)
            }
            0x00 | 0x01 => {
                at += 1;
                Some(byte)
            }
            _ => None,
        }
    };
    let first = value()?;
    let second = value().unwrap_or(0);
    Some((first, second))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_constants_after_name() {
        // Name (_S5, Package (0x04) { 0x05, 0x05, Zero, Zero })
        let aml = [
            0x10, 0x08, b'_', b'S', b'5', b'_', 0x12, 0x0a, 0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00,
            0x00,
        ];
        assert_eq!(s5_sleep_types(&aml), Some((5, 5)));
    }

    #[test]
    fn zero_ops_and_root_prefix() {
        // Name (\_S5, Package (0x04) { Zero, Zero, Zero, Zero }) as QEMU's q35 DSDT has it.
        let aml = [
            0x08, b'\\', b'_', b'S', b'5', b'_', 0x12, 0x06, 0x04, 0x00, 0x00, 0x00, 0x00,
        ];
        assert_eq!(s5_sleep_types(&aml), Some((0, 0)));
    }

    #[test]
    fn anything_else_is_none() {
        assert_eq!(s5_sleep_types(b"no sleep states here"), None);
        assert_eq!(s5_sleep_types(b"_S5_"), None);
        // A method, not a package.
        assert_eq!(
            s5_sleep_types(&[0x14, b'_', b'S', b'5', b'_', 0x12, 0x03]),
            None
        );
        // Truncated.
        assert_eq!(
            s5_sleep_types(&[0x08, b'_', b'S', b'5', b'_', 0x12, 0x0a]),
            None
        );
    }
}
