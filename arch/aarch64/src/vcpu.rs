//! Running a partition's vCPU on this CPU: entering EL1, decoding traps from it into the
//! core's [`Exit`], and applying the core's [`Action`]. Arch code knows registers and
//! syndromes; what sits at an address or what a partition is belongs to the core.

use core::arch::asm;
use core::sync::atomic::Ordering;

use hypervisor::addr::GuestPhysAddr;
use hypervisor::device::gic::{ListEntries, ListEntry};
use hypervisor::exit::{AccessWidth, Action, Exit};
use hypervisor::partition::{ExitClass, Runnable};

use crate::decode::{self, DataAccess, WriteBack, ZERO_REGISTER};
use crate::esr;
use crate::exception::TrapFrame;

/// Where a vCPU starts: entry address and x0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestEntry {
    /// Guest-physical entry point (the guest's MMU is off).
    pub entry: u64,
    /// Value of x0.
    pub x0: u64,
}

/// What the vCPU loop asks of the hypervisor (implemented by the image's glue, which knows
/// the partitions): one object per physical CPU, for the one vCPU that CPU runs. Called on
/// that CPU only.
pub trait VcpuHost: Sync {
    /// Counts one exit of this CPU's vCPU.
    fn count_exit(&self, class: ExitClass);
    /// The core's answer to an exit of this CPU's vCPU.
    fn handle_exit(&self, exit: Exit) -> Action;
    /// This CPU's vCPU left its guest to wait for a start (CPU_OFF, or a restart).
    fn park(&self);
    /// This CPU's vCPU is off: returns where it starts once a CPU_ON names it (or, for
    /// vCPU 0, once it has carried out a restart another vCPU asked for), or `None` while it
    /// should keep waiting.
    fn poll_start(&self) -> Option<GuestEntry>;
    /// This CPU's partition stopped: account for it (and power off when it was the last).
    fn partition_stopped(&self);
    /// Restarts this CPU's partition as a whole: on vCPU 0's CPU, once every other vCPU has
    /// parked, reloads it and returns where vCPU 0 starts again; on another vCPU's CPU, asks
    /// vCPU 0 to do so and returns `None` (this vCPU then waits for a CPU_ON).
    fn restart(&self) -> Option<GuestEntry>;
    /// What this CPU's list registers held after the guest ran.
    fn fold(&self, entries: &[ListEntry]);
    /// Interrupts to load into (at most `slots`) list registers before the guest runs, into
    /// `entries`.
    fn flush(&self, slots: usize, entries: &mut ListEntries);
    /// The guest's virtual timer fired (its physical PPI stays active until the guest
    /// deactivates the virtual interrupt).
    fn virtual_timer_fired(&self);
    /// Whether this CPU's vCPU may go back into the guest.
    fn runnable(&self) -> Runnable;
    /// Whether a flush would load nothing into the (empty) list registers now.
    fn interrupts_quiet(&self) -> bool;
}

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
/// SMC and WFI trapped, EL1 is AArch64, set/way invalidation upgraded to clean+invalidate;
/// pointer-authentication instructions and key registers not trapped (APK, API): the keys
/// are EL1 state of the one vCPU this CPU ever runs.
const HCR_GUEST: u64 = (1 << 0)
    | (1 << 1)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 13)
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

/// VTCR_EL2 for a 4-level stage 2 starting at level 0 (the builder's layout), with the
/// largest input size the CPU's physical address range allows (40 to 48 bits).
pub fn stage2_control() -> Option<u64> {
    use aarch64_cpu::registers::{ID_AA64MMFR0_EL1, Readable};
    let physical_range = ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange);
    let bits = match physical_range {
        2 => 40,
        3 => 42,
        4 => 44,
        5 | 6 => 48,
        _ => return None,
    };
    const START_LEVEL_0: u64 = 2 << 6;
    const WALK_CACHEABLE: u64 = (0b01 << 8) | (0b01 << 10) | (0b11 << 12);
    const RES1: u64 = 1 << 31;
    Some((64 - bits) | START_LEVEL_0 | WALK_CACHEABLE | (physical_range.min(5) << 16) | RES1)
}

