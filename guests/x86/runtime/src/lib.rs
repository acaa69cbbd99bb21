//! Runtime for Bulkhead's bare-metal x86_64 test guests.
//!
//! What a Bulkhead x86_64 partition hands its guest (the contract `src/x86_64/guest.rs` and
//! the partition's virtual devices in the hypervisor implement):
//! - 64-bit long mode, ring 0, interrupts off; paging on with an identity map of
//!   guest-physical 0..1 TiB, write-back (the first GiB in 2 MiB pages, the rest in 1 GiB
//!   pages; tables at guest-physical 0x1000 up) and a flat GDT at 0x4000 (code 0x08, data
//!   0x10). RAM starts at guest-physical 0. What the partition does not own (beyond its RAM,
//!   devices and attached shared memory) is still mapped by these tables, but touching it
//!   stops the partition (EPT violation).
//! - The image is loaded at guest-physical 0x200000 and entered at its first byte.
//! - RDI = guest-physical address of the boot information page (0x7000; [`boot_info`]): the
//!   partition's name, RAM size and vCPU index, and from offset 0x100 a device list: a u64
//!   count N (at most 16), then N entries of 24 bytes from 0x108, `{kind: u32, number: u32,
//!   base: u64, size: u64}`. Kinds: 1 I/O APIC (base = registers, size 0x1000, number = 24
//!   pins); 2 QNX shmem factory page in MMIO form (base = `loc`, size 0x1000, number = the
//!   I/O APIC pin of `intr NAME:N`); 3 PCI ECAM of bus 0; 4 PCI 32-bit memory window; 5 PCI
//!   64-bit prefetchable window; 6 16550 UART (base = I/O port, size 8).
//! - COM1 (I/O port 0x3f8) is the partition's console (`vdev ser8250`; [`console`]).
//! - VMCALL with RAX = a PSCI function ID is a call to the hypervisor (SYSTEM_OFF
//!   0x8400_0008 stops the partition: [`exit::system_off`]; CPU_ON 0xc400_0003 starts another
//!   vCPU with RIP = entry, RSP = RDI = context: [`exit::cpu_on`]).
//! - A virtual x2APIC ([`x2apic`]: ID = vCPU index, a timer counting TSC ticks, fixed IPIs
//!   inside the partition, EOI); its interrupts are injected through the guest's IDT
//!   ([`interrupts`]; vectors must be 32 or above).
//! - PCI configuration space of bus 0 through mechanism #1: a dword address written to I/O
//!   port 0xCF8 (bit 31 enable, bus 23:16, device 15:11, function 10:8, register 7:2), data
//!   at ports 0xCFC..0xCFF (byte, word or dword); the ECAM window of kind 3 reaches the same
//!   registers. Virtual functions as on aarch64: QNX shmem 1C05:0001 (BAR0 = factory page),
//!   ivshmem 1af4:1110 (BAR0 registers, BAR1 MSI-X table and PBA, BAR2 shared memory, 64-bit
//!   prefetchable). BARs are assigned by the hypervisor (read them, never move them); memory
//!   decoding is off until COMMAND bit 1 is set. Interrupt Line (config 0x3C) = the I/O APIC
//!   pin of the function's INTx (slot s, pin p: 16 + (s + p - 1) % 4), 0xFF when the
//!   partition has no I/O APIC.
//! - An I/O APIC ([`ioapic`], `vdev ioapic loc 0xfec00000 intr apic name NAME`): IOREGSEL at
//!   base + 0x00, IOWIN at base + 0x10, EOI at base + 0x40; register 0 ID, 1 version
//!   0x0017_0020 (24 pins), redirection entry n at 0x10 + 2n (low) and 0x11 + 2n (high):
//!   vector 7:0, delivery mode 10:8 (0 fixed), destination mode 11 (0 physical), polarity 13,
//!   remote IRR 14 (read-only), trigger 15 (1 level), mask 16 (1 masked, the reset value),
//!   destination APIC ID 63:56 (= vCPU index). A level pin delivers once, then again only
//!   after the x2APIC EOI (which the hypervisor forwards) if its line is still asserted. QNX
//!   shmem interrupts and PCI INTx are level-triggered, active high.
//! - MSI-X messages: address 0xFEE0_0000 | (APIC ID << 12), data = vector (fixed, edge).
//! - Device registers must be accessed with plain `mov` instructions ([`mmio`]: volatile
//!   reads and writes), never string instructions; shared memory is ordinary RAM.
//!
//! Design principles: no allocation; global state only in atomics; unsafe confined to entry
//! and interrupt assembly, port I/O, MSRs and MMIO, each block with its reason. Host unit
//! tests (`cargo test --target x86_64-unknown-linux-gnu -p bulkhead-guest-x86`) cover the
//! pure parts: the boot information parser, redirection entries, the TSC rate.
#![cfg_attr(not(test), no_std)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        reason = "tests fail loudly"
    )
)]

pub mod boot_info;
pub mod console;
pub mod cpu;
pub mod entry;
pub mod exit;
pub mod interrupts;
pub mod ioapic;
pub mod mmio;
pub mod port;
pub mod time;
pub mod x2apic;

pub use exit::{exit_fail, exit_fail_with, exit_pass, system_off};
