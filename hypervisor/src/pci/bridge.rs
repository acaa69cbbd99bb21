//! The per-partition virtual PCI host bridge: ECAM configuration space and both memory windows, BAR placement and decoding, INTx and MSI-X delivery.
//!
//! Firmware placement: when a function is added, each BAR gets the first naturally aligned
//! (and at least page-aligned) free place from the start of its window: 64-bit prefetchable
//! BARs in the 64-bit window, all others in the 32-bit window. Command starts at 0 (no
//! decoding), as after reset; the device tree marks the bridge `linux,pci-probe-only`, so Linux
//! keeps these addresses.
//!
//! BAR moves: the guest may write any address, but a base that would make the BAR overlap the
//! partition's RAM, the ECAM, the v2m frame or another BAR, or that does not lie entirely inside
//! a window (a 32-bit BAR: the 32-bit window; a 64-bit BAR: either) is REFUSED: the register
//! keeps its old value (the guest reads back where the BAR still is). Writing all-ones (BAR
//! sizing) is always accepted: the register then reads back the size mask with the type bits
//! and the BAR decodes nothing until an address is written back. With memory decoding on, an
//! accepted move of a [`BarKind::Memory`] BAR unmaps the old place and maps the new one; turning
//! decoding on maps every such BAR, turning it off unmaps them.
//!
//! Window accesses that hit no decoding BAR read all-ones and drop writes (master abort), as do
//! configuration accesses to an absent device, a function other than 0, or another bus.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

use super::config_space::{Bar, ConfigSpace, FUNCTION_REGISTERS, Outcome};
use super::msix::{self, Msix};
use super::split;
use super::{BAR_COUNT, BarKind, BarSpec, BarWidth, Context, GuestPci, PciFunction, SLOTS};
use crate::addr::{GuestPhysAddr, HostPhysAddr, PAGE_SIZE};
use crate::device::{Effect, Effects};
use crate::exit::AccessWidth;
use crate::fast::{FastKind, FastWindow, FastWindows};

/// Why a function could not be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciError {
    /// Slot number 32 or above.
    SlotOutOfRange(u8),
    /// The slot already holds a function.
    SlotTaken(u8),
    /// BAR `n` is malformed: size not a power of two or too small, a 64-bit BAR in register
    /// 5 or followed by another BAR, memory not page-aligned or larger than the BAR.
    InvalidBar(u8),
    /// The MSI-X capability names a missing or memory-backed BAR, does not fit, or has 0 or
    /// more than 2048 vectors.
    InvalidMsix,
    /// An interrupt pin above 4 (INTD).
    InvalidPin(u8),
    /// BAR `n` finds no free place in its window.
    NoRoom(u8),
}

impl fmt::Display for PciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PciError::SlotOutOfRange(slot) => write!(f, "PCI slot {slot} out of range (0-31)"),
            PciError::SlotTaken(slot) => write!(f, "PCI slot {slot} already used"),
            PciError::InvalidBar(bar) => write!(f, "BAR{bar} malformed"),
            PciError::InvalidMsix => write!(f, "MSI-X capability malformed"),
            PciError::InvalidPin(pin) => write!(f, "interrupt pin {pin} out of range"),
            PciError::NoRoom(bar) => write!(f, "no room for BAR{bar} in its PCI window"),
        }
    }
}

/// The three guest-physical frames the bridge answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    Ecam,
    Mmio32,
    Mmio64,
}

/// A host-memory mapping a decoding [`BarKind::Memory`] BAR asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mapping {
    guest: u64,
    host: HostPhysAddr,
    size: u64,
}

struct Slot {
    function: Box<dyn PciFunction>,
    config: ConfigSpace,
    /// The BARs as firmware placed them, for a reset.
    firmware: [Option<Bar>; BAR_COUNT],
    /// Whether it drove its INTx pin when the lines were last recomputed.
    intx_asserted: bool,
}

/// A BAR that decodes: guest-physical `[start, end)` of BAR `bar` of slot `slot`.
#[derive(Clone, Copy, Debug)]
struct Decoder {
    start: u64,
    end: u64,
    slot: usize,
    bar: usize,
}

