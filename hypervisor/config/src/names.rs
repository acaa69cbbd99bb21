//! Names: VM, board and controller identifiers, shared-memory region names and globs.

/// Longest region name or glob: 31 bytes plus NUL fill the QNX factory page's 32-byte field.
pub const NAME_MAX: usize = 31;

/// Checks an identifier (`system`, `board`, ioapic `name`): `[A-Za-z0-9_-]{1,31}`.
pub(crate) fn check_identifier(text: &str, what: &str) -> Result<(), String> {
    if text.is_empty() || text.len() > NAME_MAX {
        return Err(format!(
            "{what} `{text}` must be 1 to {NAME_MAX} characters long"
        ));
    }
    match text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        Some(bad) => Err(format!(
            "{what} `{text}` holds `{bad}`; use only letters, digits, `_` and `-`"
        )),
        None => Ok(()),
    }
}

/// Checks the characters and length of a name part: printable ASCII, no glob characters,
/// no comma (it separates `create` and `subst` arguments). `allow_empty` for `subst` parts.
fn check_name_text(text: &str, what: &str, allow_empty: bool) -> Result<(), String> {
    if text.is_empty() && !allow_empty {
        return Err(format!("{what} must not be empty"));
    }
    if text.len() > NAME_MAX {
        return Err(format!(
            "{what} `{text}` is {} bytes long; at most {NAME_MAX} are allowed",
            text.len()
        ));
    }
    if let Some(bad) = text.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "{what} `{text}` holds {bad:?}; only printable ASCII is allowed"
        ));
    }
    if let Some(bad) = text.chars().find(|c| matches!(c, '*' | '?' | '[' | ',')) {
        return Err(format!("{what} `{text}` must not hold `{bad}`"));
    }
    Ok(())
}

/// Checks a shared-memory region name (guest-visible or host): 1 to 31 printable bytes,
/// none of `* ? [ ,`.
pub(crate) fn check_region_name(text: &str, what: &str) -> Result<(), String> {
    check_name_text(text, what, false)
}

/// Checks one side of `subst OLD,NEW`: like a region name, but may be empty.
pub(crate) fn check_subst_part(text: &str, what: &str) -> Result<(), String> {
    check_name_text(text, what, true)
}

/// Checks an `allow`/`deny` glob: 1 to 31 printable bytes, every `[` closed by a `]`.
pub(crate) fn check_glob(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("the glob must not be empty".to_string());
    }
    if text.len() > NAME_MAX {
        return Err(format!(
            "glob `{text}` is {} bytes long; at most {NAME_MAX} are allowed",
            text.len()
        ));
    }
    if let Some(bad) = text.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "glob `{text}` holds {bad:?}; only printable ASCII is allowed"
        ));
    }
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let after = rest.get(open.saturating_add(1)..).unwrap_or_default();
        // A `]` right after `[` (or `[!`) is a member of the set, as in the shell.
        let skip = match after.as_bytes() {
            [b'!', b']', ..] => 2,
            [b'!', ..] | [b']', ..] => 1,
            _ => 0,
        };
        let Some(close) = after.get(skip..).and_then(|set| set.find(']')) else {
            return Err(format!("glob `{text}` has a `[` without a closing `]`"));
        };
        rest = after
            .get(skip.saturating_add(close).saturating_add(1)..)
            .unwrap_or_default();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(check_identifier("ping-1_x", "VM name").is_ok());
        assert!(check_identifier(&"a".repeat(31), "VM name").is_ok());
        assert!(
            check_identifier(&"a".repeat(32), "VM name")
                .unwrap_err()
                .contains("1 to 31")
        );
        assert!(
            check_identifier("", "VM name")
                .unwrap_err()
                .contains("1 to 31")
        );
        assert!(
            check_identifier("pi.ng", "VM name")
                .unwrap_err()
                .contains("`.`")
        );
    }

    #[test]
    fn region_names() {
        assert!(check_region_name("TEST1", "region name").is_ok());
        assert!(check_region_name("a/b:c.d", "region name").is_ok());
        assert!(check_region_name(&"r".repeat(31), "region name").is_ok());
        let long = check_region_name(&"r".repeat(32), "region name").unwrap_err();
        assert!(long.contains("32 bytes long"), "{long}");
        assert!(
            check_region_name("", "region name")
                .unwrap_err()
                .contains("empty")
        );
        assert!(
            check_region_name("te*st", "region name")
                .unwrap_err()
                .contains("`*`")
        );
        assert!(
            check_region_name("te?st", "region name")
                .unwrap_err()
                .contains("`?`")
        );
        assert!(
            check_region_name("t\u{e9}st", "region name")
                .unwrap_err()
                .contains("printable")
        );
        assert!(check_subst_part("", "subst OLD").is_ok());
    }

    #[test]
    fn globs() {
        for glob in [
            "test*", "pluto", "?x", "[abc]*", "[!a]", "[]]", "[!]]x", "a]",
        ] {
            assert!(check_glob(glob).is_ok(), "{glob}");
        }
        assert!(check_glob("[abc").unwrap_err().contains("closing"));
        assert!(check_glob("a[]").unwrap_err().contains("closing"));
        assert!(check_glob("").unwrap_err().contains("empty"));
        assert!(
            check_glob(&"g".repeat(32))
                .unwrap_err()
                .contains("at most 31")
        );
    }
}