/// Enters the guest on this CPU for good. Traps come back through the EL2 vectors into
/// [`trap`], which returns to the guest or parks the CPU.
pub fn run(setup: &VcpuSetup, start: GuestEntry, host: &'static dyn VcpuHost) -> ! {
    let Some(per_cpu) = crate::cpu::per_cpu() else {
        crate::cpu::halt()
    };
    per_cpu.host.call_once(|| host);
    give_cpu_features_to_guest();
    let midr: u64;
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
            midr = out(reg) midr,
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
    let _ = midr;
    let mut frame = TrapFrame::zeroed();
    reset_frame(&mut frame, start);
    // SAFETY: the frame is a complete guest context on this stack; the return path loads it
    // and erets to EL1. This stack frame is never returned to: later traps reuse the stack
    // below the frame's position.
    unsafe { crate::exception::enter_guest(&mut frame) }
}

fn reset_frame(frame: &mut TrapFrame, start: GuestEntry) {
    *frame = TrapFrame::zeroed();
    frame.registers[0] = start.x0;
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

/// Handles a synchronous exception or interrupt from the guest (vector slots 8..=11): the
/// list registers are folded back into the partition's virtual GIC first and flushed again
/// last, so the model is current while the exit is handled.
pub fn trap(frame: &mut TrapFrame, kind: u64) {
    let Some(per_cpu) = crate::cpu::per_cpu() else {
        return;
    };
    let Some(host) = per_cpu.host.get().copied() else {
        return;
    };
    fold_list_registers(per_cpu, host);
    match kind % 4 {
        0 => synchronous(frame, host),
        1 => {
            host.count_exit(ExitClass::Interrupt);
            physical_interrupts(host);
        }
        // An SError from a guest is its fault; nothing routes FIQs.
        3 => {
            let action = host.handle_exit(Exit::GuestFault {
                reason: None,
                syndrome: frame.esr,
                address: None,
            });
            apply(frame, action, host, None);
        }
        _ => {}
    }
    // Another vCPU may have stopped or restarted the partition meanwhile.
    match host.runnable() {
        Runnable::Run => {}
        Runnable::Park => park_until_started(frame, host),
        Runnable::Restart => apply(frame, Action::RestartPartition, host, None),
        Runnable::Stop => {
            host.partition_stopped();
            crate::cpu::halt();
        }
    }
    flush_list_registers(per_cpu, host);
}

fn fold_list_registers(per_cpu: &crate::cpu::PerCpu, host: &'static dyn VcpuHost) {
    let used = per_cpu.list_registers_used.load(Ordering::Relaxed);
    if used == 0 {
        return;
    }
    let mut entries = per_cpu.list_entries.lock();
    entries.clear();
    for index in 0..used {
        if entries.push(crate::gic::read_list_register(index)).is_err() {
            break;
        }
    }
    host.fold(entries.as_slice());
}

fn flush_list_registers(per_cpu: &crate::cpu::PerCpu, host: &'static dyn VcpuHost) {
    let slots = per_cpu.list_registers.load(Ordering::Relaxed);
    let previously_used = per_cpu.list_registers_used.load(Ordering::Relaxed);
    if previously_used == 0 && host.interrupts_quiet() {
        // Nothing to load and nothing loaded (the underflow interrupt is off then too).
        return;
    }
    let mut entries = per_cpu.list_entries.lock();
    host.flush(slots, &mut entries);
    if entries.is_unchanged() {
        // The list registers already hold what they should.
        return;
    }
    for (index, entry) in entries.iter().enumerate() {
        crate::gic::write_list_register(index, entry);
    }
    // Clear what the previous flush left in registers this one does not use.
    for index in entries.len()..previously_used {
        crate::gic::write_list_register(index, &ListEntry::EMPTY);
    }
    per_cpu
        .list_registers_used
        .store(entries.len(), Ordering::Relaxed);
    let underflow = entries.more_pending();
    if underflow
        != per_cpu
            .underflow_interrupt
            .swap(underflow, Ordering::Relaxed)
    {
        crate::gic::set_underflow_interrupt(underflow);
    }
}

/// Takes every pending physical interrupt: the kick SGI and the maintenance interrupt only
/// needed the exit; the virtual timer's PPI becomes the guest's virtual timer interrupt.
fn physical_interrupts(host: &'static dyn VcpuHost) {
    while let Some(intid) = crate::gic::acknowledge() {
        crate::gic::end_of_interrupt(intid);
        if intid == crate::gic::VIRTUAL_TIMER_PPI {
            host.virtual_timer_fired();
        } else {
            crate::gic::deactivate(intid);
        }
    }
}

fn synchronous(frame: &mut TrapFrame, host: &'static dyn VcpuHost) {
    let syndrome = frame.esr;
    let class = esr::exception_class(syndrome);
    host.count_exit(match class {
        0x01 => ExitClass::WaitForInterrupt,
        0x24 => ExitClass::Mmio,
        _ => ExitClass::Other,
    });
    let action = match class {
        // WFI (ISS bit 0 = 0) idles; WFE just continues.
        0x01 => {
            frame.elr = frame.elr.wrapping_add(4);
            if syndrome & 1 == 0 {
                host.handle_exit(Exit::WaitForInterrupt)
            } else {
                Action::Resume
            }
        }
        // HVC: ELR already points after the instruction.
        0x16 => host.handle_exit(hypercall(frame)),
        // SMC: ELR points at the instruction.
        0x17 => {
            frame.elr = frame.elr.wrapping_add(4);
            host.handle_exit(hypercall(frame))
        }
        0x18 => system_register(frame, host),
        0x24 => data_abort(frame, host),
        _ => host.handle_exit(Exit::GuestFault {
            reason: None,
            syndrome,
            address: None,
        }),
    };
    apply(frame, action, host, None);
}

/// A trapped system-register access: only ICC_SGI1R_EL1 writes are expected (HCR_EL2.IMO
/// traps them so that SGIs stay inside the partition).
fn system_register(frame: &mut TrapFrame, host: &'static dyn VcpuHost) -> Action {
    let iss = frame.esr & 0x1ff_ffff;
    // Op0, Op2, Op1, CRn, CRm of ICC_SGI1R_EL1 (3, 5, 0, 12, 11), direction = write.
    let sgi1r = (3 << 20) | (5 << 17) | (12 << 10) | (11 << 1);
    let identity_mask = (0b11 << 20) | (0b111 << 17) | (0b111 << 14) | (0xf << 10) | (0xf << 1) | 1;
    if iss & identity_mask != sgi1r {
        return host.handle_exit(Exit::GuestFault {
            reason: None,
            syndrome: frame.esr,
            address: None,
        });
    }
    let value = register(frame, ((iss >> 5) & 0x1f) as u8);
    frame.elr = frame.elr.wrapping_add(4);
    host.handle_exit(Exit::SendSoftwareInterrupt { value })
}

fn hypercall(frame: &TrapFrame) -> Exit {
    let [x0, x1, x2, x3, x4, ..] = frame.registers;
    Exit::Hypercall {
        function: x0,
        arguments: [x1, x2, x3, x4],
    }
}

/// A load waiting for its value: destination register and how to extend.
#[derive(Clone, Copy)]
struct PendingLoad {
    register: u8,
    access: DataAccess,
}

fn apply(
    frame: &mut TrapFrame,
    action: Action,
    host: &'static dyn VcpuHost,
    load: Option<PendingLoad>,
) {
    match action {
        Action::Resume => {}
        Action::CompleteRead(value) => {
            if let Some(load) = load {
                let extended = decode::extend_loaded(value, load.access.width, load.access.extend);
                set_register(frame, load.register, extended);
            }
        }
        Action::ReturnValues(values) => {
            for (register, value) in frame.registers.iter_mut().zip(values) {
                *register = value;
            }
        }
        Action::Idle => {
            crate::cpu::wait_for_interrupt();
            // Whatever woke the CPU (usually the kick of a doorbell) is taken here, in this
            // exit, rather than in a second exit right after entering the guest.
            physical_interrupts(host);
        }
        Action::VcpuOff => park_until_started(frame, host),
        Action::StopPartition => {
            host.partition_stopped();
            crate::cpu::halt();
        }
        Action::RestartPartition => match host.restart() {
            Some(start) => reset_frame(frame, start),
            None => park_until_started(frame, host),
        },
        _ => {}
    }
}

fn park_until_started(frame: &mut TrapFrame, host: &'static dyn VcpuHost) {
    host.park();
    loop {
        if let Some(start) = host.poll_start() {
            reset_frame(frame, start);
            return;
        }
        crate::cpu::wait_for_event();
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

fn data_abort(frame: &mut TrapFrame, host: &'static dyn VcpuHost) -> Action {
    let syndrome = frame.esr;
    let hpfar: u64;
    // SAFETY: reads the faulting IPA's page; no side effects.
    unsafe { asm!("mrs {}, hpfar_el2", out(reg) hpfar, options(nomem, nostack)) };
    let ipa = ((hpfar & 0x0000_0fff_ffff_fff0) << 8) | (frame.far & 0xfff);
    const STAGE1_WALK: u64 = 1 << 7;
    let fault = |host: &dyn VcpuHost| {
        host.handle_exit(Exit::GuestFault {
            reason: None,
            syndrome,
            address: Some(GuestPhysAddr::new(ipa)),
        })
    };
    if syndrome & STAGE1_WALK != 0 {
        return fault(host);
    }
    let access = match decode::from_syndrome(syndrome) {
        Some(access) => access,
        None => {
            let Some(instruction) = translate_guest_virtual(frame.elr).and_then(read_instruction)
            else {
                return fault(host);
            };
            match decode::from_instruction(instruction) {
                Ok(access) => access,
                Err(_) => return fault(host),
            }
        }
    };
    emulate(frame, host, access, ipa)
}

fn read_instruction(host_physical: u64) -> Option<u32> {
    if !host_physical.is_multiple_of(4) {
        return None;
    }
    // SAFETY: the address came from translating the guest's ELR through its stage-2 map, so
    // it lies in that partition's RAM, which the hypervisor identity-maps read-write.
    Some(unsafe { core::ptr::read_volatile(host_physical as *const u32) })
}

/// Performs a decoded access (one register, or a pair) at `ipa` through the core, then the
/// write-back and the step past the instruction.
fn emulate(
    frame: &mut TrapFrame,
    host: &'static dyn VcpuHost,
    access: DataAccess,
    ipa: u64,
) -> Action {
    let width = match AccessWidth::try_from(access.width.bytes()) {
        Ok(width) => width,
        Err(_) => {
            return host.handle_exit(Exit::GuestFault {
                reason: None,
                syndrome: frame.esr,
                address: None,
            });
        }
    };
    let count = if access.pair { 2 } else { 1 };
    // For decoded instructions, the first element's IPA follows from the faulting one.
    let mut first = ipa;
    if let Some(base) = access.base {
        let base_value = base_register(frame, base);
        let index = access
            .index
            .map_or(0, |index| index.offset(register(frame, index.register)));
        let offset = if access.write_back == WriteBack::PostIndex {
            0
        } else {
            access.offset.wrapping_add(index)
        };
        let first_virtual = base_value.wrapping_add(offset as u64);
        let element = frame.far.wrapping_sub(first_virtual);
        if element != 0 && element != width.bytes() {
            return host.handle_exit(Exit::GuestFault {
                reason: None,
                syndrome: frame.esr,
                address: Some(GuestPhysAddr::new(ipa)),
            });
        }
        first = ipa.wrapping_sub(element);
    }
    for (i, &register_index) in access.registers.iter().take(count).enumerate() {
        let address = GuestPhysAddr::new(first.wrapping_add(i as u64 * width.bytes()));
        let (exit, load) = if access.write {
            let value = register(frame, register_index) & width.mask();
            (
                Exit::MmioWrite {
                    address,
                    width,
                    value,
                    syndrome: frame.esr,
                },
                None,
            )
        } else {
            (
                Exit::MmioRead {
                    address,
                    width,
                    syndrome: frame.esr,
                },
                Some(PendingLoad {
                    register: register_index,
                    access,
                }),
            )
        };
        match host.handle_exit(exit) {
            action @ (Action::Resume | Action::CompleteRead(_)) => apply(frame, action, host, load),
            other => return other,
        }
    }
    if let Some(base) = access.base
        && access.write_back != WriteBack::None
    {
        let updated = base_register(frame, base).wrapping_add(access.offset as u64);
        set_base_register(frame, base, updated);
    }
    frame.elr = frame.elr.wrapping_add(4);
    Action::Resume
}
