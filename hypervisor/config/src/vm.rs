//! VM files: `system`, `ram`, `cpu`, `load`, `initrd`, `cmdline`, `fault-policy`, `vdev`,
//! syntax-checked.
//!
//! What depends on the board (default addresses, interrupt controllers, CPU and host RAM
//! placement) is left open here and settled by `validate`.

use std::path::{Path, PathBuf};

use crate::error::{Errors, FileErrors, Location};
use crate::lexer::{self, Grammar, Item, Single, Token, report};
use crate::model::{
    Create, FaultPolicy, Interrupt, Ivshmem, Rule, Shmem, ShmemMmio, Spanned, Subst, substitute,
};
use crate::names::{check_glob, check_identifier, check_region_name, check_subst_part};
use crate::numbers::{
    check_end, check_page_aligned, check_page_size, parse_number, parse_size, parse_u32,
};

/// The top-level keywords of a VM file.
pub const VM_KEYWORDS: &[&str] = &[
    "system",
    "ram",
    "cpu",
    "load",
    "initrd",
    "cmdline",
    "fault-policy",
    "vdev",
];

const GRAMMAR: Grammar = Grammar {
    file_kind: "VM file",
    keywords: VM_KEYWORDS,
    multi_line: &["vdev"],
};

/// Most interrupt vectors an `ivshmem-doorbell` may have.
pub const IVSHMEM_VECTORS_MAX: u32 = 64;

/// A syntax-checked VM file; `validate` turns it into a [`crate::Vm`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmFile {
    /// The file.
    pub path: PathBuf,
    /// `system NAME`.
    pub name: Spanned<String>,
    /// `ram` lines, in file order.
    pub ram: Vec<RamSpec>,
    /// `cpu` lines, in file order.
    pub cpus: Vec<CpuSpec>,
    /// `load PATH`, as written.
    pub load: Spanned<String>,
    /// `initrd PATH`, as written, if any.
    pub initrd: Option<Spanned<String>>,
    /// `cmdline "..."`: the guest's command line, if given.
    pub cmdline: Option<Spanned<String>>,
    /// `fault-policy` (default `stop`).
    pub fault_policy: FaultPolicy,
    /// `vdev` items, in file order.
    pub vdevs: Vec<VdevSpec>,
}

/// One `ram [GPA,]SIZE [host HPA]` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RamSpec {
    /// GPA, if given (otherwise the architecture's default, or right after the previous `ram`).
    pub guest_base: Option<u64>,
    /// SIZE in bytes.
    pub size: u64,
    /// HPA, if pinned with `host`.
    pub host_base: Option<u64>,
    /// The `ram` line.
    pub at: Location,
}

/// One `cpu [runmask N]` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuSpec {
    /// The physical CPU named by `runmask`, if any.
    pub runmask: Option<u32>,
    /// The `cpu` line.
    pub at: Location,
}

/// A syntax-checked `vdev`; `loc` defaults that depend on the architecture are still open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VdevSpec {
    /// `vdev pl011 [loc ADDR] [intr CTRL:N]`.
    Pl011 {
        /// `loc`, if given.
        loc: Option<Spanned<u64>>,
        /// `intr`, if given.
        intr: Option<Interrupt>,
        /// The `vdev` line.
        at: Location,
    },
    /// `vdev ser8250 [loc PORT|ADDR] [intr CTRL:N]`.
    Uart8250 {
        /// `loc`, if given.
        loc: Option<Spanned<u64>>,
        /// `intr`, if given.
        intr: Option<Interrupt>,
        /// The `vdev` line.
        at: Location,
    },
    /// `vdev ioapic [loc ADDR] intr CTRL [name NAME]`.
    IoApic {
        /// `loc`, if given.
        loc: Option<Spanned<u64>>,
        /// `intr CTRL`.
        parent: Spanned<String>,
        /// `name` (default `ioapic`).
        name: Spanned<String>,
        /// The `vdev` line.
        at: Location,
    },
    /// `vdev shmem ...`: complete already.
    Shmem(Shmem),
    /// `vdev ivshmem-plain|ivshmem-doorbell ...`: complete already.
    Ivshmem(Ivshmem),
}

