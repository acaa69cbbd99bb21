//! The hypervisor console: whole lines to one output sink, a `log` backend, and a panic path
//! that still prints when another CPU holds the lock.
//!
//! Partitions' console lines ([`Console::print_line`]) never wait for the UART (issue 13): a
//! line joins a queue (a lock held for one push or pop) and whoever holds the UART, or gets
//! it free, writes what is queued. Each partition may have [`QUEUED_LINES_PER_PARTITION`]
//! lines waiting; only a partition over its quota waits (writing queued lines itself when the
//! UART is free), so a partition printing without pause slows itself, not the others. A
//! drain writes at most [`DRAIN_BUDGET`] lines; the hypervisor's own messages
//! ([`Console::print`]) write everything queued before themselves, so nothing is left
//! behind at power-off and reports follow the lines before them.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::Arc;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicUsize, Ordering};

use spin::{Mutex, Once};

/// Console lines one partition may have waiting for the UART.
pub const QUEUED_LINES_PER_PARTITION: usize = 16;
/// Lines one drain writes at most (its caller's CPU time on other partitions' lines).
pub const DRAIN_BUDGET: usize = 32;

/// A partition's share of the console queue: how many of its lines wait.
#[derive(Debug, Default, Clone)]
pub struct LineQuota(Arc<AtomicUsize>);

impl LineQuota {
    /// Lines of this partition waiting now.
    pub fn queued(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// A line waiting for the UART.
struct QueuedLine {
    text: String,
    owner: LineQuota,
}

/// Where console bytes go (a UART driver in arch code).
pub trait ConsoleSink: Send + Sync {
    /// Writes raw bytes, blocking until the device took them.
    fn write_bytes(&self, bytes: &[u8]);
}

/// The console: a sink set once at boot, a lock that keeps lines whole across CPUs (held
/// while the UART is written), and partitions' lines waiting for it.
pub struct Console {
    sink: Once<&'static dyn ConsoleSink>,
    lock: Mutex<()>,
    queue: Mutex<VecDeque<QueuedLine>>,
}

/// The one console of the hypervisor.
pub static CONSOLE: Console = Console::new();

impl Default for Console {
    fn default() -> Self {
        Self::new()
    }
}

/// Translates `\n` to `\r\n` on the way to the sink.
struct Translating<'a>(&'a dyn ConsoleSink);

impl Write for Translating<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut rest = text.as_bytes();
        while let Some(at) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = rest.split_at(at);
            self.0.write_bytes(line);
            self.0.write_bytes(b"\r\n");
            rest = tail.get(1..).unwrap_or(&[]);
        }
        self.0.write_bytes(rest);
        Ok(())
    }
}

impl Console {
    /// A console without a sink.
    pub const fn new() -> Self {
        Self {
            sink: Once::new(),
            lock: Mutex::new(()),
            queue: Mutex::new(VecDeque::new()),
        }
    }

    /// Prints a partition's console line (a newline is added) without waiting for the UART
    /// unless `owner` has [`QUEUED_LINES_PER_PARTITION`] lines waiting already; see the
    /// module documentation. Dropped when no sink is set (as [`Console::print`] does).
    pub fn print_line(&self, owner: &LineQuota, text: String) {
        let Some(sink) = self.sink.get() else {
            return;
        };
        loop {
            let queued = owner.0.load(Ordering::Acquire);
            if queued < QUEUED_LINES_PER_PARTITION
                && owner
                    .0
                    .compare_exchange(queued, queued + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                break;
            }
            // Over quota: this partition waits for its own lines to go out.
            self.drain(*sink);
            core::hint::spin_loop();
        }
        self.queue.lock().push_back(QueuedLine {
            text,
            owner: owner.clone(),
        });
        self.drain(*sink);
    }

    /// Writes queued lines while the UART is free, at most [`DRAIN_BUDGET`]. A line queued
    /// while another CPU held the UART is written by that CPU: it looks at the queue again
    /// after letting the UART go.
    fn drain(&self, sink: &dyn ConsoleSink) {
        let mut budget = DRAIN_BUDGET;
        while budget > 0 {
            let Some(uart) = self.lock.try_lock() else {
                return;
            };
            budget = self.write_queued(sink, budget);
            drop(uart);
            if self.queue.lock().is_empty() {
                return;
            }
        }
    }

