//! The hypervisor console: whole lines to one output sink, a `log` backend, and a panic path
//! that still prints when another CPU holds the lock.

use core::fmt::{self, Write};

use spin::{Mutex, Once};

/// Where console bytes go (a UART driver in arch code).
pub trait ConsoleSink: Send + Sync {
    /// Writes raw bytes, blocking until the device took them.
    fn write_bytes(&self, bytes: &[u8]);
}

/// The console: a sink set once at boot and a lock that keeps lines whole across CPUs.
pub struct Console {
    sink: Once<&'static dyn ConsoleSink>,
    lock: Mutex<()>,
}

/// The one console of the hypervisor.
pub static CONSOLE: Console = Console {
    sink: Once::new(),
    lock: Mutex::new(()),
};

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
    /// Sets the sink; later calls are ignored (the first console wins).
    pub fn set_sink(&self, sink: &'static dyn ConsoleSink) {
        self.sink.call_once(|| sink);
    }

    /// Whether a sink is set.
    pub fn is_ready(&self) -> bool {
        self.sink.get().is_some()
    }

    /// Prints formatted text atomically with respect to other CPUs.
    pub fn print(&self, args: fmt::Arguments<'_>) {
        if let Some(sink) = self.sink.get() {
            let _guard = self.lock.lock();
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
        let console = Console {
            sink: Once::new(),
            lock: Mutex::new(()),
        };
        console.print(format_args!("lost\n"));
        console.set_sink(capture);
        console.print(format_args!("a\nb {}\n", 7));
        console.print_emergency(format_args!("x\n"));
        assert_eq!(capture.0.lock().as_slice(), b"a\r\nb 7\r\nx\r\n");
    }
}
