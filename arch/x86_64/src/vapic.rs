//! The virtual-APIC page of a vCPU running with virtual-interrupt delivery (pure logic,
//! host-tested), and the guest-interrupt status (RVI, SVI) that goes with it.
//!
//! With "virtualize x2APIC mode", "APIC-register virtualization" and "virtual-interrupt
//! delivery" the CPU keeps the vCPU's IRR, ISR, TPR and PPR in this page and RVI/SVI in the
//! VMCS: it delivers a requested vector as soon as the guest can take it and ends it at the
//! guest's EOI, both without a VM exit. The hypervisor requests vectors by setting their IRR
//! bit here and raising RVI ([`with_request`]); it mirrors the registers its
//! [`VirtualX2apic`] model emulates (ID, version, LDR, SVR, ESR, LVTs, timer initial count and
//! divide configuration) into the page after each write, so that the guest reads them without
//! exits (the MSR bitmap, [`crate::msr_bitmap::APIC_READS`]).

use alloc::alloc::{Layout, alloc_zeroed};
use core::ptr::NonNull;

use crate::vx2apic::{VirtualX2apic, msr};

/// Byte offsets of registers in the page (the xAPIC MMIO layout: x2APIC MSR 0x8XY is at
/// offset 0xXY0).
const TPR: usize = 0x80;
const IRR: usize = 0x200;
const ISR: usize = 0x100;
/// The registers the model emulates and the page mirrors.
const MIRRORED: [u32; 12] = [
    msr::ID,
    msr::VERSION,
    msr::LDR,
    msr::SVR,
    msr::ESR,
    msr::LVT_TIMER,
    0x833,
    0x834,
    0x835,
    0x836,
    msr::LVT_ERROR,
    msr::TMICT,
];
const WORDS: usize = 1024;

/// The byte offset of x2APIC register `msr` in the page.
fn offset(msr: u32) -> usize {
    ((msr & 0xff) as usize) << 4
}

/// One vCPU's 4 KiB virtual-APIC page (identity-mapped heap, never freed: the CPU reads it
/// for as long as the vCPU runs).
#[derive(Debug)]
pub struct VirtualApicPage {
    words: NonNull<u32>,
}

impl VirtualApicPage {
    /// Allocates a zeroed page; `None` without memory.
    pub fn new() -> Option<VirtualApicPage> {
        let layout = Layout::from_size_align(4096, 4096).ok()?;
        // SAFETY: non-zero size; the page is never freed (see the type).
        let page = unsafe { alloc_zeroed(layout) };
        NonNull::new(page.cast::<u32>()).map(|words| VirtualApicPage { words })
    }

    /// Its address, which is its physical address in Bulkhead's identity-mapped heap.
    pub fn address(&self) -> u64 {
        self.words.as_ptr() as u64
    }

    fn read(&self, byte: usize) -> u32 {
        let index = (byte / 4).min(WORDS - 1);
        // SAFETY: `index` lies inside the 4 KiB page; volatile because the CPU changes the
        // page while the guest runs.
        unsafe { self.words.as_ptr().add(index).read_volatile() }
    }

    fn write(&self, byte: usize, value: u32) {
        let index = (byte / 4).min(WORDS - 1);
        // SAFETY: as in `read`; the guest does not run while the hypervisor writes (same CPU).
        unsafe { self.words.as_ptr().add(index).write_volatile(value) }
    }

    /// Everything zero, as for a vCPU after reset (TPR 0, nothing requested or in service).
    pub fn clear(&self) {
        for index in 0..WORDS {
            self.write(index * 4, 0);
        }
    }

    /// Sets `vector`'s IRR bit (the caller raises RVI with [`with_request`]).
    pub fn request(&self, vector: u8) {
        let at = IRR + usize::from(vector / 32) * 0x10;
        self.write(at, self.read(at) | (1 << (vector % 32)));
    }

    /// Sets the IRR bits of `vectors` (bit n of word w = vector 64w + n) and returns the
    /// guest-interrupt status with RVI raised to the highest of them.
    pub fn request_all(&self, vectors: [u64; 4], mut status: u16) -> u16 {
        for (word, mut bits) in (0u8..4).zip(vectors) {
            while bits != 0 {
                let vector = word * 64 + bits.trailing_zeros() as u8;
                self.request(vector);
                status = with_request(status, vector);
                bits &= bits - 1;
            }
        }
        status
    }

