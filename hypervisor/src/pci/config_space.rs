//! One function's type-0 configuration header: identity, command/status, BAR registers, interrupt line/pin and the MSI-X capability.
//!
//! Register semantics follow PCI Local Bus 3.0 and QEMU's `hw/pci/pci.c`: identity fields are
//! read-only; Command has Memory Space, Bus Master and INTx Disable writable (I/O Space reads 0:
//! no I/O BARs); Status shows the INTx line before masking (bit 3) and the capabilities list
//! (bit 4); Cache Line Size and Interrupt Line are scratch registers. A BAR register keeps only
//! the address bits its size allows, so writing all-ones reads back the size mask ("sizing").
//! BAR writes are not applied here: [`ConfigSpace::write_register`] hands the candidate base to
//! the bridge, which checks the placement. Registers past the header read zero up to offset
//! 0xff and all-ones in the PCIe extended space (a conventional function has none).

use super::msix::{self, Msix};
use super::split::merge;
use super::{BAR_COUNT, BarSpec, BarWidth, GuestPci, Identity};
use crate::device::Effects;

/// Command: Memory Space enable.
pub(crate) const COMMAND_MEMORY: u16 = 1 << 1;
/// Command: Bus Master enable.
const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Command: INTx Disable.
pub(crate) const COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// The writable Command bits.
const COMMAND_WRITABLE: u16 = COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE;
/// Status: Interrupt Status (the INTx line before INTx Disable).
pub(crate) const STATUS_INTERRUPT: u16 = 1 << 3;
/// Status: Capabilities List.
pub(crate) const STATUS_CAPABILITIES: u16 = 1 << 4;
/// Where the MSI-X capability sits (the first byte after the header).
pub(crate) const MSIX_CAPABILITY: u8 = 0x40;
/// Register index (offset / 4) of the first BAR.
const FIRST_BAR_REGISTER: u64 = 4;
/// Register index of the MSI-X capability.
const MSIX_REGISTER: u64 = MSIX_CAPABILITY as u64 / 4;
/// Registers of conventional configuration space (256 bytes).
const CONVENTIONAL_REGISTERS: u64 = 64;
/// Registers of one function's ECAM space (4 KiB).
pub(crate) const FUNCTION_REGISTERS: u64 = 1024;

/// One BAR: what the function asked for and the address bits the register holds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bar {
    pub(crate) spec: BarSpec,
    pub(crate) base: u64,
    /// Whether the low / high register holds a sizing probe (all-ones was written). A probe
    /// is never a valid address (it lies above both windows), so a BAR being sized decodes
    /// nothing until the guest writes an address back.
    pub(crate) probing: [bool; 2],
}

impl Bar {
    /// A BAR at `base`, not being sized.
    pub(crate) fn new(spec: BarSpec, base: u64) -> Self {
        Self {
            spec,
            base,
            probing: [false; 2],
        }
    }

    /// The address bits the register keeps.
    pub(crate) fn address_mask(&self) -> u64 {
        let mask = !(self.spec.size.wrapping_sub(1));
        match self.spec.width {
            BarWidth::Bits32 => mask & 0xffff_ffff,
            BarWidth::Bits64 => mask,
        }
    }

    /// Bits 3:0 of the low register: memory space, 32/64-bit type, prefetchable.
    fn type_bits(&self) -> u32 {
        let wide = match self.spec.width {
            BarWidth::Bits32 => 0,
            BarWidth::Bits64 => 0b100,
        };
        wide | if self.spec.prefetchable { 0b1000 } else { 0 }
    }

    /// Where the BAR decodes, `None` while it is being sized.
    pub(crate) fn decoded(&self) -> Option<u64> {
        (!self.probing.contains(&true)).then_some(self.base)
    }
}

/// What a configuration write asks the bridge to decide.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Outcome {
    /// Applied (or ignored) here.
    Done,
    /// BAR `index` would become `bar` (new address bits and probe flags); the bridge checks
    /// the placement.
    MoveBar { index: usize, bar: Bar },
}

/// The configuration header and capability of one function.
pub(crate) struct ConfigSpace {
    identity: Identity,
    pub(crate) command: u16,
    cache_line_size: u8,
    interrupt_line: u8,
    /// What Interrupt Line holds at reset (firmware's routing; 0 on QEMU virt).
    firmware_line: u8,
    interrupt_pin: u8,
    pub(crate) bars: [Option<Bar>; BAR_COUNT],
    pub(crate) msix: Option<Msix>,
}

impl ConfigSpace {
    /// Reset state: command 0 (no decoding), BARs where the bridge placed them.
    pub(crate) fn new(
        identity: Identity,
        interrupt_pin: u8,
        bars: [Option<Bar>; BAR_COUNT],
        msix: Option<Msix>,
    ) -> Self {
        Self {
            identity,
            command: 0,
            cache_line_size: 0,
            interrupt_line: 0,
            firmware_line: 0,
            interrupt_pin,
            bars,
            msix,
        }
    }

    /// Sets what Interrupt Line holds now and after every reset.
    pub(crate) fn set_firmware_line(&mut self, line: u8) {
        self.firmware_line = line;
        self.interrupt_line = line;
    }

    /// Back to the reset state with the BARs at `bars`.
    pub(crate) fn reset(&mut self, bars: [Option<Bar>; BAR_COUNT]) {
        self.command = 0;
        self.cache_line_size = 0;
        self.interrupt_line = self.firmware_line;
        self.bars = bars;
        if let Some(msix) = &mut self.msix {
            *msix = Msix::new(msix.spec());
        }
    }

