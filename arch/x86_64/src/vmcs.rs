//! One vCPU's VMCS: allocation, VMCLEAR/VMPTRLD, the control, host-state and guest-state
//! fields Bulkhead uses, and VM entry. The entry/exit stub (`bulkhead_vmx_run` /
//! `bulkhead_vmx_exit`) loads the guest's general-purpose registers from a
//! [`GuestRegisters`], enters with VMLAUNCH or VMRESUME, and on a VM exit (HOST_RIP =
//! `bulkhead_vmx_exit`, HOST_RSP = the stub's own frame) saves them back and returns to the
//! Rust caller, which decodes the exit.

use alloc::alloc::{Layout, alloc_zeroed};
use core::arch::{asm, global_asm};

use x86_64::instructions::tables::{sgdt, sidt};
use x86_64::registers::control::{Cr0, Cr3, Cr4};
use x86_64::registers::model_specific::{FsBase, GsBase};

use crate::cpu::{read_msr, write_msr};
use crate::msr_bitmap;
use crate::vmx_exit::{ControlMismatch, adjust_controls};
use crate::vmx_features::apply_fixed_bits;

/// VMCS field encodings (Intel SDM vol. 3, appendix B).
#[allow(missing_docs)]
pub mod field {
    pub const VPID: u32 = 0x0000;
    pub const GUEST_ES_SELECTOR: u32 = 0x0800;
    pub const GUEST_TR_SELECTOR: u32 = 0x080e;
    pub const GUEST_INTERRUPT_STATUS: u32 = 0x0810;
    pub const HOST_ES_SELECTOR: u32 = 0x0c00;
    pub const HOST_CS_SELECTOR: u32 = 0x0c02;
    pub const HOST_SS_SELECTOR: u32 = 0x0c04;
    pub const HOST_DS_SELECTOR: u32 = 0x0c06;
    pub const HOST_FS_SELECTOR: u32 = 0x0c08;
    pub const HOST_GS_SELECTOR: u32 = 0x0c0a;
    pub const HOST_TR_SELECTOR: u32 = 0x0c0c;
    pub const MSR_BITMAP: u32 = 0x2004;
    pub const VIRTUAL_APIC_PAGE: u32 = 0x2012;
    pub const EOI_EXIT_BITMAP_0: u32 = 0x201c;
    pub const EPT_POINTER: u32 = 0x201a;
    pub const GUEST_PHYSICAL_ADDRESS: u32 = 0x2400;
    pub const VMCS_LINK_POINTER: u32 = 0x2800;
    pub const GUEST_IA32_DEBUGCTL: u32 = 0x2802;
    pub const GUEST_IA32_EFER: u32 = 0x2806;
    pub const HOST_IA32_EFER: u32 = 0x2c02;
    pub const PIN_BASED_CONTROLS: u32 = 0x4000;
    pub const PRIMARY_CONTROLS: u32 = 0x4002;
    pub const EXCEPTION_BITMAP: u32 = 0x4004;
    pub const CR3_TARGET_COUNT: u32 = 0x400a;
    pub const EXIT_CONTROLS: u32 = 0x400c;
    pub const EXIT_MSR_STORE_COUNT: u32 = 0x400e;
    pub const EXIT_MSR_LOAD_COUNT: u32 = 0x4010;
    pub const ENTRY_CONTROLS: u32 = 0x4012;
    pub const ENTRY_MSR_LOAD_COUNT: u32 = 0x4014;
    pub const ENTRY_INTERRUPTION_INFO: u32 = 0x4016;
    pub const ENTRY_EXCEPTION_ERROR_CODE: u32 = 0x4018;
    pub const TPR_THRESHOLD: u32 = 0x401c;
    pub const SECONDARY_CONTROLS: u32 = 0x401e;
    pub const VM_INSTRUCTION_ERROR: u32 = 0x4400;
    pub const EXIT_REASON: u32 = 0x4402;
    pub const EXIT_INSTRUCTION_LENGTH: u32 = 0x440c;
    pub const GUEST_ES_LIMIT: u32 = 0x4800;
    pub const GUEST_GDTR_LIMIT: u32 = 0x4810;
    pub const GUEST_IDTR_LIMIT: u32 = 0x4812;
    pub const GUEST_ES_ACCESS_RIGHTS: u32 = 0x4814;
    pub const GUEST_INTERRUPTIBILITY: u32 = 0x4824;
    pub const GUEST_ACTIVITY_STATE: u32 = 0x4826;
    pub const GUEST_SYSENTER_CS: u32 = 0x482a;
    pub const HOST_SYSENTER_CS: u32 = 0x4c00;
    pub const CR0_GUEST_HOST_MASK: u32 = 0x6000;
    pub const CR4_GUEST_HOST_MASK: u32 = 0x6002;
    pub const CR0_READ_SHADOW: u32 = 0x6004;
    pub const CR4_READ_SHADOW: u32 = 0x6006;
    pub const EXIT_QUALIFICATION: u32 = 0x6400;
    pub const GUEST_CR0: u32 = 0x6800;
    pub const GUEST_CR3: u32 = 0x6802;
    pub const GUEST_CR4: u32 = 0x6804;
    pub const GUEST_ES_BASE: u32 = 0x6806;
    pub const GUEST_GDTR_BASE: u32 = 0x6816;
    pub const GUEST_IDTR_BASE: u32 = 0x6818;
    pub const GUEST_DR7: u32 = 0x681a;
    pub const GUEST_RSP: u32 = 0x681c;
    pub const GUEST_RIP: u32 = 0x681e;
    pub const GUEST_RFLAGS: u32 = 0x6820;
    pub const GUEST_PENDING_DEBUG: u32 = 0x6822;
    pub const GUEST_SYSENTER_ESP: u32 = 0x6824;
    pub const GUEST_SYSENTER_EIP: u32 = 0x6826;
    pub const HOST_CR0: u32 = 0x6c00;
    pub const HOST_CR3: u32 = 0x6c02;
    pub const HOST_CR4: u32 = 0x6c04;
    pub const HOST_FS_BASE: u32 = 0x6c06;
    pub const HOST_GS_BASE: u32 = 0x6c08;
    pub const HOST_TR_BASE: u32 = 0x6c0a;
    pub const HOST_GDTR_BASE: u32 = 0x6c0c;
    pub const HOST_IDTR_BASE: u32 = 0x6c0e;
    pub const HOST_SYSENTER_ESP: u32 = 0x6c10;
    pub const HOST_SYSENTER_EIP: u32 = 0x6c12;
    pub const HOST_RIP: u32 = 0x6c16;
}

