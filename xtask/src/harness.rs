//! Runs one command (the emulator, or anything in tests) and judges its output against a scenario.
//!
//! The command runs in its own process group with stdin closed; its stdout is the serial console.
//! A forbidden marker fails the run at once (see `markers` for the rules); the timeout kills the
//! whole group, so a run never outlives it. Everything the command printed is saved to a log.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Context, Result};
use crate::markers::{ExitExpectation, Expectation, Watch};
use crate::workspace;

/// How many log lines a failure report shows.
pub const TAIL_LINES: usize = 20;

/// How often the harness looks at the clock and the child while no output arrives.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How long output may keep arriving after the command exited or was killed.
const DRAIN_GRACE: Duration = Duration::from_millis(1000);

/// The verdict on one run.
#[derive(Debug)]
pub struct Outcome {
    /// `None` if the run passed, else why it failed.
    pub failure: Option<String>,
    /// From start to verdict.
    pub elapsed: Duration,
    /// The last [`TAIL_LINES`] lines of the log.
    pub tail: Vec<String>,
}

/// Run `command` under `expectation`, saving everything it prints to `log_path`.
pub fn run(mut command: Command, expectation: &Expectation, log_path: &Path) -> Result<Outcome> {
    if let Some(directory) = log_path.parent() {
        std::fs::create_dir_all(directory)
            .context(|| format!("cannot create {}", directory.display()))?;
    }
    let mut log =
        File::create(log_path).context(|| format!("cannot create {}", log_path.display()))?;
    let header = format!("$ {}\n", workspace::display(&command));
    log.write_all(header.as_bytes())
        .context(|| format!("cannot write {}", log_path.display()))?;

    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which is
    // async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            // The child dies with the thread that started it, so an interrupted xtask leaves no
            // emulator behind. Failure only loses that convenience.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }

    let start = Instant::now();
    let mut child = command
        .spawn()
        .context(|| format!("cannot start `{}`", command.get_program().to_string_lossy()))?;
    let group = ProcessGroup::of(child.id());
    let (sender, receiver) = mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        spawn_reader(stdout, Stream::Serial, sender.clone());
    }
    if let Some(stderr) = child.stderr.take() {
        spawn_reader(stderr, Stream::Diagnostics, sender);
    }

    let mut watch = Watch::new(expectation);
    let mut transcript = Transcript::default();
    let mut open_streams = 2_usize;
    let mut exit: Option<(ExitStatus, Instant)> = None;
    let deadline = start + expectation.timeout;

    let failure = loop {
        if let Some(forbidden) = watch.forbidden_seen(&transcript.serial) {
            break Some(format!(
                "forbidden marker `{forbidden}` in the serial output"
            ));
        }
        if watch.all_markers_seen() && expectation.exit == ExitExpectation::Markers {
            break None;
        }
        let now = Instant::now();
        match exit {
            None => {
                if let Some(status) = child
                    .try_wait()
                    .context(|| "cannot wait for the emulator".to_string())?
                {
                    // Whatever the command left running in its group has no business going on.
                    group.kill();
                    exit = Some((status, now));
                    continue;
                }
                if now >= deadline {
                    break Some(watch.timeout_reason(expectation));
                }
            }
            Some((status, exited_at)) => {
                if open_streams == 0 || now >= exited_at + DRAIN_GRACE {
                    break watch.judge_exit(status, expectation.exit);
                }
            }
        }
        let wait = deadline
            .saturating_duration_since(now)
            .clamp(Duration::from_millis(1), POLL_INTERVAL);
        match receive(&receiver, wait, &mut transcript, &mut log) {
            Received::Output => watch.observe(&transcript.serial),
            Received::Closed => open_streams = open_streams.saturating_sub(1),
            Received::Nothing => {}
            Received::AllClosed => open_streams = 0,
        }
    };
    let elapsed = start.elapsed();

    group.kill();
    // The child is dead or dying (SIGKILL): reaping it does not block for long. An error here
    // only means it was reaped already.
    let _ = child.wait();
    let drain_until = Instant::now() + DRAIN_GRACE;
    while open_streams > 0 {
        let wait = drain_until.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            break;
        }
        match receive(&receiver, wait, &mut transcript, &mut log) {
            Received::Closed => open_streams = open_streams.saturating_sub(1),
            Received::AllClosed => open_streams = 0,
            Received::Output | Received::Nothing => {}
        }
    }

    if !transcript.diagnostics.is_empty() {
        let mut section = b"\n--- emulator stderr ---\n".to_vec();
        section.extend_from_slice(&transcript.diagnostics);
        log.write_all(&section)
            .context(|| format!("cannot write {}", log_path.display()))?;
    }
    let log_text =
        std::fs::read(log_path).context(|| format!("cannot read {}", log_path.display()))?;
    Ok(Outcome {
        failure,
        elapsed,
        tail: tail(&log_text, TAIL_LINES),
    })
}

