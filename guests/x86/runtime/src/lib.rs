//! Runtime for Bulkhead's bare-metal x86_64 test guests.
//!
//! What a Bulkhead x86_64 partition hands its guest (the contract `src/x86_64/guest.rs` in the
//! hypervisor implements):
//! - 64-bit long mode, ring 0, interrupts off; paging on with an identity map of the first
//!   1 GiB of guest-physical space (2 MiB pages; tables at guest-physical 0x1000..0x4000) and a
//!   flat GDT at 0x4000 (code 0x08, data 0x10);
//! - the image is loaded at guest-physical 0x200000 and entered at its first byte;
//! - RDI = guest-physical address of the boot information ([`boot_info`]): the partition's
//!   name, RAM size and the vCPU index;
//! - COM1 (I/O port 0x3f8) is the partition's console (`vdev ser8250`);
//! - VMCALL with RAX = a PSCI function ID is a call to the hypervisor (SYSTEM_OFF
//!   0x8400_0008 stops the partition: [`exit::system_off`]; CPU_ON 0xc400_0003 starts another
//!   vCPU with RIP = entry, RSP = RDI = context: [`exit::cpu_on`]);
//! - a virtual x2APIC ([`x2apic`]: ID = vCPU index, timer, fixed IPIs inside the partition);
//!   its interrupts are injected through the guest's IDT ([`interrupts`]).
#![no_std]

pub mod boot_info;
pub mod console;
pub mod cpu;
pub mod entry;
pub mod exit;
pub mod interrupts;
pub mod x2apic;

pub use exit::{exit_fail_with, system_off};
