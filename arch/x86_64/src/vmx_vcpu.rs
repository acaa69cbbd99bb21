//! The x86_64 VMX backend of the core's vCPU contract ([`hypervisor::vcpu::VcpuBackend`]):
//! VM entry until the guest exits, decoding the exit into the core's [`Exit`], finishing it
//! with the core's [`Action`], HLT, and (re)starting a vCPU in 64-bit mode.
//!
//! Exits handled here without the core: CPUID (passed through, VMX hidden, x2APIC shown),
//! interrupt windows, the x2APIC MSRs (the vCPU's [`VirtualX2apic`]; IPIs are posted on the
//! partition's APIC bus and the target's CPU kicked; EOIs reach the bus for the I/O APIC's
//! level pins; any other MSR, or an ICR value the model refuses, gets #GP(0) injected, as
//! hardware lacking the MSR would), virtualized EOIs and APIC writes.
//!
//! Where the CPU offers virtual-interrupt delivery (with virtualize x2APIC mode and
//! APIC-register virtualization) each vCPU runs with a virtual-APIC page
//! ([`VirtualApicPage`]): pending vectors are requested there (IRR bit, RVI) instead of
//! injected, the CPU delivers them when the guest can take them and virtualizes reads of the
//! x2APIC, TPR, EOI and self IPIs without exits; only the EOIs of vectors the I/O APIC's
//! level-triggered entries use exit (the EOI-exit bitmap, kept to the bus's
//! [`level_vectors`](hypervisor::device::apic::ApicBus::level_vectors)), as virtualized EOIs.
//! The model keeps the timer and the registers the guest writes (mirrored into the page).
//! Without those controls interrupts are injected at VM entry, with interrupt-window exiting.
//!
//! Everything else becomes an `Exit` for the core: external interrupts (the host takes its
//! kick) → `Interrupt`, HLT → `WaitForInterrupt`, I/O instructions → `PortRead`/`PortWrite`,
//! EPT violations → `MmioRead`/`MmioWrite` (the `mov` at the guest's RIP fetched through its
//! page tables and decoded), VMCALL → `Hypercall` (RAX = a PSCI function ID, RDI/RSI/RDX/RCX
//! the arguments), triple fault, undecodable instructions and any other exit → `GuestFault`
//! naming what happened.

use core::sync::atomic::{AtomicU64, Ordering};
use hypervisor::console::ReportLimit;

use hypervisor::addr::GuestPhysAddr;
use hypervisor::exit::{AccessWidth, Action, Exit};
use hypervisor::partition::{Partition, Platform, StartRequest};
use hypervisor::println;
use hypervisor::vcpu::VcpuBackend;

use crate::decode::MmioInstruction;
use crate::guest_apic::{self, FaultNames, GuestApic, MsrAccess};
use crate::vapic::{self, VirtualApicPage};
use crate::vmcs::{self, GuestRegisters, LongModeStart, Vmcs, field};
use crate::vmx_exit::{self, IoQualification, reason};
use crate::vx2apic::VirtualX2apic;
use crate::{cpu, vmx};

/// Basic exit reasons counted (the SDM defines fewer than this).
pub const EXIT_REASONS: usize = 80;

/// A read-only MSR in the range Intel leaves to hypervisors (0x4000_0000-0x4000_00ff is
/// Hyper-V's and KVM's; Bulkhead uses 0x4000_0100+): this vCPU's VM exits before the RDMSR.
/// Benchmarks read it around an exchange to count the exits a doorbell costs.
pub const EXIT_COUNT_MSR: u32 = 0x4000_0100;
/// Read-only: the TSC ticks this vCPU spent in its guest, less the hypervisor's own
/// instructions around the world switch (under QEMU's `-icount shift=0`: exactly the
/// instructions the guest executed). SVM only: VMX reads all-ones (not counted).
pub const GUEST_TIME_MSR: u32 = 0x4000_0101;
/// Read-only: this vCPU's exits by class (SVM: [`crate::svm_vcpu::ExitClass`]), before the
/// RDMSR. VMX reads all-ones (not counted).
pub const EXIT_CLASS_MSRS: core::ops::Range<u32> = 0x4000_0102..0x4000_0107;

/// The general-protection exception's vector.
const GENERAL_PROTECTION: u8 = 13;

/// What a partition's vCPUs share on the VMX side, kept by the image.
#[derive(Debug)]
pub struct VmxPartition {
    /// Its EPT pointer.
    pub ept_pointer: u64,
    /// Count of EPT entries removed: a vCPU whose CPU saw fewer invalidates its cached
    /// translations before its next entry.
    pub ept_generation: AtomicU64,
    /// VM exits by basic exit reason, for the closing report.
    pub exits: [AtomicU64; EXIT_REASONS],
}

