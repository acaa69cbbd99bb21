//! What the two x86 backends (VMX, SVM) share about a vCPU's guest: its virtual x2APIC (posted
//! interrupts collected, IPIs kept inside the partition, the x2APIC MSRs emulated, the host
//! timer armed at the virtual timer's deadline, the HLT wait) and the decoding of a trapped
//! `mov` into an MMIO exit. Each backend keeps only its VMCS or VMCB handling.

use hypervisor::addr::GuestPhysAddr;
use hypervisor::config::PartitionConfig;
use hypervisor::exit::{AccessWidth, Exit};
use hypervisor::partition::{Partition, Platform, Runnable};

use crate::apic::{self, LocalApic};
use crate::cpu;
use crate::decode::{self, MmioInstruction, Operation};
use crate::host_timer::HostTimer;
use crate::vmcs::GuestRegisters;
use crate::vx2apic::{self, Destination, VirtualX2apic, Written};
use hypervisor::console::ReportLimit;

/// A vCPU's virtual x2APIC and the partition it posts to.
pub(crate) struct GuestApic {
    pub(crate) partition: &'static Partition,
    pub(crate) platform: &'static dyn Platform,
    pub(crate) vcpu: usize,
    /// The model the guest programs.
    pub(crate) apic: VirtualX2apic,
    /// The TSC deadline this CPU's timer is armed at while the guest runs (its virtual
    /// timer's), so that a guest that never halts still takes its timer interrupt on time.
    armed: Option<u64>,
    /// The TSC value from which the armed host timer fires (the deadline, or earlier where a
    /// one-shot count-down cannot reach that far): past it, the timer is armed again.
    fires: Option<u64>,
    /// This CPU's local APIC.
    local_apic: LocalApic,
    /// How its timer wakes this CPU at a TSC value.
    timer: HostTimer,
    /// Reports of MSRs the guest touched that are not emulated (thinned out: a guest can
    /// probe one in a loop).
    pub(crate) msr_reports: ReportLimit,
}

/// What an x2APIC MSR access came to.
pub(crate) enum MsrAccess {
    /// A read: the value for EDX:EAX.
    Read(u64),
    /// A write the model took.
    Written,
    /// Not an MSR the model has, or a value it refuses: #GP(0) for the guest.
    Refused,
}

impl GuestApic {
    /// vCPU `vcpu` of `partition`'s x2APIC, in reset state.
    pub(crate) fn new(
        partition: &'static Partition,
        platform: &'static dyn Platform,
        vcpu: usize,
    ) -> Self {
        Self {
            partition,
            platform,
            vcpu,
            apic: VirtualX2apic::new(vcpu as u32),
            armed: None,
            fires: None,
            local_apic: LocalApic::current(),
            timer: apic::host_timer(),
            msr_reports: ReportLimit::default(),
        }
    }

    /// Back to reset state for a (re)start. What was posted to the vCPU stays posted: the
    /// core dropped what came before the start (CPU_ON, a partition restart), and an IPI
    /// sent since, before this CPU got to the start, is the new vCPU's.
    pub(crate) fn reset(&mut self) {
        self.apic = VirtualX2apic::new(self.vcpu as u32);
    }

    /// Moves what others posted (IPIs, device interrupts) into the model and lets its timer
    /// expire.
    pub(crate) fn collect(&mut self) {
        if let Some(bus) = self.partition.apic_bus() {
            // Word n holds vectors 64n..64n + 63. A bounded range: `(0u8..).step_by(64)` would
            // step past 255 after the fourth word and overflow (a panic in a debug build).
            for (word, mut bits) in (0u8..4).zip(bus.take_posted(self.vcpu)) {
                while bits != 0 {
                    self.apic.accept(word * 64 + bits.trailing_zeros() as u8);
                    bits &= bits - 1;
                }
            }
        }
        self.apic.update(cpu::tsc());
    }

    /// Before entry: the host timer (external-interrupt exiting is on) ends the guest's run
    /// at its virtual timer's deadline; the next entry delivers the interrupt. The timer is
    /// written only when the deadline changed, or when a one-shot count-down that could not
    /// reach it has run out.
    pub(crate) fn arm_timer(&mut self) {
        let deadline = self.apic.deadline();
        let ran_out = self.fires.is_some_and(|fires| cpu::tsc() >= fires);
        if deadline != self.armed || (ran_out && deadline.is_some()) {
            self.fires = self.local_apic.arm(self.timer, deadline);
            self.armed = deadline;
        }
    }

    /// HLT: the physical CPU halts (`sti; hlt`) until `deliverable` says an interrupt can be
    /// taken or the vCPU must leave (its partition stops or restarts, it is turned off), woken
    /// by a kick or by the host timer armed at the virtual timer's deadline (TSC-deadline
    /// mode, or the one-shot count-down where the CPU has no TSC-deadline mode). The timer
    /// stays armed for the guest's run that follows.
    pub(crate) fn idle(&mut self, mut deliverable: impl FnMut(&mut Self) -> bool) {
        loop {
            self.collect();
            if deliverable(self) || self.partition.runnable(self.vcpu) != Runnable::Run {
                break;
            }
            if self.timer == HostTimer::Absent && self.apic.deadline().is_some() {
                // Nothing would wake this CPU at the deadline.
                core::hint::spin_loop();
                continue;
            }
            self.arm_timer();
            cpu::wait_for_interrupt();
        }
    }