/// The bridge's state; shared by its frames behind one lock.
pub(crate) struct Bridge {
    layout: GuestPci,
    ram: Vec<(u64, u64)>,
    slots: Vec<Option<Slot>>,
    intx_levels: [bool; 4],
    /// Per INTx line, the slots asserting it (bit n = slot n): a line's level is one test,
    /// not a walk over every slot.
    intx_sources: [u64; 4],
    /// The BARs that decode now, as (start, end, slot, BAR): recomputed whenever
    /// configuration space changes, so that a BAR access does not search every slot.
    decoders: Vec<Decoder>,
    /// Where INTx levels are set directly (see [`crate::device::InterruptLines`]).
    pub(crate) lines: Option<alloc::sync::Arc<dyn crate::device::InterruptLines>>,
    /// The partition's fast-lane table: the reserved tails of decoding BARs
    /// ([`PciFunction::reserved_from`]), republished with the decoders.
    pub(crate) fast: Option<alloc::sync::Arc<FastWindows>>,
    /// Per slot, its doorbell register on the fast lane: (BAR, offset, index in the table's
    /// doorbells).
    fast_doorbells: [Option<(u8, u64, usize)>; SLOTS as usize],
}

impl Bridge {
    pub(crate) fn new(layout: GuestPci, ram: &[(u64, u64)]) -> Self {
        Self {
            layout,
            ram: ram.to_vec(),
            slots: (0..SLOTS).map(|_| None).collect(),
            intx_levels: [false; 4],
            intx_sources: [0; 4],
            decoders: Vec::new(),
            lines: None,
            fast: None,
            fast_doorbells: [None; SLOTS as usize],
        }
    }

    /// Recomputes [`Bridge::decoders`] (after any change to BARs or command registers).
    fn refresh_decoders(&mut self) {
        self.decoders.clear();
        for (number, slot) in self.slots.iter().enumerate() {
            let Some(slot) = slot.as_ref().filter(|s| s.config.memory_enabled()) else {
                continue;
            };
            for (index, bar) in slot.config.bars.iter().enumerate() {
                let Some(bar) = bar else { continue };
                let Some(base) = bar.decoded() else { continue };
                self.decoders.push(Decoder {
                    start: base,
                    end: base.saturating_add(bar.spec.size),
                    slot: number,
                    bar: index,
                });
            }
        }
        self.refresh_fast_windows();
    }

    /// Publishes the reserved tails of the decoding, trapped BARs (not those holding MSI-X
    /// structures) to the partition's fast lane.
    pub(crate) fn refresh_fast_windows(&self) {
        let Some(fast) = &self.fast else {
            return;
        };
        let slots = &self.slots;
        let doorbells = self.decoders.iter().filter_map(|decoder| {
            let &(bar, offset, index) = self.fast_doorbells.get(decoder.slot)?.as_ref()?;
            let start = decoder.start.checked_add(offset)?;
            let end = start.checked_add(4)?;
            (usize::from(bar) == decoder.bar && end <= decoder.end).then_some(FastWindow {
                start,
                end,
                kind: FastKind::Doorbell(index),
            })
        });
        let reserved = self.decoders.iter().filter_map(|decoder| {
            let slot = slots.get(decoder.slot)?.as_ref()?;
            let bar = u8::try_from(decoder.bar).ok()?;
            let spec = slot.config.bar(decoder.bar)?.spec;
            let msix = slot.function.msix();
            let holds_msix = msix.is_some_and(|m| m.table_bar == bar || m.pba_bar == bar);
            if spec.kind != BarKind::Mmio || holds_msix {
                return None;
            }
            let from = slot.function.reserved_from(bar)?;
            let start = decoder.start.checked_add(from)?;
            (start < decoder.end).then_some(FastWindow {
                start,
                end: decoder.end,
                kind: FastKind::Reserved,
            })
        });
        fast.publish(doorbells.chain(reserved));
    }