    /// The virtual TPR.
    pub fn tpr(&self) -> u8 {
        self.read(TPR) as u8
    }

    /// Whether `vector`'s bit is set in the IRR (`false`) or ISR (`true`) of the page.
    pub fn has(&self, vector: u8, in_service: bool) -> bool {
        let base = if in_service { ISR } else { IRR };
        self.read(base + usize::from(vector / 32) * 0x10) & (1 << (vector % 32)) != 0
    }

    /// Copies the registers `apic` emulates into the page (after a reset or an emulated
    /// write), where the guest's RDMSRs find them.
    pub fn mirror(&self, apic: &VirtualX2apic) {
        for register in MIRRORED.into_iter().chain([msr::TDCR]) {
            let value = apic.read(register, 0).unwrap_or(0);
            self.write(offset(register), value as u32);
            self.write(offset(register) + 4, (value >> 32) as u32);
        }
    }
}

/// The guest-interrupt status (VMCS field: RVI bits 7:0, SVI bits 15:8) once `vector` is
/// requested: RVI is the highest requested vector.
pub fn with_request(status: u16, vector: u8) -> u16 {
    let rvi = (status as u8).max(vector);
    (status & 0xff00) | u16::from(rvi)
}

/// Whether the CPU would deliver a virtual interrupt to a guest with interrupts enabled:
/// RVI's priority class above that of the virtual PPR (from the virtual TPR and SVI).
pub fn deliverable(status: u16, tpr: u8) -> bool {
    let (rvi, svi) = (status as u8, (status >> 8) as u8);
    let ppr = if tpr >> 4 >= svi >> 4 {
        tpr
    } else {
        svi & 0xf0
    };
    rvi >> 4 > ppr >> 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_raise_rvi_and_set_irr() {
        let page = VirtualApicPage::new().unwrap();
        assert_eq!(page.address() % 4096, 0);
        let status = page.request_all([0, (1 << 1) | (1 << 8), 0, 1 << 63], 0x3000);
        assert_eq!(status, 0x30ff);
        assert!(page.has(0x41, false) && page.has(0x48, false) && page.has(0xff, false));
        assert!(!page.has(0x41, true) && !page.has(0x40, false));
        page.clear();
        assert!(!page.has(0x41, false));
        assert_eq!(with_request(0x0050, 0x41), 0x0050);
        assert_eq!(with_request(0x2241, 0x60), 0x2260);
    }

    #[test]
    fn delivery_follows_tpr_and_in_service_class() {
        assert!(!deliverable(0, 0));
        assert!(deliverable(0x0031, 0));
        assert!(!deliverable(0x0031, 0x30));
        assert!(deliverable(0x0041, 0x30));
        // In service 0x45: 0x48 waits for its EOI, 0x51 preempts.
        assert!(!deliverable(0x4548, 0));
        assert!(deliverable(0x4551, 0));
    }

    #[test]
    fn mirror_copies_the_emulated_registers() {
        let page = VirtualApicPage::new().unwrap();
        let mut apic = VirtualX2apic::new(3);
        apic.write(msr::SVR, 0x1ff, 0).unwrap();
        apic.write(msr::TDCR, 0xb, 0).unwrap();
        apic.write(msr::LVT_TIMER, 0x20, 0).unwrap();
        apic.write(msr::TMICT, 500, 0).unwrap();
        page.mirror(&apic);
        for register in [
            msr::ID,
            msr::VERSION,
            msr::LDR,
            msr::SVR,
            msr::LVT_TIMER,
            0x834,
        ] {
            assert_eq!(
                u64::from(page.read(offset(register))),
                apic.read(register, 0).unwrap(),
                "{register:#x}"
            );
        }
        assert_eq!(page.read(offset(msr::TMICT)), 500);
        assert_eq!(page.read(offset(msr::TDCR)), 0xb);
        assert_eq!(page.read(offset(msr::ID) + 4), 0);
    }
}
