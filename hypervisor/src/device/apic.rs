//! An x86_64 partition's interrupt fabric, the counterpart of the virtual GIC: vectors posted
//! to each vCPU's local APIC, the virtual I/O APIC (`vdev ioapic`) whose pins devices drive,
//! and MSI messages (address 0xFEE0_0000 | APIC ID << 12, data = vector).
//!
//! The local APICs themselves (one virtual x2APIC per vCPU) live with the vCPU in arch code;
//! everything that interrupts a vCPU from elsewhere (a device, another vCPU) sets a bit in its
//! posted vectors here, and arch code moves them into the x2APIC's IRR before the next VM
//! entry. A guest's EOI of a vector a level-triggered I/O APIC pin sent comes back through
//! [`ApicBus::end_of_interrupt`] (the EOI broadcast). Arch code whose CPU ends interrupts
//! without the hypervisor (virtual-interrupt delivery) asks for an exit on the EOIs of
//! [`ApicBus::level_vectors`], re-reading them when [`ApicBus::level_generation`] changes.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;

use crate::device::ioapic::{self, Deliveries, Delivery, Ioapic};
use crate::device::{Effect, Effects, InterruptLines, MmioDevice};
use crate::exit::AccessWidth;

/// Vectors below this are exceptions: never posted.
pub const FIRST_VECTOR: u8 = 16;
/// MSI message addresses: 0xFEEx_xxxx.
const MSI_ADDRESS_BASE: u64 = 0xfee;
/// An APIC ID that means every vCPU (xAPIC physical broadcast, also in I/O APIC entries).
const BROADCAST: u8 = 0xff;

/// One partition's posted vectors and I/O APIC.
pub struct ApicBus {
    /// Per vCPU: 256 bits of vectors waiting to enter its local APIC's IRR.
    posted: Vec<[AtomicU64; 4]>,
    ioapic: Option<Mutex<Ioapic>>,
    /// Changes (before the deliveries they cause are posted) whenever the I/O APIC's
    /// redirection entries may have changed: a guest write to its frame, a reset.
    level_generation: AtomicU64,
}

impl core::fmt::Debug for ApicBus {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ApicBus")
            .field("vcpus", &self.posted.len())
            .field("ioapic", &self.ioapic.is_some())
            .finish()
    }
}

impl ApicBus {
    /// The fabric of a partition with `vcpus` vCPUs, with an I/O APIC or not.
    pub fn new(vcpus: usize, with_ioapic: bool) -> ApicBus {
        ApicBus {
            posted: (0..vcpus).map(|_| Default::default()).collect(),
            ioapic: with_ioapic.then(|| Mutex::new(Ioapic::new())),
            level_generation: AtomicU64::new(0),
        }
    }

    /// Whether the partition has an I/O APIC.
    pub fn has_ioapic(&self) -> bool {
        self.ioapic.is_some()
    }

    /// Posts fixed interrupt `vector` to vCPU `vcpu`; returns the vCPUs to kick (bit n =
    /// vCPU n; none for an absent vCPU or an exception vector).
    pub fn post(&self, vcpu: usize, vector: u8) -> u64 {
        if vector < FIRST_VECTOR || vcpu >= 64 {
            return 0;
        }
        let Some(word) = self
            .posted
            .get(vcpu)
            .and_then(|words| words.get(usize::from(vector >> 6)))
        else {
            return 0;
        };
        word.fetch_or(1 << (vector & 63), Ordering::AcqRel);
        1 << vcpu
    }

    /// Posts `vector` to every vCPU whose bit is set in `vcpus`.
    fn post_all(&self, vcpus: u64, vector: u8) -> u64 {
        (0..self.posted.len())
            .filter(|&v| v < 64 && vcpus & (1 << v) != 0)
            .fold(0, |wake, v| wake | self.post(v, vector))
    }

    /// Takes vCPU `vcpu`'s posted vectors (bit n of word w = vector 64w + n).
    pub fn take_posted(&self, vcpu: usize) -> [u64; 4] {
        let mut taken = [0; 4];
        if let Some(words) = self.posted.get(vcpu) {
            for (out, word) in taken.iter_mut().zip(words) {
                *out = word.swap(0, Ordering::AcqRel);
            }
        }
        taken
    }

    /// Whether vCPU `vcpu` has posted vectors not yet taken.
    pub fn has_posted(&self, vcpu: usize) -> bool {
        self.posted
            .get(vcpu)
            .is_some_and(|words| words.iter().any(|w| w.load(Ordering::Acquire) != 0))
    }

    /// The vCPUs an interrupt message addresses (bit n = vCPU n): physical mode names one
    /// APIC ID (= vCPU index) or broadcasts; logical mode (flat model) a bitmask of vCPUs,
    /// of which the lowest takes it (lowest-priority arbitration without priorities).
    fn targets(&self, destination: u8, logical: bool) -> u64 {
        let all = match self.posted.len() {
            n if n >= 64 => u64::MAX,
            n => (1u64 << n) - 1,
        };
        let mask = if logical {
            let mask = u64::from(destination) & all;
            mask & mask.wrapping_neg()
        } else if destination == BROADCAST {
            all
        } else {
            // An APIC ID beyond 63 names no vCPU (not the last one).
            1u64.checked_shl(u32::from(destination)).unwrap_or(0)
        };
        mask & all
    }

