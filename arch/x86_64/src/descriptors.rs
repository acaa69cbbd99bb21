//! Per-CPU descriptor tables: a GDT with a 64-bit code segment, a data segment and a TSS whose
//! interrupt stack table gives double faults and NMIs a stack of their own.

use alloc::boxed::Box;
use alloc::vec;

use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;

/// IST slot (1-based in the TSS, 0-based here) of the double-fault stack.
pub const DOUBLE_FAULT_STACK: u16 = 0;
/// IST slot of the NMI and machine-check stack.
pub const NMI_STACK: u16 = 1;
/// Size of each interrupt stack.
const INTERRUPT_STACK_SIZE: usize = 16 << 10;

/// The selectors every CPU's GDT has (the VMCS host-state area needs them too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selectors {
    /// 64-bit ring-0 code.
    pub code: SegmentSelector,
    /// Ring-0 data (stack).
    pub data: SegmentSelector,
    /// The task-state segment (never zero: VM entry refuses a null host TR).
    pub task_state: SegmentSelector,
}

/// Builds this CPU's GDT and TSS, loads them, and reloads every segment register. Leaks both:
/// they live as long as the CPU runs.
pub fn install_this_cpu() -> Selectors {
    let mut task_state = TaskStateSegment::new();
    // The TSS is packed: edit a copy of the table, then store it back.
    let mut stacks = task_state.interrupt_stack_table;
    for slot in [DOUBLE_FAULT_STACK, NMI_STACK] {
        let stack: &'static mut [u8] =
            Box::leak(vec![0_u8; INTERRUPT_STACK_SIZE].into_boxed_slice());
        let top = (stack.as_ptr() as u64 + INTERRUPT_STACK_SIZE as u64) & !0xf;
        if let Some(entry) = stacks.get_mut(usize::from(slot)) {
            *entry = VirtAddr::new(top);
        }
    }
    task_state.interrupt_stack_table = stacks;
    let task_state: &'static TaskStateSegment = Box::leak(Box::new(task_state));
    let mut table = GlobalDescriptorTable::new();
    let code = table.append(Descriptor::kernel_code_segment());
    let data = table.append(Descriptor::kernel_data_segment());
    let task = table.append(Descriptor::tss_segment(task_state));
    let table: &'static GlobalDescriptorTable = Box::leak(Box::new(table));
    table.load();
    // SAFETY: the selectors index descriptors of the GDT just loaded, which stays valid for the
    // whole run (leaked); the code segment is the 64-bit ring-0 segment this code runs in, the
    // data segment a flat writable one; the TSS descriptor is loaded once per CPU (its own).
    unsafe {
        CS::set_reg(code);
        SS::set_reg(data);
        DS::set_reg(data);
        ES::set_reg(data);
        load_tss(task);
    }
    Selectors {
        code,
        data,
        task_state: task,
    }
}