/// The kinds of vdev and the options each accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VdevKind {
    Pl011,
    Ser8250,
    IoApic,
    Shmem,
    IvshmemPlain,
    IvshmemDoorbell,
}

const VDEV_KINDS: [(&str, VdevKind, &[&str]); 6] = [
    ("pl011", VdevKind::Pl011, &["loc", "intr"]),
    ("ser8250", VdevKind::Ser8250, &["loc", "intr"]),
    ("ioapic", VdevKind::IoApic, &["loc", "intr", "name"]),
    (
        "shmem",
        VdevKind::Shmem,
        &["create", "allow", "deny", "subst", "loc", "intr"],
    ),
    ("ivshmem-plain", VdevKind::IvshmemPlain, &["name", "size"]),
    (
        "ivshmem-doorbell",
        VdevKind::IvshmemDoorbell,
        &["name", "size", "vectors"],
    ),
];

/// Longest guest command line (Linux's arm64 and x86 COMMAND_LINE_SIZE is 2048 with its NUL;
/// Bulkhead appends ` bulkhead.restarts=N`).
pub const CMDLINE_MAX: usize = 1024;

/// A `cmdline` value: printable ASCII, at most [`CMDLINE_MAX`] bytes.
fn check_cmdline(text: &str) -> Result<(), String> {
    if text.len() > CMDLINE_MAX {
        return Err(format!(
            "cmdline is {} bytes long; at most {CMDLINE_MAX}",
            text.len()
        ));
    }
    if let Some(bad) = text.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(format!(
            "cmdline holds {bad:?}: only printable ASCII (quote it: cmdline \"console=ttyAMA0 quiet\")"
        ));
    }
    Ok(())
}

/// Parses one VM file. `path` is only used in messages and recorded in the result.
pub fn parse_vm(path: &Path, text: &str) -> Result<VmFile, Errors> {
    let mut errors = FileErrors::new(path);
    let items = lexer::items(text, &GRAMMAR, &mut errors);
    let mut name = Single::default();
    let mut load = Single::default();
    let mut initrd = Single::default();
    let mut cmdline = Single::default();
    let mut fault_policy = Single::default();
    let mut ram = Vec::new();
    let mut cpus = Vec::new();
    let mut vdevs = Vec::new();
    let (mut seen_ram, mut seen_cpu) = (false, false);
    for item in &items {
        match item.keyword.text {
            "system" => {
                if name.claim(item, &mut errors)
                    && let Some(token) = lexer::single_arg(item, "NAME", &mut errors)
                    && report(
                        check_identifier(token.text, "VM name"),
                        token.line,
                        &mut errors,
                    )
                    .is_some()
                {
                    name.value = Some(spanned(token.text.to_string(), token, &errors));
                }
            }
            "load" => {
                if load.claim(item, &mut errors)
                    && let Some(token) = lexer::single_arg(item, "PATH", &mut errors)
                {
                    load.value = Some(spanned(token.text.to_string(), token, &errors));
                }
            }
            "initrd" => {
                if initrd.claim(item, &mut errors)
                    && let Some(token) = lexer::single_arg(item, "PATH", &mut errors)
                {
                    initrd.value = Some(spanned(token.text.to_string(), token, &errors));
                }
            }
            "cmdline" => {
                if cmdline.claim(item, &mut errors)
                    && let Some(token) = lexer::single_arg(item, "\"ARGUMENTS\"", &mut errors)
                    && report(check_cmdline(token.text), token.line, &mut errors).is_some()
                {
                    cmdline.value = Some(spanned(token.text.to_string(), token, &errors));
                }
            }
            "fault-policy" => {
                if fault_policy.claim(item, &mut errors)
                    && let Some(token) = lexer::single_arg(item, "stop|restart", &mut errors)
                {
                    let policy = match token.text {
                        "stop" => Some(FaultPolicy::Stop),
                        "restart" => Some(FaultPolicy::Restart),
                        other => {
                            let message =
                                format!("unknown fault policy `{other}` (policies: stop, restart)");
                            errors.error(token.line, message);
                            None
                        }
                    };
                    fault_policy.value = policy.map(|policy| spanned(policy, token, &errors));
                }
            }
            "ram" => {
                seen_ram = true;
                ram.extend(parse_ram(item, &mut errors));
            }
            "cpu" => {
                seen_cpu = true;
                cpus.extend(parse_cpu(item, &mut errors));
            }
            _ => vdevs.extend(parse_vdev(item, &mut errors)),
        }
    }
    let missing = [
        (name.line.is_none(), "missing `system NAME`"),
        (
            load.line.is_none(),
            "missing `load PATH`: a VM needs an image",
        ),
        (!seen_ram, "missing `ram [GPA,]SIZE`: a VM needs RAM"),
        (!seen_cpu, "missing `cpu`: a VM needs at least one vCPU"),
    ];
    for (is_missing, message) in missing {
        if is_missing {
            errors.error(1, message);
        }
    }
    let errors = errors.into_errors();
    match (name.value, load.value) {
        (Some(name), Some(load)) if errors.is_empty() => Ok(VmFile {
            path: path.to_path_buf(),
            name,
            ram,
            cpus,
            load,
            initrd: initrd.value,
            cmdline: cmdline.value,
            fault_policy: fault_policy
                .value
                .map(|policy| policy.value)
                .unwrap_or_default(),
            vdevs,
        }),
        _ => Err(errors),
    }
}