    /// The partition's fast-lane table, made once its functions are in place: it may ring
    /// their doorbell registers ([`PciFunction::fast_doorbell`]) and is republished whenever
    /// the decoders change.
    pub(crate) fn enable_fast_lane(&mut self) -> alloc::sync::Arc<FastWindows> {
        let mut doorbells = Vec::new();
        for (number, slot) in self.slots.iter().enumerate() {
            let Some((bar, offset, doorbell)) =
                slot.as_ref().and_then(|slot| slot.function.fast_doorbell())
            else {
                continue;
            };
            if let Some(entry) = self.fast_doorbells.get_mut(number) {
                *entry = Some((bar, offset, doorbells.len()));
                doorbells.push(doorbell);
            }
        }
        let fast = alloc::sync::Arc::new(FastWindows::new(doorbells));
        self.fast = Some(alloc::sync::Arc::clone(&fast));
        self.refresh_fast_windows();
        fast
    }

    pub(crate) fn add_function(
        &mut self,
        number: u8,
        function: Box<dyn PciFunction>,
    ) -> Result<(), PciError> {
        let index = usize::from(number);
        match self.slots.get(index) {
            None => return Err(PciError::SlotOutOfRange(number)),
            Some(Some(_)) => return Err(PciError::SlotTaken(number)),
            Some(None) => {}
        }
        let specs = function.bars();
        validate_bars(&specs)?;
        let pin = function.interrupt_pin();
        if pin > 4 {
            return Err(PciError::InvalidPin(pin));
        }
        let msix_spec = function.msix();
        if let Some(spec) = &msix_spec {
            validate_msix(spec, &specs)?;
        }
        // BARs start out probing so they conflict with nothing until placed.
        let bars = specs.map(|spec| {
            spec.map(|spec| {
                let mut bar = Bar::new(spec, 0);
                bar.probing = [true; 2];
                bar
            })
        });
        let mut config = ConfigSpace::new(function.identity(), pin, bars, msix_spec.map(Msix::new));
        if self.layout.apic {
            // PC firmware leaves the I/O APIC pin of the function's INTx in Interrupt Line
            // (0xff: no interrupt).
            let line = self
                .layout
                .intx_intid(number, pin)
                .and_then(|pin| u8::try_from(pin).ok())
                .unwrap_or(0xff);
            config.set_firmware_line(line);
        }
        if let Some(entry) = self.slots.get_mut(index) {
            *entry = Some(Slot {
                function,
                config,
                firmware: [None; BAR_COUNT],
                intx_asserted: false,
            });
        }
        for (bar, spec) in specs.iter().enumerate() {
            let Some(spec) = spec else { continue };
            let window = match (spec.width, spec.prefetchable) {
                (BarWidth::Bits64, true) => self.layout.mmio64,
                _ => self.layout.mmio32,
            };
            let Some(base) = self.find_place(spec.size, window, (index, bar)) else {
                if let Some(entry) = self.slots.get_mut(index) {
                    *entry = None;
                }
                return Err(PciError::NoRoom(bar as u8));
            };
            if let Some(placed) = self.bar_mut(index, bar) {
                *placed = Bar::new(*spec, base);
            }
        }
        if let Some(Some(slot)) = self.slots.get_mut(index) {
            slot.firmware = slot.config.bars;
        }
        self.refresh_decoders();
        Ok(())
    }

    pub(crate) fn layout(&self) -> GuestPci {
        self.layout
    }

    /// Where BAR `bar` of slot `slot` decodes now.
    pub(crate) fn bar_address(&self, slot: usize, bar: usize) -> Option<u64> {
        self.slot(slot)?.config.bar(bar)?.decoded()
    }

    /// Every function back to its reset state; mappings removed, INTx lines lowered.
    pub(crate) fn reset(&mut self, effects: &mut Effects) {
        for number in 0..self.slots.len() {
            for old in self.mappings(number) {
                effects.push(Effect::UnmapMemory {
                    guest: GuestPhysAddr::new(old.guest),
                    size: old.size,
                });
            }
            if let Some(Some(slot)) = self.slots.get_mut(number) {
                slot.config.reset(slot.firmware);
                slot.function.reset();
            }
            self.publish_routes(number);
        }
        self.refresh_decoders();
        self.update_intx(effects);
    }

    fn slot(&self, index: usize) -> Option<&Slot> {
        self.slots.get(index).and_then(Option::as_ref)
    }

