//! The x86_64 AMD SVM figure: the hypervisor's instructions per one-way doorbell, exact, on
//! QEMU q35-svm (TCG, `-cpu max`) under `-icount shift=0,sleep=off`, and its VM exits by
//! reason (results keys `svm.one_way_doorbell.{qnx,ivshmem}`,
//! `svm.exits.one_way_doorbell.{qnx,ivshmem}` and `..._by_class`).
//!
//! How: x86 under TCG has no per-mode instruction counter (QEMU emulates no x86 PMU), so the
//! figure is the whole machine's instructions less both guests' own:
//!
//! - The machine: under icount QEMU's TSC is its virtual clock, which with `shift=0` advances
//!   by one per instruction executed on any CPU (all CPUs share one thread; with
//!   `sleep=off` it jumps only when every CPU is halted, which never happens during an
//!   exchange: one end always runs). A guest reads it with RDTSC (Bulkhead leaves RDTSC
//!   alone and the TSC offset at 0).
//! - A guest's own instructions: the SVM backend reads the TSC right before VMRUN and right
//!   after #VMEXIT, in the world-switch stub, and adds the difference less the stub's own
//!   instructions in between (`RUN_WINDOW_HOST_INSTRUCTIONS`, 40) to the vCPU's guest time,
//!   which the guest reads through Bulkhead's MSR 0x4000_0101; MSRs 0x4000_0102-0x4000_0106
//!   count its exits by class (NPF, HLT, physical interrupt, RDMSR/WRMSR, other). While a
//!   CPU runs its guest nothing makes QEMU switch to the other CPU (an IPI or HLT makes it
//!   switch, and both happen in the hypervisor), so that difference holds only the guest's
//!   instructions.
//! - The windows: each end reads the counters at the start of the same rounds of its quiet
//!   round trips (`guests/shmem/src/exchange.rs`): a window of 3 round trips, then one of 8
//!   (after 2 to settle). Each window holds one reading of each end (its RDTSC and RDMSR
//!   exits), so the second less the first is 5 round trips with no reading in them; under
//!   icount every round trip in steady state executes the same instructions.
//!
//! Per one-way doorbell: (machine - guest(ping) - guest(pong)) / (2 x 5). The two ends'
//! machine counts must agree (both span the same round trips): [`Measured::checks`] reports
//! them if they do not, or if the exit classes do not add up.
//!
//! Checked against an independent count: the QNX image under `-singlestep -d exec,nochain`
//! (one instruction per translation block, each logged with its CPU and the TB flags, whose
//! HF_GUEST bit, 1 << 21, tells SVM guest mode), counting the log's lines between the ping
//! guest's readings. A logged block whose instruction did not complete is not an
//! instruction: the guest's intercepted one at each exit, and each host access to the
//! xAPIC page, which QEMU logs, re-translates as I/O and runs again. With those taken off the
//! trace agrees to the instruction with both guests' counts and with the machine's TSC, in
//! both windows (README's bench section has the figures; `xtask/tools/svm-trace-count.py`
//! counts such a trace).
//!
//! The figure includes what the counting costs the hypervisor on every exit: the two RDTSCs
//! with their stores in the stub and the sum in the backend (about 20 instructions); the
//! readings' RDMSR exits stay out (the windows cancel them).

use std::path::Path;
use std::time::Duration;

use super::json::Json;
use crate::build::{self, Arch, BootMethod, CargoProfile};
use crate::error::{Error, Result};
use crate::harness;
use crate::markers::{ExitExpectation, Expectation, Marker};
use crate::profile::{Boot, Console, Launch, Profile};
use crate::{setup, workspace};

/// The SVM machine.
pub const MACHINE: &str = "q35-svm";
/// CPUs of both configurations: one per end, nothing else running.
const SMP: u32 = 2;
const TIMEOUT: Duration = Duration::from_secs(300);
/// The exit classes the guests print, in order (Bulkhead's MSRs 0x4000_0102 + index).
pub const CLASSES: [&str; 5] = ["mmio", "hlt", "interrupt", "msr", "other"];
/// The exchanges measured: what, its results-key suffix, the configuration, the two ends.
const EXCHANGES: [(&str, &str, &str, &str, &str); 2] = [
    (
        "QNX vdev shmem, PCI, INTx on an I/O APIC pin",
        "qnx",
        "qemu/systems/x86-bench-qnx/board.board",
        "ping",
        "pong",
    ),
    (
        "ivshmem-doorbell, MSI-X both ways",
        "ivshmem",
        "qemu/systems/x86-bench-ivshmem/board.board",
        "ivping",
        "ivpong",
    ),
];