impl VmxPartition {
    /// The state of a partition whose EPT has pointer `ept_pointer`.
    pub const fn new(ept_pointer: u64) -> Self {
        Self {
            ept_pointer,
            ept_generation: AtomicU64::new(0),
            exits: [const { AtomicU64::new(0) }; EXIT_REASONS],
        }
    }
}

/// How the guest's memory layout turns a start request (entry, context) into the 64-bit
/// register state the vCPU enters with, and its RDI: the image's guest loader knows.
pub type GuestLayout = fn(&StartRequest) -> (LongModeStart, u64);

/// What completes the current exit.
#[derive(Clone, Copy, Debug)]
enum Pending {
    /// Nothing: the instruction is stepped over (its length from the VMCS).
    Step,
    /// An `in`: the value goes into RAX.
    PortRead,
    /// A decoded MMIO `mov`.
    Mmio(MmioInstruction),
    /// Already finished here (RIP set): nothing more.
    Done,
}

/// One vCPU of a partition, run by this CPU for good.
pub struct VmxVcpu {
    partition: &'static Partition,
    shared: &'static VmxPartition,
    layout: GuestLayout,
    vcpu: usize,
    vpid: u16,
    vmcs: Vmcs,
    registers: GuestRegisters,
    /// The vCPU's virtual x2APIC (shared with the SVM backend).
    guest: GuestApic,
    pending: Pending,
    /// Why the last (re)start could not set the VMCS up: reported by the next `run`.
    setup_failed: Option<vmcs::VmcsError>,
    /// The EPT generation this CPU's cached translations reflect.
    ept_seen: u64,
    /// VM exits of this vCPU so far (read by the guest through [`EXIT_COUNT_MSR`]).
    exits: u64,
    /// The vCPU's virtual-APIC page (`None` without memory for it).
    virtual_apic: Option<VirtualApicPage>,
    /// Whether the VMCS runs the guest with virtual-interrupt delivery through
    /// `virtual_apic` (decided by the CPU's controls at each start).
    delivering: bool,
    /// The APIC bus's level generation the EOI-exit bitmap reflects (`None`: not written
    /// since the VMCS was set up).
    level_seen: Option<u64>,
}

impl core::fmt::Debug for VmxVcpu {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VmxVcpu")
            .field("partition", &self.partition.name())
            .field("vcpu", &self.vcpu)
            .finish_non_exhaustive()
    }
}

impl VmxVcpu {
    /// vCPU `vcpu` of `partition` on this CPU (VMX is on here); `vpid` tags its
    /// translations. It starts at its first [`VcpuBackend::start`].
    pub fn new(
        partition: &'static Partition,
        shared: &'static VmxPartition,
        platform: &'static dyn Platform,
        layout: GuestLayout,
        vcpu: usize,
        vpid: u16,
    ) -> Result<Self, vmcs::VmcsError> {
        Ok(Self {
            partition,
            shared,
            layout,
            vcpu,
            vpid,
            vmcs: Vmcs::new()?,
            registers: GuestRegisters::default(),
            guest: GuestApic::new(partition, platform, vcpu),
            pending: Pending::Done,
            setup_failed: None,
            ept_seen: 0,
            exits: 0,
            virtual_apic: VirtualApicPage::new(),
            delivering: false,
            level_seen: None,
        })
    }

    /// The virtual-APIC page, while the guest runs with virtual-interrupt delivery.
    fn delivering(&self) -> Option<&VirtualApicPage> {
        self.virtual_apic.as_ref().filter(|_| self.delivering)
    }

    /// Under virtual-interrupt delivery: see [`request`].
    fn request(&mut self) {
        if let Some(page) = self.virtual_apic.as_ref().filter(|_| self.delivering) {
            request(&mut self.guest, &self.vmcs, page, &mut self.level_seen);
        }
    }

    /// Before VM entry: injects the highest deliverable interrupt if the guest can take it,
    /// else asks for an exit when it can (interrupt-window exiting).
    /// With virtual-interrupt delivery it only requests them: the CPU delivers.
    fn prepare_entry(&mut self) {
        self.guest.collect();
        self.guest.arm_timer();
        if self.delivering {
            self.request();
            return;
        }
        let vmcs = &self.vmcs;
        let apic = &mut self.guest.apic;
        match apic.deliverable() {
            // An exception injected by this exit goes first; the interrupt waits for a window.
            Some(vector) if vmcs.interrupts_open() && !vmcs.injection_pending() => {
                apic.acknowledge(vector);
                vmcs.inject_interrupt(vector);
                vmcs.set_interrupt_window(false);
            }
            Some(_) => vmcs.set_interrupt_window(true),
            None => vmcs.set_interrupt_window(false),
        }
    }

