//! The hypervisor's own cost, computed from the bench guests' `bench: hyp ...` lines of an
//! icount run: EL2 instructions per one-way doorbell and per trap, exits per round trip.
//!
//! The guests print raw counter deltas (see `guests/bench/src/main.rs` and `hypervisor.rs`):
//!
//! - `bench: hyp roundtrip PATH instructions machine=M el1=A el2=B halted=H peer_el1=C n=N`:
//!   over N timed round trips, M instructions of the whole machine, A of benchping at EL1, B
//!   while benchping's CPU was at EL2, H while it slept at EL1 in a WFI the hypervisor lets
//!   the guest execute (under icount an EL1 counter goes on counting the machine then; the
//!   guests take that out of A and C), C of benchpong at EL1 (over N of its own rounds). The
//!   hypervisor ran M - A - C instructions: per one-way doorbell (M - A - C) / 2N.
//! - `bench: hyp trap KIND instructions machine=M el1=A el2=B n=N`: N traps while benchpong
//!   sleeps: the EL2 counter alone is the hypervisor's cost, B / N per trap.
//! - `bench: hyp exits PATH exits total=T mmio=D wfi=W irq=I n=N peer_total=.. peer_mmio=..
//!   peer_wfi=.. peer_irq=.. peer_n=P`: each side's exits over its N (P) rounds, counted with
//!   Bulkhead's exit-count hypercall; each total includes one of that side's two reading
//!   hypercalls, which is taken off (from the "other" class). Per round trip: both sides,
//!   each divided by its own rounds.
//!
//! In every window benchping is running at EL1, at EL2, or asleep, so
//! `el1 + el2 + halted = machine` (`halted` is 0 where the line has none): [`checks`] reports
//! a window where that fails by more than one instruction per operation.

use super::json::Json;
use super::{Figure, find};

/// The metric prefix of these lines (kept out of the timing table).
pub const PREFIX: &str = "hyp ";
/// Doorbell paths (`bench:` name = results key suffix).
pub const PATHS: [&str; 2] = ["qnx", "ivshmem"];
/// Trap kinds (`bench:` name = results key suffix).
pub const TRAPS: [&str; 3] = ["mmio_write", "mmio_read", "hvc"];
/// Exit classes the hypercall distinguishes, then the rest.
pub const CLASSES: [&str; 4] = ["mmio", "wfi", "irq", "other"];

/// `numerator / denominator` rounded to the nearest integer (`None` for a zero denominator).
fn divide_rounded(numerator: u64, denominator: u64) -> Option<u64> {
    (denominator != 0).then(|| (numerator + denominator / 2) / denominator)
}

/// `value` rounded to one decimal.
pub fn tenths(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// EL2 instructions per one-way doorbell of `path`: the hypervisor's instructions per round
/// trip (whole machine minus both guests' EL1) halved and rounded.
pub fn one_way_doorbell(figures: &[Figure], path: &str) -> Option<u64> {
    let figure = find(
        figures,
        &format!("{PREFIX}roundtrip {path}"),
        "instructions",
    )?;
    let hypervisor = figure
        .get("machine")?
        .checked_sub(figure.get("el1")?)?
        .checked_sub(figure.get("peer_el1")?)?;
    divide_rounded(hypervisor, figure.get("n")?.checked_mul(2)?)
}

/// EL2 instructions per trap of `kind`, rounded.
pub fn trap(figures: &[Figure], kind: &str) -> Option<u64> {
    let figure = find(figures, &format!("{PREFIX}trap {kind}"), "instructions")?;
    divide_rounded(figure.get("el2")?, figure.get("n")?)
}

/// Exits per round trip, both vCPUs together: all, and by [`CLASSES`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exits {
    pub total: f64,
    pub classes: [f64; 4],
}

/// One side's exits per round: `(total, [mmio, wfi, irq, other])`, its reading hypercall
/// taken off.
fn side(figure: &Figure, prefix: &str) -> Option<(f64, [f64; 4])> {
    let value = |key: &str| figure.get(&format!("{prefix}{key}"));
    let rounds = value("n").filter(|&rounds| rounds > 0)? as f64;
    let total = value("total")?.checked_sub(1)?;
    let (mmio, wfi, irq) = (value("mmio")?, value("wfi")?, value("irq")?);
    let other = total
        .checked_sub(mmio)?
        .checked_sub(wfi)?
        .checked_sub(irq)?;
    let per_round = |count: u64| count as f64 / rounds;
    Some((
        per_round(total),
        [
            per_round(mmio),
            per_round(wfi),
            per_round(irq),
            per_round(other),
        ],
    ))
}