    /// Writes up to `budget` queued lines (the caller holds the UART); returns what is left of
    /// the budget.
    fn write_queued(&self, sink: &dyn ConsoleSink, mut budget: usize) -> usize {
        while budget > 0 {
            let Some(line) = self.queue.lock().pop_front() else {
                break;
            };
            let mut out = Translating(sink);
            let _ = out.write_str(&line.text);
            let _ = out.write_str("\n");
            line.owner.0.fetch_sub(1, Ordering::AcqRel);
            budget -= 1;
        }
        budget
    }

    /// Sets the sink; later calls are ignored (the first console wins).
    pub fn set_sink(&self, sink: &'static dyn ConsoleSink) {
        self.sink.call_once(|| sink);
    }

    /// Whether a sink is set.
    pub fn is_ready(&self) -> bool {
        self.sink.get().is_some()
    }

    /// Prints formatted text atomically with respect to other CPUs, after every partition
    /// line queued before it.
    pub fn print(&self, args: fmt::Arguments<'_>) {
        if let Some(sink) = self.sink.get() {
            let _guard = self.lock.lock();
            self.write_queued(*sink, usize::MAX);
            let _ = Translating(*sink).write_fmt(args);
        }
    }

    /// Prints from a path that must not deadlock (panic, fatal exception): waits a bounded time
    /// for the lock, then prints regardless.
    pub fn print_emergency(&self, args: fmt::Arguments<'_>) {
        let Some(sink) = self.sink.get() else { return };
        for _ in 0..10_000_000 {
            if let Some(_guard) = self.lock.try_lock() {
                let _ = Translating(*sink).write_fmt(args);
                return;
            }
            core::hint::spin_loop();
        }
        let _ = Translating(*sink).write_fmt(args);
    }
}

/// Prints to the hypervisor console.
/// Limits a diagnostic a guest can repeat at will (an unknown MSR it keeps probing): the
/// first [`ReportLimit::FIRST`] are printed, then every [`ReportLimit::EVERY`]th, so a guest
/// cannot fill the console (and keep its lock busy) with one line per exit.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReportLimit {
    count: u64,
}

impl ReportLimit {
    /// Reports printed before thinning out.
    pub const FIRST: u64 = 8;
    /// After the first ones, one report in this many is printed.
    pub const EVERY: u64 = 1024;

    /// Counts one occurrence; `Some(n)` (its number, from 1) when it should be printed.
    pub fn note(&mut self) -> Option<u64> {
        self.count = self.count.saturating_add(1);
        (self.count <= Self::FIRST || self.count.is_multiple_of(Self::EVERY)).then_some(self.count)
    }

    /// What to append to report `n`: a word that the next ones are thinned out, on the last
    /// one printed in full, and the running count on the later ones.
    pub fn suffix(n: u64) -> &'static str {
        match n {
            Self::FIRST => " (further ones: every 1024th reported)",
            n if n > Self::FIRST => " (one of many)",
            _ => "",
        }
    }
}

#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::CONSOLE.print(format_args!($($arg)*)) };
}