    /// RDMSR/WRMSR: the virtual x2APIC's MSRs and the exit counter; any other MSR, or a value
    /// the x2APIC refuses, gets #GP(0) injected.
    fn msr(&mut self, write: bool) {
        let msr = self.registers.rcx as u32;
        let counter = match msr {
            _ if write => None,
            EXIT_COUNT_MSR => Some(self.exits.saturating_sub(1)),
            // Not counted here.
            GUEST_TIME_MSR => Some(u64::MAX),
            _ if EXIT_CLASS_MSRS.contains(&msr) => Some(u64::MAX),
            _ => None,
        };
        if let Some(value) = counter {
            self.registers.rax = value & 0xffff_ffff;
            self.registers.rdx = value >> 32;
            self.vmcs.skip_instruction();
            return;
        }
        let value = (self.registers.rdx << 32) | (self.registers.rax & 0xffff_ffff);
        match self.guest.msr(msr, write.then_some(value)) {
            MsrAccess::Read(value) => {
                self.registers.rax = value & 0xffff_ffff;
                self.registers.rdx = value >> 32;
                self.vmcs.skip_instruction();
                return;
            }
            MsrAccess::Written => {
                if let Some(page) = self.delivering() {
                    // The guest reads the register back from the page.
                    page.mirror(&self.guest.apic);
                }
                self.vmcs.skip_instruction();
                return;
            }
            MsrAccess::Refused => {}
        }
        // What hardware does with an MSR it lacks: #GP(0) into the guest, which may handle it
        // (an OS probing MSRs does); a guest without a handler triple-faults and is stopped.
        let what = if write { "WRMSR" } else { "RDMSR" };
        if let Some(n) = self.guest.msr_reports.note() {
            println!(
                "bulkhead: partition {} vcpu {}: {what} of MSR {msr:#x} at {:#x} not emulated: #GP injected{}",
                self.partition.name(),
                self.vcpu,
                vmcs::read(field::GUEST_RIP),
                ReportLimit::suffix(n)
            );
        }
        self.vmcs.inject_exception(GENERAL_PROTECTION, Some(0));
    }

    /// (Re)initialises the VMCS for a start in 64-bit mode at `start`.
    fn set_up(&mut self, start: &LongModeStart, rdi: u64) -> Result<(), vmcs::VmcsError> {
        let vmcs = &mut self.vmcs;
        vmcs.clear_and_load()?;
        let page = self.virtual_apic.as_ref();
        let delivering = vmcs.set_controls(
            self.shared.ept_pointer,
            self.vpid,
            page.map(VirtualApicPage::address),
        )?;
        self.delivering = delivering;
        self.level_seen = None;
        if let Some(page) = self.delivering() {
            // As after a reset: nothing requested or in service, the model's registers.
            page.clear();
            page.mirror(&VirtualX2apic::new(self.vcpu as u32));
        }
        let vmcs = &mut self.vmcs;
        vmcs.set_host_state()?;
        vmcs.set_long_mode_guest(start)?;
        self.registers = GuestRegisters {
            rdi,
            ..GuestRegisters::default()
        };
        Ok(())
    }

