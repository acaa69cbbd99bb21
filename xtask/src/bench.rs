//! `cargo xtask bench`: guest-measured doorbell round trips and copies, icount and wall-clock.
//!
//! The bench guests run once under `-icount shift=0,sleep=off` (exact, deterministic) and
//! `--runs` times in wall-clock TCG; xtask prints a table and writes
//! `target/bench/results.json`.
//!
//! The guests (`guests/bench`, configuration `qemu/systems/bench`) print one `bench:` line per
//! figure: `bench: roundtrip qnx ns median=.. min=.. p90=.. max=.. n=200`, `... cycles ...`,
//! `bench: copy private->shared ns median=.. ... mib_per_s=..`; `n/a` stands for a figure the
//! guest could not measure. Speed is only reported here, never judged: a run fails only if the
//! guests do (`FAIL`, a stopped partition, no `PASS`, the timeout).
//!
//! Then, unless `--no-x86`, the x86_64 figure: VM exits per doorbell round trip on Bochs
//! ([`x86`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, SystemTime};

use clap::Args;

use crate::build::{self, Arch, BootMethod, CargoProfile};
use crate::error::{Context, Error, Result};
use crate::harness;
use crate::markers::{ExitExpectation, Expectation, Marker};
use crate::profile::{Boot, Console, Launch, Profile};
use crate::{setup, workspace};

mod x86;

/// The system configuration the benchmarks boot.
pub const CONFIG: &str = "qemu/systems/bench/board.board";
/// The machine profile unless `--machine` says otherwise.
const DEFAULT_MACHINE: &str = "virt-gicv3";
/// CPUs the configuration's board has (benchping on 1, benchpong on 2, 0 and 3 idle).
const SMP: u32 = 4;
/// QEMU's deterministic mode: one instruction per virtual nanosecond, no idle sleeping.
const ICOUNT: [&str; 2] = ["-icount", "shift=0,sleep=off"];
/// The kernel command-line word the test harness also passes: a panic or fatal exception exits
/// QEMU (started with `-semihosting`) with status 1, so a broken run fails at once.
const SEMIHOSTING_EXIT: &str = "bulkhead.exit=semihosting";
/// Limit of one emulator run.
const TIMEOUT: Duration = Duration::from_secs(300);

/// Options of `cargo xtask bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Machine profile (an aarch64 one: virt-gicv3, virt-gicv2) or the path of a profile file.
    #[arg(long, value_name = "PROFILE", default_value = DEFAULT_MACHINE)]
    machine: String,
    /// Wall-clock runs (plain TCG); each run's medians are combined as a median across runs.
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// Skip the x86_64 figure (VM exits per doorbell round trip, counted on Bochs).
    #[arg(long)]
    no_x86: bool,
}

/// One `bench:` line: metric (`roundtrip qnx`), unit (`ns`, `cycles`) and its statistics in
/// the order printed (`median`, `min`, `p90`, `max`, `n`, `mib_per_s`); `None` for `n/a`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figure {
    pub metric: String,
    pub unit: String,
    pub values: Option<Vec<(String, u64)>>,
}

impl Figure {
    /// The statistic `key` (`median`, ...), if measured.
    pub fn get(&self, key: &str) -> Option<u64> {
        self.values
            .as_ref()?
            .iter()
            .find(|(name, _)| name == key)
            .map(|&(_, value)| value)
    }
}

/// Parses one serial line holding `bench: METRIC... UNIT key=value...` or `... UNIT n/a`
/// (the console's `[partition]` prefix may come first). Anything else is `None`.
pub fn parse_line(line: &str) -> Option<Figure> {
    let (_, rest) = line.split_once("bench: ")?;
    let mut words = Vec::new();
    let mut values = Vec::new();
    let mut unavailable = false;
    for token in rest.split_whitespace() {
        if token == "n/a" {
            unavailable = true;
            break;
        }
        match token.split_once('=') {
            Some((key, value)) => values.push((key.to_string(), value.parse().ok()?)),
            None if values.is_empty() => words.push(token),
            None => return None,
        }
    }
    let (unit, metric) = words.split_last()?;
    if metric.is_empty() || (values.is_empty() && !unavailable) {
        return None;
    }
    Some(Figure {
        metric: metric.join(" "),
        unit: (*unit).to_string(),
        values: (!unavailable).then_some(values),
    })
}

