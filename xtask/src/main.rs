//! `cargo xtask`: builds Bulkhead, boots it in QEMU, and runs the host and system tests.
//!
//! Written without `unwrap`/`expect`/`panic`/indexing like the rest of the workspace: every
//! failure becomes an [`error::Error`] with a message for the person at the terminal. Tests are
//! exempt (a failing assertion is how a test reports).
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        reason = "a test that fails should stop loudly at the failing line"
    )
)]

mod bench;
mod build;
mod clippy;
mod error;
mod fuzz;
mod guests;
mod harness;
mod linux;
mod markers;
mod profile;
mod run;
mod scenario;
mod setup;
mod test;
mod workspace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Bulkhead's developer tool: build the image, boot it in an emulator, run the tests.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

/// The subcommands; each lives in the module of the same name.
#[derive(Debug, Subcommand)]
enum Task {
    /// Build the hypervisor image (and with --boot uefi the UEFI loader and ESP); print the paths.
    Build(build::BuildArgs),
    /// Build, then boot the image in QEMU with the serial console here (Ctrl-A X quits QEMU).
    Run(run::RunArgs),
    /// Run the host unit tests, the short fuzz runs, clippy and the system-test scenarios; end with
    /// `N passed, N failed`.
    Test(test::TestArgs),
    /// Measure doorbell round trips and shared-memory copies in the bench guests, under
    /// -icount (instruction counts) and in wall-clock time; print a table, write
    /// target/bench/results.json.
    Bench(bench::BenchArgs),
    /// Run the host fuzz targets (config parser and validator, instruction and syndrome
    /// decoders, device registers driven as a guest would) for a fixed time each; a long
    /// run: `cargo xtask fuzz --time 600`.
    Fuzz(fuzz::FuzzArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.task {
        Task::Build(args) => build::command(args),
        Task::Run(args) => run::command(args),
        Task::Test(args) => test::command(args),
        Task::Bench(args) => bench::command(args),
        Task::Fuzz(args) => fuzz::command(args),
    };
    result.unwrap_or_else(|error| {
        eprintln!("error: {error}");
        ExitCode::FAILURE
    })
}