const IA32_VMX_BASIC: u32 = 0x480;
const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48b;
const IA32_VMX_CR0_FIXED0: u32 = 0x486;
const IA32_VMX_CR0_FIXED1: u32 = 0x487;
const IA32_VMX_CR4_FIXED0: u32 = 0x488;
const IA32_VMX_CR4_FIXED1: u32 = 0x489;
const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48d;
const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48e;
const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48f;
const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
const IA32_EFER: u32 = 0xc000_0080;

/// Primary controls: HLT exiting, unconditional I/O exiting (every port traps), secondary
/// controls. [`USE_MSR_BITMAPS`] joins them where the CPU offers it.
const PRIMARY: u32 = (1 << 7) | (1 << 24) | (1 << 31);
/// Primary control: use MSR bitmaps (without it every RDMSR/WRMSR exits).
const USE_MSR_BITMAPS: u32 = 1 << 28;
/// Pin-based controls: external-interrupt exiting (a host interrupt never reaches the guest's
/// IDT; the guest gets only what its virtual x2APIC injects).
const PIN_BASED: u32 = 1 << 0;
/// Primary control: interrupt-window exiting.
const INTERRUPT_WINDOW_EXITING: u64 = 1 << 2;
/// Secondary controls: EPT, VPID.
const SECONDARY: u32 = (1 << 1) | (1 << 5);
/// Primary control: use TPR shadow (a virtual-APIC page).
const USE_TPR_SHADOW: u32 = 1 << 21;
/// Secondary controls of virtual-interrupt delivery: virtualize x2APIC mode, APIC-register
/// virtualization, virtual-interrupt delivery.
const VIRTUAL_INTERRUPT_DELIVERY: u32 = (1 << 4) | (1 << 8) | (1 << 9);
/// Exit controls: 64-bit host, save and load IA32_EFER.
const EXIT: u32 = (1 << 9) | (1 << 20) | (1 << 21);
/// Entry controls: IA-32e mode guest, load IA32_EFER.
const ENTRY: u32 = (1 << 9) | (1 << 15);