/// Every figure in a serial transcript, in order.
pub fn parse_figures(serial: &str) -> Vec<Figure> {
    serial.lines().filter_map(parse_line).collect()
}

/// The figure `metric` `unit` of one run, if measured.
fn find<'a>(figures: &'a [Figure], metric: &str, unit: &str) -> Option<&'a Figure> {
    figures
        .iter()
        .find(|figure| figure.metric == metric && figure.unit == unit)
}

/// The ratios the benchmark is about, (name, numerator, denominator): a copy that touches the
/// shared region against the private one.
const RATIOS: [(&str, &str, &str); 2] = [
    (
        "copy private->shared / private->private",
        "copy private->shared",
        "copy private->private",
    ),
    (
        "copy shared->private / private->private",
        "copy shared->private",
        "copy private->private",
    ),
];

/// One run's copy ratios (median against median, both from this run), per unit.
pub fn ratios(figures: &[Figure]) -> Vec<(String, String, f64)> {
    let mut result = Vec::new();
    for (name, shared, private) in RATIOS {
        for unit in ["ns", "cycles"] {
            let median = |metric| find(figures, metric, unit).and_then(|f| f.get("median"));
            if let (Some(numerator), Some(denominator)) = (median(shared), median(private))
                && denominator != 0
            {
                result.push((
                    name.to_string(),
                    unit.to_string(),
                    numerator as f64 / denominator as f64,
                ));
            }
        }
    }
    result
}

/// Median of `values` (mean of the middle two for an even count); `None` if empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted.get(middle).copied()
    } else {
        Some((sorted.get(middle.checked_sub(1)?)? + sorted.get(middle)?) / 2.0)
    }
}

/// Median, minimum and maximum across runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Option<Self> {
        Some(Self {
            median: median(values)?,
            min: values.iter().copied().reduce(f64::min)?,
            max: values.iter().copied().reduce(f64::max)?,
        })
    }
}

/// One emulator run of the bench configuration: its command line and what it printed.
struct Run {
    command: String,
    figures: Vec<Figure>,
    notes: Vec<String>,
}

/// Run `cargo xtask bench`.
pub fn command(args: &BenchArgs) -> Result<ExitCode> {
    setup::toolchain()?;
    let profile = Profile::load(&args.machine)?;
    if profile.arch != Arch::Aarch64 {
        return Err(Error::new(format!(
            "machine profile `{}` is for {}: the bench guests are aarch64",
            profile.name,
            profile.arch.name()
        )));
    }
    profile.check_smp(SMP)?;
    setup::emulators(&profile.requirements(BootMethod::Image)?)?;
    let config = workspace::absolute_existing(&workspace::root().join(CONFIG), "configuration")?;
    let image = build::image(profile.arch, CargoProfile::Release, Some(&config))?;
    let directory = workspace::target_dir().join("bench");

    println!("==> icount run (-icount shift=0,sleep=off: instruction counts, deterministic)");
    let icount = run(&profile, &image.binary, true, &directory.join("icount.log"))?;
    let mut wallclock = Vec::new();
    for index in 1..=args.runs {
        println!("==> wall-clock run {index} of {} (plain TCG)", args.runs);
        let log = directory.join(format!("wallclock-{index}.log"));
        wallclock.push(run(&profile, &image.binary, false, &log)?);
    }

    println!();
    for note in &icount.notes {
        println!("note: {note}");
    }
    print!("{}", table(&icount, &wallclock));
    println!();
    println!("QEMU command lines:");
    println!("  icount:     $ {}", icount.command);
    if let Some(first) = wallclock.first() {
        println!("  wall-clock: $ {}", first.command);
    }

    let mut x86_exits = None;
    if !args.no_x86 {
        println!();
        println!(
            "==> x86_64: VM exits per doorbell round trip ({}, Bochs VMX)",
            x86::CONFIG
        );
        let (figures, command) = x86::measure(&directory)?;
        println!("exchange | quiet round trips | VM exits (both ends) | per round trip");
        for figure in &figures {
            println!(
                "{} | {} | {} + {} | {}",
                figure.exchange,
                figure.rounds,
                figure.exits[0],
                figure.exits[1],
                number(figure.per_round_trip())
            );
        }
        println!("  bochs: $ {command}");
        x86_exits = Some((figures, command));
    }

    let results = results_path();
    let mut json = results_json(&profile.name, &icount, &wallclock);
    if let (Json::Object(fields), Some((figures, command))) = (&mut json, &x86_exits) {
        fields.push((
            "x86_vm_exits".to_string(),
            Json::object(vec![
                ("configuration", Json::text(x86::CONFIG)),
                ("bochs", Json::text(command)),
                (
                    "exchanges",
                    Json::Array(
                        figures
                            .iter()
                            .map(|figure| {
                                Json::object(vec![
                                    ("exchange", Json::text(figure.exchange)),
                                    ("quiet_round_trips", Json::Integer(figure.rounds)),
                                    (
                                        "exits",
                                        Json::Array(
                                            figure
                                                .exits
                                                .iter()
                                                .map(|&e| Json::Integer(e))
                                                .collect(),
                                        ),
                                    ),
                                    ("per_round_trip", Json::Number(figure.per_round_trip())),
                                ])
                            })
                            .collect(),
                    ),
                ),
            ]),
        ));
    }
    std::fs::write(&results, json.render())
        .context(|| format!("cannot write {}", results.display()))?;
    println!("results: {}", results.display());
    Ok(ExitCode::SUCCESS)
}