/// The last `count` lines of `text`, lossily decoded, with terminal control sequences removed
/// (firmware clears the screen; a failure report must not).
pub fn tail(text: &[u8], count: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(text);
    let lines: Vec<String> = text
        .lines()
        .map(printable)
        .filter(|line| !line.is_empty())
        .collect();
    let skip = lines.len().saturating_sub(count);
    lines.into_iter().skip(skip).collect()
}

/// `line` without ANSI escape sequences and other control characters (tabs stay).
fn printable(line: &str) -> String {
    let mut result = String::with_capacity(line.len());
    let mut characters = line.chars().peekable();
    while let Some(character) = characters.next() {
        if character == '\u{1b}' {
            // CSI: ESC [ parameters final-byte; any other escape: ESC and one character.
            if characters.next_if_eq(&'[').is_some() {
                while characters
                    .next()
                    .is_some_and(|next| !('\u{40}'..='\u{7e}').contains(&next))
                {}
            } else {
                characters.next();
            }
        } else if !character.is_control() || character == '\t' {
            result.push(character);
        }
    }
    result
}

/// Which of the command's output streams a chunk came from.
#[derive(Debug, Clone, Copy)]
enum Stream {
    /// stdout: the serial console.
    Serial,
    /// stderr: the emulator's own messages.
    Diagnostics,
}

/// What a reader thread reports.
enum Event {
    Output(Stream, Vec<u8>),
    Closed,
}

/// What one wait on the reader threads produced.
enum Received {
    Output,
    Closed,
    Nothing,
    AllClosed,
}

/// Everything read so far.
#[derive(Default)]
struct Transcript {
    serial: Vec<u8>,
    diagnostics: Vec<u8>,
}

/// Wait up to `wait` for one event, record output in the transcript and the serial log.
fn receive(
    receiver: &Receiver<Event>,
    wait: Duration,
    transcript: &mut Transcript,
    log: &mut File,
) -> Received {
    match receiver.recv_timeout(wait) {
        Ok(Event::Output(Stream::Serial, bytes)) => {
            // A log that cannot be written loses lines, not the verdict.
            let _ = log.write_all(&bytes);
            transcript.serial.extend_from_slice(&bytes);
            Received::Output
        }
        Ok(Event::Output(Stream::Diagnostics, bytes)) => {
            transcript.diagnostics.extend_from_slice(&bytes);
            Received::Nothing
        }
        Ok(Event::Closed) => Received::Closed,
        Err(RecvTimeoutError::Timeout) => Received::Nothing,
        Err(RecvTimeoutError::Disconnected) => Received::AllClosed,
    }
}

