//! Multiplexes partitions' console output onto the one physical console: each partition's
//! bytes are gathered into lines, and each whole line is printed with a `[name]` prefix, so
//! lines of concurrent partitions interleave but never mix.

use alloc::string::String;
use alloc::vec::Vec;

/// Longest line kept before it is flushed without a newline.
pub const LINE_LIMIT: usize = 200;

/// One partition's pending console line.
#[derive(Debug)]
pub struct ConsoleLine {
    prefix: String,
    pending: Vec<u8>,
}

impl ConsoleLine {
    /// A line buffer printing with `[name] `.
    pub fn new(name: &str) -> Self {
        Self {
            prefix: alloc::format!("[{name}] "),
            pending: Vec::with_capacity(LINE_LIMIT),
        }
    }

    /// Adds a byte; returns a complete, prefixed line (without the newline) when one ends.
    /// Carriage returns are dropped; non-printable bytes become `.`.
    pub fn push(&mut self, byte: u8) -> Option<String> {
        match byte {
            b'\r' => None,
            b'\n' => Some(self.take()),
            _ => {
                let shown = if byte == b'\t' || (0x20..0x7f).contains(&byte) {
                    byte
                } else {
                    b'.'
                };
                self.pending.push(shown);
                (self.pending.len() >= LINE_LIMIT).then(|| self.take())
            }
        }
    }

    /// The partial line, if any, prefixed (used when a partition stops mid-line).
    pub fn flush(&mut self) -> Option<String> {
        (!self.pending.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> String {
        let mut line = self.prefix.clone();
        line.extend(self.pending.drain(..).map(char::from));
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_whole_lines() {
        let mut line = ConsoleLine::new("ping");
        let out: Vec<String> = b"hello\r\nworld\x07\n"
            .iter()
            .filter_map(|&b| line.push(b))
            .collect();
        assert_eq!(out, ["[ping] hello", "[ping] world."]);
        assert_eq!(line.flush(), None);
        line.push(b'x');
        assert_eq!(line.flush().as_deref(), Some("[ping] x"));
    }

    #[test]
    fn long_lines_are_split() {
        let mut line = ConsoleLine::new("a");
        let out: Vec<String> = core::iter::repeat_n(b'z', LINE_LIMIT + 1)
            .filter_map(|b| line.push(b))
            .collect();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), LINE_LIMIT + 4);
    }
}