/// Boots the bench image once (with `-icount` if asked), waits for both guests' `PASS` and the
/// power-off, and reads the figures from the serial log.
fn run(profile: &Profile, binary: &Path, icount: bool, log: &Path) -> Result<Run> {
    let mut command = profile.command(&Launch {
        boot: Boot::Image {
            binary: binary.to_path_buf(),
            append: SEMIHOSTING_EXIT.to_string(),
        },
        smp: SMP,
        memory: profile.memory.clone(),
        semihosting: true,
        console: Console::Captured,
        gdb: false,
    })?;
    if icount {
        command.args(ICOUNT);
    }
    let line = workspace::display(&command);
    let outcome = harness::run(command, &expectation(), log)?;
    println!(
        "    {:.1}s, serial log {}",
        outcome.elapsed.as_secs_f64(),
        log.display()
    );
    if let Some(reason) = outcome.failure {
        for line in &outcome.tail {
            println!("  | {line}");
        }
        return Err(Error::new(format!(
            "the bench run failed: {reason} (log: {})",
            log.display()
        )));
    }
    let bytes = std::fs::read(log).context(|| format!("cannot read {}", log.display()))?;
    let serial = String::from_utf8_lossy(&bytes);
    let figures = parse_figures(&serial);
    if figures.is_empty() {
        return Err(Error::new(format!(
            "the guests passed but printed no `bench:` line (log: {})",
            log.display()
        )));
    }
    let notes = serial
        .lines()
        .filter(|line| {
            line.contains("benchping: counter") || line.contains("benchping: copy buffers")
        })
        .map(|line| line.trim().to_string())
        .collect();
    Ok(Run {
        command: line,
        figures,
        notes,
    })
}

/// Both guests pass and the machine powers off; any failure or stopped partition ends it.
fn expectation() -> Expectation {
    Expectation {
        markers: vec![
            Marker::AnyOrder(vec![
                "[benchping] PASS".to_string(),
                "[benchpong] PASS".to_string(),
            ]),
            Marker::Text("powering off".to_string()),
        ],
        forbidden: ["panic", "unexpected exception", "FAIL", "stopped:"]
            .map(String::from)
            .to_vec(),
        exit: ExitExpectation::Poweroff,
        timeout: TIMEOUT,
    }
}

/// A value for the table: whole numbers as such, others with three decimals.
fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else if value.abs() >= 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

