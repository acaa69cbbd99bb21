//! The aarch64 EL2 backend of the core's vCPU contract ([`hypervisor::vcpu::VcpuBackend`]):
//! entering EL1 until the guest traps, decoding the trap into the core's [`Exit`], finishing
//! it with the core's [`Action`], and keeping the GIC list registers in step with the
//! partition's virtual GIC around each guest run. Arch code knows registers and syndromes;
//! what sits at an address or what a partition is belongs to the core.

use core::arch::asm;
use core::cell::{Cell, RefCell};
use core::sync::atomic::Ordering;

use hypervisor::addr::GuestPhysAddr;
use hypervisor::device::gic::{ListEntries, ListEntry};
use hypervisor::exit::{AccessWidth, Action, Exit};
use hypervisor::partition::{ExitClass, Partition, Platform, StartRequest};
use hypervisor::vcpu::VcpuBackend;

use crate::decode::{self, DataAccess, WriteBack, ZERO_REGISTER};
use crate::esr;
use crate::exception::TrapFrame;

/// Stage-2 and identity settings of one vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuSetup {
    /// VTTBR_EL2: VMID << 48 | stage-2 root.
    pub vttbr: u64,
    /// VTCR_EL2.
    pub vtcr: u64,
    /// The MPIDR the guest reads.
    pub mpidr: u64,
}

/// HCR_EL2 for guests: stage 2 on, IRQ/FIQ/SError to EL2 (virtual interrupts to the guest),
/// SMC trapped, EL1 is AArch64, set/way invalidation upgraded to clean+invalidate;
/// pointer-authentication instructions and key registers not trapped (APK, API): the keys
/// are EL1 state of the one vCPU this CPU ever runs. WFI and WFE are not trapped: a CPU runs
/// one vCPU for good, so the guest's WFI may idle the CPU itself; whatever it waits for (a
/// kick, its timer, the maintenance interrupt) is a physical interrupt, which leaves the
/// guest (IMO), and the exit that takes it loads the virtual interrupt: one exit per wake-up
/// instead of a WFI exit, an idle at EL2 and the entry after it.
const HCR_GUEST: u64 = (1 << 0)
    | (1 << 1)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 19)
    | (1 << 31)
    | (1 << 40)
    | (1 << 41);

/// Hands the CPU's FP/SIMD, SVE, SME and PMU to its guest without traps. Static partitioning
/// never switches a CPU between guests and the hypervisor itself (soft-float) never touches
/// these registers, so nothing is saved or restored.
fn give_cpu_features_to_guest() {
    let pfr0: u64;
    let pfr1: u64;
    let pmcr: u64;
    // SAFETY: reads of ID and PMU control registers; no side effects.
    unsafe {
        asm!(
            "mrs {pfr0}, id_aa64pfr0_el1",
            "mrs {pfr1}, id_aa64pfr1_el1",
            "mrs {pmcr}, pmcr_el0",
            pfr0 = out(reg) pfr0,
            pfr1 = out(reg) pfr1,
            pmcr = out(reg) pmcr,
            options(nomem, nostack)
        );
    }
    const CPTR_RES1_NO_TRAPS: u64 = 0x33ff & !(1 << 10);
    const TRAP_SVE: u64 = 1 << 8;
    const TRAP_SME: u64 = 1 << 12;
    let sve = (pfr0 >> 32) & 0xf != 0;
    let sme = (pfr1 >> 24) & 0xf != 0;
    let mut cptr = CPTR_RES1_NO_TRAPS;
    if sve {
        cptr &= !TRAP_SVE;
    }
    if sme {
        cptr &= !TRAP_SME;
    }
    // MDCR_EL2: all PMU counters (HPMN = PMCR_EL0.N) to EL1, no debug or PMU traps.
    let counters = (pmcr >> 11) & 0x1f;
    // SAFETY: EL2 trap controls of this CPU, which only ever runs this guest.
    unsafe {
        asm!(
            "msr cptr_el2, {cptr}",
            "msr mdcr_el2, {mdcr}",
            "isb",
            cptr = in(reg) cptr,
            mdcr = in(reg) counters,
            options(nomem, nostack)
        );
    }
    // The length registers are accessible once CPTR_EL2 no longer traps them.
    if sve {
        // SAFETY: ZCR_EL2 exists with SVE; the largest vector length for EL1 (the CPU clamps).
        unsafe { asm!("msr S3_4_C1_C2_0, {}", in(reg) 0xfu64, options(nomem, nostack)) };
    }
    if sme {
        // SAFETY: SMCR_EL2 exists with SME; the largest streaming vector length for EL1.
        unsafe { asm!("msr S3_4_C1_C2_6, {}", in(reg) 0xfu64, options(nomem, nostack)) };
    }
}
/// SCTLR_EL1 at guest entry: MMU and caches off, RES1 bits set.
const SCTLR_EL1_RESET: u64 = 0x30d0_0800;
/// SPSR_EL2 for entry: EL1h, DAIF masked.
const SPSR_EL1H_MASKED: u64 = 0x3c5;

