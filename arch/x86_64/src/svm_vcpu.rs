//! The x86_64 AMD SVM backend of the core's vCPU contract ([`hypervisor::vcpu::VcpuBackend`]),
//! beside VMX's ([`crate::vmx_vcpu`]): SVM on this CPU (EFER.SVME, the host save area), one
//! VMCB per vCPU, VMRUN until the guest exits, decoding the #VMEXIT into the core's [`Exit`],
//! finishing it with the core's [`Action`], HLT, and (re)starting a vCPU in 64-bit mode.
//!
//! The guest runs behind its partition's nested page tables ([`crate::paging::Npt`]) with the
//! partition's ASID, an I/O permission map that intercepts every port and an MSR permission
//! map that intercepts every MSR but reads of the TSC ([`svm::build_msrpm`]).
//!
//! Exits handled here without the core, as VMX does: CPUID (SVM, VMX and TSC deadline
//! hidden, x2APIC shown), interrupt windows (V_IRQ with the VINTR intercept), the x2APIC MSRs
//! (the vCPU's [`VirtualX2apic`]; IPIs posted on the partition's APIC bus; any other MSR gets
//! #GP(0) injected). Interrupts are injected through EVENTINJ when the guest can take them.
//!
//! Everything else becomes an `Exit` for the core: physical interrupts (the host's kick, the
//! deadline timer) → `Interrupt`, HLT → `WaitForInterrupt`, IOIO → `PortRead`/`PortWrite`,
//! nested page faults → `MmioRead`/`MmioWrite` (the `mov` at the guest's RIP decoded by the
//! same decoder as VMX's EPT violations), VMMCALL → `Hypercall` (the same registers as
//! VMCALL), shutdown (triple fault), VMRUN refusing the state and any other exit →
//! `GuestFault` naming what happened.
//!
//! QEMU's TCG has no NRIPS: RIP is advanced here (IOIO's EXITINFO2 holds the next RIP; the
//! other intercepted instructions have fixed lengths, [`svm::instruction_length`]).

use alloc::alloc::{Layout, alloc_zeroed};
use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};
use hypervisor::console::ReportLimit;

use hypervisor::addr::GuestPhysAddr;
use hypervisor::exit::{AccessWidth, Action, Exit};
use hypervisor::partition::{Partition, Platform, StartRequest};
use hypervisor::println;
use hypervisor::vcpu::VcpuBackend;
use raw_cpuid::CpuId;

use crate::cpu::{self, read_msr, write_msr};
use crate::decode::{self, MmioInstruction};
use crate::guest_apic::{self, FaultNames, GuestApic, MsrAccess, read_guest};
use crate::svm::{
    self, IoInfo, SvmFeatures, SvmProbe, SvmRefusal, exit, interrupt_control, misc1, misc2, npf,
    vmcb,
};
use crate::vmcs::{GuestRegisters, LongModeStart};
use crate::vmx_exit::merge_input;
use crate::vmx_vcpu::{EXIT_CLASS_MSRS, EXIT_COUNT_MSR, GUEST_TIME_MSR, GuestLayout};

const IA32_EFER: u32 = 0xc000_0080;
const EFER_SVME: u64 = 1 << 12;
const VM_CR: u32 = 0xc001_0114;
const VM_HSAVE_PA: u32 = 0xc001_0117;

/// The general-protection exception's vector.
const GENERAL_PROTECTION: u8 = 13;
/// The invalid-opcode exception's vector.
const INVALID_OPCODE: u8 = 6;
/// VMCALL, Intel's hypercall instruction.
const VMCALL: [u8; 3] = [0x0f, 0x01, 0xc1];

/// Whether this CPU is AMD's (or Hygon's): the image runs SVM there, VMX elsewhere.
pub fn is_svm_vendor() -> bool {
    let Some(vendor) = CpuId::new().get_vendor_info() else {
        return false;
    };
    let mut bytes = [0u8; 12];
    let name = vendor.as_str().as_bytes();
    if name.len() != 12 {
        return false;
    }
    bytes.copy_from_slice(name);
    svm::vendor_has_svm(&bytes)
}