/// One table row per figure (copies also in MiB/s), then the ratios.
fn table(icount: &Run, wallclock: &[Run]) -> String {
    let runs = wallclock.len();
    let mut rows: Vec<[String; 5]> = vec![[
        "metric".into(),
        "unit".into(),
        "icount".into(),
        format!("wall-clock median of {runs}"),
        "spread (run medians)".into(),
    ]];
    let spread_text = |spread: Option<Spread>| match spread {
        Some(spread) => (
            number(spread.median),
            format!("{}..{}", number(spread.min), number(spread.max)),
        ),
        None => ("n/a".to_string(), String::new()),
    };
    for figure in &icount.figures {
        let mut keys = vec![("median", figure.unit.clone())];
        if figure.unit == "ns" && figure.get("mib_per_s").is_some() {
            keys.push(("mib_per_s", "MiB/s".to_string()));
        }
        for (key, unit) in keys {
            let per_run: Vec<f64> = wallclock
                .iter()
                .filter_map(|run| find(&run.figures, &figure.metric, &figure.unit)?.get(key))
                .map(|value| value as f64)
                .collect();
            let (wall, spread) = spread_text(Spread::of(&per_run));
            let exact = figure.get(key).map_or("n/a".to_string(), |v| v.to_string());
            rows.push([figure.metric.clone(), unit, exact, wall, spread]);
        }
    }
    for (name, unit, value) in ratios(&icount.figures) {
        let per_run: Vec<f64> = wallclock
            .iter()
            .filter_map(|run| {
                ratios(&run.figures)
                    .into_iter()
                    .find(|(other, other_unit, _)| *other == name && *other_unit == unit)
                    .map(|(_, _, ratio)| ratio)
            })
            .collect();
        let (wall, spread) = spread_text(Spread::of(&per_run));
        rows.push([
            name,
            format!("ratio ({unit})"),
            format!("{value:.3}"),
            wall,
            spread,
        ]);
    }
    let mut widths = [0_usize; 5];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for (index, row) in rows.iter().enumerate() {
        let mut line = String::new();
        for (column, (cell, width)) in row.iter().zip(widths).enumerate() {
            // Text columns left-aligned, numbers right-aligned.
            let _ = if column < 2 {
                write!(line, "{cell:<width$}  ")
            } else {
                write!(line, "{cell:>width$}  ")
            };
        }
        let _ = writeln!(text, "{}", line.trim_end());
        if index == 0 {
            let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
            let _ = writeln!(text, "{}", "-".repeat(total));
        }
    }
    text
}

/// A JSON value, rendered with two-space indentation (xtask has no JSON library).
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Integer(u64),
    Number(f64),
    Text(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn text(value: impl Into<String>) -> Self {
        Self::Text(value.into())
    }

    fn object(fields: Vec<(&str, Json)>) -> Self {
        Self::Object(
            fields
                .into_iter()
                .map(|(key, value)| (key.to_string(), value))
                .collect(),
        )
    }

    /// The value as JSON text, ending with a newline.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out.push('\n');
        out
    }

    fn write(&self, out: &mut String, depth: usize) {
        let indent = |out: &mut String, depth: usize| out.push_str(&"  ".repeat(depth));
        match self {
            Self::Null => out.push_str("null"),
            Self::Bool(value) => out.push_str(if *value { "true" } else { "false" }),
            Self::Integer(value) => out.push_str(&value.to_string()),
            Self::Number(value) if value.is_finite() => out.push_str(&value.to_string()),
            Self::Number(_) => out.push_str("null"),
            Self::Text(value) => write_string(out, value),
            Self::Array(items) if items.is_empty() => out.push_str("[]"),
            Self::Array(items) => {
                out.push_str("[\n");
                for (index, item) in items.iter().enumerate() {
                    indent(out, depth + 1);
                    item.write(out, depth + 1);
                    out.push_str(if index + 1 < items.len() { ",\n" } else { "\n" });
                }
                indent(out, depth);
                out.push(']');
            }
            Self::Object(fields) if fields.is_empty() => out.push_str("{}"),
            Self::Object(fields) => {
                out.push_str("{\n");
                for (index, (key, value)) in fields.iter().enumerate() {
                    indent(out, depth + 1);
                    write_string(out, key);
                    out.push_str(": ");
                    value.write(out, depth + 1);
                    out.push_str(if index + 1 < fields.len() {
                        ",\n"
                    } else {
                        "\n"
                    });
                }
                indent(out, depth);
                out.push('}');
            }
        }
    }
}