/// One end's line `[NAME] NAME: quiet windows S,L round trips: tsc=a,b guest=a,b exits=a,b
/// mmio=a,b ...`: the window lengths and each counter's two window values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Windows {
    pub rounds: (u64, u64),
    pub values: Vec<(String, (u64, u64))>,
}

impl Windows {
    /// Counter `key` over the round trips the long window has more than the short one.
    pub fn difference(&self, key: &str) -> Option<u64> {
        let (_, (short, long)) = self.values.iter().find(|(name, _)| name == key)?;
        long.checked_sub(*short)
    }

    /// Those round trips.
    pub fn measured_rounds(&self) -> Option<u64> {
        self.rounds.1.checked_sub(self.rounds.0)
    }
}

/// Partition `name`'s windows line in a serial transcript.
pub fn parse_windows(serial: &str, name: &str) -> Option<Windows> {
    let prefix = format!("[{name}] {name}: quiet windows ");
    serial.lines().find_map(|line| {
        let rest = line.trim().strip_prefix(&prefix)?;
        let (rounds, rest) = rest.split_once(" round trips: ")?;
        let (short, long) = rounds.split_once(',')?;
        let values = rest
            .split_whitespace()
            .map(|token| {
                let (key, pair) = token.split_once('=')?;
                let (a, b) = pair.split_once(',')?;
                Some((key.to_string(), (a.parse().ok()?, b.parse().ok()?)))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Windows {
            rounds: (short.parse().ok()?, long.parse().ok()?),
            values,
        })
    })
}

/// One exchange as measured: both ends' windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measured {
    pub exchange: &'static str,
    pub path: &'static str,
    pub ends: [Windows; 2],
}

impl Measured {
    /// The round trips measured (the same on both ends, else `None`).
    fn rounds(&self) -> Option<u64> {
        let [ping, pong] = &self.ends;
        let rounds = ping.measured_rounds()?;
        (rounds == pong.measured_rounds()? && rounds > 0).then_some(rounds)
    }

    /// The whole machine's instructions over the measured round trips (ping's reading).
    pub fn machine(&self) -> Option<u64> {
        self.ends[0].difference("tsc")
    }

    /// The hypervisor's instructions over the measured round trips: the machine less both
    /// guests.
    pub fn hypervisor(&self) -> Option<u64> {
        let [ping, pong] = &self.ends;
        self.machine()?
            .checked_sub(ping.difference("guest")?)?
            .checked_sub(pong.difference("guest")?)
    }

    /// Hypervisor instructions per one-way doorbell (half a round trip), rounded.
    pub fn per_one_way(&self) -> Option<u64> {
        let doorbells = self.rounds()? * 2;
        Some((self.hypervisor()? + doorbells / 2) / doorbells)
    }

    /// Both ends' exits of `key` (`exits` or a class) per one-way doorbell.
    pub fn exits_per_one_way(&self, key: &str) -> Option<f64> {
        let [ping, pong] = &self.ends;
        let exits = ping.difference(key)? + pong.difference(key)?;
        Some(exits as f64 / (self.rounds()? * 2) as f64)
    }

    /// Measurement problems: the ends' machine counts differ, the classes do not add up to
    /// the exits, a counter is missing.
    pub fn checks(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let [ping, pong] = &self.ends;
        if self.rounds().is_none() || self.hypervisor().is_none() {
            problems.push(format!("{}: incomplete or inconsistent windows", self.path));
        }
        if ping.difference("tsc") != pong.difference("tsc") {
            problems.push(format!(
                "{}: the ends saw the machine run {:?} and {:?} instructions over the same round trips",
                self.path,
                ping.difference("tsc"),
                pong.difference("tsc")
            ));
        }
        for (end, windows) in [("ping", ping), ("pong", pong)] {
            let classes: Option<u64> = CLASSES.iter().map(|c| windows.difference(c)).sum();
            if classes != windows.difference("exits") {
                problems.push(format!(
                    "{}: {end}'s exit classes add up to {classes:?}, its exits to {:?}",
                    self.path,
                    windows.difference("exits")
                ));
            }
        }
        problems
    }
}