/// Reads what CPUID and VM_CR say about SVM.
pub fn probe() -> SvmProbe {
    let cpuid = CpuId::new();
    let cpuid_svm = cpuid
        .get_extended_processor_and_feature_identifiers()
        .is_some_and(|f| f.has_svm());
    let page_1gb = cpuid
        .get_extended_processor_and_feature_identifiers()
        .is_some_and(|f| f.has_1gib_pages());
    let mut probe = SvmProbe {
        cpuid_svm,
        page_1gb,
        ..SvmProbe::default()
    };
    if !cpuid_svm {
        return probe;
    }
    let leaf = core::arch::x86_64::__cpuid(0x8000_000a);
    probe.features = leaf.edx;
    probe.asids = leaf.ebx;
    // SAFETY: CPUID says SVM exists, so VM_CR does; a read only.
    probe.vm_cr = unsafe { read_msr(VM_CR) };
    probe
}

/// Why SVM is not on for a CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SvmError {
    /// The CPU lacks something Bulkhead requires.
    Refused(SvmRefusal),
    /// No memory for the host save area.
    OutOfMemory,
}

impl core::fmt::Display for SvmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Refused(refusal) => write!(f, "{refusal}"),
            Self::OutOfMemory => f.write_str("no memory for the host save area"),
        }
    }
}

/// Turns SVM on for this CPU: checks the features, sets EFER.SVME and VM_HSAVE_PA.
pub fn enable_this_cpu() -> Result<SvmFeatures, SvmError> {
    let features = probe().check().map_err(SvmError::Refused)?;
    let save_area = zeroed_pages(1).ok_or(SvmError::OutOfMemory)?;
    // SAFETY: SVM exists and firmware left it enabled (checked); setting EFER.SVME only makes
    // the SVM instructions legal; the host save area is a page of our own, never freed.
    unsafe {
        write_msr(IA32_EFER, read_msr(IA32_EFER) | EFER_SVME);
        write_msr(VM_HSAVE_PA, save_area);
    }
    Ok(features)
}

/// `count` zeroed, page-aligned pages of identity-mapped heap (their address is physical),
/// never freed.
fn zeroed_pages(count: usize) -> Option<u64> {
    let layout = Layout::from_size_align(4096 * count, 4096).ok()?;
    // SAFETY: non-zero size; the pages are handed to the CPU for the rest of the run.
    let page = unsafe { alloc_zeroed(layout) };
    (!page.is_null()).then_some(page as u64)
}

/// The IOPM (every port intercepted) and MSRPM every vCPU shares, allocated on first use.
fn permission_maps() -> Option<(u64, u64)> {
    static MAPS: spin::Once<Option<(u64, u64)>> = spin::Once::new();
    *MAPS.call_once(|| {
        let iopm = zeroed_pages(svm::IOPM_SIZE / 4096)?;
        let msrpm = zeroed_pages(svm::MSRPM_SIZE / 4096)?;
        let bits = svm::build_msrpm();
        // SAFETY: both are ours and as large as written; nothing reads them before this returns.
        unsafe {
            core::ptr::write_bytes(iopm as *mut u8, 0xff, svm::IOPM_SIZE);
            core::ptr::copy_nonoverlapping(bits.as_ptr(), msrpm as *mut u8, bits.len());
        }
        Some((iopm, msrpm))
    })
}

global_asm!(
    ".global bulkhead_svm_run",
    "bulkhead_svm_run:",
    // rdi = &mut GuestRegisters, rsi = the VMCB's physical address, rdx = the host's
    // VMSAVE area, rcx = &mut [u64; 2] for the TSC right before and right after the guest's
    // run. VMRUN saves and #VMEXIT restores the host's RSP, RIP and RAX (= the VMCB).
    // Between the two RDTSCs the host runs exactly `RUN_WINDOW_HOST_INSTRUCTIONS`
    // instructions (no branch): keep that constant in step with this code.
    "    push rbp",
    "    push rbx",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    "    push rcx",
    "    push rdi",
    "    push rdx",
    "    push rsi",
    "    clgi",
    "    mov rax, rdx",
    "    vmsave rax",
    "    mov rax, [rsp]",
    "    vmload rax",
    "    rdtsc",
    "    shl rdx, 32",
    "    or rax, rdx",
    "    mov rdx, [rsp + 24]",
    "    mov [rdx], rax",
    "    mov rax, [rsp]",
    "    mov rbx, [rdi + 8]",
    "    mov rcx, [rdi + 16]",
    "    mov rdx, [rdi + 24]",
    "    mov rsi, [rdi + 32]",
    "    mov rbp, [rdi + 48]",
    "    mov r8, [rdi + 56]",
    "    mov r9, [rdi + 64]",
    "    mov r10, [rdi + 72]",
    "    mov r11, [rdi + 80]",
    "    mov r12, [rdi + 88]",
    "    mov r13, [rdi + 96]",
    "    mov r14, [rdi + 104]",
    "    mov r15, [rdi + 112]",
    "    mov rdi, [rdi + 40]",
    // Host RFLAGS.IF = 1 at VMRUN: physical interrupts exit (INTR intercept) while the guest
    // runs; GIF stays 0 from #VMEXIT until the STGI below, after CLI.
    "    sti",
    "    vmrun rax",
    "    vmsave rax",
    "    push rdi",
    "    mov rdi, [rsp + 24]",
    "    mov [rdi + 8], rbx",
    "    mov [rdi + 16], rcx",
    "    mov [rdi + 24], rdx",
    "    mov [rdi + 32], rsi",
    "    mov [rdi + 48], rbp",
    "    mov [rdi + 56], r8",
    "    mov [rdi + 64], r9",
    "    mov [rdi + 72], r10",
    "    mov [rdi + 80], r11",
    "    mov [rdi + 88], r12",
    "    mov [rdi + 96], r13",
    "    mov [rdi + 104], r14",
    "    mov [rdi + 112], r15",
    "    pop rax",
    "    mov [rdi + 40], rax",
    "    rdtsc",
    "    shl rdx, 32",
    "    or rax, rdx",
    "    mov rdx, [rsp + 24]",
    "    mov [rdx + 8], rax",
    "    pop rax",
    "    pop rax",
    "    vmload rax",
    "    pop rdi",
    "    pop rcx",
    "    cli",
    "    stgi",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbx",
    "    pop rbp",
    "    ret",
);