    fn bar_mut(&mut self, slot: usize, bar: usize) -> Option<&mut Bar> {
        let slot = self.slots.get_mut(slot)?.as_mut()?;
        slot.config.bars.get_mut(bar)?.as_mut()
    }

    /// The end of something `[start, end)` would overlap: RAM, the ECAM, the v2m frame or a
    /// decoding BAR other than `skip` (slot, BAR).
    fn conflict(&self, start: u64, end: u64, skip: (usize, usize)) -> Option<u64> {
        let overlaps = |(base, size): (u64, u64)| {
            let other_end = base.saturating_add(size);
            (start < other_end && base < end).then_some(other_end)
        };
        let fixed = self
            .ram
            .iter()
            .copied()
            .chain([self.layout.ecam, self.layout.v2m_frame]);
        let bars = self.slots.iter().enumerate().flat_map(|(slot, entry)| {
            entry.iter().flat_map(move |entry| {
                entry
                    .config
                    .bars
                    .iter()
                    .enumerate()
                    .filter_map(move |(index, bar)| {
                        let bar = bar.as_ref()?;
                        let base = bar.decoded()?;
                        ((slot, index) != skip).then_some((base, bar.spec.size))
                    })
            })
        });
        fixed.chain(bars).find_map(overlaps)
    }

    /// The first free, naturally aligned place for `size` bytes in `window`.
    fn find_place(&self, size: u64, window: (u64, u64), skip: (usize, usize)) -> Option<u64> {
        let align = size.max(PAGE_SIZE);
        let window_end = window.0.checked_add(window.1)?;
        let mut candidate = align_up(window.0, align)?;
        loop {
            let end = candidate.checked_add(size)?;
            if end > window_end {
                return None;
            }
            match self.conflict(candidate, end, skip) {
                None => return Some(candidate),
                Some(conflict_end) => candidate = align_up(conflict_end, align)?,
            }
        }
    }

    /// Whether BAR `bar` of slot `slot` may become `next` (see the module notes).
    fn placement_allowed(&self, slot: usize, bar: usize, next: &Bar) -> bool {
        let Some(base) = next.decoded() else {
            return true;
        };
        let Some(end) = base.checked_add(next.spec.size) else {
            return false;
        };
        let inside = |(start, size): (u64, u64)| start <= base && end <= start.saturating_add(size);
        let in_window = inside(self.layout.mmio32)
            || (next.spec.width == BarWidth::Bits64 && inside(self.layout.mmio64));
        base.is_multiple_of(next.spec.size)
            && in_window
            && self.conflict(base, end, (slot, bar)).is_none()
    }

    /// The host memory slot `slot`'s BARs want mapped now.
    fn mappings(&self, slot: usize) -> Vec<Mapping> {
        let Some(slot) = self.slot(slot) else {
            return Vec::new();
        };
        if !slot.config.memory_enabled() {
            return Vec::new();
        }
        slot.config
            .bars
            .iter()
            .flatten()
            .filter_map(|bar| match bar.spec.kind {
                BarKind::Memory { host, backed } => Some(Mapping {
                    guest: bar.decoded()?,
                    host,
                    size: backed,
                }),
                BarKind::Mmio => None,
            })
            .collect()
    }

    /// Decodes an ECAM offset into (slot index, offset inside the function's 4 KiB).
    fn ecam_target(&self, offset: u64) -> Option<(usize, u64)> {
        let bus = offset >> 20;
        let device = (offset >> 15) & 0x1f;
        let function = (offset >> 12) & 0x7;
        if bus != 0 || function != 0 {
            return None;
        }
        let slot = device as usize;
        self.slot(slot).map(|_| (slot, offset & 0xfff))
    }

    fn config_read(&self, offset: u64, width: AccessWidth) -> u64 {
        let target = self.ecam_target(offset);
        let Some((slot, register)) = target.filter(|&(_, r)| fits(r, width)) else {
            return width.mask();
        };
        let Some(slot) = self.slot(slot) else {
            return width.mask();
        };
        let level = slot.function.intx_level();
        split::read(register, width, |index| {
            slot.config.read_register(index, level)
        })
    }