/// How a partition's stage 2 is walked on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage2Control {
    /// VTCR_EL2.
    pub vtcr: u64,
    /// `None`: the walk starts at level 0 (the builder's root); `Some(n)`: it starts at level
    /// 1 with `n` concatenated level-1 tables (see
    /// [`hypervisor::paging::PageTable::with_concatenated_level1`]).
    pub concatenated_level1: Option<usize>,
}

/// The stage-2 walk for the largest input size the CPU's physical address range allows (40
/// to 48 bits), 4 KiB granule. A walk may only start at level 0 where the range is 44 bits
/// or more; with 40 or 42 bits (Cortex-A53, A57, A72: 40) it starts at level 1 with 2 or 8
/// concatenated tables, which covers the same input range.
pub fn stage2_control() -> Option<Stage2Control> {
    use aarch64_cpu::registers::{ID_AA64MMFR0_EL1, Readable};
    let physical_range = ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange);
    let (bits, concatenated_level1) = match physical_range {
        2 => (40, Some(2)),
        3 => (42, Some(8)),
        4 => (44, None),
        5 | 6 => (48, None),
        _ => return None,
    };
    const START_LEVEL_0: u64 = 2 << 6;
    const START_LEVEL_1: u64 = 1 << 6;
    const WALK_CACHEABLE: u64 = (0b01 << 8) | (0b01 << 10) | (0b11 << 12);
    const RES1: u64 = 1 << 31;
    let start = match concatenated_level1 {
        None => START_LEVEL_0,
        Some(_) => START_LEVEL_1,
    };
    Some(Stage2Control {
        vtcr: (64 - bits) | start | WALK_CACHEABLE | (physical_range.min(5) << 16) | RES1,
        concatenated_level1,
    })
}

/// Sets up this CPU's EL2 controls for its one guest (stage 2, traps, identity); the vCPU
/// then runs through [`Aarch64Vcpu`].
pub fn prepare(setup: &VcpuSetup) {
    give_cpu_features_to_guest();
    // SAFETY: configures this CPU's EL2 controls for its one guest: reads MIDR, writes
    // EL2/EL1 system registers only; no memory is touched. Stage-2 tables are complete.
    unsafe {
        asm!(
            "mrs {midr}, midr_el1",
            "msr vpidr_el2, {midr}",
            "msr vmpidr_el2, {mpidr}",
            "msr vtcr_el2, {vtcr}",
            "msr vttbr_el2, {vttbr}",
            "msr hcr_el2, {hcr}",
            "msr cnthctl_el2, {cnthctl}",
            "msr cntvoff_el2, xzr",
            "msr sctlr_el1, {sctlr}",
            "msr cpacr_el1, xzr",
            "msr vbar_el1, xzr",
            "isb",
            "tlbi vmalls12e1",
            "dsb nsh",
            "isb",
            midr = out(reg) _,
            mpidr = in(reg) setup.mpidr,
            vtcr = in(reg) setup.vtcr,
            vttbr = in(reg) setup.vttbr,
            hcr = in(reg) HCR_GUEST,
            // EL1 may read the physical counter; the physical timer traps (guests use the
            // virtual timer).
            cnthctl = in(reg) 1u64,
            sctlr = in(reg) SCTLR_EL1_RESET,
            options(nostack)
        );
    }
}

/// A load or store being emulated: decoded once, performed element by element (a pair is
/// two exits), finished with the base register's write-back and the step past it.
#[derive(Clone, Copy)]
struct Access {
    decoded: DataAccess,
    width: AccessWidth,
    /// Guest-physical address of the first element.
    first: u64,
    /// The element whose exit the core is answering.
    element: usize,
    /// The next element's exit is due (returned by `run` without entering the guest).
    next_due: bool,
}