    /// Turns the current exit into the core's [`Exit`], or handles it here (`None`: resume).
    fn decode(&mut self) -> Option<Exit> {
        let exit_reason = vmcs::read(field::EXIT_REASON);
        let basic = exit_reason as u16;
        self.exits = self.exits.wrapping_add(1);
        if let Some(count) = self.shared.exits.get(usize::from(basic)) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        let qualification = vmcs::read(field::EXIT_QUALIFICATION);
        let rip = vmcs::read(field::GUEST_RIP);
        let fault = |syndrome: u64, address: u64| {
            Some(Exit::GuestFault {
                reason: Some(vmx_exit::reason_name(basic)),
                syndrome,
                address: Some(GuestPhysAddr::new(address)),
            })
        };
        if exit_reason & (1 << 31) != 0 {
            // VM entry failed on guest state or MSR loading.
            return fault(qualification, rip);
        }
        self.pending = Pending::Step;
        match basic {
            reason::EXTERNAL_INTERRUPT => {
                // A kick (or the deadline timer): let the host's handler take it; the core
                // then sees whether the partition stopped or restarts.
                cpu::take_pending_interrupt();
                self.pending = Pending::Done;
                Some(Exit::Interrupt)
            }
            reason::INTERRUPT_WINDOW => None,
            reason::CPUID => {
                let registers = &mut self.registers;
                let leaf = registers.rax as u32;
                let host = core::arch::x86_64::__cpuid_count(leaf, registers.rcx as u32);
                let [a, b, c, d] = vmx_exit::filter_cpuid(
                    leaf,
                    self.vcpu as u32,
                    [host.eax, host.ebx, host.ecx, host.edx],
                );
                registers.rax = u64::from(a);
                registers.rbx = u64::from(b);
                registers.rcx = u64::from(c);
                registers.rdx = u64::from(d);
                self.vmcs.skip_instruction();
                None
            }
            reason::IO_INSTRUCTION => {
                let io = IoQualification::decode(qualification);
                let Ok(width) = AccessWidth::try_from(u64::from(io.size)) else {
                    return fault(qualification, rip);
                };
                if io.string {
                    // INS/OUTS would need the guest's memory and segment state: not emulated.
                    return fault(qualification, rip);
                }
                Some(if io.input {
                    self.pending = Pending::PortRead;
                    Exit::PortRead {
                        port: io.port,
                        width,
                    }
                } else {
                    Exit::PortWrite {
                        port: io.port,
                        width,
                        value: self.registers.rax & width.mask(),
                    }
                })
            }
            reason::VMCALL => Some(Exit::Hypercall {
                function: self.registers.rax,
                arguments: [
                    self.registers.rdi,
                    self.registers.rsi,
                    self.registers.rdx,
                    self.registers.rcx,
                ],
            }),
            reason::HLT => Some(Exit::WaitForInterrupt),
            reason::EPT_VIOLATION => {
                let address = vmcs::read(field::GUEST_PHYSICAL_ADDRESS);
                Some(self.mmio(qualification, address))
            }
            reason::VIRTUALIZED_EOI => {
                // Trap-like: the CPU ended the vector and moved past the WRMSR; the I/O APIC's
                // level pins waiting for it may deliver again.
                self.partition.end_of_interrupt(
                    self.vcpu,
                    qualification as u8,
                    self.guest.platform,
                );
                None
            }
            // Trap-like: a self IPI with an illegal vector (below 16), which the CPU did not
            // virtualize; an APIC drops it.
            reason::APIC_WRITE => None,
            reason::RDMSR | reason::WRMSR => {
                self.msr(basic == reason::WRMSR);
                None
            }
            _ => fault(qualification, rip),
        }
    }

    /// An EPT violation at guest-physical `address`: fetches the instruction at the guest's
    /// RIP through its page tables, decodes the `mov` and turns it into an MMIO access (a load
    /// completes in [`VmxVcpu::complete_mmio_load`]). An instruction fetch, or bytes that are
    /// no MMIO `mov`, is a fault naming the address.
    fn mmio(&mut self, qualification: u64, address: u64) -> Exit {
        const READ: u64 = 1 << 0;
        const WRITE: u64 = 1 << 1;
        const FETCH: u64 = 1 << 2;
        const NAMES: FaultNames = FaultNames {
            fetch: "EPT violation (instruction fetch)",
            unreadable: "EPT violation (instruction not readable)",
            not_a_mov: "EPT violation (not an emulated mov)",
            width: "EPT violation (access width)",
            changed: "EPT violation (instruction changed)",
        };
        let fetch = qualification & FETCH != 0 || qualification & (READ | WRITE) == 0;
        let guest = (
            vmcs::read(field::GUEST_RIP),
            vmcs::read(field::GUEST_RSP),
            vmcs::read(field::GUEST_CR3),
        );
        let access = (address, qualification & WRITE != 0, fetch);
        match guest_apic::mmio_exit(
            self.partition.config,
            &mut self.registers,
            guest,
            access,
            qualification,
            &NAMES,
        ) {
            Ok((exit, instruction)) => {
                self.pending = Pending::Mmio(instruction);
                exit
            }
            Err(fault) => fault,
        }
    }

    /// Writes a completed MMIO load into its destination register and moves past the `mov`.
    fn complete_mmio_load(&mut self, instruction: MmioInstruction, value: u64) {
        let mut rsp = vmcs::read(field::GUEST_RSP);
        guest_apic::complete_load(&mut self.registers, &mut rsp, &instruction, value);
        let _ = vmcs::write(field::GUEST_RSP, rsp);
        self.vmcs.advance(u64::from(instruction.length));
    }
}