fn write_string(out: &mut String, text: &str) {
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn figures_json(figures: &[Figure]) -> Json {
    Json::Array(
        figures
            .iter()
            .map(|figure| {
                let mut fields = vec![
                    ("metric".to_string(), Json::text(&figure.metric)),
                    ("unit".to_string(), Json::text(&figure.unit)),
                ];
                match &figure.values {
                    Some(values) => fields.extend(
                        values
                            .iter()
                            .map(|(key, value)| (key.clone(), Json::Integer(*value))),
                    ),
                    None => fields.push(("available".to_string(), Json::Bool(false))),
                }
                Json::Object(fields)
            })
            .collect(),
    )
}

fn ratios_json(ratios: &[(String, String, f64)]) -> Json {
    Json::Array(
        ratios
            .iter()
            .map(|(name, unit, value)| {
                Json::object(vec![
                    ("ratio", Json::text(name)),
                    ("unit", Json::text(unit)),
                    ("value", Json::Number(*value)),
                ])
            })
            .collect(),
    )
}

fn spread_json(spread: Option<Spread>) -> Vec<(&'static str, Json)> {
    match spread {
        Some(spread) => vec![
            ("median_of_runs", Json::Number(spread.median)),
            ("min_run", Json::Number(spread.min)),
            ("max_run", Json::Number(spread.max)),
        ],
        None => vec![("available", Json::Bool(false))],
    }
}

/// The results file: `{ machine, date, git, icount: {...}, wallclock: { runs: [...], ... } }`.
fn results_json(machine: &str, icount: &Run, wallclock: &[Run]) -> Json {
    let (commit, dirty) = git_state();
    let summary = icount
        .figures
        .iter()
        .map(|figure| {
            let per_run: Vec<f64> = wallclock
                .iter()
                .filter_map(|run| find(&run.figures, &figure.metric, &figure.unit)?.get("median"))
                .map(|value| value as f64)
                .collect();
            let mut fields = vec![
                ("metric", Json::text(&figure.metric)),
                ("unit", Json::text(&figure.unit)),
            ];
            fields.extend(spread_json(Spread::of(&per_run)));
            Json::object(fields)
        })
        .collect();
    let ratio_summary = ratios(&icount.figures)
        .into_iter()
        .map(|(name, unit, _)| {
            let per_run: Vec<f64> = wallclock
                .iter()
                .filter_map(|run| {
                    ratios(&run.figures)
                        .into_iter()
                        .find(|(other, other_unit, _)| *other == name && *other_unit == unit)
                        .map(|(_, _, ratio)| ratio)
                })
                .collect();
            let mut fields = vec![("ratio", Json::text(name)), ("unit", Json::text(unit))];
            fields.extend(spread_json(Spread::of(&per_run)));
            Json::object(fields)
        })
        .collect();
    Json::object(vec![
        ("machine", Json::text(machine)),
        ("date", Json::text(utc_timestamp(SystemTime::now()))),
        ("git", commit.map_or(Json::Null, Json::Text)),
        ("git_dirty", dirty.map_or(Json::Null, Json::Bool)),
        ("configuration", Json::text(CONFIG)),
        (
            "icount",
            Json::object(vec![
                ("qemu", Json::text(&icount.command)),
                ("figures", figures_json(&icount.figures)),
                ("ratios", ratios_json(&ratios(&icount.figures))),
            ]),
        ),
        (
            "wallclock",
            Json::object(vec![
                (
                    "qemu",
                    Json::text(wallclock.first().map_or("", |run| &run.command)),
                ),
                (
                    "runs",
                    Json::Array(
                        wallclock
                            .iter()
                            .map(|run| {
                                Json::object(vec![
                                    ("figures", figures_json(&run.figures)),
                                    ("ratios", ratios_json(&ratios(&run.figures))),
                                ])
                            })
                            .collect(),
                    ),
                ),
                ("medians", Json::Array(summary)),
                ("ratios", Json::Array(ratio_summary)),
            ]),
        ),
    ])
}

/// `git rev-parse HEAD` and whether the work tree has changes; `None` where git cannot say.
fn git_state() -> (Option<String>, Option<bool>) {
    let git = |arguments: &[&str]| -> Option<String> {
        let output = Command::new("git")
            .args(arguments)
            .current_dir(workspace::root())
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "HEAD"]);
    let dirty = git(&["status", "--porcelain"]).map(|changes| !changes.is_empty());
    (commit, dirty)
}

/// `time` as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn utc_timestamp(time: SystemTime) -> String {
    let seconds = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Gregorian (year, month, day) of `days` after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Where the results go.