/// Forward everything `source` yields to `sender`, then report that it closed.
fn spawn_reader(mut source: impl Read + Send + 'static, stream: Stream, sender: Sender<Event>) {
    thread::spawn(move || {
        let mut buffer = [0_u8; 8192];
        loop {
            match source.read(&mut buffer) {
                Ok(0) => break,
                Ok(length) => {
                    let chunk = buffer.get(..length).unwrap_or_default().to_vec();
                    if sender.send(Event::Output(stream, chunk)).is_err() {
                        return;
                    }
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        // The harness may have stopped listening; nothing to do then.
        let _ = sender.send(Event::Closed);
    });
}

/// The process group the command leads; killing it kills everything the command started.
struct ProcessGroup(Option<libc::pid_t>);

impl ProcessGroup {
    fn of(leader: u32) -> Self {
        Self(libc::pid_t::try_from(leader).ok())
    }

    fn kill(&self) {
        if let Some(leader) = self.0 {
            // SAFETY: kill(2) with a negative pid sends SIGKILL to the process group the command
            // leads (it was started with process_group(0)); it reads and writes no memory. ESRCH
            // (the group is gone) is fine.
            unsafe {
                libc::kill(-leader, libc::SIGKILL);
            }
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::markers::Marker;

    fn text(markers: &[&str]) -> Vec<Marker> {
        markers
            .iter()
            .map(|marker| Marker::Text(marker.to_string()))
            .collect()
    }

    fn expectation(markers: Vec<Marker>, exit: ExitExpectation, seconds: u64) -> Expectation {
        Expectation {
            markers,
            forbidden: vec!["panic".to_string(), "unexpected exception".to_string()],
            exit,
            timeout: Duration::from_secs(seconds),
        }
    }

    fn shell(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        command
    }

    fn log_path(name: &str) -> std::path::PathBuf {
        workspace::target_dir()
            .join("xtask-tests")
            .join(format!("{name}.log"))
    }

    #[test]
    fn a_marker_that_never_comes_fails_with_the_log_tail_within_the_timeout() {
        let path = log_path("never");
        let started = Instant::now();
        let outcome = run(
            shell("echo hello; sleep 30"),
            &expectation(text(&["hello", "never"]), ExitExpectation::Poweroff, 2),
            &path,
        )
        .unwrap();
        let took = started.elapsed();
        let failure = outcome.failure.unwrap();
        assert!(failure.contains("timed out after 2.0s"), "{failure}");
        assert!(failure.contains("`never`"), "{failure}");
        assert!(
            outcome.tail.iter().any(|line| line == "hello"),
            "{:?}",
            outcome.tail
        );
        assert!(took < Duration::from_secs(5), "took {took:?}");
        assert!(outcome.elapsed >= Duration::from_secs(2));
        let log = std::fs::read_to_string(&path).unwrap();
        assert!(log.starts_with("$ sh -c"), "{log}");
        assert!(log.contains("hello\n"), "{log}");
    }

    #[test]
    fn a_forbidden_marker_fails_at_once() {
        let started = Instant::now();
        let outcome = run(
            shell("echo 'Bulkhead booting'; echo 'bulkhead: panic at src/main.rs:3'; sleep 30"),
            &expectation(
                text(&["Bulkhead", "boot complete"]),
                ExitExpectation::Poweroff,
                20,
            ),
            &log_path("forbidden"),
        )
        .unwrap();
        let failure = outcome.failure.unwrap();
        assert!(failure.contains("forbidden marker `panic`"), "{failure}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn power_off_needs_status_zero() {
        let outcome = run(
            shell("echo 'boot complete'; echo 'powering off'; exit 3"),
            &expectation(
                text(&["boot complete", "powering off"]),
                ExitExpectation::Poweroff,
                10,
            ),
            &log_path("status-three"),
        )
        .unwrap();
        let failure = outcome.failure.unwrap();
        assert!(failure.contains("exit status: 3"), "{failure}");

        let outcome = run(
            shell("echo 'boot complete'; echo 'powering off'"),
            &expectation(
                text(&["boot complete", "powering off"]),
                ExitExpectation::Poweroff,
                10,
            ),
            &log_path("status-zero"),
        )
        .unwrap();
        assert_eq!(outcome.failure, None);
    }

    #[test]
    fn failure_needs_a_non_zero_status() {
        let mut expected = expectation(
            text(&["bulkhead: panic at ", ".rs:"]),
            ExitExpectation::Failure,
            10,
        );
        expected.forbidden = vec!["unexpected exception".to_string()];
        let outcome = run(
            shell("echo 'bulkhead: panic at src/main.rs:9'; exit 0"),
            &expected,
            &log_path("failure-zero"),
        )
        .unwrap();
        let failure = outcome.failure.unwrap();
        assert!(failure.contains("non-zero exit status"), "{failure}");

        let outcome = run(
            shell("echo 'bulkhead: panic at src/main.rs:9'; exit 1"),
            &expected,
            &log_path("failure-one"),
        )
        .unwrap();
        assert_eq!(outcome.failure, None);
    }

    #[test]
    fn exiting_before_the_markers_fails() {
        let outcome = run(
            shell("echo 'cpu 0 online at EL2'; exit 0"),
            &expectation(
                text(&["cpu 0 online", "boot complete"]),
                ExitExpectation::Poweroff,
                10,
            ),
            &log_path("early-exit"),
        )
        .unwrap();
        let failure = outcome.failure.unwrap();
        assert!(
            failure.contains("before `boot complete` appeared"),
            "{failure}"
        );
    }

    #[test]
    fn markers_mode_passes_early_and_kills_the_whole_group() {
        let started = Instant::now();
        let outcome = run(
            shell("echo 'boot complete'; sleep 30 & sleep 30"),
            &expectation(text(&["boot complete"]), ExitExpectation::Markers, 20),
            &log_path("markers"),
        )
        .unwrap();
        assert_eq!(outcome.failure, None);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn stderr_goes_to_the_log_but_not_to_the_markers() {
        let outcome = run(
            shell("echo 'could not load kernel' >&2; exit 1"),
            &expectation(
                text(&["could not load kernel"]),
                ExitExpectation::Failure,
                10,
            ),
            &log_path("stderr"),
        )
        .unwrap();
        assert!(
            outcome
                .failure
                .unwrap()
                .contains("before `could not load kernel`")
        );
        assert!(
            outcome
                .tail
                .iter()
                .any(|line| line == "could not load kernel")
        );
    }

    #[test]
    fn tail_drops_terminal_control_sequences() {
        let lines = tail(
            b"\x1b[2J\x1b[01;01H\x1b[=3hBdsDxe: loading\r\n\x1b[2J\nboot\tok\x07\n",
            5,
        );
        assert_eq!(lines, ["BdsDxe: loading", "boot\tok"]);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let text: String = (1..=30).map(|line| format!("line {line}\n")).collect();
        let lines = tail(text.as_bytes(), TAIL_LINES);
        assert_eq!(lines.len(), 20);
        assert_eq!(lines.first().unwrap(), "line 11");
        assert_eq!(lines.last().unwrap(), "line 30");
    }
}
