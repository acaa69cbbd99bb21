//! Shell globs for restriction lists: `*`, `?` and `[...]` (ranges, `[!...]`/`[^...]`), case-sensitive.
//!
//! A `]` right after `[` (or after `[!`) is a member, not the end; a `-` first or last in a
//! class is a member. A malformed pattern never panics: a `[` without its `]` is a literal `[`.

/// Whether the whole of `name` matches `pattern`.
pub fn matches(pattern: &[u8], name: &[u8]) -> bool {
    let mut p = 0usize;
    let mut n = 0usize;
    // Where to resume after the last `*`: the pattern after it, and the name position it
    // has swallowed up to.
    let mut star: Option<(usize, usize)> = None;
    loop {
        let step = match (pattern.get(p), name.get(n)) {
            (Some(b'*'), _) => {
                star = Some((p + 1, n));
                p += 1;
                continue;
            }
            (None, None) => return true,
            (Some(&token), Some(&byte)) => match_one(pattern.get(p..).unwrap_or(&[]), token, byte),
            _ => None,
        };
        if let Some(pattern_bytes) = step {
            p += pattern_bytes;
            n += 1;
            continue;
        }
        // Mismatch: let the last `*` swallow one more byte, if any are left.
        match star {
            Some((after_star, swallowed)) if swallowed < name.len() => {
                star = Some((after_star, swallowed + 1));
                p = after_star;
                n = swallowed + 1;
            }
            _ => return false,
        }
    }
}

/// Whether the pattern token at the start of `rest` (its first byte is `token`) matches
/// `byte`: `Some(pattern bytes consumed)` or `None`.
fn match_one(rest: &[u8], token: u8, byte: u8) -> Option<usize> {
    match token {
        b'?' => Some(1),
        b'[' => match class(rest, byte) {
            Some((true, consumed)) => Some(consumed),
            Some((false, _)) => None,
            // Unclosed: a literal `[`.
            None => (byte == b'[').then_some(1),
        },
        literal => (literal == byte).then_some(1),
    }
}

/// Matches `byte` against the class at the start of `pattern` (which begins with `[`):
/// `Some((matched, bytes of the class))`, or `None` if the class has no closing `]`.
fn class(pattern: &[u8], byte: u8) -> Option<(bool, usize)> {
    let mut at = 1usize;
    let negated = matches!(pattern.get(at), Some(b'!' | b'^'));
    if negated {
        at += 1;
    }
    let mut first = true;
    let mut matched = false;
    loop {
        let low = *pattern.get(at)?;
        if low == b']' && !first {
            return Some((matched != negated, at + 1));
        }
        first = false;
        match (pattern.get(at + 1), pattern.get(at + 2)) {
            (Some(b'-'), Some(&high)) if high != b']' => {
                matched |= low <= byte && byte <= high;
                at += 3;
            }
            _ => {
                matched |= low == byte;
                at += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    fn m(pattern: &str, name: &str) -> bool {
        matches(pattern.as_bytes(), name.as_bytes())
    }

    #[test]
    fn literals_and_question_marks() {
        assert!(m("pluto", "pluto"));
        assert!(!m("pluto", "plutoplanet"));
        assert!(!m("pluto", "plut"));
        assert!(!m("Pluto", "pluto"));
        assert!(m("pl?to", "pluto"));
        assert!(!m("pl?to", "plto"));
        assert!(m("", ""));
        assert!(!m("", "a"));
    }

    #[test]
    fn stars() {
        assert!(m("*", ""));
        assert!(m("*", "anything"));
        assert!(m("test*", "test"));
        assert!(m("test*", "test1"));
        assert!(!m("test*", "tes"));
        assert!(!m("test*", "TEST1"));
        assert!(m("*mem", "foomem"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(m("a*b*c", "abcbc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("**x", "x"));
        assert!(m("*?", "a"));
        assert!(!m("*?", ""));
    }

    #[test]
    fn classes() {
        assert!(m("[abc]x", "bx"));
        assert!(!m("[abc]x", "dx"));
        assert!(m("v[0-9]", "v7"));
        assert!(!m("v[0-9]", "va"));
        assert!(m("v[!0-9]", "va"));
        assert!(m("v[^0-9]", "va"));
        assert!(!m("v[^0-9]", "v3"));
        assert!(m("[]]", "]"));
        assert!(m("[!]]", "a"));
        assert!(!m("[!]]", "]"));
        assert!(m("[a-]", "-"));
        assert!(m("[-a]", "-"));
        assert!(m("x[a-cx-z]*", "xyz"));
    }

    #[test]
    fn malformed_patterns_do_not_panic() {
        assert!(m("[", "["));
        assert!(m("a[b", "a[b"));
        assert!(!m("a[b", "ab"));
        assert!(m("[!", "[!"));
        assert!(!m("[]", "]"));
        assert!(m("[]", "[]"));
        assert!(m("*[", "x["));
        assert!(!m("[z-a]", "m"));
        for pattern in ["[", "[!", "[^", "[a-", "[]", "*[*", "?[", "[[[", "-]"] {
            for name in ["", "[", "a", "[a-", "]]]"] {
                let _ = m(pattern, name);
            }
        }
    }
}