/// Under virtual-interrupt delivery: moves the model's requested vectors (posted, timer, ICR
/// to itself) into the virtual-APIC `page` and RVI, then brings the EOI-exit bitmap up to the
/// I/O APIC's level vectors (after taking posted vectors: see
/// [`level_generation`](hypervisor::device::apic::ApicBus::level_generation)).
fn request(
    guest: &mut GuestApic,
    vmcs: &Vmcs,
    page: &VirtualApicPage,
    level_seen: &mut Option<u64>,
) {
    let requests = guest.apic.take_requests();
    if requests != [0; 4] {
        vmcs.set_interrupt_status(page.request_all(requests, vmcs.interrupt_status()));
    }
    let Some(bus) = guest.partition.apic_bus() else {
        return;
    };
    let generation = bus.level_generation();
    if *level_seen != Some(generation) {
        vmcs.set_eoi_exit_bitmap(bus.level_vectors());
        *level_seen = Some(generation);
    }
}

impl VcpuBackend for VmxVcpu {
    fn run(&mut self) -> Exit {
        if let Some(error) = self.setup_failed.take() {
            println!(
                "bulkhead: partition {}: VMCS: {error}",
                self.partition.name()
            );
            return Exit::GuestFault {
                reason: Some("VMCS setup failed"),
                syndrome: 0,
                address: None,
            };
        }
        loop {
            self.prepare_entry();
            let now = self.shared.ept_generation.load(Ordering::Acquire);
            if now != self.ept_seen {
                self.ept_seen = now;
                vmx::invalidate_ept(self.shared.ept_pointer);
            }
            self.pending = Pending::Done;
            match self.vmcs.run(&mut self.registers) {
                Ok(()) => {
                    if let Some(exit) = self.decode() {
                        if let Some(action) = crate::fast_lane::answer(
                            self.partition,
                            self.vcpu,
                            self.guest.platform,
                            &exit,
                        ) {
                            self.complete(action);
                            continue;
                        }
                        return exit;
                    }
                }
                Err(e) => {
                    println!("bulkhead: partition {}: {e}", self.partition.name());
                    return Exit::GuestFault {
                        reason: Some("VM entry failed"),
                        syndrome: vmcs::read(field::VM_INSTRUCTION_ERROR),
                        address: None,
                    };
                }
            }
        }
    }

    fn complete(&mut self, action: Action) {
        let pending = core::mem::replace(&mut self.pending, Pending::Done);
        match (action, pending) {
            (_, Pending::Done) => {}
            (Action::CompleteRead(value), Pending::Mmio(instruction)) => {
                self.complete_mmio_load(instruction, value);
            }
            (_, Pending::Mmio(instruction)) => self.vmcs.advance(u64::from(instruction.length)),
            (Action::CompleteRead(value), Pending::PortRead) => {
                let size = (vmcs::read(field::EXIT_QUALIFICATION) & 7) as u8 + 1;
                self.registers.rax = vmx_exit::merge_input(self.registers.rax, size, value);
                self.vmcs.skip_instruction();
            }
            (Action::ReturnValues(values), _) => {
                self.registers.rax = values[0];
                self.vmcs.skip_instruction();
            }
            (_, Pending::Step | Pending::PortRead) => self.vmcs.skip_instruction(),
        }
    }

    /// HLT: the physical CPU halts (`sti; hlt`) until an interrupt is deliverable or the
    /// vCPU must leave (the partition stops or restarts, the vCPU is turned off), woken by a
    /// kick (an IPI posted, the partition stopped) or by the host APIC's timer armed at the
    /// virtual timer's deadline ([`crate::apic::HostTimer`]); the next entry injects it.
    fn idle(&mut self) {
        let Self {
            guest,
            vmcs,
            virtual_apic,
            delivering,
            level_seen,
            ..
        } = self;
        let page = virtual_apic.as_ref().filter(|_| *delivering);
        guest.idle(|guest| match page {
            Some(page) => {
                request(guest, vmcs, page, level_seen);
                vapic::deliverable(vmcs.interrupt_status(), page.tpr())
            }
            None => guest.apic.deliverable().is_some(),
        });
    }

    fn start(&mut self, start: StartRequest) {
        self.guest.reset();
        self.pending = Pending::Done;
        let (state, rdi) = (self.layout)(&start);
        if let Err(error) = self.set_up(&state, rdi) {
            self.setup_failed = Some(error);
        }
    }

    fn wait(&mut self) {
        // CPU_ON, a vCPU parking for a restart and the partition's stop kick this CPU.
        cpu::wait_for_interrupt();
    }

    fn halt(&mut self) -> ! {
        cpu::halt()
    }
}