/// Exits per round trip of `path` (both vCPUs), if both sides could count them.
pub fn exits_round_trip(figures: &[Figure], path: &str) -> Option<Exits> {
    let figure = find(figures, &format!("{PREFIX}exits {path}"), "exits")?;
    let (mine, my_classes) = side(figure, "")?;
    let (theirs, their_classes) = side(figure, "peer_")?;
    let mut classes = [0.0; 4];
    for ((sum, a), b) in classes.iter_mut().zip(my_classes).zip(their_classes) {
        *sum = tenths(a + b);
    }
    Some(Exits {
        total: tenths(mine + theirs),
        classes,
    })
}

/// Windows where benchping's EL1 + EL2 (+ what ran while it slept) differ from the whole
/// machine by more than one instruction per operation (a counter that missed or
/// double-counted something).
pub fn checks(figures: &[Figure]) -> Vec<String> {
    figures
        .iter()
        .filter(|figure| figure.metric.starts_with(PREFIX) && figure.unit == "instructions")
        .filter_map(|figure| {
            let (machine, el1, el2) = (
                figure.get("machine")?,
                figure.get("el1")?,
                figure.get("el2")?,
            );
            let n = figure.get("n")?;
            let halted = figure.get("halted").unwrap_or(0);
            let sum = el1.checked_add(el2)?.checked_add(halted)?;
            (machine.abs_diff(sum) > n).then(|| {
                format!(
                    "{}: benchping's EL1 {el1} + EL2 {el2} = {sum}, the whole machine counted {machine} ({n} operations)",
                    figure.metric
                )
            })
        })
        .collect()
}

/// The aarch64 figures of one icount run, by results key.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    /// `el2.one_way_doorbell.PATH`, `el2.trap.KIND`: EL2 instructions.
    pub instructions: Vec<(String, Option<u64>)>,
    /// `exits.round_trip.PATH`.
    pub exits: Vec<(String, Option<Exits>)>,
}

impl Figures {
    pub fn of(figures: &[Figure]) -> Self {
        let doorbells = PATHS.iter().map(|path| {
            (
                format!("el2.one_way_doorbell.{path}"),
                one_way_doorbell(figures, path),
            )
        });
        let traps = TRAPS
            .iter()
            .map(|kind| (format!("el2.trap.{kind}"), trap(figures, kind)));
        Self {
            instructions: doorbells.chain(traps).collect(),
            exits: PATHS
                .iter()
                .map(|path| {
                    (
                        format!("exits.round_trip.{path}"),
                        exits_round_trip(figures, path),
                    )
                })
                .collect(),
        }
    }
}

/// One exit figure as table text (one decimal).
pub fn exits_text(value: f64) -> String {
    format!("{value:.1}")
}

/// Table rows `[key, unit, one cell per machine...]` for the figures of several machines
/// (same order as `machines`).
pub fn rows(machines: &[(String, Figures)]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let Some((_, first)) = machines.first() else {
        return rows;
    };
    for (index, (key, _)) in first.instructions.iter().enumerate() {
        let mut row = vec![key.clone(), "EL2 instructions".to_string()];
        row.extend(machines.iter().map(|(_, figures)| {
            figures
                .instructions
                .get(index)
                .and_then(|(_, value)| *value)
                .map_or("n/a".to_string(), |value| value.to_string())
        }));
        rows.push(row);
    }
    for (index, (key, _)) in first.exits.iter().enumerate() {
        let exits = |figures: &Figures| figures.exits.get(index).and_then(|(_, value)| *value);
        let mut row = vec![key.clone(), "exits, both vCPUs".to_string()];
        row.extend(machines.iter().map(|(_, figures)| {
            exits(figures).map_or("n/a".to_string(), |value| exits_text(value.total))
        }));
        rows.push(row);
        if machines.iter().any(|(_, figures)| exits(figures).is_some()) {
            for (class_index, class) in CLASSES.iter().enumerate() {
                let mut row = vec![format!("  of which {class}"), String::new()];
                row.extend(machines.iter().map(|(_, figures)| {
                    exits(figures)
                        .and_then(|value| value.classes.get(class_index).copied())
                        .map_or("n/a".to_string(), exits_text)
                }));
                rows.push(row);
            }
        }
    }
    rows
}

