//! Virtual devices and the per-partition table that finds one by guest-physical address.
//!
//! Devices see offsets inside their frame and answer with values; side effects that leave
//! the device (console bytes, interrupts) go into an [`Effects`] list the caller applies.
//! Unknown registers read as zero and ignore writes.

pub mod apic;
pub mod gic;
pub mod ioapic;
pub mod pl011;
pub mod port;
pub mod uart16550;

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::addr::{GuestPhysAddr, HostPhysAddr};
use crate::exit::AccessWidth;

/// Names one shared-memory device of one partition (the registry's notion of a client's
/// device): the partition's index and the device's index among its shared-memory devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId {
    /// Partition index (configuration order).
    pub partition: u16,
    /// Index among that partition's shared-memory devices ([`SignalTarget`]s).
    pub device: u16,
}

/// A side effect a device asks for; the partition applies it after the access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// One byte for the partition's console.
    ConsoleByte(u8),
    /// Set a level-sensitive interrupt line of this partition's GIC (an SPI INTID).
    SetLevel {
        /// INTID.
        intid: u32,
        /// Asserted or not.
        level: bool,
    },
    /// An edge on an interrupt of this partition's GIC (an SPI INTID).
    Raise {
        /// INTID.
        intid: u32,
    },
    /// An MSI message on an x86 partition's APIC bus (address 0xFEEx_xxxx, data with the
    /// vector): see [`apic::ApicBus::message`].
    Message {
        /// Message address.
        address: u64,
        /// Message data.
        data: u32,
    },
    /// Map host memory into this partition's stage 2 (normal memory, read-write, never
    /// executable). Both addresses and the size are page-aligned.
    MapMemory {
        /// Where the guest sees it.
        guest: GuestPhysAddr,
        /// The host memory.
        host: HostPhysAddr,
        /// Bytes.
        size: u64,
    },
    /// Remove a mapping made by [`Effect::MapMemory`] (the same range).
    UnmapMemory {
        /// Where the guest saw it.
        guest: GuestPhysAddr,
        /// Bytes.
        size: u64,
    },
    /// Kick the CPUs of these vCPUs of this partition (bit n = vCPU n): a device that set
    /// one of its lines directly ([`InterruptLines`]) made something deliverable to them.
    Wake {
        /// Bitmask of vCPUs.
        vcpus: u64,
    },
    /// Tell a shared-memory device (possibly of another partition) that its state changed
    /// (a notify or a membership change): its [`SignalTarget::signalled`] runs.
    Signal(ClientId),
    /// A shared-memory region was released: once the partition's second stage no longer
    /// maps it (the unmaps pushed before this run first), zero its memory outside the
    /// registry's lock and return it to the pool ([`crate::shmem::registry::scrub`]).
    Scrub,
}

/// A partition's interrupt lines, for devices whose line level is computed under their own
/// lock and must reach the interrupt controller in that same order: two CPUs updating one
/// line through deferred effects could apply their levels out of order and lose a wake-up.
pub trait InterruptLines: Send + Sync {
    /// Sets level-sensitive line `intid`; returns the vCPUs to kick (bit n = vCPU n).
    fn set_line(&self, intid: u32, level: bool) -> u64;
}

/// A shared-memory device that other devices can signal through the registry.
pub trait SignalTarget: Send + Sync {
    /// Its state changed: recompute its interrupt (push `SetLevel`/`Raise` effects).
    fn signalled(&self, effects: &mut Effects);
    /// Its partition stopped or restarts: give up every attachment (peers see them leave).
    fn release(&self, effects: &mut Effects) {
        let _ = effects;
    }
}

/// Effects kept inline before [`Effects`] spills to the heap: one access rarely asks for more,
/// and the trap path should not allocate.
const INLINE_EFFECTS: usize = 8;

/// Side effects collected during one access, in order. The first few live inline.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effects {
    inline: [Option<Effect>; INLINE_EFFECTS],
    len: usize,
    spilled: Vec<Effect>,
    /// A second-stage effect was pushed and not taken yet.
    memory: bool,
}

impl Effects {
    /// Records an effect.
    pub fn push(&mut self, effect: Effect) {
        self.memory |= matches!(
            effect,
            Effect::MapMemory { .. } | Effect::UnmapMemory { .. }
        );
        match self.inline.get_mut(self.len) {
            Some(slot) => {
                *slot = Some(effect);
                self.len += 1;
            }
            None => self.spilled.push(effect),
        }
    }

    /// Whether no effect was pushed (since the last drain).
    pub fn is_empty(&self) -> bool {
        self.len == 0 && self.spilled.is_empty()
    }