const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_VMXE: u64 = 1 << 13;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// The guest's general-purpose registers while it is not running (RSP and RIP live in the
/// VMCS). The entry/exit stub depends on this layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct GuestRegisters {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

impl GuestRegisters {
    /// The register with x86 number `number` (0 RAX, 1 RCX, 2 RDX, 3 RBX, 5 RBP, 6 RSI,
    /// 7 RDI, 8-15 R8-R15); `None` for 4 (RSP, in the VMCS) and numbers above 15.
    pub fn by_number(&mut self, number: u8) -> Option<&mut u64> {
        Some(match number {
            0 => &mut self.rax,
            1 => &mut self.rcx,
            2 => &mut self.rdx,
            3 => &mut self.rbx,
            5 => &mut self.rbp,
            6 => &mut self.rsi,
            7 => &mut self.rdi,
            8 => &mut self.r8,
            9 => &mut self.r9,
            10 => &mut self.r10,
            11 => &mut self.r11,
            12 => &mut self.r12,
            13 => &mut self.r13,
            14 => &mut self.r14,
            15 => &mut self.r15,
            _ => return None,
        })
    }
}

global_asm!(
    ".global bulkhead_vmx_run",
    "bulkhead_vmx_run:",
    // rdi = &mut GuestRegisters, rsi = 1 if launched. Save the host's callee-saved registers
    // and the register block's address; that frame's top becomes HOST_RSP.
    "    push rbp",
    "    push rbx",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    "    push rdi",
    "    mov rax, 0x6c14",
    "    vmwrite rax, rsp",
    "    jbe 3f",
    "    test rsi, rsi",
    "    mov rax, [rdi + 0]",
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
    "    jnz 2f",
    "    vmlaunch",
    "    jmp 3f",
    "2:  vmresume",
    // VMLAUNCH/VMRESUME fell through: the entry failed (VM-instruction error in the VMCS).
    "3:  pop rdi",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbx",
    "    pop rbp",
    "    mov eax, 1",
    "    ret",
    ".global bulkhead_vmx_exit",
    "bulkhead_vmx_exit:",
    // A VM exit: RSP = HOST_RSP, [rsp] = the register block.
    "    push rdi",
    "    mov rdi, [rsp + 8]",
    "    mov [rdi + 0], rax",
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
    "    pop rdi",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbx",
    "    pop rbp",
    "    xor eax, eax",
    "    ret",
);

unsafe extern "sysv64" {
    fn bulkhead_vmx_run(registers: *mut GuestRegisters, launched: u64) -> u64;
    fn bulkhead_vmx_exit();
}

/// Reads a field of the current VMCS (0 if there is none or the field does not exist).
pub fn read(field: u32) -> u64 {
    let value: u64;
    // SAFETY: VMREAD only reads the current VMCS; a failure (no current VMCS, bad field) sets
    // flags and leaves the destination, which starts at 0, unchanged.
    unsafe {
        asm!(
            "xor {value:e}, {value:e}",
            "vmread {value}, {field}",
            field = in(reg) u64::from(field),
            value = out(reg) value,
            options(nostack)
        );
    }
    value
}

/// Writes a field of the current VMCS; false if VMWRITE failed.
pub fn write(field: u32, value: u64) -> bool {
    let failed: u8;
    // SAFETY: VMWRITE changes only the current VMCS, which the caller loaded; the guest and
    // host state it describes takes effect only at the next VM entry, which checks it.
    unsafe {
        asm!(
            "vmwrite {field}, {value}",
            "setna {failed}",
            field = in(reg) u64::from(field),
            value = in(reg) value,
            failed = out(reg_byte) failed,
            options(nostack)
        );
    }
    failed == 0
}

/// Why a VMCS could not be set up or entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmcsError {
    /// No memory for the VMCS region.
    OutOfMemory,
    /// VMCLEAR or VMPTRLD failed.
    LoadFailed,
    /// A control the CPU cannot provide (which control word, the unsupported bits).
    Control(&'static str, ControlMismatch),
    /// A VMWRITE failed (the field).
    Write(u32),
    /// VMLAUNCH/VMRESUME failed with this VM-instruction error.
    Entry(u64),
}