/// A single load or store the syndrome described in full (ESR_EL2.ISV = 1: no pair, no
/// write-back), which is almost every MMIO access: finished without the instruction decoder's
/// record.
#[derive(Clone, Copy)]
struct SyndromeAccess {
    /// The transfer register (31: the zero register).
    register: u8,
    /// Sign extension of a load: 0 none, 32 or 64 bits.
    sign_to: u8,
    /// log2 of the access width.
    size: u8,
}

/// What the fast lane ([`bulkhead_fast_exit`]) needs of the vCPU a CPU runs: made once per
/// CPU, kept for good, and used by that CPU only (the run loop through [`Aarch64Vcpu`], the
/// fast lane while the guest's exit is being taken: never both at once).
pub struct FastVcpu {
    partition: &'static Partition,
    vcpu: usize,
    platform: &'static dyn Platform,
    /// The list registers' bookkeeping (both the run loop and the fast lane fold and flush).
    lrs: RefCell<ListRegisters>,
    /// The fast lane took the virtual timer's PPI and left the exit to the run loop.
    timer_fired: Cell<bool>,
}

/// This CPU's list registers as the vCPU's last flush left them.
struct ListRegisters {
    /// List registers this CPU implements.
    slots: usize,
    /// How many the last flush filled.
    used: usize,
    /// Whether the underflow maintenance interrupt is on.
    underflow: bool,
    /// The list-register images exchanged with the core (kept, so no exit zeroes one).
    entries: ListEntries,
}

impl ListRegisters {
    /// What the list registers hold now goes back into the partition's virtual GIC.
    fn fold(&mut self, partition: &Partition, vcpu: usize, platform: &dyn Platform) {
        if self.used == 0 {
            return;
        }
        self.entries.clear();
        for index in 0..self.used {
            if self
                .entries
                .push(crate::gic::read_list_register(index))
                .is_err()
            {
                break;
            }
        }
        partition.fold_interrupts(vcpu, self.entries.as_slice(), platform);
    }

    /// The list registers get what the partition's virtual GIC has for this vCPU now.
    fn flush(&mut self, partition: &Partition, vcpu: usize, platform: &dyn Platform) {
        let previously_used = self.used;
        if previously_used == 0 && partition.interrupts_quiet(vcpu) {
            // Nothing to load and nothing loaded (the underflow interrupt is off then too).
            return;
        }
        partition.flush_interrupts(vcpu, self.slots, &mut self.entries, platform);
        // Linked interrupts the guest deactivated through its distributor or redistributor:
        // their physical ones too, now that no list register holds them. (Such a write
        // always ends the GIC's quiet state, so this is never skipped above.)
        partition.take_hardware_deactivations(vcpu, crate::gic::deactivate);
        if self.entries.is_unchanged() {
            // The list registers already hold what they should.
            return;
        }
        for (index, entry) in self.entries.iter().enumerate() {
            crate::gic::write_list_register(index, entry);
        }
        // Clear what the previous flush left in registers this one does not use.
        for index in self.entries.len()..previously_used {
            crate::gic::write_list_register(index, &ListEntry::EMPTY);
        }
        self.used = self.entries.len();
        let underflow = self.entries.more_pending();
        if underflow != self.underflow {
            self.underflow = underflow;
            crate::gic::set_underflow_interrupt(underflow);
        }
    }
}

impl FastVcpu {
    fn fold(&self) {
        self.lrs
            .borrow_mut()
            .fold(self.partition, self.vcpu, self.platform);
    }

    fn flush(&self) {
        self.lrs
            .borrow_mut()
            .flush(self.partition, self.vcpu, self.platform);
    }
}

/// One vCPU of a partition, run by this CPU for good.
pub struct Aarch64Vcpu {
    frame: TrapFrame,
    partition: &'static Partition,
    vcpu: usize,
    /// Shared with the fast lane: the list registers (and the platform).
    fast: &'static FastVcpu,
    /// The syndrome-described access being emulated, if any.
    simple: Option<SyndromeAccess>,
    access: Option<Access>,
}

impl core::fmt::Debug for Aarch64Vcpu {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Aarch64Vcpu")
            .field("partition", &self.partition.name())
            .field("vcpu", &self.vcpu)
            .finish_non_exhaustive()
    }
}