fn spanned<T>(value: T, token: Token<'_>, errors: &FileErrors) -> Spanned<T> {
    Spanned::new(value, errors.at(token.line))
}

fn parse_ram(item: &Item<'_>, errors: &mut FileErrors) -> Option<RamSpec> {
    let line = item.keyword.line;
    let Some((first, rest)) = item.args.split_first() else {
        errors.error(line, "`ram` needs a value: `ram [GPA,]SIZE [host HPA]`");
        return None;
    };
    let (guest_text, size_text) = match first.text.split_once(',') {
        Some((guest, size)) => (Some(guest), size),
        None => (None, first.text),
    };
    let guest_base = match guest_text {
        Some(text) => Some(report(
            parse_number(text).map_err(|e| format!("ram guest-physical base: {e}")),
            first.line,
            errors,
        )?),
        None => None,
    };
    let size = report(
        parse_size(size_text).map_err(|e| format!("ram size: {e}")),
        first.line,
        errors,
    )?;
    let host_base = match rest {
        [] => None,
        [host, value] if host.text == "host" => Some(report(
            parse_number(value.text).map_err(|e| format!("ram host-physical base: {e}")),
            value.line,
            errors,
        )?),
        [host] if host.text == "host" => {
            errors.error(host.line, "`host` needs the host-physical base: `host HPA`");
            return None;
        }
        [host, _, extra, ..] if host.text == "host" => {
            errors.error(
                extra.line,
                format!("unexpected `{}` after `host`", extra.text),
            );
            return None;
        }
        [other, ..] => {
            let message = format!(
                "unexpected `{}` in `ram` (expected `ram [GPA,]SIZE [host HPA]`)",
                other.text
            );
            errors.error(other.line, message);
            return None;
        }
    };
    let mut checks = vec![check_page_size(size, "ram size")];
    if let Some(base) = guest_base {
        checks.push(check_page_aligned(base, "ram guest-physical base"));
        checks.push(check_end(base, size, "ram guest-physical base"));
    }
    if let Some(base) = host_base {
        checks.push(check_page_aligned(base, "ram host-physical base"));
        checks.push(check_end(base, size, "ram host-physical base"));
    }
    let mut ok = true;
    for check in checks {
        ok &= report(check, first.line, errors).is_some();
    }
    ok.then(|| RamSpec {
        guest_base,
        size,
        host_base,
        at: errors.at(line),
    })
}

