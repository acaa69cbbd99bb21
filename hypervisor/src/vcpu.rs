//! The vCPU contract between the core and an architecture backend, and the one vCPU run loop
//! every backend shares.
//!
//! A backend (aarch64 EL2, x86 VMX, later x86 SVM) implements [`VcpuBackend`] for the one
//! vCPU its physical CPU runs: enter the guest until it exits and return the decoded
//! [`Exit`], finish an exit with the core's [`Action`], idle, start at an entry, wait, halt.
//! What is shared between CPUs (kicking a CPU, second-stage map and unmap, signalling a peer)
//! is the [`Platform`]; what only the bootable image knows (reloading a partition's memory,
//! powering off after the last partition) is the [`PartitionHost`].
//!
//! [`run_vcpu`] is the loop: exits go to [`Partition::handle_exit`], whose fault policy
//! decides between a fault injected or reported, a stop and a restart; stops and restarts are
//! orchestrated here, for every architecture: a restart asked for by any vCPU restarts the
//! whole partition on vCPU 0's CPU once every other vCPU has parked.

use crate::exit::{Action, Exit};
use crate::partition::{ExitClass, Partition, Platform, Runnable, StartRequest};

/// One vCPU on its own physical CPU, as an architecture runs it.
pub trait VcpuBackend {
    /// Enters the guest (or resumes it) and runs it until it exits; returns the exit,
    /// decoded. Interrupt state is synchronised with the partition's virtual interrupt
    /// controller on the way in and out (GIC list registers, x2APIC posting).
    fn run(&mut self) -> Exit;
    /// Finishes the exit `run` returned last: [`Action::Resume`] steps on,
    /// [`Action::CompleteRead`] completes a load, [`Action::ReturnValues`] sets the call's
    /// result registers. Other actions never reach the backend.
    fn complete(&mut self, action: Action);
    /// Waits outside the guest until an interrupt may be deliverable to it (WFI / HLT), and
    /// takes what woke the CPU.
    fn idle(&mut self);
    /// The vCPU starts afresh at `start` at its next [`VcpuBackend::run`] (first start,
    /// CPU_ON, restart): architectural reset state, entry point, first argument.
    fn start(&mut self, start: StartRequest);
    /// Waits briefly for something to change (another CPU's start request, a vCPU parking):
    /// WFE, PAUSE, or returning at once.
    fn wait(&mut self);
    /// Stops this CPU for good.
    fn halt(&mut self) -> !;
}

/// What only the bootable image knows, for the run loop.
pub trait PartitionHost: Sync {
    /// The platform operations shared by all CPUs.
    fn platform(&self) -> &dyn Platform;
    /// Reloads `partition`'s memory (image, device tree, boot information) for a restart,
    /// while none of its vCPUs runs, and returns where vCPU 0 starts.
    fn reload(&self, partition: &Partition) -> StartRequest;
    /// `partition` stopped (called once per partition, after it gave up its shared memory):
    /// count it, and power off when it was the last one running.
    fn partition_stopped(&self, partition: &Partition);
}

/// What one step of the loop left the vCPU doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// It goes on running the guest.
    Running,
    /// Its partition stopped: the CPU halts.
    Stopped,
}

/// Runs vCPU `vcpu` of `partition` on this CPU for good: from `boot` (vCPU 0 at boot), or
/// from the first CPU_ON that names it.
pub fn run_vcpu(
    backend: &mut impl VcpuBackend,
    partition: &Partition,
    vcpu: usize,
    host: &dyn PartitionHost,
    boot: Option<StartRequest>,
) -> ! {
    let first = match boot {
        Some(start) => {
            backend.start(start);
            Step::Running
        }
        None => park(backend, partition, vcpu, host),
    };
    if first == Step::Stopped {
        stop(partition, vcpu, host);
        backend.halt();
    }
    let platform = host.platform();
    loop {
        if step_on(backend, partition, vcpu, host, platform) == Step::Stopped {
            backend.halt();
        }
    }
}

/// One exit: run the guest, let the partition answer, carry the answer out, then do what the
/// partition's state asks (park, stop, restart).
pub fn step(
    backend: &mut impl VcpuBackend,
    partition: &Partition,
    vcpu: usize,
    host: &dyn PartitionHost,
) -> Step {
    step_on(backend, partition, vcpu, host, host.platform())
}