impl core::fmt::Display for VmcsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VmcsError::OutOfMemory => write!(f, "no memory for the VMCS"),
            VmcsError::LoadFailed => write!(f, "VMCLEAR/VMPTRLD failed"),
            VmcsError::Control(which, mismatch) => write!(
                f,
                "{which} controls {:#x} not supported",
                mismatch.unsupported
            ),
            VmcsError::Write(field) => write!(f, "VMWRITE of field {field:#x} failed"),
            VmcsError::Entry(error) => write!(f, "VM entry failed (VM-instruction error {error})"),
        }
    }
}

fn put(field: u32, value: u64) -> Result<(), VmcsError> {
    if write(field, value) {
        Ok(())
    } else {
        Err(VmcsError::Write(field))
    }
}

/// Where and how a vCPU enters its guest in 64-bit mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LongModeStart {
    /// RIP.
    pub rip: u64,
    /// RSP.
    pub rsp: u64,
    /// CR3: guest-physical address of the PML4.
    pub cr3: u64,
    /// Guest-physical base and limit of the GDT.
    pub gdt: (u64, u16),
    /// Selectors of the GDT's 64-bit code and data segments.
    pub selectors: (u16, u16),
}

/// One vCPU's VMCS (a 4 KiB region in identity-mapped heap, never freed).
#[derive(Debug)]
pub struct Vmcs {
    region: u64,
    launched: bool,
}

impl Vmcs {
    /// Allocates a VMCS with this CPU's revision identifier.
    pub fn new() -> Result<Vmcs, VmcsError> {
        let layout = Layout::from_size_align(4096, 4096).map_err(|_| VmcsError::OutOfMemory)?;
        // SAFETY: non-zero size; the region belongs to the CPU while the VMCS is in use, so
        // it is never freed.
        let region = unsafe { alloc_zeroed(layout) };
        if region.is_null() {
            return Err(VmcsError::OutOfMemory);
        }
        // SAFETY: VMX is on (the caller runs after VMXON), so IA32_VMX_BASIC exists.
        let revision = unsafe { read_msr(IA32_VMX_BASIC) } as u32 & 0x7fff_ffff;
        // SAFETY: the region is ours, 4 KiB and aligned; word 0 is the revision identifier.
        unsafe { region.cast::<u32>().write_volatile(revision) };
        Ok(Vmcs {
            region: region as u64,
            launched: false,
        })
    }

    /// VMCLEAR, then VMPTRLD: the VMCS becomes current (and must be launched again).
    pub fn clear_and_load(&mut self) -> Result<(), VmcsError> {
        let failed: u8;
        // SAFETY: the operand is the physical address of this VMCS region (identity-mapped
        // heap) with the right revision; VMCLEAR/VMPTRLD touch only VMX state.
        unsafe {
            asm!(
                "vmclear qword ptr [{region}]",
                "setna {failed}",
                "vmptrld qword ptr [{region}]",
                "setna {failed2}",
                "or {failed}, {failed2}",
                region = in(reg) &self.region,
                failed = out(reg_byte) failed,
                failed2 = out(reg_byte) _,
                options(nostack)
            );
        }
        self.launched = false;
        if failed == 0 {
            Ok(())
        } else {
            Err(VmcsError::LoadFailed)
        }
    }

