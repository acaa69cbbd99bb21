//! The physical GIC as the hypervisor drives it at EL2: per-CPU setup, the kick SGI between
//! CPUs, acknowledging interrupts, and the virtual CPU interface's list registers
//! (GICv3 system registers, or GICv2 GICH frame). Guests never touch the physical
//! distributor or redistributors: those are not in any stage-2 map.

use core::arch::asm;

use hypervisor::board::Gic;
use spin::Once;

use hypervisor::device::gic::ListEntry;

use crate::list_register;

/// The SGI the hypervisor uses to wake or interrupt another CPU.
pub const KICK_SGI: u32 = 0;
/// The maintenance interrupt (PPI) of the virtual CPU interface.
pub const MAINTENANCE_PPI: u32 = 25;
/// The EL1 virtual timer's PPI.
pub const VIRTUAL_TIMER_PPI: u32 = 27;
/// INTIDs 1020..=1023 are special (spurious).
const SPURIOUS: u32 = 1020;
/// Priority of the interrupts the hypervisor enables.
const PRIORITY: u8 = 0xa0;

#[derive(Debug)]
enum Frames {
    V3 {
        distributor: u64,
        redistributors: alloc::vec::Vec<(u64, u64)>,
    },
    V2 {
        distributor: u64,
        cpu_interface: u64,
        /// GICC's second page (GICC_DIR), see [`Gic::second_page`].
        cpu_interface_page1: u64,
        hypervisor_interface: u64,
    },
}

static FRAMES: Once<Frames> = Once::new();

fn read32(address: u64) -> u32 {
    // SAFETY: only called with addresses inside GIC frames the device tree named, which the
    // hypervisor's map holds as device memory.
    unsafe { core::ptr::read_volatile(address as *const u32) }
}

fn write32(address: u64, value: u32) {
    // SAFETY: as in `read32`.
    unsafe { core::ptr::write_volatile(address as *mut u32, value) }
}

fn read64(address: u64) -> u64 {
    // SAFETY: as in `read32`; 64-bit GIC registers allow 64-bit access.
    unsafe { core::ptr::read_volatile(address as *const u64) }
}

macro_rules! read_sysreg {
    ($name:literal) => {{
        let value: u64;
        // SAFETY: reads a GIC CPU-interface or virtualization register of this CPU.
        unsafe { asm!(concat!("mrs {}, ", $name), out(reg) value, options(nomem, nostack)) };
        value
    }};
}

macro_rules! write_sysreg {
    ($name:literal, $value:expr) => {{
        let value: u64 = $value;
        // SAFETY: writes a GIC CPU-interface or virtualization register of this CPU; the
        // values written follow the GICv3 architecture for the hypervisor's own use.
        unsafe { asm!(concat!("msr ", $name, ", {}"), in(reg) value, options(nomem, nostack)) };
    }};
}

/// Records the GIC the device tree describes and enables its distributor (boot CPU, once).
pub fn init_distributor(gic: &Gic) -> Result<(), &'static str> {
    let frames = match gic {
        Gic::V3 {
            distributor,
            redistributors,
        } => Frames::V3 {
            distributor: distributor.start.as_u64(),
            redistributors: redistributors
                .iter()
                .map(|r| (r.start.as_u64(), r.size()))
                .collect(),
        },
        Gic::V2 {
            distributor,
            cpu_interface,
            hypervisor_interface,
            ..
        } => Frames::V2 {
            distributor: distributor.start.as_u64(),
            cpu_interface: cpu_interface.start.as_u64(),
            cpu_interface_page1: Gic::second_page(cpu_interface),
            hypervisor_interface: hypervisor_interface
                .map(|r| r.start.as_u64())
                .ok_or("the GICv2 has no virtualization extensions (no GICH frame)")?,
        },
    };
    match &frames {
        Frames::V3 { distributor, .. } => {
            // ARE + EnableGrp1 (single security state as QEMU and EL2-only boots see it;
            // with two states the non-secure view has ARE_NS at bit 4 and Grp1NS at bit 1).
            write32(*distributor, (1 << 4) | (1 << 1));
            while read32(*distributor) & (1 << 31) != 0 {
                core::hint::spin_loop();
            }
        }
        Frames::V2 { distributor, .. } => write32(*distributor, 1),
    }
    FRAMES.call_once(|| frames);
    Ok(())
}