/// [`step`] with the host's platform looked up once by the caller (the loop).
#[inline(always)]
fn step_on(
    backend: &mut impl VcpuBackend,
    partition: &Partition,
    vcpu: usize,
    host: &dyn PartitionHost,
    platform: &dyn Platform,
) -> Step {
    let exit = backend.run();
    partition.count_exit(vcpu, classify(&exit));
    match partition.handle_exit(vcpu, exit, platform) {
        action @ (Action::Resume | Action::CompleteRead(_) | Action::ReturnValues(_)) => {
            backend.complete(action);
        }
        Action::Idle => {
            backend.complete(Action::Resume);
            backend.idle();
        }
        Action::Standby => {
            backend.complete(Action::ReturnValues([0; 4]));
            backend.idle();
        }
        Action::VcpuOff => {
            backend.complete(Action::Resume);
            if park(backend, partition, vcpu, host) == Step::Stopped {
                return stop(partition, vcpu, host);
            }
        }
        Action::StopPartition => return stop(partition, vcpu, host),
        Action::RestartPartition => {
            if restart(backend, partition, vcpu, host) == Step::Stopped {
                return stop(partition, vcpu, host);
            }
        }
    }
    settle(backend, partition, vcpu, host)
}

/// After an exit: another vCPU may have stopped, restarted or turned off this one.
fn settle(
    backend: &mut impl VcpuBackend,
    partition: &Partition,
    vcpu: usize,
    host: &dyn PartitionHost,
) -> Step {
    let outcome = match partition.runnable(vcpu) {
        Runnable::Run => Step::Running,
        Runnable::Park => park(backend, partition, vcpu, host),
        Runnable::Restart => restart(backend, partition, vcpu, host),
        Runnable::Stop => Step::Stopped,
    };
    match outcome {
        Step::Stopped => stop(partition, vcpu, host),
        Step::Running => Step::Running,
    }
}

/// The partition stopped: the first of its CPUs to get here releases it and tells the host.
fn stop(partition: &Partition, vcpu: usize, host: &dyn PartitionHost) -> Step {
    stop_partition(partition, vcpu, host);
    Step::Stopped
}

/// For a CPU that cannot run its vCPU at all (no VMX there): the partition's stop (after
/// [`Partition::handle_exit`] recorded why) handled as the run loop would; the caller halts.
pub fn stop_partition(partition: &Partition, vcpu: usize, host: &dyn PartitionHost) {
    if partition.handle_stop(vcpu, host.platform()) {
        host.partition_stopped(partition);
    }
}

/// The vCPU waits outside its guest until a CPU_ON starts it (vCPU 0: or until another vCPU
/// asks it to restart the partition).
fn park(
    backend: &mut impl VcpuBackend,
    partition: &Partition,
    vcpu: usize,
    host: &dyn PartitionHost,
) -> Step {
    partition.park(vcpu, host.platform());
    loop {
        match partition.runnable(vcpu) {
            Runnable::Stop => return Step::Stopped,
            Runnable::Restart => return restart(backend, partition, vcpu, host),
            Runnable::Run | Runnable::Park => {}
        }
        if let Some(start) = partition.take_start(vcpu) {
            backend.start(start);
            return Step::Running;
        }
        backend.wait();
    }
}

/// A restart of the whole partition: carried out on vCPU 0's CPU once every other vCPU has
/// parked; asked for (then parked) on any other.
fn restart(
    backend: &mut impl VcpuBackend,
    partition: &Partition,
    vcpu: usize,
    host: &dyn PartitionHost,
) -> Step {
    let platform = host.platform();
    if !partition.request_restart(vcpu, platform) {
        return park(backend, partition, vcpu, host);
    }
    partition.stop_other_vcpus(platform);
    // Each other vCPU parks at its next exit, which the kick forces: a guest cannot keep
    // its CPU from taking it.
    while !partition.others_parked() {
        if partition.is_stopped() {
            return Step::Stopped;
        }
        backend.wait();
    }
    partition.restart_from(platform);
    let start = host.reload(partition);
    backend.start(start);
    Step::Running
}

/// The class an exit is counted in.
fn classify(exit: &Exit) -> ExitClass {
    match exit {
        Exit::MmioRead { .. } | Exit::MmioWrite { .. } => ExitClass::Mmio,
        Exit::WaitForInterrupt => ExitClass::WaitForInterrupt,
        Exit::Interrupt | Exit::VirtualTimer => ExitClass::Interrupt,
        _ => ExitClass::Other,
    }
}

#[cfg(test)]
mod tests;
