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