fn parse_cpu(item: &Item<'_>, errors: &mut FileErrors) -> Option<CpuSpec> {
    let mut runmask: Option<Spanned<u32>> = None;
    let mut ok = true;
    for (name, value) in lexer::options(&item.args, &["runmask"], "cpu", errors) {
        if let Some(first) = &runmask {
            let message = format!(
                "duplicate `runmask` (first given at line {})",
                first.at.line
            );
            errors.error(name.line, message);
            ok = false;
        } else if value.text.contains([',', '-']) {
            let message = format!(
                "`runmask {}`: static partitioning pins each vCPU to exactly one physical CPU; \
                 write one `cpu runmask N` line per vCPU",
                value.text
            );
            errors.error(value.line, message);
            ok = false;
        } else {
            match report(parse_u32(value.text), value.line, errors) {
                Some(cpu) => runmask = Some(spanned(cpu, value, errors)),
                None => ok = false,
            }
        }
    }
    ok.then(|| CpuSpec {
        runmask: runmask.map(|mask| mask.value),
        at: errors.at(item.keyword.line),
    })
}

/// Parses `CTRL:N`.
fn parse_interrupt(token: Token<'_>, errors: &mut FileErrors) -> Option<Interrupt> {
    let Some((controller, number)) = token.text.split_once(':') else {
        let message = format!(
            "`intr {}`: expected CONTROLLER:NUMBER (e.g. `intr gic:40`)",
            token.text
        );
        errors.error(token.line, message);
        return None;
    };
    let controller_ok = report(
        check_identifier(controller, "interrupt controller"),
        token.line,
        errors,
    );
    let number = report(
        parse_u32(number).map_err(|e| format!("interrupt number: {e}")),
        token.line,
        errors,
    );
    Some(Interrupt {
        controller: controller.to_string(),
        number: number?,
        at: errors.at(token.line),
    })
    .filter(|_| controller_ok.is_some())
}

fn parse_vdev(item: &Item<'_>, errors: &mut FileErrors) -> Option<VdevSpec> {
    let line = item.keyword.line;
    let kind_names: Vec<&str> = VDEV_KINDS.iter().map(|(name, ..)| *name).collect();
    let Some((kind_token, rest)) = item.args.split_first() else {
        let message = format!(
            "`vdev` needs a kind: `vdev KIND` (kinds: {})",
            kind_names.join(", ")
        );
        errors.error(line, message);
        return None;
    };
    let Some((kind_name, kind, known)) = VDEV_KINDS
        .iter()
        .find(|(name, ..)| *name == kind_token.text)
    else {
        let message = format!(
            "unknown vdev kind `{}` (kinds: {})",
            kind_token.text,
            kind_names.join(", ")
        );
        errors.error(kind_token.line, message);
        return None;
    };
    let context = format!("vdev {kind_name}");
    let mut options = VdevOptions::default();
    for (name, value) in lexer::options(rest, known, &context, errors) {
        options.add(*kind, name, value, errors);
    }
    options.build(*kind, errors.at(line), errors)
}

/// The options of one vdev as they are read.
#[derive(Debug, Default)]
struct VdevOptions {
    loc: Option<Spanned<u64>>,
    intr: Option<Interrupt>,
    parent: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    size: Option<Spanned<u64>>,
    vectors: Option<Spanned<u32>>,
    creates: Vec<Spanned<(String, u64)>>,
    rules: Vec<Rule>,
    substs: Vec<Subst>,
    /// Single-use options seen so far and their lines.
    seen: Vec<(String, u32)>,
    /// Some option was wrong (already reported).
    failed: bool,
}