    /// Takes the second-stage effects ([`Effect::MapMemory`], [`Effect::UnmapMemory`]) out,
    /// in order, handing each to `each`; the others stay for [`Effects::drain`]. Lets the
    /// caller apply map changes while it still holds the lock that decided them.
    pub fn take_memory(&mut self, mut each: impl FnMut(Effect)) {
        if !core::mem::take(&mut self.memory) {
            return;
        }
        let is_memory = |effect: &Effect| {
            matches!(
                effect,
                Effect::MapMemory { .. } | Effect::UnmapMemory { .. }
            )
        };
        for slot in self.inline.iter_mut().take(self.len) {
            if slot.as_ref().is_some_and(is_memory)
                && let Some(effect) = slot.take()
            {
                each(effect);
            }
        }
        if self.spilled.iter().any(is_memory) {
            self.spilled.retain(|effect| {
                if is_memory(effect) {
                    each(*effect);
                    false
                } else {
                    true
                }
            });
        }
    }

    /// Takes the recorded effects, in the order they were pushed.
    pub fn drain(&mut self) -> impl Iterator<Item = Effect> + '_ {
        let len = core::mem::take(&mut self.len);
        self.memory = false;
        let inline = self.inline.iter_mut().take(len).filter_map(Option::take);
        inline.chain(self.spilled.drain(..))
    }
}

/// A memory-mapped virtual device.
pub trait MmioDevice: Send {
    /// Short name for reports.
    fn name(&self) -> &'static str;
    /// Size of the device's frame in bytes.
    fn size(&self) -> u64;
    /// A load by vCPU `vcpu` (the partition's index of the accessing vCPU) at `offset`
    /// (< size) of `width`.
    fn read(&mut self, vcpu: usize, offset: u64, width: AccessWidth, effects: &mut Effects) -> u64;
    /// A store by vCPU `vcpu` at `offset` (< size) of `width`.
    fn write(
        &mut self,
        vcpu: usize,
        offset: u64,
        width: AccessWidth,
        value: u64,
        effects: &mut Effects,
    );
    /// Whether the device answers at `offset` (< size). A device with holes (a window where
    /// only some pages are registers) says no for them, and the access is then treated as
    /// outside the partition's map.
    fn claims(&self, offset: u64) -> bool {
        let _ = offset;
        true
    }
}

/// Why an access found no device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DispatchError {
    /// No device covers the address.
    NoDevice,
    /// The access starts inside a device but runs past its end.
    Straddles,
}

/// The devices of one partition, sorted by base address, non-overlapping.
#[derive(Default)]
pub struct DeviceTable {
    /// (base, end, device), sorted by base; the end is kept so that a lookup makes no call.
    entries: Vec<(GuestPhysAddr, u64, Box<dyn MmioDevice>)>,
    /// Index of the entry the last access hit (checked first).
    last: usize,
}

