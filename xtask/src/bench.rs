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
//! The guests also print the hypervisor's own cost (`bench: hyp ...`: EL2 instructions per
//! doorbell and per trap, exits per round trip; see [`hypervisor`]); the icount run is made on
//! every profile of [`ICOUNT_MACHINES`] (and `--machine`), and those figures are stored by
//! machine under keys such as `el2.one_way_doorbell.qnx`.
//!
//! Then, unless `--no-x86`, the x86_64 figures: VM exits per one-way doorbell on Bochs VMX
//! ([`x86`]), and the hypervisor's exact instructions and exits by class per one-way doorbell
//! on QEMU's AMD SVM under icount ([`svm`], keys `svm.*`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::build::{self, Arch, BootMethod, CargoProfile};
use crate::error::{Context, Error, Result};
use crate::harness;
use crate::markers::{ExitExpectation, Expectation, Marker};
use crate::profile::{Boot, Console, Launch, Profile};
use crate::{setup, workspace};

mod hypervisor;
mod json;
mod results;
mod svm;
mod x86;

use json::Json;
use results::{figures_json, results_json, results_path};

/// The system configuration the benchmarks boot.
pub const CONFIG: &str = "qemu/systems/bench/board.board";
/// The same partitions on a ZynqMP board (RAM at 0), for profiles of QEMU's ZCU102 model.
pub const CONFIG_ZYNQMP: &str = "qemu/systems/bench-zynqmp/board.board";

/// The bench partitions beside a neighbour that prints console lines without a pause (the
/// console-isolation ratio; virt boards only).
pub const CONFIG_NOISY: &str = "qemu/systems/bench-noisy/board.board";

/// The round trips compared between the quiet and the noisy runs.
const NEIGHBOUR_METRICS: [(&str, &str); 2] =
    [("qnx", "roundtrip qnx"), ("ivshmem", "roundtrip ivshmem")];

/// The median of the noisy runs' medians of `metric` (ns) over that of the quiet runs.
fn neighbour_ratio(quiet: &[Run], noisy: &[Run], metric: &str) -> Option<(f64, f64, f64)> {
    let medians = |runs: &[Run]| -> Vec<f64> {
        runs.iter()
            .filter_map(|run| find(&run.figures, metric, "ns")?.get("median"))
            .map(|value| value as f64)
            .collect()
    };
    let alone = median(&medians(quiet))?;
    let beside = median(&medians(noisy))?;
    (alone > 0.0).then(|| (alone, beside, beside / alone))
}

/// The bench configuration for a machine profile.
fn config_for(profile: &Profile) -> &'static str {
    if profile.machine.starts_with("xlnx-zcu102") {
        CONFIG_ZYNQMP
    } else {
        CONFIG
    }
}
/// The machine profile unless `--machine` says otherwise.
const DEFAULT_MACHINE: &str = "virt-gicv3";
/// Profiles the icount run is also made on (for the hypervisor figures), after `--machine`.
const ICOUNT_MACHINES: [&str; 2] = ["virt-gicv3", "virt-gicv2"];
/// CPUs the configuration's board has (benchping on 1, benchpong on 2, 0 and 3 idle).
const SMP: u32 = 4;
/// QEMU's deterministic mode: one instruction per virtual nanosecond, no idle sleeping.
const ICOUNT: [&str; 2] = ["-icount", "shift=0,sleep=off"];
/// The kernel command-line word the test harness also passes: a panic or fatal exception exits
/// QEMU (started with `-semihosting`) with status 1, so a broken run fails at once.
const SEMIHOSTING_EXIT: &str = "bulkhead.exit=semihosting";
/// What the guests' lines about the hypervisor counters contain (`benchping: hypervisor: ...`).
const HYPERVISOR_NOTE: &str = ": hypervisor: ";
/// Limit of one emulator run.
const TIMEOUT: Duration = Duration::from_secs(300);

