//! The results file, `target/bench/results.json`: what was run and the figures it printed.
//!
//! [`results_json`] makes the timing part (`machine`, `date`, `git`, `git_dirty`,
//! `configuration`, `icount`, `wallclock`); `cargo xtask bench` then adds the hypervisor keys
//! (`el2.*`, `exits.*`, see [`super::hypervisor::json_fields`]), the x86_64 ones
//! (`x86.exits.*`, see [`super::x86::json_fields`]; `svm.*`, see
//! [`super::svm::json_fields`]) and `icount_other_machines` (the raw figures of the icount
//! runs on the other profiles).

use std::path::PathBuf;
use std::process::Command;
use std::time::SystemTime;

use super::json::Json;
use super::{CONFIG, Figure, Run, Spread, find, is_timing, ratios};
use crate::workspace;

pub fn figures_json(figures: &[Figure]) -> Json {
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
pub fn results_json(machine: &str, icount: &Run, wallclock: &[Run]) -> Json {
    let (commit, dirty) = git_state();
    let summary = icount
        .figures
        .iter()
        .filter(|figure| is_timing(figure))
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
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        let at = |seconds| utc_timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(at(1_735_689_600), "2025-01-01T00:00:00Z");
    }
}