impl Aarch64Vcpu {
    /// vCPU `vcpu` of `partition` on this CPU ([`prepare`] ran); it starts at its first
    /// [`VcpuBackend::start`].
    pub fn new(
        partition: &'static Partition,
        vcpu: usize,
        platform: &'static dyn Platform,
    ) -> Self {
        let per_cpu = crate::cpu::per_cpu();
        let slots = per_cpu.map_or(0, |per_cpu| per_cpu.list_registers.load(Ordering::Relaxed));
        // Made once per CPU and kept for good (static partitioning).
        let fast: &'static FastVcpu = alloc::boxed::Box::leak(alloc::boxed::Box::new(FastVcpu {
            partition,
            vcpu,
            platform,
            lrs: RefCell::new(ListRegisters {
                slots,
                used: 0,
                underflow: false,
                entries: ListEntries::new(),
            }),
            timer_fired: Cell::new(false),
        }));
        if let Some(per_cpu) = per_cpu {
            per_cpu.set_running(fast);
        }
        Self {
            frame: TrapFrame::zeroed(),
            partition,
            vcpu,
            fast,
            simple: None,
            access: None,
        }
    }

    /// The exit of an exception taken from the guest through vector slot `kind`, or `None`
    /// when there is nothing for the core (the guest just continues).
    fn decode(&mut self, kind: u64) -> Option<Exit> {
        match kind % 4 {
            0 => self.synchronous(),
            1 => Some(if physical_interrupts() | self.fast.timer_fired.take() {
                Exit::VirtualTimer
            } else {
                Exit::Interrupt
            }),
            // An SError from a guest is its fault; nothing routes FIQs.
            3 => Some(Exit::GuestFault {
                reason: None,
                syndrome: self.frame.esr,
                address: None,
            }),
            _ => None,
        }
    }

    fn synchronous(&mut self) -> Option<Exit> {
        let frame = &mut self.frame;
        let syndrome = frame.esr;
        let fault = Exit::GuestFault {
            reason: None,
            syndrome,
            address: None,
        };
        match esr::exception_class(syndrome) {
            // WFI (ISS bit 0 = 0) waits; WFE just continues.
            0x01 => {
                frame.elr = frame.elr.wrapping_add(4);
                (syndrome & 1 == 0).then_some(Exit::WaitForInterrupt)
            }
            // HVC: ELR already points after the instruction.
            0x16 => Some(hypercall(frame)),
            // SMC: ELR points at the instruction.
            0x17 => {
                frame.elr = frame.elr.wrapping_add(4);
                Some(hypercall(frame))
            }
            0x18 => Some(system_register(frame).unwrap_or(fault)),
            0x24 => Some(self.data_abort()),
            _ => Some(fault),
        }
    }

    fn data_abort(&mut self) -> Exit {
        let frame = &self.frame;
        let syndrome = frame.esr;
        let hpfar: u64;
        // SAFETY: reads the faulting IPA's page; no side effects.
        unsafe { asm!("mrs {}, hpfar_el2", out(reg) hpfar, options(nomem, nostack)) };
        let ipa = ((hpfar & 0x0000_0fff_ffff_fff0) << 8) | (frame.far & 0xfff);
        const STAGE1_WALK: u64 = 1 << 7;
        let fault = Exit::GuestFault {
            reason: None,
            syndrome,
            address: Some(GuestPhysAddr::new(ipa)),
        };
        if syndrome & STAGE1_WALK != 0 {
            return fault;
        }
        const ISV: u64 = 1 << 24;
        if syndrome & ISV != 0 {
            return self.syndrome_access(syndrome, ipa);
        }
        // ISV = 0: a pair, a write-back or a register offset; the instruction says what.
        let Some(instruction) = translate_guest_virtual(frame.elr).and_then(read_instruction)
        else {
            return fault;
        };
        let Ok(decoded) = decode::from_instruction(instruction) else {
            return fault;
        };
        let Ok(width) = AccessWidth::try_from(decoded.width.bytes()) else {
            return Exit::GuestFault {
                reason: None,
                syndrome,
                address: None,
            };
        };
        // For decoded instructions, the first element's IPA follows from the faulting one.
        let mut first = ipa;
        if let Some(base) = decoded.base {
            let base_value = base_register(frame, base);
            let index = decoded
                .index
                .map_or(0, |index| index.offset(register(frame, index.register)));
            let offset = if decoded.write_back == WriteBack::PostIndex {
                0
            } else {
                decoded.offset.wrapping_add(index)
            };
            let first_virtual = base_value.wrapping_add(offset as u64);
            let element = frame.far.wrapping_sub(first_virtual);
            if element != 0 && element != width.bytes() {
                return fault;
            }
            first = ipa.wrapping_sub(element);
        }
        let access = Access {
            decoded,
            width,
            first,
            element: 0,
            next_due: false,
        };
        self.access = Some(access);
        self.element_exit(&access)
    }

    /// The exit of an access the syndrome describes (ISV = 1): SAS, SSE, SRT, SF, WnR.
    #[inline]
    fn syndrome_access(&mut self, syndrome: u64, ipa: u64) -> Exit {
        let size = ((syndrome >> 22) & 0b11) as u8;
        let register = ((syndrome >> 16) & 0x1f) as u8;
        let width = match size {
            0 => AccessWidth::Byte,
            1 => AccessWidth::Half,
            2 => AccessWidth::Word,
            _ => AccessWidth::Double,
        };
        let address = GuestPhysAddr::new(ipa);
        if syndrome & (1 << 6) != 0 {
            self.simple = Some(SyndromeAccess {
                register: ZERO_REGISTER,
                sign_to: 0,
                size,
            });
            return Exit::MmioWrite {
                address,
                width,
                value: register_value(&self.frame, register) & width.mask(),
                syndrome,
            };
        }
        let sign_to = match (syndrome & (1 << 21) != 0, syndrome & (1 << 15) != 0) {
            (false, _) => 0,
            (true, true) => 64,
            (true, false) => 32,
        };
        self.simple = Some(SyndromeAccess {
            register,
            sign_to,
            size,
        });
        Exit::MmioRead {
            address,
            width,
            syndrome,
        }
    }

    /// Finishes a syndrome-described access: the loaded value into its register, the step.
    #[inline]
    fn complete_simple(&mut self, access: SyndromeAccess, action: Action) {
        if let Action::CompleteRead(value) = action
            && access.register != ZERO_REGISTER
        {
            let bits = 8u32 << access.size;
            let value = if bits >= 64 {
                value
            } else {
                let truncated = value & ((1u64 << bits) - 1);
                match access.sign_to {
                    0 => truncated,
                    to => {
                        let shift = 64 - bits;
                        let extended = (((truncated << shift) as i64) >> shift) as u64;
                        if to == 32 {
                            extended & 0xffff_ffff
                        } else {
                            extended
                        }
                    }
                }
            };
            set_register(&mut self.frame, access.register, value);
        }
        self.frame.elr = self.frame.elr.wrapping_add(4);
    }

    /// The exit of the access's current element.
    fn element_exit(&self, access: &Access) -> Exit {
        let width = access.width;
        let address = GuestPhysAddr::new(
            access
                .first
                .wrapping_add(access.element as u64 * width.bytes()),
        );
        let syndrome = self.frame.esr;
        if access.decoded.write {
            let register_index = access
                .decoded
                .registers
                .get(access.element)
                .copied()
                .unwrap_or(ZERO_REGISTER);
            Exit::MmioWrite {
                address,
                width,
                value: register(&self.frame, register_index) & width.mask(),
                syndrome,
            }
        } else {
            Exit::MmioRead {
                address,
                width,
                syndrome,
            }
        }
    }

    /// Finishes the current element of the access in progress (in place: the record is
    /// not copied on this path); the last one also writes the base register back and steps
    /// past the instruction.
    fn complete_access(&mut self, action: Action) {
        let Self { access, frame, .. } = self;
        let Some(current) = access.as_mut() else {
            return;
        };
        let decoded = &current.decoded;
        if let Action::CompleteRead(value) = action
            && !decoded.write
            && let Some(&register_index) = decoded.registers.get(current.element)
        {
            let extended = decode::extend_loaded(value, decoded.width, decoded.extend);
            set_register(frame, register_index, extended);
        }
        if decoded.pair && current.element == 0 {
            current.element = 1;
            current.next_due = true;
            return;
        }
        if let Some(base) = decoded.base
            && decoded.write_back != WriteBack::None
        {
            let updated = base_register(frame, base).wrapping_add(decoded.offset as u64);
            set_base_register(frame, base, updated);
        }
        frame.elr = frame.elr.wrapping_add(4);
        *access = None;
    }
}