/// Options of `cargo xtask bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Machine profile (an aarch64 one: virt-gicv3, virt-gicv2, zcu102 (whose bench system is
    /// qemu/systems/bench-zynqmp, RAM at 0)) or the path of a profile file:
    /// the wall-clock runs and the first icount run; the icount run is also made on
    /// virt-gicv3 and virt-gicv2.
    #[arg(long, value_name = "PROFILE", default_value = DEFAULT_MACHINE)]
    machine: String,
    /// Wall-clock runs (plain TCG); each run's medians are combined as a median across runs.
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// Skip the x86_64 figures (VM exits per one-way doorbell on Bochs VMX; instructions and
    /// exits per one-way doorbell on QEMU SVM under icount).
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
    let mut icount_profiles = vec![profile.clone()];
    for name in ICOUNT_MACHINES {
        if name != profile.name {
            icount_profiles.push(Profile::load(name)?);
        }
    }
    for profile in &icount_profiles {
        if profile.arch != Arch::Aarch64 {
            return Err(Error::new(format!(
                "machine profile `{}` is for {}: the bench guests are aarch64",
                profile.name,
                profile.arch.name()
            )));
        }
        profile.check_smp(SMP)?;
        setup::emulators(&profile.requirements(BootMethod::Image)?)?;
    }
    // One image per bench configuration the profiles need (the virt boards share one).
    let mut images: Vec<(&'static str, PathBuf)> = Vec::new();
    for machine in &icount_profiles {
        let name = config_for(machine);
        if images.iter().all(|(built, _)| *built != name) {
            let config =
                workspace::absolute_existing(&workspace::root().join(name), "configuration")?;
            let image = build::image(machine.arch, CargoProfile::Release, Some(&config))?;
            images.push((name, image.binary));
        }
    }
    let image_for = |machine: &Profile| -> Result<PathBuf> {
        let name = config_for(machine);
        images
            .iter()
            .find(|(built, _)| *built == name)
            .map(|(_, binary)| binary.clone())
            .ok_or_else(|| Error::new(format!("no bench image was built for {name}")))
    };
    let directory = workspace::target_dir().join("bench");

    // The first icount run is on `--machine` (icount.log), the others on the other profiles.
    let mut icount_runs = Vec::new();
    for (index, machine) in icount_profiles.iter().enumerate() {
        println!(
            "==> icount run on {} (-icount shift=0,sleep=off: instruction counts, deterministic)",
            machine.name
        );
        let log = if index == 0 {
            directory.join("icount.log")
        } else {
            directory.join(format!("icount-{}.log", machine.name))
        };
        icount_runs.push((
            machine.name.clone(),
            run(machine, &image_for(machine)?, true, &log)?,
        ));
    }
    // The console-isolation case (virt boards): each wall-clock run is followed by one of the
    // same partitions beside a neighbour printing without a pause, run for run, so that both
    // see the same host load; the ratio of their round-trip medians is reported.
    let noisy_image = if config_for(&profile) == CONFIG {
        let config =
            workspace::absolute_existing(&workspace::root().join(CONFIG_NOISY), "configuration")?;
        Some(build::image(profile.arch, CargoProfile::Release, Some(&config))?.binary)
    } else {
        None
    };
    let mut wallclock = Vec::new();
    let mut noisy = Vec::new();
    for index in 1..=args.runs {
        println!(
            "==> wall-clock run {index} of {} on {} (plain TCG)",
            args.runs, profile.name
        );
        let log = directory.join(format!("wallclock-{index}.log"));
        wallclock.push(run(&profile, &image_for(&profile)?, false, &log)?);
        if let Some(image) = &noisy_image {
            println!("==> wall-clock run {index} beside a partition printing without a pause");
            let log = directory.join(format!("wallclock-noisy-{index}.log"));
            noisy.push(run(&profile, image, false, &log)?);
        }
    }
    let Some((_, icount)) = icount_runs.first() else {
        return Err(Error::new("no icount run was made"));
    };

    println!();
    for note in icount
        .notes
        .iter()
        .filter(|note| !note.contains(HYPERVISOR_NOTE))
    {
        println!("note: {note}");
    }
    print!("{}", table(icount, &wallclock));
    println!();
    println!("QEMU command lines:");
    for (machine, run) in &icount_runs {
        println!("  icount ({machine}): $ {}", run.command);
    }
    if let Some(first) = wallclock.first() {
        println!("  wall-clock: $ {}", first.command);
    }

    let mut x86_exits = None;
    if !args.no_x86 {
        println!();
        println!(
            "==> x86_64: VM exits per one-way doorbell ({}, Bochs VMX)",
            x86::CONFIG
        );
        let (figures, command) = x86::measure(&directory)?;
        println!(
            "exchange | quiet round trips | VM exits (both ends) | per round trip | per one-way doorbell"
        );
        for figure in &figures {
            println!(
                "{} | {} | {} + {} | {} | {}",
                figure.exchange,
                figure.rounds,
                figure.exits[0],
                figure.exits[1],
                number(figure.per_round_trip()),
                hypervisor::exits_text(figure.per_one_way())
            );
        }
        println!("  bochs: $ {command}");
        x86_exits = Some((figures, command));
    }
    let mut svm_figures = None;
    if !args.no_x86 {
        println!();
        println!(
            "==> x86_64 AMD SVM: hypervisor instructions per one-way doorbell (QEMU q35-svm, icount)"
        );
        let (figures, commands) = svm::measure(&directory)?;
        for figure in &figures {
            for check in figure.checks() {
                println!("warning (svm): {check}");
            }
        }
        print!("{}", render(&svm_table(&figures), 2));
        for command in &commands {
            println!("  qemu: $ {command}");
        }
        svm_figures = Some((figures, commands));
    }

    let machines: Vec<(String, hypervisor::Figures)> = icount_runs
        .iter()
        .map(|(machine, run)| (machine.clone(), hypervisor::Figures::of(&run.figures)))
        .collect();
    println!();
    println!("The hypervisor itself (icount; per operation, averaged over the timed ones):");
    for (machine, run) in &icount_runs {
        for note in run
            .notes
            .iter()
            .filter(|note| note.contains(HYPERVISOR_NOTE) && note.contains("n/a"))
        {
            println!("note ({machine}): {note}");
        }
        for check in hypervisor::checks(&run.figures) {
            println!("warning ({machine}): {check}");
        }
    }
    print!(
        "{}",
        hypervisor_table(
            &machines,
            x86_exits.as_ref().map(|(figures, _)| &figures[..])
        )
    );

    let mut neighbour = Vec::new();
    if !noisy.is_empty() {
        println!();
        println!(
            "console isolation (wall-clock medians of {} runs each, alone / beside a partition printing without a pause on another CPU):",
            args.runs
        );
        for (key, metric) in NEIGHBOUR_METRICS {
            if let Some((alone, beside, ratio)) = neighbour_ratio(&wallclock, &noisy, metric) {
                println!(
                    "  {metric}: {} ns alone, {} ns beside it: ratio {}",
                    number(alone),
                    number(beside),
                    number(ratio)
                );
                neighbour.push((key, Json::Number(ratio)));
            }
        }
    }

    let results = results_path();
    let mut json = results_json(&profile.name, icount, &wallclock);
    if let Json::Object(fields) = &mut json {
        if !neighbour.is_empty() {
            fields.push((
                "isolation.console_neighbour.roundtrip_ratio".to_string(),
                Json::object(neighbour),
            ));
        }
        fields.extend(hypervisor::json_fields(&machines));
        if let Some((figures, command)) = &x86_exits {
            fields.extend(x86::json_fields(figures, command));
        }
        if let Some((figures, commands)) = &svm_figures {
            fields.extend(svm::json_fields(figures, commands));
        }
        fields.push((
            "icount_other_machines".to_string(),
            Json::Object(
                icount_runs
                    .iter()
                    .skip(1)
                    .map(|(machine, run)| {
                        (
                            machine.clone(),
                            Json::object(vec![
                                ("qemu", Json::text(&run.command)),
                                ("figures", figures_json(&run.figures)),
                            ]),
                        )
                    })
                    .collect(),
            ),
        ));
    }
    std::fs::write(&results, json.render())
        .context(|| format!("cannot write {}", results.display()))?;
    println!("results: {}", results.display());
    Ok(ExitCode::SUCCESS)
}