/// Prints a line to the hypervisor console.
#[macro_export]
macro_rules! println {
    () => { $crate::console::CONSOLE.print(format_args!("\n")) };
    ($($arg:tt)*) => {
        $crate::console::CONSOLE.print(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// The `log` backend: `warn`/`error` lines carry their level, `info` lines are plain.
struct Logger;

impl log::Log for Logger {
    fn enabled(&self, _metadata: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        match record.level() {
            log::Level::Info => CONSOLE.print(format_args!("{}\n", record.args())),
            level => CONSOLE.print(format_args!("{level}: {}\n", record.args())),
        }
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

/// Installs the console as the `log` backend, at `level` and above.
pub fn init_logging(level: log::LevelFilter) {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    struct Capture(Mutex<Vec<u8>>);

    impl ConsoleSink for Capture {
        fn write_bytes(&self, bytes: &[u8]) {
            self.0.lock().extend_from_slice(bytes);
        }
    }

    #[test]
    fn repeated_reports_thin_out() {
        let mut limit = ReportLimit::default();
        let printed: Vec<u64> = (0..5000).filter_map(|_| limit.note()).collect();
        assert_eq!(printed, [1, 2, 3, 4, 5, 6, 7, 8, 1024, 2048, 3072, 4096]);
        assert_eq!(ReportLimit::suffix(3), "");
        assert!(ReportLimit::suffix(8).contains("1024th"));
    }

    #[test]
    fn lines_get_carriage_returns() {
        let capture: &'static Capture =
            std::boxed::Box::leak(std::boxed::Box::new(Capture(Mutex::new(Vec::new()))));
        let console = Console::new();
        console.print(format_args!("lost\n"));
        console.set_sink(capture);
        console.print(format_args!("a\nb {}\n", 7));
        console.print_emergency(format_args!("x\n"));
        assert_eq!(capture.0.lock().as_slice(), b"a\r\nb 7\r\nx\r\n");
    }

    fn capture() -> &'static Capture {
        std::boxed::Box::leak(std::boxed::Box::new(Capture(Mutex::new(Vec::new()))))
    }

    /// Issue 13: a partition's line never waits for a UART another CPU holds; the holder's
    /// next message (or the next drain) writes it, in order, before its own text.
    #[test]
    fn partition_lines_do_not_wait_for_a_busy_uart() {
        let capture = capture();
        let console = Console::new();
        console.set_sink(capture);
        let quiet = LineQuota::default();
        let uart = console.lock.lock();
        console.print_line(&quiet, String::from("[quiet] one"));
        console.print_line(&quiet, String::from("[quiet] two"));
        assert_eq!(quiet.queued(), 2);
        assert!(
            capture.0.lock().is_empty(),
            "nothing written while the UART is held"
        );
        drop(uart);
        console.print(format_args!("bulkhead: report\n"));
        assert_eq!(
            capture.0.lock().as_slice(),
            b"[quiet] one\r\n[quiet] two\r\nbulkhead: report\r\n"
        );
        assert_eq!(quiet.queued(), 0);
        console.print_line(&quiet, String::from("[quiet] three"));
        assert!(capture.0.lock().ends_with(b"report\r\n[quiet] three\r\n"));
    }

    /// A partition printing without pause while another CPU holds the UART: its lines beyond
    /// its quota wait (its own CPU waits), none is lost, and another partition's line is
    /// queued at once all the while.
    #[test]
    fn only_a_partition_over_its_quota_waits_and_no_line_is_lost() {
        let capture = capture();
        let console: &'static Console = std::boxed::Box::leak(std::boxed::Box::new(Console::new()));
        console.set_sink(capture);
        let noisy = LineQuota::default();
        let quiet = LineQuota::default();
        let uart = console.lock.lock();
        let printer = {
            let noisy = noisy.clone();
            std::thread::spawn(move || {
                for n in 0..QUEUED_LINES_PER_PARTITION + 5 {
                    console.print_line(&noisy, alloc::format!("[noisy] {n}"));
                }
            })
        };
        while noisy.queued() < QUEUED_LINES_PER_PARTITION {
            std::thread::yield_now();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(
            noisy.queued(),
            QUEUED_LINES_PER_PARTITION,
            "over quota: it waits"
        );
        console.print_line(&quiet, String::from("[quiet] hello"));
        assert_eq!(quiet.queued(), 1, "the quiet partition did not wait");
        drop(uart);
        printer.join().unwrap();
        console.print(format_args!("end\n"));
        let text = String::from_utf8(capture.0.lock().clone()).unwrap();
        let noisy_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("[noisy]")).collect();
        assert_eq!(noisy_lines.len(), QUEUED_LINES_PER_PARTITION + 5);
        for (n, line) in noisy_lines.iter().enumerate() {
            assert_eq!(*line, alloc::format!("[noisy] {n}"));
        }
        assert!(text.contains("[quiet] hello\r\n"));
        assert!(text.ends_with("end\r\n"));
    }
}