unsafe extern "sysv64" {
    fn bulkhead_svm_run(
        registers: *mut GuestRegisters,
        vmcb: u64,
        host_save: u64,
        stamps: *mut [u64; 2],
    );
}

/// Host instructions `bulkhead_svm_run` executes between its two RDTSCs: after the first,
/// 5 to store the stamp, 1 to reload RAX, 13 + 1 guest-register loads, STI and VMRUN (21);
/// after the #VMEXIT, VMSAVE, PUSH, 1 + 13 register stores, POP, the last store and the
/// second RDTSC (19). Under QEMU's `-icount shift=0` a TSC tick is one instruction of the
/// machine, so the TSC between the stamps less these is exactly what the guest executed
/// (checked against a one-instruction-per-block QEMU trace: see xtask's bench module).
pub const RUN_WINDOW_HOST_INSTRUCTIONS: u64 = 40;

/// What a partition's vCPUs share on the SVM side, kept by the image.
#[derive(Debug)]
pub struct SvmPartition {
    /// N_CR3: its nested page tables.
    pub n_cr3: u64,
    /// Its ASID (never 0, the host's).
    pub asid: u32,
    /// Count of NPT entries removed: a vCPU whose CPU saw fewer flushes its TLB first.
    pub npt_generation: AtomicU64,
    /// #VMEXITs by code ([`svm::exit_slot`]), for the closing report.
    pub exits: [AtomicU64; svm::EXIT_SLOTS],
}

impl SvmPartition {
    /// The state of a partition with nested tables at `n_cr3` and ASID `asid`.
    pub const fn new(n_cr3: u64, asid: u32) -> Self {
        Self {
            n_cr3,
            asid,
            npt_generation: AtomicU64::new(0),
            exits: [const { AtomicU64::new(0) }; svm::EXIT_SLOTS],
        }
    }
}

/// One VMCB (a page of identity-mapped heap, never freed).
#[derive(Debug)]
struct Vmcb {
    page: u64,
}

impl Vmcb {
    fn read(&self, offset: usize) -> u64 {
        // SAFETY: `offset` is a field offset inside the VMCB page (below 4 KiB, 8-aligned or
        // naturally aligned for the field); the CPU writes it only during VMRUN on this CPU.
        unsafe { ((self.page + offset as u64) as *const u64).read_volatile() }
    }

    fn write(&self, offset: usize, value: u64) {
        // SAFETY: as in `read`.
        unsafe { ((self.page + offset as u64) as *mut u64).write_volatile(value) }
    }

    fn write_u32(&self, offset: usize, value: u32) {
        // SAFETY: as in `read`.
        unsafe { ((self.page + offset as u64) as *mut u32).write_volatile(value) }
    }

    fn read_u32(&self, offset: usize) -> u32 {
        // SAFETY: as in `read`.
        unsafe { ((self.page + offset as u64) as *const u32).read_volatile() }
    }

    fn write_u8(&self, offset: usize, value: u8) {
        // SAFETY: as in `read`.
        unsafe { ((self.page + offset as u64) as *mut u8).write_volatile(value) }
    }

