//! One trapped access in one of the instruction forms a guest may use: single loads and
//! stores of every width (the data-abort syndrome describes them, ISV = 1), sign-extending
//! loads, pairs and pre/post-index write-back (ISV = 0: the hypervisor decodes the
//! instruction). Every form's effect on the base register is checked, as the guest sees it.

use core::arch::asm;

/// The instruction forms, chosen at random for each access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// `ldrb`/`ldrh`/`ldr w`/`ldr x` or the matching store, `[base]`.
    Single,
    /// `ldrsb x`/`ldrsh w`/`ldrsw x` (loads only).
    SignExtending,
    /// `ldp`/`stp` of two W or two X registers.
    Pair,
    /// `ldr`/`str` with post-index write-back `[base], #8`.
    PostIndex,
    /// `ldr`/`str` with pre-index write-back `[base, #-8]!`.
    PreIndex,
}

/// Why an access's result is wrong, as the guest sees it.
#[derive(Clone, Copy, Debug)]
pub struct WrongBase {
    /// The form.
    pub form: Form,
    /// Where the base register ended.
    pub got: usize,
    /// Where it should have ended.
    pub expected: usize,
}

/// One access at `address` (aligned to `bytes`; pairs to `2 * bytes`): a load when `value`
/// is `None`. Returns the loaded value (a pair's first register), or why the base register
/// is wrong afterwards.
///
/// # Safety
/// `address .. address + 2 * bytes` must be device registers of this partition or memory
/// the program does not use: the access may have any side effect a device has.
pub unsafe fn access(
    form: Form,
    address: usize,
    bytes: usize,
    value: Option<u64>,
) -> Result<u64, WrongBase> {
    let mut result = 0u64;
    let mut base = address;
    let mut expected = address;
    match (form, bytes, value) {
        (Form::Single | Form::SignExtending, 1, Some(v)) => {
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            unsafe { asm!("strb {v:w}, [{b}]", v = in(reg) v, b = in(reg) base, options(nostack)) }
        }
        (Form::Single | Form::SignExtending, 2, Some(v)) => {
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            unsafe { asm!("strh {v:w}, [{b}]", v = in(reg) v, b = in(reg) base, options(nostack)) }
        }
        (Form::Single | Form::SignExtending, 4, Some(v)) => {
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            unsafe { asm!("str {v:w}, [{b}]", v = in(reg) v, b = in(reg) base, options(nostack)) }
        }
        (Form::Single | Form::SignExtending, _, Some(v)) => {
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            unsafe { asm!("str {v}, [{b}]", v = in(reg) v, b = in(reg) base, options(nostack)) }
        }
        (Form::Single, 1, None) => {
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            unsafe {
                asm!("ldrb {r:w}, [{b}]", r = out(reg) result, b = in(reg) base, options(nostack))
            }
        }
        (Form::Single, 2, None) => {
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            unsafe {
                asm!("ldrh {r:w}, [{b}]", r = out(reg) result, b = in(reg) base, options(nostack))
            }
        }
        (Form::Single, 4, None) => {
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            unsafe {
                asm!("ldr {r:w}, [{b}]", r = out(reg) result, b = in(reg) base, options(nostack))
            }
        }
        (Form::Single, _, None) => {
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            unsafe {
                asm!("ldr {r}, [{b}]", r = out(reg) result, b = in(reg) base, options(nostack))
            }
        }
        (Form::SignExtending, 1, None) => {
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            unsafe {
                asm!("ldrsb {r}, [{b}]", r = out(reg) result, b = in(reg) base, options(nostack))
            }
        }
        (Form::SignExtending, 2, None) => {
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            unsafe {
                asm!("ldrsh {r:w}, [{b}]", r = out(reg) result, b = in(reg) base, options(nostack))
            }
        }
        (Form::SignExtending, _, None) => {
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            unsafe {
                asm!("ldrsw {r}, [{b}]", r = out(reg) result, b = in(reg) base, options(nostack))
            }
        }
        (Form::Pair, 8, Some(v)) => {
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            unsafe {
                asm!("stp {v}, {w}, [{b}]", v = in(reg) v, w = in(reg) !v, b = in(reg) base,
                 options(nostack))
            }
        }
        (Form::Pair, _, Some(v)) => {
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            unsafe {
                asm!("stp {v:w}, {w:w}, [{b}]", v = in(reg) v, w = in(reg) v >> 32,
                 b = in(reg) base, options(nostack))
            }
        }
        (Form::Pair, 8, None) => {
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            unsafe {
                asm!("ldp {r}, {s}, [{b}]", r = out(reg) result, s = out(reg) _, b = in(reg) base,
                 options(nostack))
            }
        }
        (Form::Pair, _, None) => {
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            unsafe {
                asm!("ldp {r:w}, {s:w}, [{b}]", r = out(reg) result, s = out(reg) _,
                 b = in(reg) base, options(nostack))
            }
        }
        (Form::PostIndex, 8, Some(v)) => {
            expected = address.wrapping_add(8);
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            unsafe {
                asm!("str {v}, [{b}], #8", v = in(reg) v, b = inout(reg) base, options(nostack))
            }
        }
        (Form::PostIndex, _, Some(v)) => {
            expected = address.wrapping_add(8);
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            unsafe {
                asm!("str {v:w}, [{b}], #8", v = in(reg) v, b = inout(reg) base,
                     options(nostack))
            }
        }
        (Form::PostIndex, 8, None) => {
            expected = address.wrapping_add(8);
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            unsafe {
                asm!("ldr {r}, [{b}], #8", r = out(reg) result, b = inout(reg) base,
                     options(nostack))
            }
        }
        (Form::PostIndex, _, None) => {
            expected = address.wrapping_add(8);
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            unsafe {
                asm!("ldr {r:w}, [{b}], #8", r = out(reg) result, b = inout(reg) base,
                     options(nostack))
            }
        }
        (Form::PreIndex, 8, Some(v)) => {
            base = address.wrapping_add(8);
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            unsafe {
                asm!("str {v}, [{b}, #-8]!", v = in(reg) v, b = inout(reg) base,
                     options(nostack))
            }
        }
        (Form::PreIndex, _, Some(v)) => {
            base = address.wrapping_add(8);
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            unsafe {
                asm!("str {v:w}, [{b}, #-8]!", v = in(reg) v, b = inout(reg) base,
                     options(nostack))
            }
        }
        (Form::PreIndex, 8, None) => {
            base = address.wrapping_add(8);
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            unsafe {
                asm!("ldr {r}, [{b}, #-8]!", r = out(reg) result, b = inout(reg) base,
                     options(nostack))
            }
        }
        (Form::PreIndex, _, None) => {
            base = address.wrapping_add(8);
            // SAFETY: the caller's contract: the effective addresses are device registers or
            // unused memory, and the asm touches only the registers it names.
            unsafe {
                asm!("ldr {r:w}, [{b}, #-8]!", r = out(reg) result, b = inout(reg) base,
                     options(nostack))
            }
        }
    }
    if base != expected {
        return Err(WrongBase {
            form,
            got: base,
            expected,
        });
    }
    Ok(result)
}