impl VcpuBackend for Aarch64Vcpu {
    fn run(&mut self) -> Exit {
        if let Some(access) = self.access.as_mut().filter(|access| access.next_due) {
            access.next_due = false;
            let access = *access;
            return self.element_exit(&access);
        }
        loop {
            self.fast.flush();
            // SAFETY: the frame holds this vCPU's EL1 context (set by `start`, then saved by
            // every exit), `prepare` set up the EL2 controls and stage 2, and the per-CPU
            // state is installed.
            let kind = unsafe { crate::exception::run_guest(&mut self.frame) };
            self.fast.fold();
            if let Some(exit) = self.decode(kind) {
                return exit;
            }
        }
    }

    fn complete(&mut self, action: Action) {
        if let Some(access) = self.simple.take() {
            self.complete_simple(access, action);
            return;
        }
        if self.access.is_some() {
            self.complete_access(action);
            return;
        }
        if let Action::ReturnValues(values) = action {
            for (register, value) in self.frame.registers.iter_mut().zip(values) {
                *register = value;
            }
        }
    }

    fn idle(&mut self) {
        crate::cpu::wait_for_interrupt();
        // Whatever woke the CPU (usually the kick of a doorbell) is taken here, in this
        // exit, rather than in a second exit right after entering the guest.
        if physical_interrupts() {
            self.partition.virtual_timer_fired(self.vcpu);
        }
    }