    fn config_write(&mut self, offset: u64, width: AccessWidth, value: u64, effects: &mut Effects) {
        let target = self.ecam_target(offset);
        let Some((number, register)) = target.filter(|&(_, r)| fits(r, width)) else {
            return;
        };
        let before = self.mappings(number);
        let layout = self.layout;
        // BAR writes apply at once, so the halves of a 64-bit store combine; the placement is
        // checked when the access is done, and a refused BAR gets its old value back.
        let mut originals: Vec<(usize, Bar)> = Vec::new();
        if let Some(Some(slot)) = self.slots.get_mut(number) {
            split::write(register, width, value, |index, value, mask| {
                let outcome = slot
                    .config
                    .write_register(index, value, mask, &layout, effects);
                if let Outcome::MoveBar { index, bar } = outcome
                    && let Some(Some(current)) = slot.config.bars.get_mut(index)
                {
                    if !originals.iter().any(|&(moved, _)| moved == index) {
                        originals.push((index, *current));
                    }
                    *current = bar;
                }
            });
        }
        // Refusing one BAR puts it back where it was, which may be where another BAR of the
        // same access has just moved: check again until no refusal changes anything (each
        // pass restores at least one BAR, so this ends; the originals never overlapped).
        let mut pending = originals;
        loop {
            let before_pass = pending.len();
            pending.retain(|&(index, original)| {
                let allowed = self
                    .slot(number)
                    .and_then(|slot| slot.config.bar(index))
                    .is_some_and(|next| self.placement_allowed(number, index, next));
                if !allowed && let Some(bar) = self.bar_mut(number, index) {
                    *bar = original;
                }
                allowed
            });
            if pending.len() == before_pass || pending.is_empty() {
                break;
            }
        }
        let after = self.mappings(number);
        for old in before.iter().filter(|old| !after.contains(old)) {
            effects.push(Effect::UnmapMemory {
                guest: GuestPhysAddr::new(old.guest),
                size: old.size,
            });
        }
        for new in after.iter().filter(|new| !before.contains(new)) {
            effects.push(Effect::MapMemory {
                guest: GuestPhysAddr::new(new.guest),
                host: new.host,
                size: new.size,
            });
        }
        self.refresh_decoders();
        self.update_intx(effects);
        self.publish_routes(number);
    }

    /// Hands slot `number`'s function its MSI-X routes as they are now
    /// ([`PciFunction::msix_routes_changed`]), after anything that may have changed them.
    fn publish_routes(&mut self, number: usize) {
        let layout = &self.layout;
        let Some(Some(slot)) = self.slots.get_mut(number) else {
            return;
        };
        let Some(msix) = &slot.config.msix else {
            return;
        };
        let mut routes = [None; msix::MAX_VECTORS as usize];
        msix.routes(layout, &mut routes);
        slot.function.msix_routes_changed(&routes);
    }

    /// The decoding BAR holding `[address, address + width)`: (slot, BAR, offset).
    fn find_bar(&self, address: u64, width: AccessWidth) -> Option<(usize, usize, u64)> {
        let end = address.checked_add(width.bytes())?;
        self.decoders
            .iter()
            .find(|d| d.start <= address && end <= d.end)
            .map(|d| (d.slot, d.bar, address - d.start))
    }

    fn window_access(
        &mut self,
        address: u64,
        width: AccessWidth,
        write: Option<u64>,
        effects: &mut Effects,
    ) -> u64 {
        let Some((number, bar, offset)) = self.find_bar(address, width) else {
            return width.mask();
        };
        // Borrowed, not copied: the layout is a large record and this is the access path.
        let layout = &self.layout;
        let Some(Some(slot)) = self.slots.get_mut(number) else {
            return width.mask();
        };
        let trapped = slot
            .config
            .bar(bar)
            .is_some_and(|b| b.spec.kind == BarKind::Mmio);
        if !trapped {
            // Memory past the backed bytes, or a mapping the platform refused.
            return width.mask();
        }
        let bar = bar as u8;
        if let Some(msix) = &mut slot.config.msix {
            match write {
                Some(value) => {
                    if msix.write(bar, offset, width, value, layout, effects) {
                        self.publish_routes(number);
                        return 0;
                    }
                }
                None => {
                    if let Some(value) = msix.read(bar, offset, width) {
                        return value;
                    }
                }
            }
        }
        let mut context = Context::new(effects, slot.config.msix_enabled());
        let value = match write {
            Some(value) => {
                slot.function
                    .bar_write(bar, offset, width, value, &mut context);
                0
            }
            None => slot.function.bar_read(bar, offset, width, &mut context),
        };
        let vectors = context.take_vectors();
        self.deliver(number, vectors, effects);
        self.update_slot_intx(number, effects);
        value & width.mask()
    }

