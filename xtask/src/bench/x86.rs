//! The x86_64 doorbell figure: VM exits per one-way doorbell. Bochs emulates VMX but has no
//! instruction counter worth quoting, so the figure is counted exits instead: the exchange
//! guests (`guests/pingpong`, `guests/ivpingpong` built for x86_64) play quiet round trips
//! after their printed ones and read Bulkhead's exit-count MSR (0x4000_0100) at the edges of
//! a 3- and an 8-round window, printing the second less the first (5 round trips, the
//! readings' own exits cancelled; until the SVM bench it was one 5-round window with one
//! reading's exit taken off) as `NAME: R quiet round trips: E VM exits on this vCPU`. A round trip costs both ends'
//! exits divided by R, a one-way doorbell half of that (results keys
//! `x86.exits.one_way_doorbell.qnx` / `.ivshmem`; until commit 39ce36e the results file had
//! the per-round-trip figure, twice as large, as `x86_vm_exits.exchanges[].per_round_trip`,
//! which `x86.exits.counts` still holds). The counts are deterministic: the same on every run.

use std::path::Path;
use std::time::Duration;

use super::json::Json;
use crate::build::{self, Arch, BootMethod, CargoProfile};
use crate::error::{Error, Result};
use crate::harness;
use crate::markers::{ExitExpectation, Expectation, Marker};
use crate::profile::{Boot, Console, Launch, Profile};
use crate::{setup, workspace};

/// The configuration measured: both personalities side by side (the demo's, with MSI-X
/// doorbells both ways for ivshmem).
pub const CONFIG: &str = "qemu/systems/x86-bench-exits/board.board";
/// The VMX machine.
pub const MACHINE: &str = "bochs-vmx";
/// CPUs the configuration uses.
const SMP: u32 = 4;
const TIMEOUT: Duration = Duration::from_secs(300);
/// The exchanges measured: what, its results-key suffix, and the two partitions that play it.
const PAIRS: [(&str, &str, &str, &str); 2] = [
    (
        "QNX vdev shmem, PCI, INTx on an I/O APIC pin",
        "qnx",
        "ping",
        "pong",
    ),
    (
        "ivshmem-doorbell, MSI-X both ways",
        "ivshmem",
        "ivping",
        "ivpong",
    ),
];

/// The VM exits of one exchange's quiet round trips.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitFigure {
    /// What was exchanged.
    pub exchange: &'static str,
    /// The results-key suffix (`qnx`, `ivshmem`).
    pub path: &'static str,
    /// Quiet round trips.
    pub rounds: u64,
    /// The exits each end's vCPU took during them.
    pub exits: [u64; 2],
}

impl ExitFigure {
    /// VM exits of both vCPUs per round trip.
    pub fn per_round_trip(&self) -> f64 {
        (self.exits[0] + self.exits[1]) as f64 / self.rounds.max(1) as f64
    }

    /// VM exits of both vCPUs per one-way doorbell (half a round trip).
    pub fn per_one_way(&self) -> f64 {
        self.per_round_trip() / 2.0
    }
}

/// The results key of `figure`: `x86.exits.one_way_doorbell.PATH`.
pub fn key(figure: &ExitFigure) -> String {
    format!("x86.exits.one_way_doorbell.{}", figure.path)
}

/// Results-file fields: one key per exchange (VM exits per one-way doorbell), and
/// `x86.exits.counts` with the raw counts and the Bochs command line.
pub fn json_fields(figures: &[ExitFigure], command: &str) -> Vec<(String, Json)> {
    let mut fields: Vec<(String, Json)> = figures
        .iter()
        .map(|figure| (key(figure), Json::Number(figure.per_one_way())))
        .collect();
    let exchanges = figures
        .iter()
        .map(|figure| {
            Json::object(vec![
                ("exchange", Json::text(figure.exchange)),
                ("key", Json::text(key(figure))),
                ("quiet_round_trips", Json::Integer(figure.rounds)),
                (
                    "exits",
                    Json::Array(figure.exits.iter().map(|&e| Json::Integer(e)).collect()),
                ),
                ("per_round_trip", Json::Number(figure.per_round_trip())),
            ])
        })
        .collect();
    fields.push((
        "x86.exits.counts".to_string(),
        Json::object(vec![
            ("configuration", Json::text(CONFIG)),
            ("machine", Json::text(MACHINE)),
            ("bochs", Json::text(command)),
            ("exchanges", Json::Array(exchanges)),
        ]),
    ));
    fields
}