    fn start(&mut self, start: StartRequest) {
        self.simple = None;
        self.access = None;
        reset_frame(&mut self.frame, start);
    }

    fn wait(&mut self) {
        crate::cpu::wait_for_event();
    }

    fn halt(&mut self) -> ! {
        crate::cpu::halt()
    }
}

fn reset_frame(frame: &mut TrapFrame, start: StartRequest) {
    *frame = TrapFrame::zeroed();
    frame.registers[0] = start.context;
    frame.elr = start.entry;
    frame.spsr = SPSR_EL1H_MASKED;
    // SAFETY: resets the EL1 state a restarted vCPU must not inherit (MMU off, vectors
    // cleared); registers of this CPU's own guest only.
    unsafe {
        asm!(
            "msr sctlr_el1, {sctlr}",
            "msr vbar_el1, xzr",
            "isb",
            sctlr = in(reg) SCTLR_EL1_RESET,
            options(nostack)
        );
    }
}

/// The fast lane ([`hypervisor::fast`]): called by the guest-exit vector code, for a
/// synchronous exit, with the guest's frame saved except x19-x29 (their slots are stale; they
/// are still in their registers), before the exit goes back to the run loop. Answers a pure
/// PSCI query, or an MMIO access to a published reserved or doorbell register, in place
/// (results in the frame, ELR stepped) and returns 1: the vector code re-enters the guest at
/// once. Returns 0 for everything else (the run loop takes the exit as before). The list
/// registers are neither read nor written: an interrupt made pending for this vCPU meanwhile
/// (by another CPU, or by a ring of this one) comes with a kick, taken as an IRQ exit right
/// after the return.
#[unsafe(no_mangle)]
extern "C" fn bulkhead_fast_exit(frame: &mut TrapFrame) -> u64 {
    let Some(running) = crate::cpu::per_cpu().and_then(crate::cpu::PerCpu::running) else {
        return 0;
    };
    match esr::exception_class(frame.esr) {
        0x16 => fast_call(frame, running.partition, running.vcpu, false),
        0x17 => fast_call(frame, running.partition, running.vcpu, true),
        0x24 => fast_data_abort(frame, running),
        _ => 0,
    }
}

/// The fast lane's IRQ exit (a kick, the maintenance interrupt), called by the guest-exit
/// vector code as [`bulkhead_fast_exit`] is for synchronous ones: what the run loop does for
/// an [`Exit::Interrupt`] (take the physical interrupts, fold the list registers, count the
/// exit, flush) without the loop; returns 1 when done. The virtual timer's PPI, a vCPU whose
/// run state needs a look, and a fold or flush already under way (none is: the run loop is
/// in the guest) go to the run loop (0).
#[unsafe(no_mangle)]
extern "C" fn bulkhead_fast_interrupt() -> u64 {
    let Some(running) = crate::cpu::per_cpu().and_then(crate::cpu::PerCpu::running) else {
        return 0;
    };
    let (partition, vcpu) = (running.partition, running.vcpu);
    if physical_interrupts() {
        // Taken here: the run loop's decode learns it from the flag.
        running.timer_fired.set(true);
        return 0;
    }
    // Looked at after the kicks were taken (as the run loop does): a stop or restart asked
    // for before its kick is seen here.
    if !partition.fast_lane_open(vcpu) {
        return 0;
    }
    let Ok(mut lrs) = running.lrs.try_borrow_mut() else {
        return 0;
    };
    lrs.fold(partition, vcpu, running.platform);
    partition.count_exit(vcpu, ExitClass::Interrupt);
    lrs.flush(partition, vcpu, running.platform);
    1
}