    /// A segment: selector, VMCB attributes, limit, base.
    fn segment(&self, offset: usize, selector: u16, attributes: u16, limit: u32, base: u64) {
        let low = u64::from(selector) | (u64::from(attributes) << 16) | (u64::from(limit) << 32);
        self.write(offset, low);
        self.write(offset + 8, base);
    }

    fn clear(&self) {
        // SAFETY: the page is ours and no VMRUN uses it now.
        unsafe { core::ptr::write_bytes(self.page as *mut u8, 0, 4096) };
    }
}

/// What completes the current exit.
#[derive(Clone, Copy, Debug)]
enum Pending {
    /// The instruction is stepped over: RIP moves this many bytes.
    Step(u64),
    /// An `in` of `size` bytes: the value goes into RAX, RIP becomes `next`.
    PortRead { size: u8, next: u64 },
    /// An `out`: RIP becomes `next`.
    PortWrite { next: u64 },
    /// A decoded MMIO `mov`.
    Mmio(MmioInstruction),
    /// Already finished here (RIP set): nothing more.
    Done,
}

/// One vCPU of a partition under SVM, run by this CPU for good.
pub struct SvmVcpu {
    partition: &'static Partition,
    shared: &'static SvmPartition,
    layout: GuestLayout,
    vcpu: usize,
    vmcb: Vmcb,
    /// The host's VMSAVE area (FS, GS, TR, LDTR and the syscall MSRs while the guest runs).
    host_save: u64,
    registers: GuestRegisters,
    /// The vCPU's virtual x2APIC (shared with the VMX backend).
    guest: GuestApic,
    pending: Pending,
    /// Why the last (re)start could not set the VMCB up: reported by the next `run`.
    setup_failed: Option<&'static str>,
    /// The NPT generation this CPU's TLB reflects.
    npt_seen: u64,
    /// #VMEXITs of this vCPU so far (read by the guest through [`EXIT_COUNT_MSR`]).
    exits: u64,
    /// Of those, by [`ExitClass`] (read through [`EXIT_CLASS_MSRS`]).
    exits_by_class: [u64; ExitClass::COUNT],
    /// TSC ticks this vCPU spent in its guest (read through [`GUEST_TIME_MSR`]).
    guest_time: u64,
}

/// The classes of #VMEXIT a guest can count through [`EXIT_CLASS_MSRS`] (MSR
/// `EXIT_CLASS_MSRS.start + class`): the doorbell path's exits, then the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitClass {
    /// Nested page fault (an MMIO access).
    Mmio = 0,
    /// HLT.
    Hlt = 1,
    /// A physical interrupt (a kick, the host timer).
    Interrupt = 2,
    /// RDMSR/WRMSR (the x2APIC: EOI, ICR, timer).
    Msr = 3,
    /// Any other (interrupt window, I/O port, CPUID, hypercall, ...).
    Other = 4,
}

impl ExitClass {
    /// How many classes there are.
    pub const COUNT: usize = 5;

    /// The class of SVM exit code `code`.
    fn of(code: u64) -> Self {
        match code {
            exit::NPF => Self::Mmio,
            exit::HLT => Self::Hlt,
            exit::INTR => Self::Interrupt,
            exit::MSR => Self::Msr,
            _ => Self::Other,
        }
    }
}

impl core::fmt::Debug for SvmVcpu {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SvmVcpu")
            .field("partition", &self.partition.name())
            .field("vcpu", &self.vcpu)
            .finish_non_exhaustive()
    }
}

impl SvmVcpu {
    /// vCPU `vcpu` of `partition` on this CPU (SVM is on here). It starts at its first
    /// [`VcpuBackend::start`].
    pub fn new(
        partition: &'static Partition,
        shared: &'static SvmPartition,
        platform: &'static dyn Platform,
        layout: GuestLayout,
        vcpu: usize,
    ) -> Result<Self, SvmError> {
        let page = zeroed_pages(1).ok_or(SvmError::OutOfMemory)?;
        let host_save = zeroed_pages(1).ok_or(SvmError::OutOfMemory)?;
        Ok(Self {
            partition,
            shared,
            layout,
            vcpu,
            vmcb: Vmcb { page },
            host_save,
            registers: GuestRegisters::default(),
            guest: GuestApic::new(partition, platform, vcpu),
            pending: Pending::Done,
            setup_failed: None,
            npt_seen: 0,
            exits: 0,
            exits_by_class: [0; ExitClass::COUNT],
            guest_time: 0,
        })
    }