/// Both exchanges' figures in their transcripts.
pub fn figures(serials: &[(&'static str, &'static str, String)]) -> Result<Vec<Measured>> {
    serials
        .iter()
        .map(|(exchange, path, serial)| {
            let (_, _, _, one, other) = EXCHANGES
                .iter()
                .find(|(_, p, ..)| p == path)
                .ok_or_else(|| Error::new(format!("no exchange {path}")))?;
            let end = |name: &str| {
                parse_windows(serial, name)
                    .ok_or_else(|| Error::new(format!("{name} printed no quiet windows line")))
            };
            Ok(Measured {
                exchange,
                path,
                ends: [end(one)?, end(other)?],
            })
        })
        .collect()
}

/// The results keys: `svm.one_way_doorbell.PATH` (instructions),
/// `svm.exits.one_way_doorbell.PATH` and `..._by_class`, and `svm.counts` (the raw windows,
/// the QEMU command lines).
pub fn json_fields(figures: &[Measured], commands: &[String]) -> Vec<(String, Json)> {
    let mut fields = Vec::new();
    for figure in figures {
        fields.push((
            format!("svm.one_way_doorbell.{}", figure.path),
            figure.per_one_way().map_or(Json::Null, Json::Integer),
        ));
    }
    for figure in figures {
        let key = format!("svm.exits.one_way_doorbell.{}", figure.path);
        fields.push((
            key.clone(),
            figure
                .exits_per_one_way("exits")
                .map_or(Json::Null, Json::Number),
        ));
        fields.push((
            format!("{key}_by_class"),
            Json::Object(
                CLASSES
                    .iter()
                    .map(|class| {
                        let value = figure.exits_per_one_way(class);
                        (class.to_string(), value.map_or(Json::Null, Json::Number))
                    })
                    .collect(),
            ),
        ));
    }
    let exchanges = figures
        .iter()
        .map(|figure| {
            let ends = figure
                .ends
                .iter()
                .map(|windows| {
                    Json::Object(
                        windows
                            .values
                            .iter()
                            .map(|(key, (short, long))| {
                                (
                                    key.clone(),
                                    Json::Array(vec![Json::Integer(*short), Json::Integer(*long)]),
                                )
                            })
                            .collect(),
                    )
                })
                .collect();
            Json::object(vec![
                ("exchange", Json::text(figure.exchange)),
                (
                    "windows_round_trips",
                    Json::Array(vec![
                        Json::Integer(figure.ends[0].rounds.0),
                        Json::Integer(figure.ends[0].rounds.1),
                    ]),
                ),
                (
                    "machine_instructions",
                    figure.machine().map_or(Json::Null, Json::Integer),
                ),
                (
                    "hypervisor_instructions",
                    figure.hypervisor().map_or(Json::Null, Json::Integer),
                ),
                ("ends", Json::Array(ends)),
            ])
        })
        .collect();
    fields.push((
        "svm.counts".to_string(),
        Json::object(vec![
            ("machine", Json::text(MACHINE)),
            (
                "qemu",
                Json::Array(commands.iter().map(Json::text).collect()),
            ),
            ("exchanges", Json::Array(exchanges)),
        ]),
    ));
    fields
}

/// Table rows `[key, unit, value]`.
pub fn rows(figures: &[Measured]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for figure in figures {
        rows.push(vec![
            format!("svm.one_way_doorbell.{}", figure.path),
            "hypervisor instructions".to_string(),
            figure
                .per_one_way()
                .map_or("n/a".to_string(), |value| value.to_string()),
        ]);
    }
    for figure in figures {
        let text = |key: &str| {
            figure
                .exits_per_one_way(key)
                .map_or("n/a".to_string(), |value| format!("{value:.1}"))
        };
        rows.push(vec![
            format!("svm.exits.one_way_doorbell.{}", figure.path),
            "VM exits, both vCPUs".to_string(),
            text("exits"),
        ]);
        for class in CLASSES {
            rows.push(vec![
                format!("  of which {class}"),
                String::new(),
                text(class),
            ]);
        }
    }
    rows
}