    pub(crate) fn signal(&mut self, number: usize, effects: &mut Effects) {
        let Some(Some(slot)) = self.slots.get_mut(number) else {
            return;
        };
        let mut context = Context::new(effects, slot.config.msix_enabled());
        slot.function.signalled(&mut context);
        let vectors = context.take_vectors();
        self.deliver(number, vectors, effects);
        self.update_slot_intx(number, effects);
    }

    fn deliver(&mut self, number: usize, vectors: u64, effects: &mut Effects) {
        if vectors == 0 {
            return;
        }
        let layout = &self.layout;
        if let Some(Some(slot)) = self.slots.get_mut(number)
            && let Some(msix) = &mut slot.config.msix
        {
            let mut rest = vectors;
            while rest != 0 {
                let vector = rest.trailing_zeros() as u16;
                rest &= rest - 1;
                msix.signal(vector, layout, effects);
            }
        }
    }

    /// After an access to or a signal of slot `number`: if its contribution to its INTx
    /// line changed, that line alone is recomputed (from the other slots' recorded state, no
    /// call into them).
    fn update_slot_intx(&mut self, number: usize, effects: &mut Effects) {
        let Some(Some(slot)) = self.slots.get_mut(number) else {
            return;
        };
        let asserted = slot_asserts_intx(slot);
        if asserted == slot.intx_asserted {
            return;
        }
        slot.intx_asserted = asserted;
        let pin = usize::from(slot.config.interrupt_pin());
        let Some(line) = pin.checked_sub(1).map(|pin| (number + pin) % 4) else {
            return;
        };
        let Some(sources) = self.intx_sources.get_mut(line) else {
            return;
        };
        let slot_bit = 1u64.checked_shl(number as u32).unwrap_or(0);
        if asserted {
            *sources |= slot_bit;
        } else {
            *sources &= !slot_bit;
        }
        let level = *sources != 0;
        self.set_intx_line(line, level, effects);
    }

    /// Recomputes the four INTx lines (wired-OR of the functions routed to each) and reports
    /// the ones that changed.
    fn update_intx(&mut self, effects: &mut Effects) {
        let mut sources = [0u64; 4];
        for (number, slot) in self.slots.iter_mut().enumerate() {
            let Some(slot) = slot else { continue };
            let pin = usize::from(slot.config.interrupt_pin());
            let asserted = slot_asserts_intx(slot);
            slot.intx_asserted = asserted;
            if pin != 0
                && asserted
                && let Some(line) = sources.get_mut((number + pin - 1) % 4)
            {
                *line |= 1u64.checked_shl(number as u32).unwrap_or(0);
            }
        }
        self.intx_sources = sources;
        for (line, sources) in sources.into_iter().enumerate() {
            self.set_intx_line(line, sources != 0, effects);
        }
    }

    /// Drives INTx line `line` (0..4 for INTA..INTD) to `level` if it is not there already.
    fn set_intx_line(&mut self, line: usize, level: bool, effects: &mut Effects) {
        let Some(old) = self.intx_levels.get_mut(line) else {
            return;
        };
        if level == *old {
            return;
        }
        *old = level;
        let Some(intid) = self.layout.intx_first.checked_add(line as u32) else {
            return;
        };
        match &self.lines {
            // Set under the bridge's lock, so updates from several CPUs land in the order the
            // bridge decided them.
            Some(lines) => {
                let vcpus = lines.set_line(intid, level);
                if vcpus != 0 {
                    effects.push(Effect::Wake { vcpus });
                }
            }
            None => effects.push(Effect::SetLevel { intid, level }),
        }
    }