    fn deliver(&self, deliveries: &Deliveries) -> u64 {
        deliveries.iter().fold(
            0,
            |wake,
             Delivery {
                 vector,
                 destination,
                 logical,
             }| { wake | self.post_all(self.targets(destination, logical), vector) },
        )
    }

    /// An MSI/MSI-X message: address 0xFEEx_xxxx (destination ID bits 19:12, destination mode
    /// bit 2), data (vector bits 7:0, delivery mode 10:8: fixed or lowest priority). Anything
    /// else is dropped. Returns the vCPUs to kick.
    pub fn message(&self, address: u64, data: u32) -> u64 {
        let mode = (data >> 8) & 7;
        if address >> 20 != MSI_ADDRESS_BASE || mode > 1 {
            return 0;
        }
        let destination = (address >> 12) as u8;
        let logical = address & (1 << 2) != 0;
        self.post_all(self.targets(destination, logical), data as u8)
    }

    /// A guest ended the interrupt with `vector` (x2APIC EOI): the I/O APIC's level pins
    /// waiting for it may deliver again. Returns the vCPUs to kick.
    pub fn end_of_interrupt(&self, vector: u8) -> u64 {
        let Some(ioapic) = &self.ioapic else {
            return 0;
        };
        let mut out = Deliveries::default();
        {
            let mut ioapic = ioapic.lock();
            if !ioapic.waits_for_eoi(vector) {
                return 0;
            }
            ioapic.end_of_interrupt(vector, &mut out);
        }
        self.deliver(&out)
    }

    /// The vectors whose EOI the I/O APIC may wait for (bit n of word w = vector 64w + n):
    /// those of its level-triggered redirection entries, whatever their destination. A vCPU
    /// whose EOIs bypass the hypervisor must still exit on these.
    pub fn level_vectors(&self) -> [u64; 4] {
        self.ioapic
            .as_ref()
            .map_or([0; 4], |ioapic| ioapic.lock().level_vectors())
    }

    /// Changes whenever [`level_vectors`](Self::level_vectors) may have: read it before the
    /// vectors, and read the vectors again once it differs. It changes before any interrupt
    /// the change delivers is posted, so a vCPU that took a posted vector and then reads this
    /// sees the change.
    pub fn level_generation(&self) -> u64 {
        self.level_generation.load(Ordering::Acquire)
    }

    /// A partition restart: nothing posted, the I/O APIC masked.
    pub fn reset(&self) {
        for words in &self.posted {
            for word in words {
                word.store(0, Ordering::Release);
            }
        }
        if let Some(ioapic) = &self.ioapic {
            ioapic.lock().reset();
        }
        self.level_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The I/O APIC's register frame, for the partition's device table.
    pub fn ioapic_frame(self: &Arc<Self>) -> Option<Box<dyn MmioDevice>> {
        self.ioapic.as_ref()?;
        Some(Box::new(IoapicFrame { bus: self.clone() }))
    }

    /// Runs `operation` on the I/O APIC and posts what it delivers; returns the vCPUs to kick.
    fn with_ioapic(&self, operation: impl FnOnce(&mut Ioapic, &mut Deliveries)) -> u64 {
        let Some(ioapic) = &self.ioapic else {
            return 0;
        };
        let mut out = Deliveries::default();
        operation(&mut ioapic.lock(), &mut out);
        self.deliver(&out)
    }
}

impl InterruptLines for ApicBus {
    /// Drives I/O APIC pin `intid` (0-23); without an I/O APIC the line goes nowhere.
    fn set_line(&self, intid: u32, level: bool) -> u64 {
        self.with_ioapic(|ioapic, out| ioapic.set_line(intid, level, out))
    }
}

/// The I/O APIC's 4 KiB register frame.
struct IoapicFrame {
    bus: Arc<ApicBus>,
}

impl MmioDevice for IoapicFrame {
    fn name(&self) -> &'static str {
        "ioapic"
    }

    fn size(&self) -> u64 {
        ioapic::FRAME_SIZE
    }

    fn read(&mut self, _vcpu: usize, offset: u64, width: AccessWidth, _: &mut Effects) -> u64 {
        self.bus
            .ioapic
            .as_ref()
            .map_or(0, |ioapic| ioapic.lock().read(offset, width))
    }