    /// Writes the execution, exit and entry controls: EPT at `ept_pointer`, VPID `vpid`, and
    /// the MSR bitmap ([`msr_bitmap`]) where the CPU offers MSR bitmaps; then zeroes the MSRs
    /// the bitmap passes through that the VMCS does not switch, so that the guest about to
    /// (re)start finds them as after a reset.
    ///
    /// With `virtual_apic` (the physical address of the vCPU's virtual-APIC page) and a CPU
    /// that offers MSR bitmaps, TPR shadow, virtualize x2APIC mode, APIC-register
    /// virtualization and virtual-interrupt delivery, turns all of them on with that page,
    /// guest-interrupt status 0, an empty EOI-exit bitmap and the MSR bitmap that lets the
    /// page serve x2APIC reads, TPR, EOI and self IPIs ([`msr_bitmap::build_for`]). Returns
    /// whether it did; otherwise interrupts are injected at VM entry as before.
    pub fn set_controls(
        &self,
        ept_pointer: u64,
        vpid: u16,
        virtual_apic: Option<u64>,
    ) -> Result<bool, VmcsError> {
        // SAFETY: the TRUE_PROCBASED and PROCBASED_CTLS2 MSRs exist (VMX on was checked for
        // them).
        let (allowed_primary, allowed_secondary) = unsafe {
            (
                read_msr(IA32_VMX_TRUE_PROCBASED_CTLS) >> 32,
                read_msr(IA32_VMX_PROCBASED_CTLS2) >> 32,
            )
        };
        let wanted_primary = u64::from(USE_MSR_BITMAPS | USE_TPR_SHADOW);
        let virtual_apic = virtual_apic.filter(|_| {
            allowed_primary & wanted_primary == wanted_primary
                && allowed_secondary & u64::from(VIRTUAL_INTERRUPT_DELIVERY)
                    == u64::from(VIRTUAL_INTERRUPT_DELIVERY)
        });
        let bitmap = if allowed_primary & u64::from(USE_MSR_BITMAPS) != 0 {
            msr_bitmap_page(virtual_apic.is_some())
        } else {
            None
        };
        // Without its MSR bitmap the page would serve nothing: no virtual-interrupt delivery.
        let virtual_apic = virtual_apic.filter(|_| bitmap.is_some());
        let mut primary = PRIMARY | if bitmap.is_some() { USE_MSR_BITMAPS } else { 0 };
        let mut secondary = SECONDARY;
        if virtual_apic.is_some() {
            primary |= USE_TPR_SHADOW;
            secondary |= VIRTUAL_INTERRUPT_DELIVERY;
        }
        let control = |which, wanted, msr| {
            // SAFETY: the TRUE_* and PROCBASED_CTLS2 MSRs exist (VMX on was checked for them).
            let allowed = unsafe { read_msr(msr) };
            adjust_controls(wanted, allowed)
                .map(u64::from)
                .map_err(|m| VmcsError::Control(which, m))
        };
        put(
            field::PIN_BASED_CONTROLS,
            control("pin-based", PIN_BASED, IA32_VMX_TRUE_PINBASED_CTLS)?,
        )?;
        put(
            field::PRIMARY_CONTROLS,
            control("primary", primary, IA32_VMX_TRUE_PROCBASED_CTLS)?,
        )?;
        put(
            field::SECONDARY_CONTROLS,
            control("secondary", secondary, IA32_VMX_PROCBASED_CTLS2)?,
        )?;
        put(
            field::EXIT_CONTROLS,
            control("exit", EXIT, IA32_VMX_TRUE_EXIT_CTLS)?,
        )?;
        put(
            field::ENTRY_CONTROLS,
            control("entry", ENTRY, IA32_VMX_TRUE_ENTRY_CTLS)?,
        )?;
        put(field::EXCEPTION_BITMAP, 0)?;
        put(field::CR3_TARGET_COUNT, 0)?;
        put(field::EXIT_MSR_STORE_COUNT, 0)?;
        put(field::EXIT_MSR_LOAD_COUNT, 0)?;
        put(field::ENTRY_MSR_LOAD_COUNT, 0)?;
        put(field::ENTRY_INTERRUPTION_INFO, 0)?;
        put(field::EPT_POINTER, ept_pointer)?;
        put(field::VPID, u64::from(vpid))?;
        put(field::VMCS_LINK_POINTER, u64::MAX)?;
        // The guest owns CR0; CR4.VMXE (required by VMX) is hidden behind the read shadow.
        put(field::CR0_GUEST_HOST_MASK, 0)?;
        put(field::CR4_GUEST_HOST_MASK, CR4_VMXE)?;
        if let Some(page) = bitmap {
            put(field::MSR_BITMAP, page)?;
            for msr in msr_bitmap::PASSED_THROUGH_RESET {
                // SAFETY: STAR, LSTAR, CSTAR, FMASK and KERNEL_GS_BASE exist on every 64-bit
                // CPU and accept 0; the hypervisor uses none of them (no SYSCALL, no SWAPGS).
                unsafe { write_msr(msr, 0) };
            }
        }
        if let Some(page) = virtual_apic {
            put(field::VIRTUAL_APIC_PAGE, page)?;
            put(field::TPR_THRESHOLD, 0)?;
            put(field::GUEST_INTERRUPT_STATUS, 0)?;
            for word in 0..4 {
                put(field::EOI_EXIT_BITMAP_0 + 2 * word, 0)?;
            }
        }
        Ok(virtual_apic.is_some())
    }

