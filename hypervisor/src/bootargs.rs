//! Options Bulkhead takes from the boot command line (`/chosen/bootargs`, `-append`, Multiboot2).

use alloc::string::String;
use alloc::vec::Vec;

/// How a fatal stop (panic, unexpected exception) leaves the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ExitMethod {
    /// PSCI SYSTEM_OFF, as a clean power-off does; only the console tells a failure.
    #[default]
    Psci,
    /// Semihosting SYS_EXIT with a failure status (QEMU `-semihosting`): the emulator's exit
    /// status tells the failure. Only for emulators: on hardware the trap has no handler.
    Semihosting,
    /// x86 emulators: QEMU's `isa-debug-exit` device (port 0xf4) with a failure status, and
    /// Bochs's shutdown port; a clean power-off still goes through ACPI.
    DebugExit,
}

/// A deliberate failure after boot, to show the failure paths work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelfTest {
    /// `panic!` in the hypervisor.
    Panic,
    /// A data abort at EL2 (load from an unmapped address).
    Fault,
}

/// The parsed `bulkhead.*` options.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BootOptions {
    /// `bulkhead.exit=psci|semihosting|debug-exit`.
    pub exit: ExitMethod,
    /// `bulkhead.poweroff`: power off once boot is complete instead of idling.
    pub power_off_when_done: bool,
    /// `bulkhead.selftest=panic|fault`.
    pub self_test: Option<SelfTest>,
    /// `bulkhead.*` words not understood, reported as warnings.
    pub unknown: Vec<String>,
}

impl BootOptions {
    /// Parses a command line; words without the `bulkhead.` prefix belong to others and are
    /// skipped.
    pub fn parse(command_line: &str) -> BootOptions {
        let mut options = BootOptions::default();
        for word in command_line.split_ascii_whitespace() {
            let Some(option) = word.strip_prefix("bulkhead.") else {
                continue;
            };
            let (key, value) = option.split_once('=').unwrap_or((option, ""));
            match (key, value) {
                ("exit", "psci") => options.exit = ExitMethod::Psci,
                ("exit", "semihosting") => options.exit = ExitMethod::Semihosting,
                ("exit", "debug-exit") => options.exit = ExitMethod::DebugExit,
                ("poweroff", "") => options.power_off_when_done = true,
                ("selftest", "panic") => options.self_test = Some(SelfTest::Panic),
                ("selftest", "fault") => options.self_test = Some(SelfTest::Fault),
                _ => options.unknown.push(word.into()),
            }
        }
        options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_options_and_keeps_unknown_ones() {
        let options = BootOptions::parse(
            "console=ttyAMA0 bulkhead.exit=semihosting bulkhead.poweroff bulkhead.bogus=1 \
             bulkhead.selftest=fault",
        );
        assert_eq!(options.exit, ExitMethod::Semihosting);
        assert!(options.power_off_when_done);
        assert_eq!(options.self_test, Some(SelfTest::Fault));
        assert_eq!(options.unknown, ["bulkhead.bogus=1"]);
    }

    #[test]
    fn empty_line_gives_defaults() {
        assert_eq!(BootOptions::parse(""), BootOptions::default());
        assert_eq!(
            BootOptions::parse("bulkhead.exit=debug-exit").exit,
            ExitMethod::DebugExit
        );
        assert_eq!(
            BootOptions::parse("bulkhead.exit=tape").unknown,
            ["bulkhead.exit=tape"]
        );
    }
}