    pub(crate) fn read(
        &mut self,
        frame: Frame,
        offset: u64,
        width: AccessWidth,
        effects: &mut Effects,
    ) -> u64 {
        match frame {
            Frame::Ecam => self.config_read(offset, width),
            Frame::Mmio32 => self.window_access(
                self.layout.mmio32.0.saturating_add(offset),
                width,
                None,
                effects,
            ),
            Frame::Mmio64 => self.window_access(
                self.layout.mmio64.0.saturating_add(offset),
                width,
                None,
                effects,
            ),
        }
    }

    pub(crate) fn write(
        &mut self,
        frame: Frame,
        offset: u64,
        width: AccessWidth,
        value: u64,
        effects: &mut Effects,
    ) {
        match frame {
            Frame::Ecam => self.config_write(offset, width, value, effects),
            Frame::Mmio32 => {
                let address = self.layout.mmio32.0.saturating_add(offset);
                self.window_access(address, width, Some(value), effects);
            }
            Frame::Mmio64 => {
                let address = self.layout.mmio64.0.saturating_add(offset);
                self.window_access(address, width, Some(value), effects);
            }
        }
    }
}

/// Whether the function in `slot` drives its INTx pin now (its level, unless INTx Disable or
/// MSI-X turns INTx off).
fn slot_asserts_intx(slot: &Slot) -> bool {
    // The cheap tests first: with MSI-X on (the usual case) the function is not asked.
    !slot.config.msix_enabled() && !slot.config.intx_disabled() && slot.function.intx_level()
}

/// Whether an access at `register` (inside one function's 4 KiB) stays inside it.
fn fits(register: u64, width: AccessWidth) -> bool {
    register.saturating_add(width.bytes()) <= FUNCTION_REGISTERS * 4
}

fn align_up(value: u64, align: u64) -> Option<u64> {
    Some(value.checked_add(align - 1)? & !(align - 1))
}

fn validate_bars(specs: &[Option<BarSpec>; BAR_COUNT]) -> Result<(), PciError> {
    for (index, spec) in specs.iter().enumerate() {
        let Some(spec) = spec else { continue };
        let invalid = PciError::InvalidBar(index as u8);
        if !spec.size.is_power_of_two() || spec.size < 16 {
            return Err(invalid);
        }
        if spec.width == BarWidth::Bits32 && spec.size > 1 << 31 {
            return Err(invalid);
        }
        if spec.width == BarWidth::Bits64
            && (index + 1 >= BAR_COUNT || specs.get(index + 1).is_some_and(Option::is_some))
        {
            return Err(invalid);
        }
        if let BarKind::Memory { host, backed } = spec.kind {
            let aligned = host.is_aligned(PAGE_SIZE) && backed.is_multiple_of(PAGE_SIZE);
            if spec.size < PAGE_SIZE || !aligned || backed == 0 || backed > spec.size {
                return Err(invalid);
            }
        }
    }
    Ok(())
}

fn validate_msix(
    spec: &super::MsixSpec,
    bars: &[Option<BarSpec>; BAR_COUNT],
) -> Result<(), PciError> {
    if spec.vectors == 0 || spec.vectors > msix::MAX_VECTORS {
        return Err(PciError::InvalidMsix);
    }
    let region_fits = |bar: u8, offset: u32, size: u64| {
        let Some(Some(bar)) = bars.get(usize::from(bar)) else {
            return false;
        };
        bar.kind == BarKind::Mmio
            && offset.is_multiple_of(8)
            && u64::from(offset).saturating_add(size) <= bar.size
    };
    let table = (u64::from(spec.table_offset), Msix::table_size(spec));
    let pba = (u64::from(spec.pba_offset), Msix::pba_size(spec));
    let overlap = spec.table_bar == spec.pba_bar
        && table.0 < pba.0.saturating_add(pba.1)
        && pba.0 < table.0.saturating_add(table.1);
    if !region_fits(spec.table_bar, spec.table_offset, table.1)
        || !region_fits(spec.pba_bar, spec.pba_offset, pba.1)
        || overlap
    {
        return Err(PciError::InvalidMsix);
    }
    Ok(())
}