/// The guest registers whose frame slots are stale while the fast lane runs (the vector code
/// saves them only for the run loop): the fast lane neither reads nor writes them.
const FAST_LANE_STALE_FIRST: u8 = 19;
const FAST_LANE_STALE_LAST: u8 = 29;

/// The fast lane's HVC or SMC (`smc`: ELR points at the instruction): a pure PSCI query.
#[inline(never)]
fn fast_call(frame: &mut TrapFrame, partition: &Partition, vcpu: usize, smc: bool) -> u64 {
    let [x0, x1, x2, x3, x4, ..] = frame.registers;
    let Some(values) = partition.fast_call(vcpu, x0, [x1, x2, x3, x4]) else {
        return 0;
    };
    let [r0, r1, r2, r3, ..] = &mut frame.registers;
    [*r0, *r1, *r2, *r3] = values;
    if smc {
        frame.elr = frame.elr.wrapping_add(4);
    }
    1
}

/// The fast lane's data abort: a syndrome-described access to a published reserved register.
#[inline(never)]
fn fast_data_abort(frame: &mut TrapFrame, running: &FastVcpu) -> u64 {
    const ISV: u64 = 1 << 24;
    const STAGE1_WALK: u64 = 1 << 7;
    let syndrome = frame.esr;
    if syndrome & (ISV | STAGE1_WALK) != ISV {
        return 0;
    }
    let hpfar: u64;
    // SAFETY: reads the faulting IPA's page; no side effects.
    unsafe { asm!("mrs {}, hpfar_el2", out(reg) hpfar, options(nomem, nostack)) };
    let ipa = ((hpfar & 0x0000_0fff_ffff_fff0) << 8) | (frame.far & 0xfff);
    let bytes = 1u64 << ((syndrome >> 22) & 0b11);
    let register = ((syndrome >> 16) & 0x1f) as u8;
    if (FAST_LANE_STALE_FIRST..=FAST_LANE_STALE_LAST).contains(&register)
        || !running.partition.fast_mmio_may_answer(ipa, bytes)
    {
        // x19-x29 are not saved (nor restored) for the fast lane; most misses end here.
        return 0;
    }
    fast_mmio(frame, running, ipa, bytes, register)
}

/// The rest of [`fast_data_abort`], for an access that may be the fast lane's.
#[inline(never)]
fn fast_mmio(frame: &mut TrapFrame, running: &FastVcpu, ipa: u64, bytes: u64, register: u8) -> u64 {
    const WRITE: u64 = 1 << 6;
    let syndrome = frame.esr;
    let write = (syndrome & WRITE != 0).then(|| register_value(frame, register));
    // The answer re-enters the guest without a flush: an interrupt a ring makes pending for
    // this vCPU itself needs the kick (taken as an IRQ exit right after).
    if !running
        .partition
        .fast_mmio(running.vcpu, ipa, bytes, write, running.platform, true)
    {
        return 0;
    }
    if syndrome & WRITE == 0 {
        // A load of zero (zero sign-extends to zero); SRT 31 is the zero register.
        set_register(frame, register, 0);
    }
    frame.elr = frame.elr.wrapping_add(4);
    1
}

/// Most physical interrupts taken in one exit. The maintenance interrupt stays asserted
/// until the list registers are rewritten (on the way back into the guest), so it is
/// acknowledged at most once per exit and a guest can never keep EL2 in this loop.
const MAX_INTERRUPTS_PER_EXIT: usize = 4;