fn redistributor_of(mpidr: u64, regions: &[(u64, u64)]) -> Option<u64> {
    let affinity = ((mpidr >> 8) & 0xff00_0000) | (mpidr & 0xff_ffff);
    for &(base, size) in regions {
        let mut frame = base;
        while frame < base + size {
            let typer = read64(frame + 0x8);
            if (typer >> 32) == affinity {
                return Some(frame);
            }
            if typer & (1 << 4) != 0 {
                break;
            }
            frame += if typer & (1 << 1) != 0 {
                0x4_0000
            } else {
                0x2_0000
            };
        }
    }
    None
}

/// Sets up this CPU's part of the GIC: redistributor (v3) or banked distributor registers
/// (v2), the CPU interface with split priority drop / deactivation (so the virtual timer can
/// be deactivated by its guest), and the virtual interface. Returns the number of list
/// registers.
pub fn init_this_cpu(mpidr: u64) -> Result<usize, &'static str> {
    let frames = FRAMES.get().ok_or("GIC distributor not initialised")?;
    let enabled = (1u32 << KICK_SGI) | (1 << MAINTENANCE_PPI) | (1 << VIRTUAL_TIMER_PPI);
    match frames {
        Frames::V3 { redistributors, .. } => {
            let frame = redistributor_of(mpidr, redistributors)
                .ok_or("no GICv3 redistributor for this CPU")?;
            let waker = frame + 0x14;
            write32(waker, read32(waker) & !(1 << 1));
            while read32(waker) & (1 << 2) != 0 {
                core::hint::spin_loop();
            }
            let sgi = frame + 0x1_0000;
            write32(sgi + 0x80, u32::MAX); // IGROUPR0: group 1
            write32(sgi + 0x180, u32::MAX); // ICENABLER0
            for register in 0..8 {
                write32(
                    sgi + 0x400 + 4 * register,
                    u32::from_ne_bytes([PRIORITY; 4]),
                );
            }
            write32(sgi + 0x100, enabled); // ISENABLER0
            write_sysreg!("S3_4_C12_C9_5", 0xf); // ICC_SRE_EL2: SRE, DFB, DIB, Enable (EL1 SRE)
            // SAFETY: synchronisation barrier after enabling the system-register interface.
            unsafe { asm!("isb", options(nomem, nostack)) };
            write_sysreg!("S3_0_C4_C6_0", 0xff); // ICC_PMR_EL1
            write_sysreg!("S3_0_C12_C12_3", 0); // ICC_BPR1_EL1
            write_sysreg!("S3_0_C12_C12_4", 1 << 1); // ICC_CTLR_EL1.EOImode = 1
            write_sysreg!("S3_0_C12_C12_7", 1); // ICC_IGRPEN1_EL1
            write_sysreg!("S3_4_C12_C11_0", 1); // ICH_HCR_EL2.En
            write_sysreg!("S3_4_C12_C11_7", 0); // ICH_VMCR_EL2: the guest sets its own
            let vtr = read_sysreg!("S3_4_C12_C11_1");
            let count = (vtr & 0x1f) as usize + 1;
            for index in 0..count {
                write_list_register(index, &ListEntry::EMPTY);
            }
            Ok(count)
        }
        Frames::V2 {
            distributor,
            cpu_interface,
            hypervisor_interface,
            ..
        } => {
            write32(distributor + 0x180, u32::MAX);
            for register in 0..8 {
                write32(
                    distributor + 0x400 + 4 * register,
                    u32::from_ne_bytes([PRIORITY; 4]),
                );
            }
            write32(distributor + 0x100, enabled);
            write32(cpu_interface + 0x4, 0xff); // GICC_PMR
            write32(*cpu_interface, 1 | (1 << 9)); // GICC_CTLR: EnableGrp1, EOImodeNS
            write32(*hypervisor_interface, 1); // GICH_HCR.En
            let vtr = read32(hypervisor_interface + 0x4);
            let count = (vtr & 0x3f) as usize + 1;
            for index in 0..count {
                write_list_register(index, &ListEntry::EMPTY);
            }
            Ok(count)
        }
    }
}

/// Sends the kick SGI to the CPU with affinity `mpidr`.
pub fn kick(mpidr: u64) {
    match FRAMES.get() {
        Some(Frames::V3 { .. }) => {
            let aff0 = mpidr & 0xf;
            let value = (((mpidr >> 32) & 0xff) << 48)
                | (((mpidr >> 16) & 0xff) << 32)
                | (((mpidr >> 8) & 0xff) << 16)
                | (u64::from(KICK_SGI) << 24)
                | (1 << aff0);
            write_sysreg!("S3_0_C12_C11_5", value); // ICC_SGI1R_EL1
        }
        Some(Frames::V2 { distributor, .. }) => {
            // GICv2 targets CPU interface numbers; Bulkhead's boards number them by Aff0.
            write32(distributor + 0xf00, (1 << (16 + (mpidr & 0x7))) | KICK_SGI);
        }
        None => {}
    }
}

