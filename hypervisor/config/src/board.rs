//! Board files: the machine (`arch`, `cpus`, `ram`), what the hypervisor keeps, and the VMs.

use std::path::Path;

use crate::error::{Errors, FileErrors};
use crate::lexer::{self, Grammar, Item, Single, Token, report};
use crate::model::{Arch, Board, Console, MemoryRange, Spanned};
use crate::names::check_identifier;
use crate::numbers::{
    check_end, check_page_aligned, check_page_size, parse_number, parse_size, parse_u32,
};

/// The top-level keywords of a board file.
pub const BOARD_KEYWORDS: &[&str] = &[
    "board",
    "arch",
    "cpus",
    "ram",
    "hypervisor",
    "shmem-pool",
    "console",
    "vm",
];

/// Most physical CPUs a board may list.
pub const CPUS_MAX: u32 = 4096;

const GRAMMAR: Grammar = Grammar {
    file_kind: "board file",
    keywords: BOARD_KEYWORDS,
    multi_line: &[],
};

/// Parses a board file. `vm` paths are joined to the directory of `path`.
pub fn parse_board(path: &Path, text: &str) -> Result<Board, Errors> {
    let mut errors = FileErrors::new(path);
    let items = lexer::items(text, &GRAMMAR, &mut errors);
    let directory = path.parent().unwrap_or(Path::new(""));
    let mut name = Single::default();
    let mut arch = Single::default();
    let mut cpus = Single::default();
    let mut hypervisor = Single::default();
    let mut shmem_pool = Single::default();
    let mut console = Single::default();
    let mut ram = Vec::new();
    let mut vms = Vec::new();
    let (mut seen_ram, mut seen_vm) = (false, false);
    for item in &items {
        let at = errors.at(item.keyword.line);
        match item.keyword.text {
            "board" => {
                if name.claim(item, &mut errors)
                    && let Some(token) = lexer::single_arg(item, "NAME", &mut errors)
                    && report(
                        check_identifier(token.text, "board name"),
                        token.line,
                        &mut errors,
                    )
                    .is_some()
                {
                    name.value = Some(Spanned::new(token.text.to_string(), at));
                }
            }
            "arch" => {
                if arch.claim(item, &mut errors)
                    && let Some(token) = lexer::single_arg(item, "aarch64|x86_64", &mut errors)
                {
                    let value = match token.text {
                        "aarch64" => Some(Arch::Aarch64),
                        "x86_64" => Some(Arch::X86_64),
                        other => {
                            let message =
                                format!("unknown arch `{other}` (arches: aarch64, x86_64)");
                            errors.error(token.line, message);
                            None
                        }
                    };
                    arch.value = value.map(|value| Spanned::new(value, at));
                }
            }
            "cpus" => {
                if cpus.claim(item, &mut errors)
                    && let Some(token) = lexer::single_arg(item, "N", &mut errors)
                {
                    let count = parse_u32(token.text).and_then(|count| match count {
                        1..=CPUS_MAX => Ok(count),
                        _ => Err(format!("`cpus {count}`: a board has 1 to {CPUS_MAX} CPUs")),
                    });
                    cpus.value =
                        report(count, token.line, &mut errors).map(|count| Spanned::new(count, at));
                }
            }
            "ram" => {
                seen_ram = true;
                if let Some(token) = lexer::single_arg(item, "BASE,SIZE", &mut errors) {
                    ram.extend(
                        report(parse_range(token, "board ram"), token.line, &mut errors)
                            .map(|range| Spanned::new(range, at)),
                    );
                }
            }
            "hypervisor" => {
                if hypervisor.claim(item, &mut errors)
                    && let Some(token) = lexer::single_arg(item, "BASE,SIZE", &mut errors)
                {
                    hypervisor.value = report(
                        parse_range(token, "hypervisor reserve"),
                        token.line,
                        &mut errors,
                    )
                    .map(|range| Spanned::new(range, at));
                }
            }
            "shmem-pool" => {
                if shmem_pool.claim(item, &mut errors)
                    && let Some(token) = lexer::single_arg(item, "SIZE", &mut errors)
                {
                    let size = parse_size(token.text)
                        .map_err(|e| format!("shmem-pool: {e}"))
                        .and_then(|size| match size {
                            0 => Ok(0),
                            size => check_page_size(size, "shmem-pool size").map(|()| size),
                        });
                    shmem_pool.value =
                        report(size, token.line, &mut errors).map(|size| Spanned::new(size, at));
                }
            }
            "console" => {
                if console.claim(item, &mut errors) {
                    console.value =
                        parse_console(item, &mut errors).map(|value| Spanned::new(value, at));
                }
            }
            _ => {
                seen_vm = true;
                if let Some(token) = lexer::single_arg(item, "PATH", &mut errors) {
                    vms.push(Spanned::new(directory.join(token.text), at));
                }
            }
        }
    }
    let missing = [
        (name.line.is_none(), "missing `board NAME`"),
        (arch.line.is_none(), "missing `arch aarch64|x86_64`"),
        (
            cpus.line.is_none(),
            "missing `cpus N`: how many physical CPUs the board has",
        ),
        (!seen_ram, "missing `ram BASE,SIZE`: the board's RAM"),
        (
            hypervisor.line.is_none(),
            "missing `hypervisor BASE,SIZE`: the memory the hypervisor keeps for itself",
        ),
        (!seen_vm, "missing `vm PATH`: a board needs at least one VM"),
    ];
    for (is_missing, message) in missing {
        if is_missing {
            errors.error(1, message);
        }
    }
    let errors = errors.into_errors();
    match (name.value, arch.value, cpus.value, hypervisor.value) {
        (Some(name), Some(arch), Some(cpus), Some(hypervisor)) if errors.is_empty() => Ok(Board {
            path: path.to_path_buf(),
            name,
            arch,
            cpus,
            ram,
            hypervisor,
            shmem_pool: shmem_pool.value,
            console: console.value,
            vms,
        }),
        _ => Err(errors),
    }
}