/// Takes pending physical interrupts: the kick SGI and the maintenance interrupt only needed
/// the exit; returns whether the virtual timer's PPI fired (the guest's virtual timer
/// interrupt; the PPI stays active until the guest deactivates it).
fn physical_interrupts() -> bool {
    let mut timer = false;
    for _ in 0..MAX_INTERRUPTS_PER_EXIT {
        let Some(intid) = crate::gic::acknowledge() else {
            break;
        };
        crate::gic::end_of_interrupt(intid);
        if intid == crate::gic::VIRTUAL_TIMER_PPI {
            timer = true;
        } else {
            crate::gic::deactivate(intid);
            if intid == crate::gic::MAINTENANCE_PPI {
                break;
            }
        }
    }
    timer
}

/// A trapped system-register access: only ICC_SGI1R_EL1 writes are expected (HCR_EL2.IMO
/// traps them so that SGIs stay inside the partition); `None` for anything else.
fn system_register(frame: &mut TrapFrame) -> Option<Exit> {
    let iss = frame.esr & 0x1ff_ffff;
    // Op0, Op2, Op1, CRn, CRm of ICC_SGI1R_EL1 (3, 5, 0, 12, 11), direction = write.
    let sgi1r = (3 << 20) | (5 << 17) | (12 << 10) | (11 << 1);
    let identity_mask = (0b11 << 20) | (0b111 << 17) | (0b111 << 14) | (0xf << 10) | (0xf << 1) | 1;
    if iss & identity_mask != sgi1r {
        return None;
    }
    let value = register(frame, ((iss >> 5) & 0x1f) as u8);
    frame.elr = frame.elr.wrapping_add(4);
    Some(Exit::SendSoftwareInterrupt { value })
}

fn hypercall(frame: &TrapFrame) -> Exit {
    let [x0, x1, x2, x3, x4, ..] = frame.registers;
    Exit::Hypercall {
        function: x0,
        arguments: [x1, x2, x3, x4],
    }
}

/// A transfer register's value (31: the zero register), without a bounds check's branch.
#[inline]
fn register_value(frame: &TrapFrame, index: u8) -> u64 {
    match frame.registers.get(usize::from(index)) {
        Some(&value) => value,
        None => 0,
    }
}

fn register(frame: &TrapFrame, index: u8) -> u64 {
    match index {
        ZERO_REGISTER => 0,
        i => frame.registers.get(usize::from(i)).copied().unwrap_or(0),
    }
}

fn set_register(frame: &mut TrapFrame, index: u8, value: u64) {
    if let Some(slot) = frame.registers.get_mut(usize::from(index)) {
        *slot = value;
    }
}

/// The base register of a decoded instruction: 31 is SP_EL1 here.
fn base_register(frame: &TrapFrame, index: u8) -> u64 {
    if index == 31 {
        let value: u64;
        // SAFETY: reads the guest's EL1 stack pointer; no side effects.
        unsafe { asm!("mrs {}, sp_el1", out(reg) value, options(nomem, nostack)) };
        value
    } else {
        register(frame, index)
    }
}

fn set_base_register(frame: &mut TrapFrame, index: u8, value: u64) {
    if index == 31 {
        // SAFETY: write-back of the guest's own EL1 stack pointer, as the instruction does.
        unsafe { asm!("msr sp_el1, {}", in(reg) value, options(nomem, nostack)) };
    } else {
        set_register(frame, index, value);
    }
}

/// Translates a guest virtual address with the guest's stage 1 and stage 2 (AT S12E1R),
/// preserving the guest's PAR_EL1. Returns the host-physical address.
fn translate_guest_virtual(address: u64) -> Option<u64> {
    let par: u64;
    // SAFETY: an address-translation query; it only changes PAR_EL1, which is saved and
    // restored around it.
    unsafe {
        asm!(
            "mrs {saved}, par_el1",
            "at s12e1r, {address}",
            "isb",
            "mrs {par}, par_el1",
            "msr par_el1, {saved}",
            saved = out(reg) _,
            address = in(reg) address,
            par = out(reg) par,
            options(nostack)
        );
    }
    (par & 1 == 0).then_some((par & 0x0000_ffff_ffff_f000) | (address & 0xfff))
}

fn read_instruction(host_physical: u64) -> Option<u32> {
    if !host_physical.is_multiple_of(4) {
        return None;
    }
    // SAFETY: the address came from translating the guest's ELR through its stage-2 map, so
    // it lies in that partition's RAM, which the hypervisor identity-maps read-write.
    Some(unsafe { core::ptr::read_volatile(host_physical as *const u32) })
}