impl VdevOptions {
    fn add(&mut self, kind: VdevKind, name: Token<'_>, value: Token<'_>, errors: &mut FileErrors) {
        let repeatable = matches!(name.text, "create" | "allow" | "deny" | "subst");
        if !repeatable {
            if let Some((_, first)) = self.seen.iter().find(|(seen, _)| seen == name.text) {
                let message = format!(
                    "duplicate option `{}` (first given at line {first})",
                    name.text
                );
                errors.error(name.line, message);
                self.failed = true;
                return;
            }
            self.seen.push((name.text.to_string(), name.line));
        }
        let at = errors.at(name.line);
        let text = value.text;
        let line = value.line;
        let ok = match name.text {
            "loc" => report(
                parse_number(text).map_err(|e| format!("loc: {e}")),
                line,
                errors,
            )
            .map(|loc| self.loc = Some(Spanned::new(loc, at))),
            "intr" if kind == VdevKind::IoApic => {
                let checked = if text.contains(':') {
                    Err(format!(
                        "`intr {text}`: an ioapic's `intr` names the controller it delivers to, \
                         without a number (e.g. `intr apic`)"
                    ))
                } else {
                    check_identifier(text, "interrupt controller")
                };
                report(checked, line, errors)
                    .map(|()| self.parent = Some(Spanned::new(text.to_string(), at)))
            }
            "intr" => parse_interrupt(value, errors).map(|intr| self.intr = Some(intr)),
            "name" => {
                let checked = if kind == VdevKind::IoApic {
                    check_identifier(text, "ioapic name")
                } else {
                    check_region_name(text, "ivshmem region name")
                };
                report(checked, line, errors)
                    .map(|()| self.name = Some(Spanned::new(text.to_string(), at)))
            }
            "size" => report(parse_ivshmem_size(text), line, errors)
                .map(|size| self.size = Some(Spanned::new(size, at))),
            "vectors" => report(parse_vectors(text), line, errors)
                .map(|vectors| self.vectors = Some(Spanned::new(vectors, at))),
            "create" => report(parse_create(text), line, errors)
                .map(|create| self.creates.push(Spanned::new(create, at))),
            "allow" | "deny" => report(check_glob(text), line, errors).map(|()| {
                self.rules.push(Rule {
                    allow: name.text == "allow",
                    glob: text.to_string(),
                    at,
                });
            }),
            _ => report(parse_subst(text), line, errors).map(|(old, new)| {
                self.substs.push(Subst { old, new, at });
            }),
        };
        self.failed |= ok.is_none();
    }

    fn build(self, kind: VdevKind, at: Location, errors: &mut FileErrors) -> Option<VdevSpec> {
        let mut failed = self.failed;
        let line = at.line;
        let vdev = match kind {
            VdevKind::Pl011 => Some(VdevSpec::Pl011 {
                loc: self.loc,
                intr: self.intr,
                at,
            }),
            VdevKind::Ser8250 => Some(VdevSpec::Uart8250 {
                loc: self.loc,
                intr: self.intr,
                at,
            }),
            VdevKind::IoApic => {
                if self.parent.is_none() && !self.seen.iter().any(|(seen, _)| seen == "intr") {
                    let message = "vdev ioapic needs `intr CONTROLLER`, the controller it \
                                   delivers to (e.g. `intr apic`)";
                    errors.error(line, message);
                }
                let name = self
                    .name
                    .unwrap_or_else(|| Spanned::new("ioapic".to_string(), at.clone()));
                self.parent.map(|parent| VdevSpec::IoApic {
                    loc: self.loc,
                    parent,
                    name,
                    at,
                })
            }
            VdevKind::Shmem => {
                let mmio = match (self.loc, self.intr) {
                    (Some(base), Some(intr)) => Some(ShmemMmio { base, intr }),
                    (None, None) => None,
                    (Some(base), None) => {
                        errors.error(base.at.line, SHMEM_MMIO_NEEDS_BOTH);
                        failed = true;
                        None
                    }
                    (None, Some(intr)) => {
                        errors.error(intr.at.line, SHMEM_MMIO_NEEDS_BOTH);
                        failed = true;
                        None
                    }
                };
                let mut creates = Vec::new();
                for create in self.creates {
                    let (name, size) = create.value;
                    let host_name = substitute(&self.substs, &name);
                    if let Err(message) = check_host_name(&name, &host_name) {
                        errors.error(create.at.line, message);
                        failed = true;
                    }
                    creates.push(Create {
                        name,
                        host_name,
                        size,
                        at: create.at,
                    });
                }
                Some(VdevSpec::Shmem(Shmem {
                    creates,
                    rules: self.rules,
                    substs: self.substs,
                    mmio,
                    at,
                }))
            }
            VdevKind::IvshmemPlain | VdevKind::IvshmemDoorbell => {
                let kind_name = if kind == VdevKind::IvshmemPlain {
                    "ivshmem-plain"
                } else {
                    "ivshmem-doorbell"
                };
                if self.name.is_none() && !self.seen.iter().any(|(seen, _)| seen == "name") {
                    let message = format!("vdev {kind_name} needs `name NAME`, the region's name");
                    errors.error(line, message);
                }
                if self.size.is_none() && !self.seen.iter().any(|(seen, _)| seen == "size") {
                    let message = format!("vdev {kind_name} needs `size SIZE`, the region's size");
                    errors.error(line, message);
                }
                let doorbell_vectors = (kind == VdevKind::IvshmemDoorbell)
                    .then(|| self.vectors.map_or(1, |vectors| vectors.value));
                match (self.name, self.size) {
                    (Some(name), Some(size)) => Some(VdevSpec::Ivshmem(Ivshmem {
                        name,
                        size,
                        doorbell_vectors,
                        at,
                    })),
                    _ => None,
                }
            }
        };
        vdev.filter(|_| !failed)
    }
}