/// `BASE,SIZE`: page-aligned, non-empty, not past the end of the address space.
fn parse_range(token: Token<'_>, what: &str) -> Result<MemoryRange, String> {
    let Some((base, size)) = token.text.split_once(',') else {
        return Err(format!(
            "{what}: expected BASE,SIZE, found `{}`",
            token.text
        ));
    };
    let base = parse_number(base).map_err(|e| format!("{what} base: {e}"))?;
    let size = parse_size(size).map_err(|e| format!("{what} size: {e}"))?;
    check_page_aligned(base, &format!("{what} base"))?;
    check_page_size(size, &format!("{what} size"))?;
    check_end(base, size, &format!("{what} base"))?;
    Ok(MemoryRange { base, size })
}

/// `console pl011 loc ADDR`, `console cadence loc ADDR` or `console 8250 port N`.
fn parse_console(item: &Item<'_>, errors: &mut FileErrors) -> Option<Console> {
    const CONSOLES: &str =
        "`console pl011 loc ADDR`, `console cadence loc ADDR` or `console 8250 port N`";
    let line = item.keyword.line;
    let Some((kind, rest)) = item.args.split_first() else {
        errors.error(line, format!("`console` needs a kind: {CONSOLES}"));
        return None;
    };
    let (option, context) = match kind.text {
        "pl011" => ("loc", "console pl011"),
        "cadence" => ("loc", "console cadence"),
        "8250" => ("port", "console 8250"),
        other => {
            errors.error(
                kind.line,
                format!("unknown console `{other}`: expected {CONSOLES}"),
            );
            return None;
        }
    };
    let pairs = lexer::options(rest, &[option], context, errors);
    if let Some((duplicate, _)) = pairs.get(1) {
        let message = format!("duplicate option `{option}` of {context}");
        errors.error(duplicate.line, message);
        return None;
    }
    let Some((_, value)) = pairs.first() else {
        if rest.is_empty() {
            errors.error(
                line,
                format!("{context} needs `{option}`: expected {CONSOLES}"),
            );
        }
        return None;
    };
    if option == "loc" {
        let base = report(
            parse_number(value.text).map_err(|e| format!("console loc: {e}")),
            value.line,
            errors,
        )?;
        Some(if kind.text == "cadence" {
            Console::Cadence { base }
        } else {
            Console::Pl011 { base }
        })
    } else {
        let port = parse_number(value.text)
            .map_err(|e| format!("console port: {e}"))
            .and_then(|port| {
                u16::try_from(port)
                    .map_err(|_| format!("console port {port:#x} is not an I/O port (0-0xffff)"))
            });
        report(port, value.line, errors).map(|port| Console::Uart8250 { port })
    }
}

#[cfg(test)]
mod tests;
