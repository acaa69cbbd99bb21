//! Diagnostics: every mistake becomes a `file:line: message`, collected rather than stopping early.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where an item of the configuration was written: file and 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// The file as it was named to the parser (board-relative paths already joined).
    pub file: PathBuf,
    /// 1-based line number; 0 only for errors about a whole file (it could not be read).
    pub line: u32,
}

impl Location {
    /// A location in `file` at `line`.
    pub fn new(file: impl Into<PathBuf>, line: u32) -> Self {
        Self {
            file: file.into(),
            line,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One error: prints as `file:line: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// File the error is in.
    pub file: PathBuf,
    /// 1-based line of the offending token (0: the file as a whole).
    pub line: u32,
    /// What is wrong, in one sentence.
    pub message: String,
}

impl Diagnostic {
    /// An error at `at`.
    pub fn new(at: &Location, message: impl Into<String>) -> Self {
        Self {
            file: at.file.clone(),
            line: at.line,
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
        }
    }
}

/// All the errors found in a configuration; `Display` prints one per line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Errors {
    /// In the order they were found: file by file, mostly line by line.
    pub diagnostics: Vec<Diagnostic>,
}

impl Errors {
    /// No errors yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an error at `at`.
    pub fn push(&mut self, at: &Location, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic::new(at, message));
    }

    /// Appends all of `other`'s errors.
    pub fn extend(&mut self, other: Errors) {
        self.diagnostics.extend(other.diagnostics);
    }

    /// True when nothing was reported.
    pub fn is_empty(&self) -> bool {
        self.diagnostics.is_empty()
    }

    /// How many errors were reported.
    pub fn len(&self) -> usize {
        self.diagnostics.len()
    }

    /// The errors, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.diagnostics.iter()
    }

    /// `Ok(value)` when nothing was reported, otherwise `Err(self)`.
    pub fn into_result<T>(self, value: T) -> Result<T, Errors> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, diagnostic) in self.diagnostics.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Errors {}

impl IntoIterator for Errors {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.diagnostics.into_iter()
    }
}

impl<'a> IntoIterator for &'a Errors {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.diagnostics.iter()
    }
}

/// Errors of one file being parsed: turns line numbers into locations.
#[derive(Debug)]
pub(crate) struct FileErrors {
    file: PathBuf,
    errors: Errors,
}

impl FileErrors {
    pub(crate) fn new(file: &Path) -> Self {
        Self {
            file: file.to_path_buf(),
            errors: Errors::new(),
        }
    }

    /// The location of `line` in this file.
    pub(crate) fn at(&self, line: u32) -> Location {
        Location::new(self.file.clone(), line)
    }

    pub(crate) fn error(&mut self, line: u32, message: impl Into<String>) {
        let at = self.at(line);
        self.errors.push(&at, message);
    }

    /// The errors, sorted by line (stable: one line's errors keep their order).
    pub(crate) fn into_errors(self) -> Errors {
        let mut errors = self.errors;
        errors.diagnostics.sort_by_key(|diagnostic| diagnostic.line);
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_diagnostic_per_line() {
        let mut errors = Errors::new();
        errors.push(&Location::new("a.qvmconf", 3), "first");
        errors.push(&Location::new("b.board", 0), "cannot read");
        assert_eq!(
            errors.to_string(),
            "a.qvmconf:3: first\nb.board: cannot read"
        );
        assert_eq!(errors.len(), 2);
    }

    #[test]
    fn into_result_is_ok_only_without_errors() {
        assert_eq!(Errors::new().into_result(5), Ok(5));
        let mut errors = Errors::new();
        errors.push(&Location::new("x", 1), "bad");
        assert!(errors.into_result(5).is_err());
    }
}