    /// Writes the host-state area from this CPU's current state; VM exits land in
    /// `bulkhead_vmx_exit`.
    pub fn set_host_state(&self) -> Result<(), VmcsError> {
        let selector = |read: fn() -> u16| u64::from(read() & !7);
        put(field::HOST_CR0, Cr0::read_raw())?;
        put(field::HOST_CR3, Cr3::read_raw().0.start_address().as_u64())?;
        put(field::HOST_CR4, Cr4::read_raw())?;
        put(field::HOST_CS_SELECTOR, selector(segment::cs))?;
        put(field::HOST_SS_SELECTOR, selector(segment::ss))?;
        put(field::HOST_DS_SELECTOR, selector(segment::ds))?;
        put(field::HOST_ES_SELECTOR, selector(segment::es))?;
        put(field::HOST_FS_SELECTOR, selector(segment::fs))?;
        put(field::HOST_GS_SELECTOR, selector(segment::gs))?;
        let task_register = segment::tr();
        put(field::HOST_TR_SELECTOR, u64::from(task_register & !7))?;
        let gdt = sgdt();
        put(field::HOST_GDTR_BASE, gdt.base.as_u64())?;
        put(field::HOST_IDTR_BASE, sidt().base.as_u64())?;
        put(
            field::HOST_TR_BASE,
            segment::tss_base(gdt.base.as_u64(), task_register),
        )?;
        put(field::HOST_FS_BASE, FsBase::read().as_u64())?;
        put(field::HOST_GS_BASE, GsBase::read().as_u64())?;
        put(field::HOST_SYSENTER_CS, 0)?;
        put(field::HOST_SYSENTER_ESP, 0)?;
        put(field::HOST_SYSENTER_EIP, 0)?;
        // SAFETY: IA32_EFER exists on every 64-bit CPU.
        put(field::HOST_IA32_EFER, unsafe { read_msr(IA32_EFER) })?;
        put(field::HOST_RIP, bulkhead_vmx_exit as *const () as u64)?;
        Ok(())
    }

    /// Writes the guest-state area for a vCPU entering 64-bit mode at `start` (paging on, flat
    /// segments, interrupts off), and marks the VMCS for VMLAUNCH.
    pub fn set_long_mode_guest(&mut self, start: &LongModeStart) -> Result<(), VmcsError> {
        // SAFETY: the fixed-bit MSRs exist with VMX.
        let (cr0, cr4) = unsafe {
            (
                apply_fixed_bits(
                    CR0_PE | CR0_ET | CR0_NE | CR0_WP | CR0_PG,
                    read_msr(IA32_VMX_CR0_FIXED0),
                    read_msr(IA32_VMX_CR0_FIXED1),
                ),
                apply_fixed_bits(
                    CR4_PAE | CR4_VMXE,
                    read_msr(IA32_VMX_CR4_FIXED0),
                    read_msr(IA32_VMX_CR4_FIXED1),
                ),
            )
        };
        put(field::GUEST_CR0, cr0)?;
        put(field::CR0_READ_SHADOW, cr0)?;
        put(field::GUEST_CR4, cr4)?;
        put(field::CR4_READ_SHADOW, cr4 & !CR4_VMXE)?;
        put(field::GUEST_CR3, start.cr3)?;
        put(field::GUEST_IA32_EFER, EFER_LME | EFER_LMA)?;
        let (code, data) = start.selectors;
        // ES, CS, SS, DS, FS, GS, LDTR, TR in encoding order (stride 2).
        const CODE_64: u64 = 0xa09b; // present, S, type execute/read accessed, L, G
        const DATA: u64 = 0xc093; // present, S, type read/write accessed, D/B, G
        const UNUSABLE: u64 = 1 << 16;
        const TSS_BUSY_64: u64 = 0x8b;
        let segments: [(u16, u64, u32); 8] = [
            (data, DATA, 0xffff_ffff),
            (code, CODE_64, 0xffff_ffff),
            (data, DATA, 0xffff_ffff),
            (data, DATA, 0xffff_ffff),
            (data, DATA, 0xffff_ffff),
            (data, DATA, 0xffff_ffff),
            (0, UNUSABLE, 0),
            (0, TSS_BUSY_64, 0x67),
        ];
        for (i, (selector, rights, limit)) in (0u32..).zip(segments) {
            put(field::GUEST_ES_SELECTOR + 2 * i, u64::from(selector))?;
            put(field::GUEST_ES_ACCESS_RIGHTS + 2 * i, rights)?;
            put(field::GUEST_ES_LIMIT + 2 * i, u64::from(limit))?;
            put(field::GUEST_ES_BASE + 2 * i, 0)?;
        }
        put(field::GUEST_GDTR_BASE, start.gdt.0)?;
        put(field::GUEST_GDTR_LIMIT, u64::from(start.gdt.1))?;
        put(field::GUEST_IDTR_BASE, 0)?;
        put(field::GUEST_IDTR_LIMIT, 0)?;
        put(field::GUEST_DR7, 0x400)?;
        put(field::GUEST_IA32_DEBUGCTL, 0)?;
        put(field::GUEST_RSP, start.rsp)?;
        put(field::GUEST_RIP, start.rip)?;
        put(field::GUEST_RFLAGS, 0x2)?;
        put(field::GUEST_PENDING_DEBUG, 0)?;
        put(field::GUEST_INTERRUPTIBILITY, 0)?;
        put(field::GUEST_ACTIVITY_STATE, 0)?;
        put(field::GUEST_SYSENTER_CS, 0)?;
        put(field::GUEST_SYSENTER_ESP, 0)?;
        put(field::GUEST_SYSENTER_EIP, 0)?;
        self.launched = false;
        Ok(())
    }