    fn write(
        &mut self,
        _vcpu: usize,
        offset: u64,
        width: AccessWidth,
        value: u64,
        effects: &mut Effects,
    ) {
        let bus = &self.bus;
        let vcpus = bus.with_ioapic(|ioapic, out| {
            ioapic.write(offset, width, value, out);
            // Before the deliveries are posted (see `level_generation`).
            bus.level_generation.fetch_add(1, Ordering::AcqRel);
        });
        if vcpus != 0 {
            effects.push(Effect::Wake { vcpus });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(frame: &mut Box<dyn MmioDevice>, pin: u64, low: u32, high: u32) -> Effects {
        let mut effects = Effects::default();
        frame.write(0, 0, AccessWidth::Word, 0x11 + 2 * pin, &mut effects);
        frame.write(0, 0x10, AccessWidth::Word, u64::from(high), &mut effects);
        frame.write(0, 0, AccessWidth::Word, 0x10 + 2 * pin, &mut effects);
        frame.write(0, 0x10, AccessWidth::Word, u64::from(low), &mut effects);
        effects
    }

    #[test]
    fn posted_vectors_are_taken_once() {
        let bus = ApicBus::new(2, false);
        assert_eq!(bus.post(1, 0x41), 0b10);
        assert_eq!(bus.post(1, 0xc0), 0b10);
        assert!(bus.has_posted(1));
        assert!(!bus.has_posted(0));
        assert_eq!(bus.take_posted(1), [0, 1 << 1, 0, 1]);
        assert_eq!(bus.take_posted(1), [0; 4]);
        // Exception vectors and absent vCPUs are refused.
        assert_eq!(bus.post(0, 8), 0);
        assert_eq!(bus.post(2, 0x41), 0);
        assert_eq!(bus.post(usize::MAX, 0x41), 0);
    }

    #[test]
    fn msi_messages_name_vector_and_apic_id() {
        let bus = ApicBus::new(3, false);
        assert_eq!(bus.message(0xfee0_2000, 0x45), 0b100);
        assert_eq!(bus.take_posted(2)[1], 1 << 5);
        // Broadcast, logical (lowest of the mask), bad address, NMI delivery mode, absent ID.
        assert_eq!(bus.message(0xfee0_0000 | (0xff << 12), 0x50), 0b111);
        assert_eq!(bus.message(0xfee0_0004 | (0b110 << 12), 0x50), 0b010);
        assert_eq!(bus.message(0x0802_0040, 0x50), 0);
        assert_eq!(bus.message(0xfee0_0000, 0x450), 0);
        assert_eq!(bus.message(0xfee0_0000 | (7 << 12), 0x50), 0);
    }

    #[test]
    fn ioapic_level_pin_reaches_its_vcpu_and_repeats_after_eoi() {
        let bus = Arc::new(ApicBus::new(2, true));
        let mut frame = bus.ioapic_frame().unwrap();
        // Pin 10: vector 0x31, level, to vCPU 1.
        assert_eq!(program(&mut frame, 10, 0x8031, 1 << 24), Effects::default());
        assert_eq!(bus.set_line(10, true), 0b10);
        assert_eq!(bus.take_posted(1)[0], 1 << 0x31);
        // Still asserted: again only after EOI.
        assert_eq!(bus.set_line(10, true), 0);
        assert_eq!(bus.end_of_interrupt(0x32), 0);
        assert_eq!(bus.end_of_interrupt(0x31), 0b10);
        bus.set_line(10, false);
        assert_eq!(bus.end_of_interrupt(0x31), 0);
        // Unmasking an asserted pin from the frame wakes through an effect.
        program(&mut frame, 11, 0x1_8033, 0);
        bus.set_line(11, true);
        let mut effects = program(&mut frame, 11, 0x8033, 0);
        assert_eq!(
            effects.drain().collect::<Vec<_>>(),
            [Effect::Wake { vcpus: 1 }]
        );
        // A restart masks the pins again.
        bus.reset();
        assert_eq!(bus.set_line(11, true), 0);
        assert!(!bus.has_posted(0));
    }

    #[test]
    fn level_vectors_follow_the_frame_with_a_generation() {
        let bus = Arc::new(ApicBus::new(2, true));
        let mut frame = bus.ioapic_frame().unwrap();
        let before = bus.level_generation();
        assert_eq!(bus.level_vectors(), [0; 4]);
        program(&mut frame, 10, 0x8031, 1 << 24);
        program(&mut frame, 11, 0x0045, 0);
        let programmed = bus.level_generation();
        assert_ne!(programmed, before);
        assert_eq!(bus.level_vectors(), [1 << 0x31, 0, 0, 0]);
        // Lines and EOIs change no entry's trigger or vector.
        bus.set_line(10, true);
        bus.end_of_interrupt(0x31);
        assert_eq!(bus.level_generation(), programmed);
        bus.reset();
        assert_ne!(bus.level_generation(), programmed);
        assert_eq!(bus.level_vectors(), [0; 4]);
        assert_eq!(ApicBus::new(1, false).level_vectors(), [0; 4]);
    }

    #[test]
    fn without_ioapic_lines_go_nowhere() {
        let bus = Arc::new(ApicBus::new(1, false));
        assert!(bus.ioapic_frame().is_none());
        assert_eq!(bus.set_line(3, true), 0);
        assert_eq!(bus.end_of_interrupt(0x30), 0);
    }
}