/// The hypervisor figures: one row per results key, one column per icount machine, and the
/// x86_64 VM exits in a `bochs-vmx` column if they were counted.
fn hypervisor_table(
    machines: &[(String, hypervisor::Figures)],
    x86: Option<&[x86::ExitFigure]>,
) -> String {
    let mut header = vec!["figure".to_string(), "unit".to_string()];
    header.extend(machines.iter().map(|(machine, _)| machine.clone()));
    let mut rows = vec![header];
    for mut row in hypervisor::rows(machines) {
        if x86.is_some() {
            row.push("-".to_string());
        }
        rows.push(row);
    }
    if let Some(figures) = x86 {
        if let Some(first) = rows.first_mut() {
            first.push(x86::MACHINE.to_string());
        }
        for figure in figures {
            let mut row = vec![x86::key(figure), "VM exits, both vCPUs".to_string()];
            row.extend(machines.iter().map(|_| "-".to_string()));
            row.push(hypervisor::exits_text(figure.per_one_way()));
            rows.push(row);
        }
    }
    render(&rows, 2)
}

/// The SVM figures as table rows, under a header.
fn svm_table(figures: &[svm::Measured]) -> Vec<Vec<String>> {
    let mut rows = vec![vec![
        "figure".to_string(),
        "unit".to_string(),
        svm::MACHINE.to_string(),
    ]];
    rows.extend(svm::rows(figures));
    rows
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
            line.contains("benchping: counter")
                || line.contains("benchping: copy buffers")
                || line.contains(HYPERVISOR_NOTE)
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
    let mut rows: Vec<Vec<String>> = vec![vec![
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
    for figure in icount.figures.iter().filter(|figure| is_timing(figure)) {
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
            rows.push(vec![figure.metric.clone(), unit, exact, wall, spread]);
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
        rows.push(vec![
            name,
            format!("ratio ({unit})"),
            format!("{value:.3}"),
            wall,
            spread,
        ]);
    }
    render(&rows, 2)
}

/// Whether `figure` is a timing (kept in the timing table) rather than a raw hypervisor
/// counter line (`bench: hyp ...`, see [`hypervisor`]).
fn is_timing(figure: &Figure) -> bool {
    !figure.metric.starts_with(hypervisor::PREFIX)
}

/// `rows` as aligned text: the first `text_columns` columns left-aligned, the others
/// right-aligned, a rule under the first row.
fn render(rows: &[Vec<String>], text_columns: usize) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0_usize; columns];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for (index, row) in rows.iter().enumerate() {
        let mut line = String::new();
        for (column, (cell, &width)) in row.iter().zip(&widths).enumerate() {
            let _ = if column < text_columns {
                write!(line, "{cell:<width$}  ")
            } else {
                write!(line, "{cell:>width$}  ")
            };
        }
        let _ = writeln!(text, "{}", line.trim_end());
        if index == 0 {
            let total: usize = widths.iter().sum::<usize>() + 2 * columns.saturating_sub(1);
            let _ = writeln!(text, "{}", "-".repeat(total));
        }
    }
    text
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
    fn the_table_shows_icount_wallclock_and_ratios() {
        let run = |text: &str| Run {
            command: String::new(),
            figures: parse_figures(text),
            notes: Vec::new(),
        };
        let icount = run(
            "bench: copy private->private ns median=100 n=20 mib_per_s=10000\n\
             bench: hyp trap hvc instructions machine=1 el1=0 el2=1 n=1\n\
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

    #[test]
    fn the_hypervisor_table_has_a_column_per_machine_and_one_for_bochs() {
        let figures = |text: &str| hypervisor::Figures::of(&parse_figures(text));
        let machines = vec![
            (
                "virt-gicv3".to_string(),
                figures("bench: hyp trap hvc instructions machine=1 el1=0 el2=1374 n=2"),
            ),
            ("virt-gicv2".to_string(), figures("")),
        ];
        let x86 = x86::figures(
            "[ping] ping: 5 quiet round trips: 45 VM exits on this vCPU\n\
             [pong] pong: 5 quiet round trips: 39 VM exits on this vCPU\n\
             [ivping] ivping: 5 quiet round trips: 40 VM exits on this vCPU\n\
             [ivpong] ivpong: 5 quiet round trips: 39 VM exits on this vCPU\n",
        )
        .unwrap();
        let table = hypervisor_table(&machines, Some(&x86));
        let rows: Vec<Vec<&str>> = table
            .lines()
            .map(|line| line.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows[0],
            ["figure", "unit", "virt-gicv3", "virt-gicv2", "bochs-vmx"],
            "{table}"
        );
        assert_eq!(
            rows[6],
            ["el2.trap.hvc", "EL2", "instructions", "687", "n/a", "-"],
            "{table}"
        );
        let last = rows.len() - 1;
        assert_eq!(
            rows[last - 1],
            [
                "x86.exits.one_way_doorbell.qnx",
                "VM",
                "exits,",
                "both",
                "vCPUs",
                "-",
                "-",
                "8.4"
            ],
            "{table}"
        );
        assert_eq!(
            rows[last],
            [
                "x86.exits.one_way_doorbell.ivshmem",
                "VM",
                "exits,",
                "both",
                "vCPUs",
                "-",
                "-",
                "7.9"
            ],
            "{table}"
        );
        let without_x86 = hypervisor_table(&machines, None);
        assert!(!without_x86.contains("bochs"), "{without_x86}");
    }
}