    pub(crate) fn interrupt_pin(&self) -> u8 {
        self.interrupt_pin
    }

    pub(crate) fn memory_enabled(&self) -> bool {
        self.command & COMMAND_MEMORY != 0
    }

    pub(crate) fn intx_disabled(&self) -> bool {
        self.command & COMMAND_INTX_DISABLE != 0
    }

    pub(crate) fn msix_enabled(&self) -> bool {
        self.msix.as_ref().is_some_and(Msix::enabled)
    }

    /// The BAR whose (low) register is `index`.
    pub(crate) fn bar(&self, index: usize) -> Option<&Bar> {
        self.bars.get(index).and_then(Option::as_ref)
    }

    /// Register `index` (offset / 4); `intx_level` is the function's line before masking.
    pub(crate) fn read_register(&self, index: u64, intx_level: bool) -> u32 {
        let identity = &self.identity;
        match index {
            0 => u32::from(identity.vendor) | u32::from(identity.device) << 16,
            1 => u32::from(self.command) | u32::from(self.status(intx_level)) << 16,
            2 => u32::from(identity.revision) | (identity.class_code & 0xff_ffff) << 8,
            // Latency timer 0, header type 0 (single function), no BIST.
            3 => u32::from(self.cache_line_size),
            4..=9 => self.read_bar((index - FIRST_BAR_REGISTER) as usize),
            11 => u32::from(identity.subsystem_vendor) | u32::from(identity.subsystem) << 16,
            13 if self.msix.is_some() => u32::from(MSIX_CAPABILITY),
            15 => u32::from(self.interrupt_line) | u32::from(self.interrupt_pin) << 8,
            MSIX_REGISTER..=18 => self.read_msix(index - MSIX_REGISTER),
            _ if index >= CONVENTIONAL_REGISTERS => u32::MAX,
            _ => 0,
        }
    }

    fn status(&self, intx_level: bool) -> u16 {
        let mut status = 0;
        if intx_level {
            status |= STATUS_INTERRUPT;
        }
        if self.msix.is_some() {
            status |= STATUS_CAPABILITIES;
        }
        status
    }

    fn read_bar(&self, slot: usize) -> u32 {
        if let Some(bar) = self.bar(slot) {
            return (bar.base & 0xffff_ffff) as u32 | bar.type_bits();
        }
        // The upper half of a 64-bit BAR.
        match slot.checked_sub(1).and_then(|low| self.bar(low)) {
            Some(bar) if bar.spec.width == BarWidth::Bits64 => (bar.base >> 32) as u32,
            _ => 0,
        }
    }

    fn read_msix(&self, register: u64) -> u32 {
        let Some(msix) = &self.msix else {
            return 0;
        };
        let spec = msix.spec();
        match register {
            0 => u32::from(msix::CAPABILITY_ID) | u32::from(msix.control()) << 16,
            1 => spec.table_offset & !0b111 | u32::from(spec.table_bar & 0b111),
            _ => spec.pba_offset & !0b111 | u32::from(spec.pba_bar & 0b111),
        }
    }

    /// A write of the `mask` bits of `value` to register `index`.
    pub(crate) fn write_register(
        &mut self,
        index: u64,
        value: u32,
        mask: u32,
        layout: &GuestPci,
        effects: &mut Effects,
    ) -> Outcome {
        match index {
            1 => {
                let writable = (mask as u16) & COMMAND_WRITABLE;
                self.command = (self.command & !writable) | (value as u16 & writable);
            }
            3 if mask & 0xff != 0 => self.cache_line_size = value as u8,
            4..=9 => return self.bar_candidate((index - FIRST_BAR_REGISTER) as usize, value, mask),
            15 if mask & 0xff != 0 => self.interrupt_line = value as u8,
            MSIX_REGISTER => {
                if let Some(msix) = &mut self.msix {
                    msix.write_control((value >> 16) as u16, (mask >> 16) as u16, layout, effects);
                }
            }
            _ => {}
        }
        Outcome::Done
    }

    /// The BAR register `slot` would describe after the write. A register whose bits 31:4
    /// (low half) or 31:0 (high half of a 64-bit BAR) end up all ones is a sizing probe.
    fn bar_candidate(&self, slot: usize, value: u32, mask: u32) -> Outcome {
        if let Some(&bar) = self.bar(slot) {
            let raw = merge(self.read_bar(slot), value, mask);
            let base = (bar.base & !0xffff_ffff) | u64::from(raw & !0xf);
            let mut next = bar;
            next.base = base & bar.address_mask();
            next.probing[0] = raw | 0xf == u32::MAX;
            return Outcome::MoveBar {
                index: slot,
                bar: next,
            };
        }
        match slot.checked_sub(1).map(|low| (low, self.bar(low))) {
            Some((low, Some(&bar))) if bar.spec.width == BarWidth::Bits64 => {
                let raw = merge((bar.base >> 32) as u32, value, mask);
                let base = (u64::from(raw) << 32) | (bar.base & 0xffff_ffff);
                let mut next = bar;
                next.base = base & bar.address_mask();
                next.probing[1] = raw == u32::MAX;
                Outcome::MoveBar {
                    index: low,
                    bar: next,
                }
            }
            _ => Outcome::Done,
        }
    }
}