/// Acknowledges the highest-priority pending interrupt, if any.
pub fn acknowledge() -> Option<u32> {
    let intid = match FRAMES.get()? {
        Frames::V3 { .. } => read_sysreg!("S3_0_C12_C12_0") as u32 & 0xff_ffff, // ICC_IAR1_EL1
        Frames::V2 { cpu_interface, .. } => read32(cpu_interface + 0xc) & 0x1fff,
    };
    (intid & 0x3ff < SPURIOUS).then_some(intid)
}

/// Priority drop for an acknowledged interrupt (EOImode = 1: it stays active).
pub fn end_of_interrupt(intid: u32) {
    match FRAMES.get() {
        Some(Frames::V3 { .. }) => write_sysreg!("S3_0_C12_C12_1", u64::from(intid)),
        Some(Frames::V2 { cpu_interface, .. }) => write32(cpu_interface + 0x10, intid),
        None => {}
    }
}

/// Deactivates an interrupt whose priority was dropped.
pub fn deactivate(intid: u32) {
    match FRAMES.get() {
        Some(Frames::V3 { .. }) => write_sysreg!("S3_0_C12_C11_1", u64::from(intid)),
        // GICC_DIR: offset 0x1000, the second page.
        Some(Frames::V2 {
            cpu_interface_page1,
            ..
        }) => write32(*cpu_interface_page1, intid),
        None => {}
    }
}

/// Whether the GIC is version 2.
pub fn is_v2() -> bool {
    matches!(FRAMES.get(), Some(Frames::V2 { .. }))
}

macro_rules! lr_access {
    ($index:expr, $body:ident) => {
        match $index {
            0 => $body!("S3_4_C12_C12_0"),
            1 => $body!("S3_4_C12_C12_1"),
            2 => $body!("S3_4_C12_C12_2"),
            3 => $body!("S3_4_C12_C12_3"),
            4 => $body!("S3_4_C12_C12_4"),
            5 => $body!("S3_4_C12_C12_5"),
            6 => $body!("S3_4_C12_C12_6"),
            7 => $body!("S3_4_C12_C12_7"),
            8 => $body!("S3_4_C12_C13_0"),
            9 => $body!("S3_4_C12_C13_1"),
            10 => $body!("S3_4_C12_C13_2"),
            11 => $body!("S3_4_C12_C13_3"),
            12 => $body!("S3_4_C12_C13_4"),
            13 => $body!("S3_4_C12_C13_5"),
            14 => $body!("S3_4_C12_C13_6"),
            _ => $body!("S3_4_C12_C13_7"),
        }
    };
}

/// Reads list register `index` (< the count `init_this_cpu` returned).
pub fn read_list_register(index: usize) -> ListEntry {
    match FRAMES.get() {
        Some(Frames::V2 {
            hypervisor_interface,
            ..
        }) => list_register::from_v2(read32(
            hypervisor_interface + 0x100 + 4 * (index as u64 & 0x3f),
        )),
        _ => {
            macro_rules! read_lr {
                ($name:literal) => {
                    read_sysreg!($name)
                };
            }
            list_register::from_v3(lr_access!(index, read_lr))
        }
    }
}

/// Writes list register `index`.
pub fn write_list_register(index: usize, entry: &ListEntry) {
    match FRAMES.get() {
        Some(Frames::V2 {
            hypervisor_interface,
            ..
        }) => {
            write32(
                hypervisor_interface + 0x100 + 4 * (index as u64 & 0x3f),
                list_register::to_v2(entry),
            );
        }
        _ => {
            let value = list_register::to_v3(entry);
            macro_rules! write_lr {
                ($name:literal) => {
                    write_sysreg!($name, value)
                };
            }
            lr_access!(index, write_lr)
        }
    }
}

/// Turns the underflow maintenance interrupt on (more interrupts wait than list registers
/// hold) or off.
pub fn set_underflow_interrupt(enabled: bool) {
    let value = 1 | if enabled { 1 << 1 } else { 0 };
    match FRAMES.get() {
        Some(Frames::V2 {
            hypervisor_interface,
            ..
        }) => write32(*hypervisor_interface, value),
        _ => write_sysreg!("S3_4_C12_C11_0", u64::from(value)),
    }
}