    /// Enters the guest with `registers` until the next VM exit (then the registers hold the
    /// guest's). The VMCS must be current on this CPU.
    pub fn run(&mut self, registers: &mut GuestRegisters) -> Result<(), VmcsError> {
        // SAFETY: the VMCS is current and its host state is this CPU's (`set_host_state`), so a
        // VM exit returns into `bulkhead_vmx_exit` on the stub's frame with the host's
        // callee-saved registers restored; the guest runs behind its EPT, which maps none of
        // the hypervisor's memory. FP/SIMD state is not switched: neither the hypervisor nor
        // Bulkhead's x86 guests use it (x86_64-unknown-none is soft-float).
        let failed = unsafe { bulkhead_vmx_run(registers, u64::from(self.launched)) };
        if failed != 0 {
            return Err(VmcsError::Entry(read(field::VM_INSTRUCTION_ERROR)));
        }
        self.launched = true;
        Ok(())
    }

    /// Moves the guest's RIP past the instruction that exited (which ends blocking by STI
    /// or MOV SS).
    pub fn skip_instruction(&self) {
        self.advance(read(field::EXIT_INSTRUCTION_LENGTH));
    }

    /// Moves the guest's RIP `length` bytes on (past an instruction the hypervisor decoded and
    /// emulated), ending blocking by STI or MOV SS as executing it would have.
    pub fn advance(&self, length: u64) {
        let rip = read(field::GUEST_RIP).wrapping_add(length);
        let _ = write(field::GUEST_RIP, rip);
        let interruptibility = read(field::GUEST_INTERRUPTIBILITY);
        if interruptibility & 3 != 0 {
            let _ = write(field::GUEST_INTERRUPTIBILITY, interruptibility & !3);
        }
    }

    /// Whether the guest can take an external interrupt at the next entry: RFLAGS.IF set,
    /// no blocking by STI or MOV SS.
    pub fn interrupts_open(&self) -> bool {
        read(field::GUEST_RFLAGS) & (1 << 9) != 0 && read(field::GUEST_INTERRUPTIBILITY) & 3 == 0
    }

    /// Injects external interrupt `vector` at the next VM entry (through the guest's IDT).
    pub fn inject_interrupt(&self, vector: u8) {
        let _ = write(
            field::ENTRY_INTERRUPTION_INFO,
            (1 << 31) | u64::from(vector),
        );
    }

    /// Injects hardware exception `vector` (with `error_code` when it has one, as #GP does)
    /// at the next VM entry, through the guest's IDT; RIP stays at the faulting instruction.
    pub fn inject_exception(&self, vector: u8, error_code: Option<u32>) {
        const HARDWARE_EXCEPTION: u64 = 3 << 8;
        const DELIVER_ERROR_CODE: u64 = 1 << 11;
        let mut info = (1 << 31) | HARDWARE_EXCEPTION | u64::from(vector);
        if let Some(code) = error_code {
            info |= DELIVER_ERROR_CODE;
            let _ = write(field::ENTRY_EXCEPTION_ERROR_CODE, u64::from(code));
        }
        let _ = write(field::ENTRY_INTERRUPTION_INFO, info);
    }