/// `(rounds, exits)` from partition `name`'s line
/// `[NAME] NAME: R quiet round trips: E VM exits on this vCPU`.
pub fn parse_quiet(serial: &str, name: &str) -> Option<(u64, u64)> {
    let prefix = format!("[{name}] {name}: ");
    serial.lines().find_map(|line| {
        let rest = line.trim().strip_prefix(&prefix)?;
        let (rounds, rest) = rest.split_once(" quiet round trips: ")?;
        let exits = rest.strip_suffix(" VM exits on this vCPU")?;
        Some((rounds.parse().ok()?, exits.parse().ok()?))
    })
}

/// Every pair's figure in a serial transcript.
pub fn figures(serial: &str) -> Result<Vec<ExitFigure>> {
    PAIRS
        .iter()
        .map(|&(exchange, path, one, other)| {
            let (rounds, first) = parse_quiet(serial, one)
                .ok_or_else(|| Error::new(format!("{one} printed no quiet round-trip count")))?;
            let (_, second) = parse_quiet(serial, other)
                .ok_or_else(|| Error::new(format!("{other} printed no quiet round-trip count")))?;
            Ok(ExitFigure {
                exchange,
                path,
                rounds,
                exits: [first, second],
            })
        })
        .collect()
}

/// Builds the x86 demo, boots it on Bochs, and reads the figures; returns them with the
/// emulator's command line.
pub fn measure(directory: &Path) -> Result<(Vec<ExitFigure>, String)> {
    let profile = Profile::load(MACHINE)?;
    profile.check_smp(SMP)?;
    setup::emulators(&profile.requirements(BootMethod::Image)?)?;
    let config = workspace::absolute_existing(&workspace::root().join(CONFIG), "configuration")?;
    let image = build::image(Arch::X86_64, CargoProfile::Release, Some(&config))?;
    let iso = build::iso::make(
        &image.binary,
        Arch::X86_64.failure_exit_option(),
        &directory.join("x86-exits.iso"),
    )?;
    let command = profile.command(&Launch {
        boot: Boot::Iso { iso },
        smp: SMP,
        memory: profile.memory.clone(),
        semihosting: false,
        console: Console::Captured,
        gdb: false,
    })?;
    let line = workspace::display(&command);
    let log = directory.join("x86-exits.log");
    let expectation = Expectation {
        markers: vec![
            Marker::AnyOrder(
                PAIRS
                    .iter()
                    .flat_map(|&(_, _, one, other)| [one, other])
                    .map(|name| format!("[{name}] PASS"))
                    .collect(),
            ),
            Marker::Text("powering off".to_string()),
        ],
        forbidden: ["panic", "unexpected exception", "FAIL", "stopped:"]
            .map(String::from)
            .to_vec(),
        // Bochs exits with status 1 whatever happened: the markers decide.
        exit: ExitExpectation::Markers,
        timeout: TIMEOUT,
    };
    let outcome = harness::run(command, &expectation, &log)?;
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
            "the x86 exit-count run failed: {reason} (log: {})",
            log.display()
        )));
    }
    let serial = std::fs::read(&log)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .map_err(|e| Error::new(format!("cannot read {}: {e}", log.display())))?;
    Ok((figures(&serial)?, line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_lines_parse_and_pairs_add_up() {
        let serial = "\
[ping] ping: sent 1 (checksum 0x5ef8b195)
[pong] pong: 5 quiet round trips: 39 VM exits on this vCPU
[ping] ping: 5 quiet round trips: 45 VM exits on this vCPU
[ivpong] ivpong: 5 quiet round trips: 39 VM exits on this vCPU
[ivping] ivping: 5 quiet round trips: 40 VM exits on this vCPU
";
        assert_eq!(parse_quiet(serial, "ping"), Some((5, 45)));
        assert_eq!(parse_quiet(serial, "pong"), Some((5, 39)));
        assert_eq!(parse_quiet(serial, "ivpi"), None);
        let found = figures(serial).unwrap();
        assert_eq!(found[0].exits, [45, 39]);
        assert!((found[0].per_round_trip() - 16.8).abs() < 1e-9);
        assert!((found[1].per_round_trip() - 15.8).abs() < 1e-9);
        assert!((found[0].per_one_way() - 8.4).abs() < 1e-9);
        assert!((found[1].per_one_way() - 7.9).abs() < 1e-9);
        assert_eq!(key(&found[0]), "x86.exits.one_way_doorbell.qnx");
        assert_eq!(key(&found[1]), "x86.exits.one_way_doorbell.ivshmem");
        let json = Json::Object(json_fields(&found, "bochs -q")).render();
        assert!(
            json.starts_with(
                "{\n  \"x86.exits.one_way_doorbell.qnx\": 8.4,\n  \"x86.exits.one_way_doorbell.ivshmem\": 7.9,\n  \"x86.exits.counts\": {"
            ),
            "{json}"
        );
        assert!(figures("[ping] ping: 5 quiet round trips: x VM exits on this vCPU").is_err());
    }
}
