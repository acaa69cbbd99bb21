//! Splits qvm-syntax text into tokens and groups them into items, one per top-level keyword.
//!
//! `#` starts a comment anywhere on a line outside quotes; tokens are separated by
//! whitespace, and `"..."` is one token (without the quotes) that may hold whitespace and `#`
//! but no `"` (an unterminated quote is an error at its line). A line whose first token is a
//! keyword starts a new item. Items whose keyword is listed as multi-line
//! (`vdev`) take every following line that does not start with a keyword as more options.

use crate::error::FileErrors;
use crate::model::Spanned;

/// One whitespace-separated word and the line it is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token<'a> {
    pub text: &'a str,
    pub line: u32,
}

/// A keyword and the tokens that follow it (across lines for multi-line items).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item<'a> {
    pub keyword: Token<'a>,
    pub args: Vec<Token<'a>>,
}

/// The keywords of one kind of file.
#[derive(Debug)]
pub(crate) struct Grammar {
    /// What kind of file this is, for messages ("VM file").
    pub file_kind: &'static str,
    /// Top-level keywords.
    pub keywords: &'static [&'static str],
    /// Keywords whose items continue on the following non-keyword lines.
    pub multi_line: &'static [&'static str],
}

/// The tokens of one line, comments removed; `Err` for an unterminated quote.
fn line_tokens(line: &str, line_number: u32) -> Result<Vec<Token<'_>>, String> {
    let mut tokens = Vec::new();
    let mut rest = line;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() || rest.starts_with('#') {
            return Ok(tokens);
        }
        let (text, after) = if let Some(quoted) = rest.strip_prefix('"') {
            let Some(end) = quoted.find('"') else {
                return Err(String::from(
                    "unterminated quote: a quoted value ends with `\"` on the same line",
                ));
            };
            quoted.split_at(end)
        } else {
            let end = rest
                .find(|c: char| c.is_whitespace() || c == '#')
                .unwrap_or(rest.len());
            rest.split_at(end)
        };
        tokens.push(Token {
            text,
            line: line_number,
        });
        // Past a closing quote: it is not part of the next token.
        rest = after.strip_prefix('"').unwrap_or(after);
    }
}

/// The tokens of each non-empty line, comments removed; lines with errors are reported and
/// skipped.
fn lines<'a>(
    text: &'a str,
    errors: &mut FileErrors,
) -> impl Iterator<Item = Vec<Token<'a>>> + use<'a> {
    let mut all = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = u32::try_from(index.saturating_add(1)).unwrap_or(u32::MAX);
        match line_tokens(line, line_number) {
            Ok(tokens) if !tokens.is_empty() => all.push(tokens),
            Ok(_) => {}
            Err(message) => errors.error(line_number, message),
        }
    }
    all.into_iter()
}

/// Groups `text` into items; a line that starts with neither a keyword nor (after a
/// multi-line item) an option is reported as an unknown keyword.
pub(crate) fn items<'a>(
    text: &'a str,
    grammar: &Grammar,
    errors: &mut FileErrors,
) -> Vec<Item<'a>> {
    let mut items: Vec<Item<'a>> = Vec::new();
    // After an unknown keyword its continuation lines are dropped quietly: one error, not many.
    let mut continues = false;
    for tokens in lines(text, errors) {
        let mut tokens = tokens.into_iter();
        let Some(first) = tokens.next() else {
            continue;
        };
        if grammar.keywords.contains(&first.text) {
            continues = grammar.multi_line.contains(&first.text);
            items.push(Item {
                keyword: first,
                args: tokens.collect(),
            });
        } else if continues {
            if let Some(item) = items.last_mut() {
                item.args.push(first);
                item.args.extend(tokens);
            }
        } else {
            errors.error(
                first.line,
                format!(
                    "unknown keyword `{}` in a {} (keywords: {})",
                    first.text,
                    grammar.file_kind,
                    grammar.keywords.join(", ")
                ),
            );
            items.push(Item {
                keyword: Token {
                    text: "",
                    line: first.line,
                },
                args: Vec::new(),
            });
            continues = true;
        }
    }
    // Placeholders for unknown keywords only served to swallow their continuation lines.
    items.retain(|item| !item.keyword.text.is_empty());
    items
}

