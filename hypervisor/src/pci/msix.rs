//! MSI-X state of one function: Message Control bits, the vector table and the pending-bit array.
//!
//! A vector the function signals while MSI-X is enabled is sent at once as an edge on the INTID
//! its message data names (when that INTID is one of the layout's MSI INTIDs; other data is
//! dropped), or, while the function or the vector is masked, recorded in the PBA and sent when
//! unmasked. The message address is not interpreted.

use alloc::vec;
use alloc::vec::Vec;

use super::split::{self, merge};
use super::{GuestPci, MsixSpec};
use crate::device::{Effect, Effects};
use crate::exit::AccessWidth;
use crate::fast::MsiRoute;

/// Capability ID of MSI-X.
pub(crate) const CAPABILITY_ID: u8 = 0x11;
/// Message Control: MSI-X Enable.
const CONTROL_ENABLE: u16 = 1 << 15;
/// Message Control: Function Mask.
const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
/// Bytes of one table entry.
pub(crate) const ENTRY_SIZE: u64 = 16;
/// Vector Control: Mask Bit.
const VECTOR_MASKED: u32 = 1;
/// Most vectors a function of this bridge may have: the capability could describe 2048, but
/// Bulkhead's functions have at most 64 (ivshmem-doorbell's limit), so the vectors one access
/// asks for fit one `u64` (no allocation on the doorbell path).
pub(crate) const MAX_VECTORS: u16 = 64;

/// Table entry words: message address low (0), high (1), message data (2), vector control.
const ADDRESS_LOW: usize = 0;
const VECTOR_CONTROL: usize = 3;

pub(crate) struct Msix {
    spec: MsixSpec,
    enabled: bool,
    function_masked: bool,
    table: Vec<[u32; 4]>,
    pending: Vec<u64>,
}

impl Msix {
    /// Reset state: disabled, every vector masked, nothing pending.
    pub(crate) fn new(spec: MsixSpec) -> Self {
        let vectors = usize::from(spec.vectors);
        Self {
            spec,
            enabled: false,
            function_masked: false,
            table: vec![[0, 0, 0, VECTOR_MASKED]; vectors],
            pending: vec![0; vectors.div_ceil(64)],
        }
    }