const SHMEM_MMIO_NEEDS_BOTH: &str = "a shmem vdev is an MMIO device only with both `loc` and \
                                     `intr` (with neither it is a PCI device)";

/// `create NAME,SIZE`.
fn parse_create(text: &str) -> Result<(String, u64), String> {
    let Some((name, size)) = text.split_once(',') else {
        return Err(format!(
            "`create {text}`: expected NAME,SIZE (e.g. `create TEST1,0x100000`)"
        ));
    };
    check_region_name(name, "region name")?;
    let size = parse_size(size).map_err(|e| format!("region size: {e}"))?;
    check_page_size(size, &format!("size of region `{name}`"))?;
    Ok((name.to_string(), size))
}

/// `subst OLD,NEW`.
fn parse_subst(text: &str) -> Result<(String, String), String> {
    let Some((old, new)) = text.split_once(',') else {
        return Err(format!(
            "`subst {text}`: expected OLD,NEW (OLD may be empty: `subst ,guest0`)"
        ));
    };
    check_subst_part(old, "subst OLD")?;
    check_subst_part(new, "subst NEW")?;
    Ok((old.to_string(), new.to_string()))
}

/// Checks the host name a `create` gets after `subst`.
fn check_host_name(name: &str, host_name: &str) -> Result<(), String> {
    if host_name.is_empty() {
        Err(format!("region `{name}` becomes an empty name after subst"))
    } else if host_name.len() > crate::names::NAME_MAX {
        Err(format!(
            "region `{name}` becomes `{host_name}` after subst, {} bytes long; at most {} are \
             allowed",
            host_name.len(),
            crate::names::NAME_MAX
        ))
    } else {
        Ok(())
    }
}

/// An ivshmem `size`: whole pages and a power of two (it is a PCI BAR).
fn parse_ivshmem_size(text: &str) -> Result<u64, String> {
    let size = parse_size(text).map_err(|e| format!("ivshmem size: {e}"))?;
    check_page_size(size, "ivshmem size")?;
    if !size.is_power_of_two() {
        return Err(format!(
            "ivshmem size {text} is not a power of two (it is the size of a PCI BAR)"
        ));
    }
    Ok(size)
}

/// An ivshmem-doorbell `vectors`: 1 to 64.
fn parse_vectors(text: &str) -> Result<u32, String> {
    let vectors = parse_u32(text).map_err(|e| format!("vectors: {e}"))?;
    if (1..=IVSHMEM_VECTORS_MAX).contains(&vectors) {
        Ok(vectors)
    } else {
        Err(format!(
            "vectors {vectors} is out of range (1 to {IVSHMEM_VECTORS_MAX})"
        ))
    }
}

#[cfg(test)]
mod tests;