/// The single argument of `KEYWORD VALUE`; `value` names it in messages (`NAME`).
pub(crate) fn single_arg<'a>(
    item: &Item<'a>,
    value: &str,
    errors: &mut FileErrors,
) -> Option<Token<'a>> {
    let keyword = item.keyword;
    let mut args = item.args.iter();
    let Some(first) = args.next() else {
        errors.error(
            keyword.line,
            format!(
                "`{}` needs a value: `{} {value}`",
                keyword.text, keyword.text
            ),
        );
        return None;
    };
    if let Some(extra) = args.next() {
        errors.error(
            extra.line,
            format!(
                "unexpected `{}` after `{} {}`",
                extra.text, keyword.text, first.text
            ),
        );
    }
    Some(*first)
}

/// Reads `NAME VALUE` pairs for `context` (`vdev shmem`), accepting the option names in
/// `known`. An unknown option is reported and skipped with its value; an option without a
/// value on its own line is reported.
pub(crate) fn options<'a>(
    tokens: &[Token<'a>],
    known: &[&str],
    context: &str,
    errors: &mut FileErrors,
) -> Vec<(Token<'a>, Token<'a>)> {
    let mut pairs = Vec::new();
    let mut index = 0usize;
    while let Some(name) = tokens.get(index) {
        let value = tokens
            .get(index.saturating_add(1))
            .filter(|value| value.line == name.line);
        if !known.contains(&name.text) {
            errors.error(
                name.line,
                format!(
                    "unknown option `{}` for {context} (options: {})",
                    name.text,
                    known.join(", ")
                ),
            );
            // Skip its value too, unless that looks like the next option.
            let skip_value = value.is_some_and(|value| !known.contains(&value.text));
            index = index.saturating_add(if skip_value { 2 } else { 1 });
            continue;
        }
        match value {
            Some(value) => {
                pairs.push((*name, *value));
                index = index.saturating_add(2);
            }
            None => {
                errors.error(
                    name.line,
                    format!(
                        "option `{}` of {context} needs a value on the same line",
                        name.text
                    ),
                );
                index = index.saturating_add(1);
            }
        }
    }
    pairs
}

/// A keyword that may appear at most once: the line it was first seen on and its value.
#[derive(Debug)]
pub(crate) struct Single<T> {
    pub line: Option<u32>,
    pub value: Option<Spanned<T>>,
}

impl<T> Default for Single<T> {
    fn default() -> Self {
        Self {
            line: None,
            value: None,
        }
    }
}

impl<T> Single<T> {
    /// True the first time; after that reports `item` as a duplicate.
    pub(crate) fn claim(&mut self, item: &Item<'_>, errors: &mut FileErrors) -> bool {
        match self.line {
            None => {
                self.line = Some(item.keyword.line);
                true
            }
            Some(first) => {
                let message = format!(
                    "duplicate `{}` (first given at line {first})",
                    item.keyword.text
                );
                errors.error(item.keyword.line, message);
                false
            }
        }
    }
}