    /// Whether an event is already set up for injection at the next VM entry (VM entry clears
    /// the valid bit once it has delivered it).
    pub fn injection_pending(&self) -> bool {
        read(field::ENTRY_INTERRUPTION_INFO) & (1 << 31) != 0
    }

    /// The guest-interrupt status under virtual-interrupt delivery: RVI (bits 7:0, the
    /// highest requested vector) and SVI (bits 15:8, the highest in service).
    pub fn interrupt_status(&self) -> u16 {
        read(field::GUEST_INTERRUPT_STATUS) as u16
    }

    /// Writes the guest-interrupt status (see [`interrupt_status`](Self::interrupt_status)).
    pub fn set_interrupt_status(&self, status: u16) {
        let _ = write(field::GUEST_INTERRUPT_STATUS, u64::from(status));
    }

    /// Writes the EOI-exit bitmap (bit n of word w = vector 64w + n): a virtualized EOI of
    /// such a vector exits (reason 45) after the CPU ended it.
    pub fn set_eoi_exit_bitmap(&self, vectors: [u64; 4]) {
        for (word, bits) in (0u32..).zip(vectors) {
            let _ = write(field::EOI_EXIT_BITMAP_0 + 2 * word, bits);
        }
    }

    /// Turns interrupt-window exiting on or off (an exit as soon as the guest can take an
    /// interrupt).
    pub fn set_interrupt_window(&self, on: bool) {
        let controls = read(field::PRIMARY_CONTROLS);
        let wanted = if on {
            controls | INTERRUPT_WINDOW_EXITING
        } else {
            controls & !INTERRUPT_WINDOW_EXITING
        };
        if wanted != controls {
            let _ = write(field::PRIMARY_CONTROLS, wanted);
        }
    }
}

/// The physical address of the MSR bitmap every vCPU shares ([`msr_bitmap::build_for`]
/// `virtual_apic`: one without, one with virtual-interrupt delivery; neither ever changes),
/// allocated on first use; `None` without memory for it.
fn msr_bitmap_page(virtual_apic: bool) -> Option<u64> {
    static PAGES: [spin::Once<Option<u64>>; 2] = [spin::Once::new(), spin::Once::new()];
    let page = PAGES.get(usize::from(virtual_apic))?;
    *page.call_once(|| {
        let layout = Layout::from_size_align(4096, 4096).ok()?;
        // SAFETY: non-zero size; the page is read by every CPU's VMX for the rest of the run,
        // so it is never freed.
        let page = unsafe { alloc_zeroed(layout) };
        if page.is_null() {
            return None;
        }
        let bits = msr_bitmap::build_for(virtual_apic);
        // SAFETY: the page is ours, 4 KiB like `bits`; nothing reads it before this returns.
        unsafe { core::ptr::copy_nonoverlapping(bits.as_ptr(), page, bits.len()) };
        // Identity-mapped heap: its address is its physical address.
        Some(page as u64)
    })
}

/// Segment registers of the running CPU.
mod segment {
    use core::arch::asm;

    macro_rules! reader {
        ($name:ident, $instruction:literal) => {
            pub fn $name() -> u16 {
                let value: u16;
                // SAFETY: reading a segment or task register has no side effects.
                unsafe { asm!($instruction, out(reg) value, options(nomem, nostack)) };
                value
            }
        };
    }
    reader!(cs, "mov {0:x}, cs");
    reader!(ss, "mov {0:x}, ss");
    reader!(ds, "mov {0:x}, ds");
    reader!(es, "mov {0:x}, es");
    reader!(fs, "mov {0:x}, fs");
    reader!(gs, "mov {0:x}, gs");
    reader!(tr, "str {0:x}");

    /// The base of the 64-bit TSS descriptor `selector` selects in the GDT at `gdt`.
    pub fn tss_base(gdt: u64, selector: u16) -> u64 {
        let descriptor = gdt + u64::from(selector & !7);
        // SAFETY: the selector is the loaded TR, so its 16-byte descriptor lies inside the
        // (identity-mapped, leaked) GDT.
        let (low, high) = unsafe {
            (
                (descriptor as *const u64).read_volatile(),
                ((descriptor + 8) as *const u64).read_volatile(),
            )
        };
        ((low >> 16) & 0xff_ffff) | (((low >> 56) & 0xff) << 24) | ((high & 0xffff_ffff) << 32)
    }
}