/// Builds each bench configuration, boots it on q35-svm under icount and reads the figures;
/// returns them with the QEMU command lines.
pub fn measure(directory: &Path) -> Result<(Vec<Measured>, Vec<String>)> {
    let profile = Profile::load(MACHINE)?;
    profile.check_smp(SMP)?;
    setup::emulators(&profile.requirements(BootMethod::Image)?)?;
    let mut serials = Vec::new();
    let mut commands = Vec::new();
    for (exchange, path, config, one, other) in EXCHANGES {
        println!("==> SVM icount run: {exchange} ({config})");
        let config =
            workspace::absolute_existing(&workspace::root().join(config), "configuration")?;
        let image = build::image(Arch::X86_64, CargoProfile::Release, Some(&config))?;
        let iso = build::iso::make(
            &image.binary,
            Arch::X86_64.failure_exit_option(),
            &directory.join(format!("svm-{path}.iso")),
        )?;
        let mut command = profile.command(&Launch {
            boot: Boot::Iso { iso },
            smp: SMP,
            memory: profile.memory.clone(),
            semihosting: false,
            console: Console::Captured,
            gdb: false,
        })?;
        command.args(super::ICOUNT);
        commands.push(workspace::display(&command));
        let log = directory.join(format!("svm-{path}.log"));
        let expectation = Expectation {
            markers: vec![
                Marker::AnyOrder(vec![format!("[{one}] PASS"), format!("[{other}] PASS")]),
                Marker::Text("powering off".to_string()),
            ],
            forbidden: ["panic", "unexpected exception", "FAIL", "stopped:"]
                .map(String::from)
                .to_vec(),
            exit: ExitExpectation::Poweroff,
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
                "the SVM bench run failed: {reason} (log: {})",
                log.display()
            )));
        }
        let serial = std::fs::read(&log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .map_err(|e| Error::new(format!("cannot read {}: {e}", log.display())))?;
        serials.push((exchange, path, serial));
    }
    Ok((figures(&serials)?, commands))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the QNX pair printed at the first measurement.
    const SERIAL: &str = "\
[pong] pong: 5 quiet round trips: 20 VM exits on this vCPU
[pong] pong: quiet windows 3,8 round trips: tsc=58417,149564 guest=6547,17278 exits=19,39 mmio=6,16 hlt=3,8 interrupt=0,0 msr=10,15 other=0,0
[ping] ping: 5 quiet round trips: 20 VM exits on this vCPU
[ping] ping: quiet windows 3,8 round trips: tsc=58423,149570 guest=7582,20038 exits=19,39 mmio=6,16 hlt=3,8 interrupt=0,0 msr=10,15 other=0,0
";

    #[test]
    fn windows_parse_and_differ() {
        let ping = parse_windows(SERIAL, "ping").unwrap();
        assert_eq!(ping.rounds, (3, 8));
        assert_eq!(ping.measured_rounds(), Some(5));
        assert_eq!(ping.difference("tsc"), Some(91_147));
        assert_eq!(ping.difference("guest"), Some(12_456));
        assert_eq!(ping.difference("mmio"), Some(10));
        assert_eq!(ping.difference("nothing"), None);
        assert_eq!(parse_windows(SERIAL, "ivping"), None);
        assert_eq!(
            parse_windows("[ping] ping: quiet windows 3,8 round trips: tsc=1", "ping"),
            None
        );
    }

    #[test]
    fn the_hypervisor_is_the_machine_less_both_guests() {
        let figures = figures(&[("QNX", "qnx", SERIAL.to_string())]).unwrap();
        let qnx = &figures[0];
        // 91147 - 12456 - 10731 = 67960 over 5 round trips, 10 one-way doorbells.
        assert_eq!(qnx.hypervisor(), Some(67_960));
        assert_eq!(qnx.per_one_way(), Some(6796));
        assert_eq!(qnx.exits_per_one_way("exits"), Some(4.0));
        assert_eq!(qnx.exits_per_one_way("mmio"), Some(2.0));
        assert_eq!(qnx.exits_per_one_way("hlt"), Some(1.0));
        assert_eq!(qnx.exits_per_one_way("msr"), Some(1.0));
        assert!(qnx.checks().is_empty(), "{:?}", qnx.checks());
        let json = Json::Object(json_fields(&figures, &["qemu".to_string()])).render();
        assert!(
            json.starts_with(
                "{\n  \"svm.one_way_doorbell.qnx\": 6796,\n  \"svm.exits.one_way_doorbell.qnx\": 4,\n  \"svm.exits.one_way_doorbell.qnx_by_class\": {\n    \"mmio\": 2,"
            ),
            "{json}"
        );
        let rows = rows(&figures);
        assert_eq!(
            rows[0],
            [
                "svm.one_way_doorbell.qnx",
                "hypervisor instructions",
                "6796"
            ]
        );
        assert_eq!(rows[1][2], "4.0");
    }

    #[test]
    fn disagreeing_ends_are_reported() {
        let odd = SERIAL.replace("tsc=58417,149564", "tsc=58417,149000");
        let figures = figures(&[("QNX", "qnx", odd)]).unwrap();
        let checks = figures[0].checks();
        assert_eq!(checks.len(), 1, "{checks:?}");
        assert!(checks[0].contains("machine"), "{checks:?}");
    }
}