/// Reports `result`'s error at `line`; gives its value otherwise.
pub(crate) fn report<T>(
    result: Result<T, String>,
    line: u32,
    errors: &mut FileErrors,
) -> Option<T> {
    result.map_err(|message| errors.error(line, message)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const GRAMMAR: Grammar = Grammar {
        file_kind: "test file",
        keywords: &["system", "vdev", "cpu"],
        multi_line: &["vdev"],
    };

    fn texts<'a>(tokens: &[Token<'a>]) -> Vec<(&'a str, u32)> {
        tokens
            .iter()
            .map(|token| (token.text, token.line))
            .collect()
    }

    #[test]
    fn comments_and_blank_lines_are_skipped() {
        let mut errors = FileErrors::new(Path::new("t"));
        let text = "# header\n\nsystem ping # the name\n   # indented comment\ncpu#glued\n";
        let items = items(text, &GRAMMAR, &mut errors);
        assert!(errors.into_errors().is_empty());
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[0].keyword,
            Token {
                text: "system",
                line: 3
            }
        );
        assert_eq!(texts(&items[0].args), [("ping", 3)]);
        assert_eq!(items[1].keyword.text, "cpu");
        assert!(items[1].args.is_empty());
    }

    #[test]
    fn vdev_options_continue_on_following_lines() {
        let mut errors = FileErrors::new(Path::new("t"));
        let text = "vdev shmem\r\n  create A,4K\n\tallow a*  deny b\ncpu\n";
        let items = items(text, &GRAMMAR, &mut errors);
        assert!(errors.into_errors().is_empty());
        assert_eq!(items.len(), 2);
        assert_eq!(
            texts(&items[0].args),
            [
                ("shmem", 1),
                ("create", 2),
                ("A,4K", 2),
                ("allow", 3),
                ("a*", 3),
                ("deny", 3),
                ("b", 3)
            ]
        );
    }

    #[test]
    fn unknown_keyword_is_reported_once() {
        let mut errors = FileErrors::new(Path::new("t.qvmconf"));
        let text = "system a\nvdv shmem\n  create A,4K\ncpu runmask 1\n  runmask 2\n";
        let items = items(text, &GRAMMAR, &mut errors);
        let errors = errors.into_errors();
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "t.qvmconf:2: unknown keyword `vdv` in a test file (keywords: system, vdev, cpu)",
                "t.qvmconf:5: unknown keyword `runmask` in a test file (keywords: system, vdev, cpu)",
            ]
        );
        assert_eq!(items.len(), 2);
    }

    #[test]
    fn options_pair_names_with_values() {
        let mut errors = FileErrors::new(Path::new("t"));
        let tokens = [
            Token {
                text: "loc",
                line: 1,
            },
            Token {
                text: "0x1000",
                line: 1,
            },
            Token {
                text: "speed",
                line: 1,
            },
            Token {
                text: "9600",
                line: 1,
            },
            Token {
                text: "intr",
                line: 2,
            },
            Token {
                text: "gic:33",
                line: 2,
            },
            Token {
                text: "bogus",
                line: 3,
            },
            Token {
                text: "loc",
                line: 3,
            },
            Token {
                text: "0x2000",
                line: 3,
            },
            Token {
                text: "intr",
                line: 4,
            },
            Token {
                text: "gic:34",
                line: 5,
            },
        ];
        let pairs = options(&tokens, &["loc", "intr"], "vdev pl011", &mut errors);
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (n.text, v.text)).collect();
        assert_eq!(
            pairs,
            [("loc", "0x1000"), ("intr", "gic:33"), ("loc", "0x2000")]
        );
        let errors = errors.into_errors();
        let lines: Vec<u32> = errors.iter().map(|d| d.line).collect();
        assert_eq!(lines, [1, 3, 4, 5]);
        assert!(
            errors.diagnostics[0]
                .message
                .contains("unknown option `speed` for vdev pl011 (options: loc, intr)")
        );
        assert!(
            errors.diagnostics[2]
                .message
                .contains("`intr` of vdev pl011 needs a value")
        );
    }

    #[test]
    fn single_arg_wants_exactly_one() {
        let mut errors = FileErrors::new(Path::new("t"));
        let item = Item {
            keyword: Token {
                text: "system",
                line: 1,
            },
            args: vec![],
        };
        assert_eq!(single_arg(&item, "NAME", &mut errors), None);
        let item = Item {
            keyword: Token {
                text: "system",
                line: 2,
            },
            args: vec![Token { text: "a", line: 2 }, Token { text: "b", line: 2 }],
        };
        assert_eq!(
            single_arg(&item, "NAME", &mut errors).map(|t| t.text),
            Some("a")
        );
        let errors = errors.into_errors();
        assert_eq!(
            errors.diagnostics[0].message,
            "`system` needs a value: `system NAME`"
        );
        assert_eq!(
            errors.diagnostics[1].message,
            "unexpected `b` after `system a`"
        );
    }
}