    /// (Re)initialises the VMCB for a start in 64-bit mode at `start`.
    fn set_up(&mut self, start: &LongModeStart, rdi: u64) -> Result<(), &'static str> {
        let (iopm, msrpm) = permission_maps().ok_or("no memory for the permission maps")?;
        let v = &self.vmcb;
        v.clear();
        // #UD: a guest written for VMX calls with VMCALL, which AMD's CPUs do not know.
        v.write_u32(vmcb::INTERCEPT_EXCEPTIONS, 1 << INVALID_OPCODE);
        v.write_u32(
            vmcb::INTERCEPT_MISC1,
            misc1::INTR
                | misc1::NMI
                | misc1::INIT
                | misc1::CPUID
                | misc1::INVD
                | misc1::HLT
                | misc1::INVLPGA
                | misc1::IOIO_PROT
                | misc1::MSR_PROT
                | misc1::TASK_SWITCH
                | misc1::SHUTDOWN,
        );
        v.write_u32(
            vmcb::INTERCEPT_MISC2,
            misc2::VMRUN
                | misc2::VMMCALL
                | misc2::VMLOAD
                | misc2::VMSAVE
                | misc2::STGI
                | misc2::CLGI
                | misc2::SKINIT
                | misc2::XSETBV,
        );
        v.write(vmcb::IOPM_BASE, iopm);
        v.write(vmcb::MSRPM_BASE, msrpm);
        v.write(vmcb::TSC_OFFSET, 0);
        v.write_u32(vmcb::ASID, self.shared.asid);
        // The ASID's translations may predate this start: flush them at the first VMRUN.
        v.write_u8(vmcb::TLB_CONTROL, 1);
        v.write(vmcb::INTERRUPT_CONTROL, interrupt_control::V_INTR_MASKING);
        v.write(vmcb::NESTED_CONTROL, 1);
        v.write(vmcb::NESTED_CR3, self.shared.n_cr3);
        // Guest state: 64-bit mode, paging on, flat segments, interrupts off.
        const CR0_PE: u64 = 1 << 0;
        const CR0_ET: u64 = 1 << 4;
        const CR0_NE: u64 = 1 << 5;
        const CR0_WP: u64 = 1 << 16;
        const CR0_PG: u64 = 1 << 31;
        const CR4_PAE: u64 = 1 << 5;
        const EFER_LME: u64 = 1 << 8;
        const EFER_LMA: u64 = 1 << 10;
        v.write(vmcb::CR0, CR0_PE | CR0_ET | CR0_NE | CR0_WP | CR0_PG);
        v.write(vmcb::CR4, CR4_PAE);
        v.write(vmcb::CR3, start.cr3);
        v.write(vmcb::EFER, EFER_LME | EFER_LMA | EFER_SVME);
        let (code, data) = start.selectors;
        const CODE_64: u16 = svm::segment_attributes(0xa09b);
        const DATA: u16 = svm::segment_attributes(0xc093);
        const TSS_BUSY_64: u16 = 0x8b;
        v.segment(vmcb::CS, code, CODE_64, 0xffff_ffff, 0);
        for segment in [vmcb::ES, vmcb::SS, vmcb::DS, vmcb::FS, vmcb::GS] {
            v.segment(segment, data, DATA, 0xffff_ffff, 0);
        }
        v.segment(vmcb::LDTR, 0, 0, 0, 0);
        v.segment(vmcb::TR, 0, TSS_BUSY_64, 0x67, 0);
        v.segment(vmcb::GDTR, 0, 0, u32::from(start.gdt.1), start.gdt.0);
        v.segment(vmcb::IDTR, 0, 0, 0, 0);
        v.write_u8(vmcb::CPL, 0);
        v.write(vmcb::DR7, 0x400);
        v.write(vmcb::DR6, 0xffff_0ff0);
        v.write(vmcb::RFLAGS, 0x2);
        v.write(vmcb::RIP, start.rip);
        v.write(vmcb::RSP, start.rsp);
        v.write(vmcb::RAX, 0);
        v.write(vmcb::GUEST_PAT, 0x0007_0406_0007_0406);
        self.registers = GuestRegisters {
            rdi,
            ..GuestRegisters::default()
        };
        Ok(())
    }

    /// Whether the guest can take an external interrupt now: RFLAGS.IF set, no interrupt
    /// shadow.
    fn interrupts_open(&self) -> bool {
        self.vmcb.read(vmcb::RFLAGS) & (1 << 9) != 0
            && self.vmcb.read(vmcb::INTERRUPT_SHADOW) & 1 == 0
    }

    /// Turns the interrupt window on (V_IRQ pending, the VINTR intercept: an exit as soon as
    /// the guest can take an interrupt) or off.
    fn set_interrupt_window(&self, on: bool) {
        let control = self.vmcb.read(vmcb::INTERRUPT_CONTROL);
        let intercepts = self.vmcb.read_u32(vmcb::INTERCEPT_MISC1);
        let window = interrupt_control::V_IRQ | interrupt_control::V_IGNORE_TPR;
        if on {
            self.vmcb.write(vmcb::INTERRUPT_CONTROL, control | window);
            self.vmcb
                .write_u32(vmcb::INTERCEPT_MISC1, intercepts | misc1::VINTR);
        } else if control & interrupt_control::V_IRQ != 0 || intercepts & misc1::VINTR != 0 {
            self.vmcb.write(vmcb::INTERRUPT_CONTROL, control & !window);
            self.vmcb
                .write_u32(vmcb::INTERCEPT_MISC1, intercepts & !misc1::VINTR);
        }
    }

    /// Before VMRUN: injects the highest deliverable interrupt if the guest can take it, else
    /// asks for an exit when it can.
    fn prepare_entry(&mut self) {
        self.guest.collect();
        self.guest.arm_timer();
        let injection_pending = self.vmcb.read(vmcb::EVENT_INJECTION) & (1 << 31) != 0;
        match self.guest.apic.deliverable() {
            Some(vector) if self.interrupts_open() && !injection_pending => {
                self.guest.apic.acknowledge(vector);
                self.vmcb
                    .write(vmcb::EVENT_INJECTION, svm::inject_interrupt(vector));
                self.set_interrupt_window(false);
            }
            Some(_) => self.set_interrupt_window(true),
            None => self.set_interrupt_window(false),
        }
    }

    /// Moves the guest's RIP `length` bytes on, ending an interrupt shadow as executing the
    /// instruction would have.
    fn advance(&self, length: u64) {
        self.set_rip(self.vmcb.read(vmcb::RIP).wrapping_add(length));
    }

    fn set_rip(&self, rip: u64) {
        self.vmcb.write(vmcb::RIP, rip);
        self.vmcb.write(vmcb::INTERRUPT_SHADOW, 0);
    }

    /// RDMSR/WRMSR: the virtual x2APIC's MSRs and the exit counter; any other MSR, or a value
    /// the x2APIC refuses, gets #GP(0) injected.
    fn msr(&mut self, write: bool) {
        let msr = self.registers.rcx as u32;
        // The counters, as of before this RDMSR's exit.
        let counter = match msr {
            _ if write => None,
            EXIT_COUNT_MSR => Some(self.exits.saturating_sub(1)),
            GUEST_TIME_MSR => Some(self.guest_time),
            _ if EXIT_CLASS_MSRS.contains(&msr) => {
                let class = (msr - EXIT_CLASS_MSRS.start) as usize;
                let count = self.exits_by_class.get(class).copied().unwrap_or(0);
                Some(if class == ExitClass::Msr as usize {
                    count.saturating_sub(1)
                } else {
                    count
                })
            }
            _ => None,
        };
        if let Some(value) = counter {
            self.registers.rax = value & 0xffff_ffff;
            self.registers.rdx = value >> 32;
            self.advance(2);
            return;
        }
        let value = (self.registers.rdx << 32) | (self.registers.rax & 0xffff_ffff);
        match self.guest.msr(msr, write.then_some(value)) {
            MsrAccess::Read(value) => {
                self.registers.rax = value & 0xffff_ffff;
                self.registers.rdx = value >> 32;
                self.advance(2);
                return;
            }
            MsrAccess::Written => {
                self.advance(2);
                return;
            }
            MsrAccess::Refused => {}
        }
        let what = if write { "WRMSR" } else { "RDMSR" };
        if let Some(n) = self.guest.msr_reports.note() {
            println!(
                "bulkhead: partition {} vcpu {}: {what} of MSR {msr:#x} at {:#x} not emulated: #GP injected{}",
                self.partition.name(),
                self.vcpu,
                self.vmcb.read(vmcb::RIP),
                ReportLimit::suffix(n)
            );
        }
        self.vmcb.write(
            vmcb::EVENT_INJECTION,
            svm::inject_exception(GENERAL_PROTECTION, Some(0)),
        );
    }

    /// Turns the current #VMEXIT into the core's [`Exit`], or handles it here (`None`:
    /// resume).
    fn decode(&mut self) -> Option<Exit> {
        let v = &self.vmcb;
        let code = v.read(vmcb::EXIT_CODE);
        self.exits = self.exits.wrapping_add(1);
        if let Some(count) = self.exits_by_class.get_mut(ExitClass::of(code) as usize) {
            *count = count.wrapping_add(1);
        }
        if let Some(count) = svm::exit_slot(code).and_then(|slot| self.shared.exits.get(slot)) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        // An event whose delivery the exit interrupted is delivered again at the next VMRUN.
        let interrupted = v.read(vmcb::EXIT_INTERRUPT_INFO);
        v.write(
            vmcb::EVENT_INJECTION,
            if interrupted & (1 << 31) != 0 {
                interrupted
            } else {
                0
            },
        );
        let info1 = v.read(vmcb::EXIT_INFO1);
        let info2 = v.read(vmcb::EXIT_INFO2);
        let rip = v.read(vmcb::RIP);
        let fault = |syndrome: u64, address: u64| {
            Some(Exit::GuestFault {
                reason: Some(svm::exit_name(code)),
                syndrome,
                address: Some(GuestPhysAddr::new(address)),
            })
        };
        self.pending = Pending::Done;
        match code {
            exit::INTR => {
                // A kick (or the deadline timer): let the host's handler take it.
                cpu::take_pending_interrupt();
                Some(Exit::Interrupt)
            }
            exit::VINTR => {
                self.set_interrupt_window(false);
                None
            }
            exit::CPUID => {
                let registers = &mut self.registers;
                let leaf = registers.rax as u32;
                let host = core::arch::x86_64::__cpuid_count(leaf, registers.rcx as u32);
                let [a, b, c, d] = svm::filter_cpuid(
                    leaf,
                    self.vcpu as u32,
                    [host.eax, host.ebx, host.ecx, host.edx],
                );
                registers.rax = u64::from(a);
                registers.rbx = u64::from(b);
                registers.rcx = u64::from(c);
                registers.rdx = u64::from(d);
                self.advance(2);
                None
            }
            exit::IOIO => {
                let io = IoInfo::decode(info1);
                let Ok(width) = AccessWidth::try_from(u64::from(io.size)) else {
                    return fault(info1, rip);
                };
                if io.string {
                    // INS/OUTS would need the guest's memory and segment state: not emulated.
                    return fault(info1, rip);
                }
                Some(if io.input {
                    self.pending = Pending::PortRead {
                        size: io.size,
                        next: info2,
                    };
                    Exit::PortRead {
                        port: io.port,
                        width,
                    }
                } else {
                    self.pending = Pending::PortWrite { next: info2 };
                    Exit::PortWrite {
                        port: io.port,
                        width,
                        value: self.registers.rax & width.mask(),
                    }
                })
            }
            code if code == exit::EXCEPTION_BASE + u64::from(INVALID_OPCODE) => {
                if !self.at_vmcall(rip) {
                    // Not ours: the guest takes its #UD.
                    self.vmcb.write(
                        vmcb::EVENT_INJECTION,
                        svm::inject_exception(INVALID_OPCODE, None),
                    );
                    return None;
                }
                self.hypercall()
            }
            exit::VMMCALL => self.hypercall(),
            exit::HLT => {
                self.pending = Pending::Step(1);
                Some(Exit::WaitForInterrupt)
            }
            exit::NPF => Some(self.mmio(info1, info2)),
            exit::MSR => {
                self.msr(info1 & 1 != 0);
                None
            }
            exit::SHUTDOWN => fault(0, rip),
            _ => fault(info1, rip),
        }
    }

    /// VMMCALL (or VMCALL): a hypercall with RAX = the function, RDI/RSI/RDX/RCX the
    /// arguments, as on VMX; both instructions are 3 bytes long.
    fn hypercall(&mut self) -> Option<Exit> {
        self.pending = Pending::Step(3);
        Some(Exit::Hypercall {
            function: self.registers.rax,
            arguments: [
                self.registers.rdi,
                self.registers.rsi,
                self.registers.rdx,
                self.registers.rcx,
            ],
        })
    }

    /// Whether the instruction at the guest's `rip` is VMCALL.
    fn at_vmcall(&self, rip: u64) -> bool {
        let config = self.partition.config;
        let cr3 = self.vmcb.read(vmcb::CR3);
        decode::fetch(cr3, rip, |at, buffer| read_guest(config, at, buffer))
            .is_ok_and(|bytes| bytes.as_slice().starts_with(&VMCALL))
    }

    /// A nested page fault at guest-physical `address`: the `mov` at the guest's RIP decoded
    /// into an MMIO access, as VMX's EPT violations are.
    fn mmio(&mut self, info: u64, address: u64) -> Exit {
        const NAMES: FaultNames = FaultNames {
            fetch: "nested page fault (instruction fetch)",
            unreadable: "nested page fault (instruction not readable)",
            not_a_mov: "nested page fault (not an emulated mov)",
            width: "nested page fault (access width)",
            changed: "nested page fault (instruction changed)",
        };
        let guest = (
            self.vmcb.read(vmcb::RIP),
            self.vmcb.read(vmcb::RSP),
            self.vmcb.read(vmcb::CR3),
        );
        let access = (address, info & npf::WRITE != 0, info & npf::FETCH != 0);
        match guest_apic::mmio_exit(
            self.partition.config,
            &mut self.registers,
            guest,
            access,
            info,
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
        let mut rsp = self.vmcb.read(vmcb::RSP);
        guest_apic::complete_load(&mut self.registers, &mut rsp, &instruction, value);
        self.vmcb.write(vmcb::RSP, rsp);
        self.advance(u64::from(instruction.length));
    }
}