/// Results-file fields: each key an object by machine (`null` where not measured), the
/// exits also `KEY_by_class` (`{mmio, wfi, irq, other}` by machine).
pub fn json_fields(machines: &[(String, Figures)]) -> Vec<(String, Json)> {
    let mut fields = Vec::new();
    let Some((_, first)) = machines.first() else {
        return fields;
    };
    for (index, (key, _)) in first.instructions.iter().enumerate() {
        let by_machine = machines
            .iter()
            .map(|(machine, figures)| {
                let value = figures
                    .instructions
                    .get(index)
                    .and_then(|(_, value)| *value);
                (machine.clone(), value.map_or(Json::Null, Json::Integer))
            })
            .collect();
        fields.push((key.clone(), Json::Object(by_machine)));
    }
    for (index, (key, _)) in first.exits.iter().enumerate() {
        let exits = |figures: &Figures| figures.exits.get(index).and_then(|(_, value)| *value);
        let totals = machines
            .iter()
            .map(|(machine, figures)| {
                let value = exits(figures).map_or(Json::Null, |value| Json::Number(value.total));
                (machine.clone(), value)
            })
            .collect();
        let classes = machines
            .iter()
            .map(|(machine, figures)| {
                let value = exits(figures).map_or(Json::Null, |value| {
                    Json::Object(
                        CLASSES
                            .iter()
                            .zip(value.classes)
                            .map(|(class, count)| (class.to_string(), Json::Number(count)))
                            .collect(),
                    )
                });
                (machine.clone(), value)
            })
            .collect();
        fields.push((key.clone(), Json::Object(totals)));
        fields.push((format!("{key}_by_class"), Json::Object(classes)));
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::super::parse_figures;
    use super::*;

    /// What the guests printed at 39ce36e on virt-gicv3, with made-up exit counts.
    const SERIAL: &str = "\
[benchping] bench: roundtrip qnx cycles median=25461 min=25461 p90=25461 max=25465 n=200
[benchping] bench: hyp roundtrip qnx instructions machine=5098203 el1=72199 el2=5026004 peer_el1=87602 n=200
[benchping] bench: hyp exits qnx exits total=801 mmio=400 wfi=200 irq=200 n=200 peer_total=805 peer_mmio=402 peer_wfi=201 peer_irq=201 peer_n=201
[benchping] bench: hyp roundtrip ivshmem instructions machine=3025003 el1=73599 el2=2951404 peer_el1=93801 n=200
[benchping] bench: hyp exits ivshmem exits n/a
[benchping] bench: hyp trap mmio_write instructions machine=394409 el1=409 el2=394000 n=200
[benchping] bench: hyp trap mmio_read instructions machine=389211 el1=411 el2=388800 n=200
[benchping] bench: hyp trap hvc instructions n/a
";

    #[test]
    fn doorbells_are_the_machine_minus_both_guests_halved() {
        let figures = parse_figures(SERIAL);
        // (5098203 - 72199 - 87602) / 400 = 12346.005
        assert_eq!(one_way_doorbell(&figures, "qnx"), Some(12346));
        // (3025003 - 73599 - 93801) / 400 = 7144.0075
        assert_eq!(one_way_doorbell(&figures, "ivshmem"), Some(7144));
        assert_eq!(one_way_doorbell(&figures, "other"), None);
        let broken =
            parse_figures("bench: hyp roundtrip qnx instructions machine=5 el1=9 peer_el1=0 n=2");
        assert_eq!(one_way_doorbell(&broken, "qnx"), None);
        let empty =
            parse_figures("bench: hyp roundtrip qnx instructions machine=5 el1=0 peer_el1=0 n=0");
        assert_eq!(one_way_doorbell(&empty, "qnx"), None);
    }

    #[test]
    fn traps_are_the_el2_counter_per_trap() {
        let figures = parse_figures(SERIAL);
        assert_eq!(trap(&figures, "mmio_write"), Some(1970));
        assert_eq!(trap(&figures, "mmio_read"), Some(1944));
        assert_eq!(trap(&figures, "hvc"), None);
    }

    #[test]
    fn exits_add_both_sides_per_round_without_the_reading_hypercalls() {
        let figures = parse_figures(SERIAL);
        let exits = exits_round_trip(&figures, "qnx").unwrap();
        // benchping: 800 / 200 = 4 (2 mmio, 1 wfi, 1 irq); benchpong: 804 / 201 = 4 (2, 1, 1).
        assert_eq!(exits.total, 8.0);
        assert_eq!(exits.classes, [4.0, 2.0, 2.0, 0.0]);
        assert_eq!(exits_round_trip(&figures, "ivshmem"), None);
        let odd = parse_figures(
            "bench: hyp exits qnx exits total=700 mmio=300 wfi=200 irq=100 n=200 \
             peer_total=604 peer_mmio=201 peer_wfi=201 peer_irq=0 peer_n=201",
        );
        let exits = exits_round_trip(&odd, "qnx").unwrap();
        // 699 / 200 + 603 / 201 = 3.495 + 3 = 6.495; other: 99 / 200 + 201 / 201 = 1.495.
        assert_eq!(exits.total, 6.5);
        assert_eq!(exits.classes, [2.5, 2.0, 0.5, 1.5]);
        let missing_peer =
            parse_figures("bench: hyp exits qnx exits total=7 mmio=1 wfi=1 irq=1 n=1");
        assert_eq!(exits_round_trip(&missing_peer, "qnx"), None);
    }

    #[test]
    fn windows_that_do_not_add_up_are_reported() {
        assert!(checks(&parse_figures(SERIAL)).is_empty());
        let off =
            parse_figures("bench: hyp trap hvc instructions machine=1000 el1=10 el2=500 n=200");
        let notes = checks(&off);
        assert_eq!(notes.len(), 1);
        assert!(notes[0].starts_with("hyp trap hvc: "), "{notes:?}");
        // What ran while benchping slept in its own WFI completes the sum.
        let slept = parse_figures(
            "bench: hyp roundtrip qnx instructions machine=1000 el1=100 el2=300 halted=600 peer_el1=90 n=2",
        );
        assert!(checks(&slept).is_empty());
        let short = parse_figures(
            "bench: hyp roundtrip qnx instructions machine=1000 el1=100 el2=300 halted=500 peer_el1=90 n=2",
        );
        assert_eq!(checks(&short).len(), 1);
    }

    #[test]
    fn rows_and_json_are_keyed_by_figure_and_machine() {
        let gicv3 = Figures::of(&parse_figures(SERIAL));
        let gicv2 = Figures::of(&parse_figures(
            "bench: hyp trap hvc instructions machine=1 el1=0 el2=600 n=2",
        ));
        let machines = vec![
            ("virt-gicv3".to_string(), gicv3),
            ("virt-gicv2".to_string(), gicv2),
        ];
        let rows = rows(&machines);
        assert_eq!(
            rows[0],
            [
                "el2.one_way_doorbell.qnx",
                "EL2 instructions",
                "12346",
                "n/a"
            ]
        );
        assert_eq!(rows[4], ["el2.trap.hvc", "EL2 instructions", "n/a", "300"]);
        assert_eq!(
            rows[5],
            ["exits.round_trip.qnx", "exits, both vCPUs", "8.0", "n/a"]
        );
        assert_eq!(rows[6], ["  of which mmio", "", "4.0", "n/a"]);
        assert_eq!(rows[9], ["  of which other", "", "0.0", "n/a"]);
        assert_eq!(
            rows[10],
            [
                "exits.round_trip.ivshmem",
                "exits, both vCPUs",
                "n/a",
                "n/a"
            ]
        );
        assert_eq!(rows.len(), 11);

        let json = Json::Object(json_fields(&machines)).render();
        assert!(json.contains("\"el2.one_way_doorbell.qnx\": {\n    \"virt-gicv3\": 12346,\n    \"virt-gicv2\": null\n  }"), "{json}");
        assert!(
            json.contains(
                "\"el2.trap.hvc\": {\n    \"virt-gicv3\": null,\n    \"virt-gicv2\": 300\n  }"
            ),
            "{json}"
        );
        assert!(
            json.contains("\"exits.round_trip.qnx\": {\n    \"virt-gicv3\": 8,\n"),
            "{json}"
        );
        assert!(json.contains("\"exits.round_trip.qnx_by_class\": {\n    \"virt-gicv3\": {\n      \"mmio\": 4,\n      \"wfi\": 2,\n      \"irq\": 2,\n      \"other\": 0\n    },\n    \"virt-gicv2\": null\n  }"), "{json}");
    }
}