    /// RDMSR (`write` = `None`) or WRMSR of `msr` through the model: IPIs are posted to the
    /// partition's vCPUs (kept inside it), EOIs reach the bus for the I/O APIC's level pins.
    pub(crate) fn msr(&mut self, msr: u32, write: Option<u64>) -> MsrAccess {
        let known = msr == vx2apic::msr::APIC_BASE
            || (vx2apic::msr::FIRST..=vx2apic::msr::LAST).contains(&msr);
        if !known {
            return MsrAccess::Refused;
        }
        let now = cpu::tsc();
        match write {
            Some(value) => match self.apic.write(msr, value, now) {
                Some(Written::Ipi {
                    vector,
                    destination,
                }) => {
                    self.send_ipi(vector, destination);
                    MsrAccess::Written
                }
                Some(Written::EndOfInterrupt(vector)) => {
                    self.partition
                        .end_of_interrupt(self.vcpu, vector, self.platform);
                    MsrAccess::Written
                }
                Some(Written::Done) => MsrAccess::Written,
                None => MsrAccess::Refused,
            },
            None => {
                // The timer's state as of now (a periodic timer reloaded): an exit can outlast
                // a short period under an emulator.
                self.apic.update(now);
                self.apic
                    .read(msr, now)
                    .map_or(MsrAccess::Refused, MsrAccess::Read)
            }
        }
    }

    /// Sends fixed IPI `vector` to `destination` inside the partition (an absent vCPU drops
    /// it; to itself, the model already took it).
    fn send_ipi(&self, vector: u8, destination: Destination) {
        let post = |target: usize| {
            self.partition
                .post_interrupt(self.vcpu, target, vector, self.platform);
        };
        match destination {
            Destination::Apic(id) => post(id as usize),
            Destination::Itself => {}
            Destination::AllIncludingSelf | Destination::AllExcludingSelf => {
                for target in (0..self.partition.vcpu_count()).filter(|&t| t != self.vcpu) {
                    post(target);
                }
            }
        }
    }
}

/// How a backend names the faults of a trapped access (its exit's name).
pub(crate) struct FaultNames {
    pub(crate) fetch: &'static str,
    pub(crate) unreadable: &'static str,
    pub(crate) not_a_mov: &'static str,
    pub(crate) width: &'static str,
    pub(crate) changed: &'static str,
}

/// A trapped access at guest-physical `address` (a load when `write` is false): the `mov` at
/// the guest's `rip` fetched through its page tables (`cr3`) and decoded into the core's MMIO
/// exit, with the instruction that completes it; or the fault to report (an instruction
/// fetch when `fetch`, bytes that are no emulated `mov`, bytes changed since the exit).
pub(crate) fn mmio_exit(
    config: &PartitionConfig,
    registers: &mut GuestRegisters,
    (rip, rsp, cr3): (u64, u64, u64),
    (address, write, fetch): (u64, bool, bool),
    syndrome: u64,
    names: &FaultNames,
) -> Result<(Exit, MmioInstruction), Exit> {
    let fault = |reason: &'static str| Exit::GuestFault {
        reason: Some(reason),
        syndrome,
        address: Some(GuestPhysAddr::new(address)),
    };
    if fetch {
        return Err(fault(names.fetch));
    }
    let Ok(bytes) = decode::fetch(cr3, rip, |at, buffer| read_guest(config, at, buffer)) else {
        return Err(fault(names.unreadable));
    };
    let instruction = match decode::decode(bytes.as_slice()) {
        Ok(instruction) => instruction,
        Err(_) => return Err(fault(names.not_a_mov)),
    };
    let Ok(width) = AccessWidth::try_from(u64::from(instruction.bytes)) else {
        return Err(fault(names.width));
    };
    let at = GuestPhysAddr::new(address);
    let exit = match instruction.operation {
        Operation::Load(_) if !write => Exit::MmioRead {
            address: at,
            width,
            syndrome,
        },
        Operation::Store(source) if write => Exit::MmioWrite {
            address: at,
            width,
            value: decode::store_value(source, instruction.bytes, |number| {
                if number == 4 {
                    rsp
                } else {
                    registers.by_number(number).map_or(0, |r| *r)
                }
            }),
            syndrome,
        },
        // The bytes changed since the exit (another vCPU rewrote them).
        _ => return Err(fault(names.changed)),
    };
    Ok((exit, instruction))
}

/// Writes a completed MMIO load of `instruction` into its destination: RSP through `rsp`
/// (the backend's VMCS or VMCB field), any other register in `registers`.
pub(crate) fn complete_load(
    registers: &mut GuestRegisters,
    rsp: &mut u64,
    instruction: &MmioInstruction,
    value: u64,
) {
    if let Operation::Load(load) = instruction.operation {
        if load.register == 4 {
            *rsp = decode::complete_load(*rsp, value, instruction.bytes, load);
        } else if let Some(register) = registers.by_number(load.register) {
            *register = decode::complete_load(*register, value, instruction.bytes, load);
        }
    }
}

/// Reads guest-physical `[address, address + buffer.len())` of `partition` into `buffer`
/// (false unless it lies inside one of its RAM ranges).
pub(crate) fn read_guest(partition: &PartitionConfig, address: u64, buffer: &mut [u8]) -> bool {
    let length = buffer.len() as u64;
    let Some(host) = partition.ram.iter().find_map(|ram| {
        let offset = address.checked_sub(ram.guest_base)?;
        (offset.checked_add(length)? <= ram.size).then_some(ram.host_base + offset)
    }) else {
        return false;
    };
    // SAFETY: `[host, host + length)` lies inside the partition's RAM (checked above), which
    // the hypervisor's page tables map; reading it races only with the guest's own writes,
    // which leave plain bytes.
    unsafe { core::ptr::copy_nonoverlapping(host as *const u8, buffer.as_mut_ptr(), buffer.len()) };
    true
}