pub fn results_path() -> PathBuf {
    workspace::target_dir().join("bench").join("results.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figure_lines_are_parsed_with_and_without_the_console_prefix() {
        let figure = parse_line(
            "[benchping] bench: roundtrip qnx ns median=1234 min=1000 p90=1500 max=3000 n=200",
        )
        .unwrap();
        assert_eq!(figure.metric, "roundtrip qnx");
        assert_eq!(figure.unit, "ns");
        assert_eq!(figure.get("median"), Some(1234));
        assert_eq!(figure.get("n"), Some(200));
        assert_eq!(figure.get("mean"), None);

        let figure =
            parse_line("bench: copy private->shared cycles median=98310 n=20 mib_per_s=10171")
                .unwrap();
        assert_eq!(figure.metric, "copy private->shared");
        assert_eq!(figure.get("mib_per_s"), Some(10171));

        let figure = parse_line("[benchping] bench: roundtrip qnx cycles n/a").unwrap();
        assert_eq!(figure.unit, "cycles");
        assert_eq!(figure.values, None);
        assert_eq!(figure.get("median"), None);
    }

    #[test]
    fn other_lines_are_not_figures() {
        assert_eq!(parse_line("[benchping] PASS"), None);
        assert_eq!(parse_line("benchping: counter 62500000 Hz"), None);
        assert_eq!(parse_line("bench: roundtrip qnx ns"), None);
        assert_eq!(parse_line("bench: ns median=3"), None);
        assert_eq!(parse_line("bench: roundtrip qnx ns median=x"), None);
        assert_eq!(parse_line("bench: a ns median=1 stray"), None);
    }

    #[test]
    fn ratios_compare_medians_of_one_run() {
        let figures = parse_figures(
            "bench: copy private->private ns median=200 n=20\n\
             bench: copy private->shared ns median=300 n=20\n\
             bench: copy shared->private ns median=100 n=20\n\
             bench: copy private->private cycles n/a\n",
        );
        let ratios = ratios(&figures);
        assert_eq!(
            ratios,
            [
                (
                    "copy private->shared / private->private".to_string(),
                    "ns".to_string(),
                    1.5
                ),
                (
                    "copy shared->private / private->private".to_string(),
                    "ns".to_string(),
                    0.5
                ),
            ]
        );
    }

    #[test]
    fn medians_and_spreads() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        let spread = Spread::of(&[5.0, 1.0, 9.0, 2.0, 4.0]).unwrap();
        assert_eq!(
            spread,
            Spread {
                median: 4.0,
                min: 1.0,
                max: 9.0
            }
        );
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        let at = |seconds| utc_timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(at(1_735_689_600), "2025-01-01T00:00:00Z");
    }

    #[test]
    fn json_is_rendered_and_escaped() {
        let json = Json::object(vec![
            ("name", Json::text("a \"quoted\"\\path\n")),
            (
                "list",
                Json::Array(vec![Json::Integer(1), Json::Number(0.5)]),
            ),
            ("empty", Json::Array(Vec::new())),
            ("none", Json::Null),
            ("nan", Json::Number(f64::NAN)),
        ]);
        assert_eq!(
            json.render(),
            "{\n  \"name\": \"a \\\"quoted\\\"\\\\path\\n\",\n  \"list\": [\n    1,\n    0.5\n  ],\n  \
             \"empty\": [],\n  \"none\": null,\n  \"nan\": null\n}\n"
        );
    }

    #[test]
    fn the_table_shows_icount_wallclock_and_ratios() {
        let run = |text: &str| Run {
            command: String::new(),
            figures: parse_figures(text),
            notes: Vec::new(),
        };
        let icount = run(
            "bench: copy private->private ns median=100 n=20 mib_per_s=10000\n\
                          bench: copy private->shared ns median=100 n=20 mib_per_s=10000\n",
        );
        let wallclock = [
            run(
                "bench: copy private->private ns median=1000 n=20 mib_per_s=1000\n\
                 bench: copy private->shared ns median=500 n=20 mib_per_s=2000\n",
            ),
            run(
                "bench: copy private->private ns median=2000 n=20 mib_per_s=500\n\
                 bench: copy private->shared ns median=1000 n=20 mib_per_s=1000\n",
            ),
        ];
        let table = table(&icount, &wallclock);
        let rows: Vec<Vec<&str>> = table
            .lines()
            .map(|line| line.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0][0], "metric", "{table}");
        assert!(rows[1][0].starts_with("---"), "{table}");
        assert_eq!(
            rows[2],
            [
                "copy",
                "private->private",
                "ns",
                "100",
                "1500",
                "1000..2000"
            ],
            "{table}"
        );
        assert_eq!(
            rows[3],
            [
                "copy",
                "private->private",
                "MiB/s",
                "10000",
                "750",
                "500..1000"
            ],
            "{table}"
        );
        assert_eq!(
            rows[6],
            [
                "copy",
                "private->shared",
                "/",
                "private->private",
                "ratio",
                "(ns)",
                "1.000",
                "0.500",
                "0.500..0.500"
            ],
            "{table}"
        );
    }
}