impl DeviceTable {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            entries: Vec::new(),
            last: 0,
        }
    }

    /// Adds a device at `base`; refuses (returning it) one that would overlap another.
    pub fn insert(
        &mut self,
        base: GuestPhysAddr,
        device: Box<dyn MmioDevice>,
    ) -> Result<(), Box<dyn MmioDevice>> {
        let Some(end) = base.checked_add(device.size()) else {
            return Err(device);
        };
        let overlaps = self.entries.iter().any(|(other_base, other_end, _)| {
            base.as_u64() < *other_end && other_base.as_u64() < end.as_u64()
        });
        if overlaps || device.size() == 0 {
            return Err(device);
        }
        let at = self.entries.partition_point(|(b, ..)| *b < base);
        self.entries.insert(at, (base, end.as_u64(), device));
        Ok(())
    }

    fn find(
        &mut self,
        address: GuestPhysAddr,
        width: AccessWidth,
    ) -> Result<(&mut dyn MmioDevice, u64), DispatchError> {
        // The device hit last (a guest driving one device hits it again and again), else a
        // binary search.
        let at = match self.entries.get(self.last) {
            Some((base, end, _)) if *base <= address && address.as_u64() < *end => self.last,
            _ => {
                let at = self
                    .entries
                    .partition_point(|(b, ..)| *b <= address)
                    .checked_sub(1)
                    .ok_or(DispatchError::NoDevice)?;
                self.last = at;
                at
            }
        };
        let (base, end, device) = self.entries.get_mut(at).ok_or(DispatchError::NoDevice)?;
        let offset = address.offset_from(*base).ok_or(DispatchError::NoDevice)?;
        if address.as_u64() >= *end || !device.claims(offset) {
            return Err(DispatchError::NoDevice);
        }
        if address.as_u64().saturating_add(width.bytes()) > *end {
            return Err(DispatchError::Straddles);
        }
        Ok((device.as_mut(), offset))
    }

    /// Dispatches a load by vCPU `vcpu`.
    pub fn read(
        &mut self,
        vcpu: usize,
        address: GuestPhysAddr,
        width: AccessWidth,
        effects: &mut Effects,
    ) -> Result<u64, DispatchError> {
        let (device, offset) = self.find(address, width)?;
        Ok(device.read(vcpu, offset, width, effects) & width.mask())
    }

    /// Dispatches a store by vCPU `vcpu`.
    pub fn write(
        &mut self,
        vcpu: usize,
        address: GuestPhysAddr,
        width: AccessWidth,
        value: u64,
        effects: &mut Effects,
    ) -> Result<(), DispatchError> {
        let (device, offset) = self.find(address, width)?;
        device.write(vcpu, offset, width, value & width.mask(), effects);
        Ok(())
    }

    /// The devices, as (base, name, size), in address order.
    pub fn describe(&self) -> impl Iterator<Item = (GuestPhysAddr, &'static str, u64)> + '_ {
        self.entries
            .iter()
            .map(|(base, _, device)| (*base, device.name(), device.size()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 16-byte scratch device.
    struct Scratch([u8; 16]);

    impl MmioDevice for Scratch {
        fn name(&self) -> &'static str {
            "scratch"
        }
        fn size(&self) -> u64 {
            16
        }
        fn read(
            &mut self,
            _vcpu: usize,
            offset: u64,
            _width: AccessWidth,
            _effects: &mut Effects,
        ) -> u64 {
            u64::from(self.0[offset as usize])
        }
        fn write(
            &mut self,
            _vcpu: usize,
            offset: u64,
            _width: AccessWidth,
            value: u64,
            effects: &mut Effects,
        ) {
            self.0[offset as usize] = value as u8;
            effects.push(Effect::Raise { intid: 40 });
        }
    }

    #[test]
    fn dispatch_by_address() {
        let mut table = DeviceTable::new();
        assert!(
            table
                .insert(GuestPhysAddr::new(0x1000), Box::new(Scratch([0; 16])))
                .is_ok()
        );
        assert!(
            table
                .insert(GuestPhysAddr::new(0x100f), Box::new(Scratch([0; 16])))
                .is_err()
        );
        assert!(
            table
                .insert(GuestPhysAddr::new(0x0ff8), Box::new(Scratch([0; 16])))
                .is_err()
        );
        assert!(
            table
                .insert(GuestPhysAddr::new(0x2000), Box::new(Scratch([0; 16])))
                .is_ok()
        );
        let mut effects = Effects::default();
        table
            .write(
                0,
                GuestPhysAddr::new(0x2003),
                AccessWidth::Byte,
                0x1ab,
                &mut effects,
            )
            .unwrap();
        assert_eq!(
            table.read(
                0,
                GuestPhysAddr::new(0x2003),
                AccessWidth::Byte,
                &mut effects
            ),
            Ok(0xab)
        );
        assert_eq!(
            effects.drain().collect::<Vec<_>>(),
            [Effect::Raise { intid: 40 }]
        );
        assert_eq!(
            table.read(
                0,
                GuestPhysAddr::new(0x1010),
                AccessWidth::Byte,
                &mut effects
            ),
            Err(DispatchError::NoDevice)
        );
        assert_eq!(
            table.read(
                0,
                GuestPhysAddr::new(0x0fff),
                AccessWidth::Byte,
                &mut effects
            ),
            Err(DispatchError::NoDevice)
        );
        assert_eq!(
            table.read(
                0,
                GuestPhysAddr::new(0x100c),
                AccessWidth::Double,
                &mut effects
            ),
            Err(DispatchError::Straddles)
        );
        assert_eq!(
            table
                .describe()
                .map(|(b, ..)| b.as_u64())
                .collect::<Vec<_>>(),
            [0x1000, 0x2000]
        );
    }

    #[test]
    fn effects_keep_order_past_the_inline_part() {
        let mut effects = Effects::default();
        for byte in 0..20u8 {
            effects.push(Effect::ConsoleByte(byte));
        }
        let drained: Vec<Effect> = effects.drain().collect();
        assert_eq!(
            drained,
            (0..20u8).map(Effect::ConsoleByte).collect::<Vec<_>>()
        );
        assert_eq!(effects.drain().count(), 0);
        effects.push(Effect::Raise { intid: 40 });
        assert_eq!(
            effects.drain().collect::<Vec<_>>(),
            [Effect::Raise { intid: 40 }]
        );
    }

    #[test]
    fn width_masks() {
        assert_eq!(AccessWidth::Half.mask(), 0xffff);
        assert_eq!(AccessWidth::Double.mask(), u64::MAX);
        assert_eq!(AccessWidth::try_from(4), Ok(AccessWidth::Word));
        assert_eq!(AccessWidth::try_from(3), Err(3));
    }
}