impl VcpuBackend for SvmVcpu {
    fn run(&mut self) -> Exit {
        if let Some(error) = self.setup_failed.take() {
            println!(
                "bulkhead: partition {}: VMCB: {error}",
                self.partition.name()
            );
            return Exit::GuestFault {
                reason: Some("VMCB setup failed"),
                syndrome: 0,
                address: None,
            };
        }
        loop {
            self.prepare_entry();
            let now = self.shared.npt_generation.load(Ordering::Acquire);
            if now != self.npt_seen {
                self.npt_seen = now;
                self.vmcb.write_u8(vmcb::TLB_CONTROL, 1);
            }
            self.vmcb.write(vmcb::RAX, self.registers.rax);
            let mut stamps = [0u64; 2];
            // SAFETY: the VMCB is set up for this vCPU (`set_up`) with the VMRUN intercept, a
            // non-zero ASID and nested paging over the partition's RAM only, so the guest
            // reaches none of the hypervisor's memory; SVM is on here (EFER.SVME, host save
            // area); the stub saves and restores the host's callee-saved registers and its
            // FS/GS/TR/LDTR state (VMSAVE/VMLOAD) and writes only `stamps`, a local. FP/SIMD
            // state is not switched: neither the hypervisor nor Bulkhead's x86 guests use it.
            unsafe {
                bulkhead_svm_run(
                    &mut self.registers,
                    self.vmcb.page,
                    self.host_save,
                    &mut stamps,
                );
            };
            let [entered, left] = stamps;
            self.guest_time = self.guest_time.wrapping_add(
                left.wrapping_sub(entered)
                    .saturating_sub(RUN_WINDOW_HOST_INSTRUCTIONS),
            );
            self.registers.rax = self.vmcb.read(vmcb::RAX);
            self.vmcb.write_u8(vmcb::TLB_CONTROL, 0);
            if let Some(exit) = self.decode() {
                if let Some(action) =
                    crate::fast_lane::answer(self.partition, self.vcpu, self.guest.platform, &exit)
                {
                    self.complete(action);
                    continue;
                }
                if self.vmcb.read(vmcb::EXIT_CODE) == exit::INVALID {
                    println!(
                        "bulkhead: partition {}: VMRUN refused the guest state",
                        self.partition.name()
                    );
                }
                return exit;
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
            (_, Pending::Mmio(instruction)) => self.advance(u64::from(instruction.length)),
            (Action::CompleteRead(value), Pending::PortRead { size, next }) => {
                self.registers.rax = merge_input(self.registers.rax, size, value);
                self.set_rip(next);
            }
            (Action::ReturnValues(values), Pending::Step(length)) => {
                self.registers.rax = values[0];
                self.advance(length);
            }
            (_, Pending::PortRead { next, .. } | Pending::PortWrite { next }) => {
                self.set_rip(next);
            }
            (_, Pending::Step(length)) => self.advance(length),
        }
    }

    /// HLT: the physical CPU halts until an interrupt is deliverable or the vCPU must leave,
    /// woken by a kick or by the host APIC's timer armed at the virtual timer's deadline
    /// ([`crate::apic::HostTimer`]: TSC-deadline mode, else the one-shot count-down, as on
    /// QEMU's TCG CPUs).
    fn idle(&mut self) {
        self.guest.idle(|guest| guest.apic.deliverable().is_some());
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
        cpu::wait_for_interrupt();
    }

    fn halt(&mut self) -> ! {
        cpu::halt()
    }
}