    pub(crate) fn spec(&self) -> MsixSpec {
        self.spec
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// Bytes of the table.
    pub(crate) fn table_size(spec: &MsixSpec) -> u64 {
        u64::from(spec.vectors) * ENTRY_SIZE
    }

    /// Bytes of the PBA (whole 64-bit words).
    pub(crate) fn pba_size(spec: &MsixSpec) -> u64 {
        u64::from(spec.vectors).div_ceil(64) * 8
    }

    /// Message Control as read: table size N-1, Function Mask, Enable.
    pub(crate) fn control(&self) -> u16 {
        let mut control = self.spec.vectors.saturating_sub(1) & 0x7ff;
        if self.function_masked {
            control |= CONTROL_FUNCTION_MASK;
        }
        if self.enabled {
            control |= CONTROL_ENABLE;
        }
        control
    }

    /// A write to Message Control (`mask` = byte enables); only Enable and Function Mask are
    /// writable. Pending vectors that became deliverable are sent.
    pub(crate) fn write_control(
        &mut self,
        value: u16,
        mask: u16,
        layout: &GuestPci,
        effects: &mut Effects,
    ) {
        let writable = mask & (CONTROL_ENABLE | CONTROL_FUNCTION_MASK);
        let control = (self.control() & !writable) | (value & writable);
        self.enabled = control & CONTROL_ENABLE != 0;
        self.function_masked = control & CONTROL_FUNCTION_MASK != 0;
        self.deliver_pending(layout, effects);
    }

    /// Offset of the access inside the table, if it lies entirely there.
    fn in_table(&self, bar: u8, offset: u64, width: AccessWidth) -> Option<u64> {
        let start = u64::from(self.spec.table_offset);
        inside(
            bar,
            offset,
            width,
            self.spec.table_bar,
            start,
            Self::table_size(&self.spec),
        )
    }

    /// Offset of the access inside the PBA, if it lies entirely there.
    fn in_pba(&self, bar: u8, offset: u64, width: AccessWidth) -> Option<u64> {
        let start = u64::from(self.spec.pba_offset);
        inside(
            bar,
            offset,
            width,
            self.spec.pba_bar,
            start,
            Self::pba_size(&self.spec),
        )
    }

    /// A load from BAR `bar`, if it hits the table or the PBA.
    pub(crate) fn read(&self, bar: u8, offset: u64, width: AccessWidth) -> Option<u64> {
        if let Some(offset) = self.in_table(bar, offset, width) {
            return Some(split::read(offset, width, |index| self.table_word(index)));
        }
        let offset = self.in_pba(bar, offset, width)?;
        Some(split::read(offset, width, |index| {
            let word = self.pending.get((index / 2) as usize).copied().unwrap_or(0);
            (word >> (32 * (index % 2))) as u32
        }))
    }

    /// A store to BAR `bar`: `true` if it hit the table or the PBA (the PBA is read-only).
    pub(crate) fn write(
        &mut self,
        bar: u8,
        offset: u64,
        width: AccessWidth,
        value: u64,
        layout: &GuestPci,
        effects: &mut Effects,
    ) -> bool {
        if let Some(offset) = self.in_table(bar, offset, width) {
            split::write(offset, width, value, |index, value, mask| {
                self.write_table_word(index, value, mask)
            });
            self.deliver_pending(layout, effects);
            return true;
        }
        self.in_pba(bar, offset, width).is_some()
    }

    fn table_word(&self, index: u64) -> u32 {
        let entry = self.table.get((index / 4) as usize);
        entry
            .and_then(|words| words.get((index % 4) as usize))
            .copied()
            .unwrap_or(0)
    }

    fn write_table_word(&mut self, index: u64, value: u32, mask: u32) {
        let field = (index % 4) as usize;
        let Some(word) = self
            .table
            .get_mut((index / 4) as usize)
            .and_then(|words| words.get_mut(field))
        else {
            return;
        };
        // Address bits 1:0 are zero (DWORD aligned); vector control has only the mask bit.
        let writable = match field {
            ADDRESS_LOW => !0b11,
            VECTOR_CONTROL => VECTOR_MASKED,
            _ => u32::MAX,
        };
        *word = merge(*word, value, mask & writable);
    }

    fn masked(&self, vector: usize) -> bool {
        let vector_masked = self
            .table
            .get(vector)
            .is_none_or(|entry| entry[VECTOR_CONTROL] & VECTOR_MASKED != 0);
        self.function_masked || vector_masked
    }

    fn set_pending(&mut self, vector: usize, pending: bool) {
        if let Some(word) = self.pending.get_mut(vector / 64) {
            let bit = 1u64 << (vector % 64);
            if pending {
                *word |= bit;
            } else {
                *word &= !bit;
            }
        }
    }

    fn send(&self, vector: usize, layout: &GuestPci, effects: &mut Effects) {
        match self.message(vector, layout) {
            Some(MsiRoute::Message { address, data }) => {
                effects.push(Effect::Message { address, data });
            }
            Some(MsiRoute::Spi(intid)) => effects.push(Effect::Raise { intid }),
            None => {}
        }
    }

    /// What vector `vector`'s table entry sends: a message on an APIC bus, or an edge on the
    /// SPI its data names (`None`: data naming no MSI interrupt, which is dropped).
    fn message(&self, vector: usize, layout: &GuestPci) -> Option<MsiRoute> {
        let &[low, high, data, _] = self.table.get(vector)?;
        if layout.apic {
            let address = (u64::from(high) << 32) | u64::from(low);
            Some(MsiRoute::Message { address, data })
        } else {
            layout.msi_intid(data).map(MsiRoute::Spi)
        }
    }

    /// Per vector (into `routes`), what a signal would send at once now: `None` while MSI-X
    /// is off or the function or vector masked (a signal would be left pending).
    pub(crate) fn routes(&self, layout: &GuestPci, routes: &mut [Option<MsiRoute>]) {
        for (vector, route) in routes.iter_mut().enumerate() {
            *route = if !self.enabled || self.masked(vector) {
                None
            } else {
                self.message(vector, layout)
            };
        }
    }

    /// The function asks for `vector`: sent, left pending while masked, or dropped while
    /// MSI-X is disabled or for a vector the function does not have.
    pub(crate) fn signal(&mut self, vector: u16, layout: &GuestPci, effects: &mut Effects) {
        let vector = usize::from(vector);
        if !self.enabled || vector >= self.table.len() {
            return;
        }
        if self.masked(vector) {
            self.set_pending(vector, true);
        } else {
            self.send(vector, layout, effects);
        }
    }

    /// Sends (and clears) the pending vectors that are no longer masked.
    fn deliver_pending(&mut self, layout: &GuestPci, effects: &mut Effects) {
        if !self.enabled || self.function_masked {
            return;
        }
        for vector in 0..self.table.len() {
            let word = self.pending.get(vector / 64).copied().unwrap_or(0);
            if word & (1u64 << (vector % 64)) != 0 && !self.masked(vector) {
                self.set_pending(vector, false);
                self.send(vector, layout, effects);
            }
        }
    }
}

/// The offset of `[offset, offset + width)` inside `[start, start + size)` of BAR `wanted`.
fn inside(
    bar: u8,
    offset: u64,
    width: AccessWidth,
    wanted: u8,
    start: u64,
    size: u64,
) -> Option<u64> {
    let relative = offset.checked_sub(start)?;
    (bar == wanted && relative.saturating_add(width.bytes()) <= size).then_some(relative)
}
