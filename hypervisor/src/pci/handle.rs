//! The handle the rest of the hypervisor holds: [`PciBridge`], its frames for the device table, and the [`SignalTarget`] for doorbells.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use spin::Mutex;

use super::bridge::{Bridge, Frame, PciError};
use super::v2m::V2mFrame;
use super::{GuestPci, PciFunction};
use crate::addr::GuestPhysAddr;
use crate::device::gic::GicVersion;
use crate::device::{Effects, MmioDevice, SignalTarget};
use crate::exit::AccessWidth;

/// A partition's PCI host bridge (a cheap handle; clones share the bridge).
#[derive(Clone)]
pub struct PciBridge {
    inner: Arc<Mutex<Bridge>>,
}

impl fmt::Debug for PciBridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PciBridge").finish_non_exhaustive()
    }
}

impl PciBridge {
    /// A bridge with no functions; `ram` are the partition's guest-physical RAM ranges
    /// `(base, size)`, which no BAR may overlap.
    pub fn new(layout: GuestPci, ram: &[(u64, u64)]) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Bridge::new(layout, ram))),
        }
    }

    /// Sets INTx levels directly in `lines`, under the bridge's lock, instead of returning
    /// `Effect::SetLevel` (which two CPUs could apply out of order).
    pub fn set_lines(&self, lines: Arc<dyn crate::device::InterruptLines>) {
        self.inner.lock().lines = Some(lines);
    }

    /// The partition's fast-lane table ([`crate::fast`]), made once the functions are in
    /// place: the bridge publishes the reserved registers and doorbell registers of its
    /// functions' decoding BARs to it from now on, whenever configuration space changes.
    pub fn enable_fast_lane(&self) -> Arc<crate::fast::FastWindows> {
        self.inner.lock().enable_fast_lane()
    }

    /// Its layout.
    pub fn layout(&self) -> GuestPci {
        self.inner.lock().layout()
    }

    /// Puts `function` in slot `slot` (device number 0-31, function 0) and places its BARs.
    pub fn add_function(&self, slot: u8, function: Box<dyn PciFunction>) -> Result<(), PciError> {
        self.inner.lock().add_function(slot, function)
    }

    /// Puts every function back to its reset state (command 0, BARs at their firmware places,
    /// MSI-X disabled and masked, the function's own reset) for a partition restart: unmaps
    /// what was mapped and lowers asserted INTx lines.
    pub fn reset(&self, effects: &mut Effects) {
        self.inner.lock().reset(effects);
    }

    /// Something outside the partition changed slot `slot`'s function (a peer's doorbell): let
    /// it update its interrupts. Ignored for an empty slot.
    pub fn signal(&self, slot: u8, effects: &mut Effects) {
        self.inner.lock().signal(usize::from(slot), effects);
    }

    /// A [`SignalTarget`] that runs [`PciBridge::signal`] for `slot`, for the partition's table
    /// of shared-memory devices.
    pub fn signal_target(&self, slot: u8) -> Arc<dyn SignalTarget> {
        Arc::new(PciSignalTarget {
            bridge: self.clone(),
            slot,
        })
    }

    /// Where BAR `bar` of slot `slot` decodes now (`None`: no such BAR, or being sized).
    pub fn bar_address(&self, slot: u8, bar: usize) -> Option<GuestPhysAddr> {
        self.inner
            .lock()
            .bar_address(usize::from(slot), bar)
            .map(GuestPhysAddr::new)
    }

    /// The frames to put in the partition's device table: ECAM, the 32-bit window, the 64-bit
    /// window, and with a GICv2 and MSI the v2m frame the device tree describes.
    pub fn mmio_devices(
        &self,
        gic: Option<GicVersion>,
    ) -> Vec<(GuestPhysAddr, Box<dyn MmioDevice>)> {
        let layout = self.layout();
        let mut devices: Vec<(GuestPhysAddr, Box<dyn MmioDevice>)> = [
            (Frame::Ecam, layout.ecam, "pci-ecam"),
            (Frame::Mmio32, layout.mmio32, "pci-mmio32"),
            (Frame::Mmio64, layout.mmio64, "pci-mmio64"),
        ]
        .into_iter()
        .map(|(frame, (base, size), name)| {
            let window = Window {
                bridge: self.inner.clone(),
                frame,
                size,
                name,
            };
            (
                GuestPhysAddr::new(base),
                Box::new(window) as Box<dyn MmioDevice>,
            )
        })
        .collect();
        if gic == Some(GicVersion::V2)
            && let Some(frame) = V2mFrame::new(layout)
        {
            devices.push((GuestPhysAddr::new(layout.v2m_frame.0), Box::new(frame)));
        }
        devices
    }
}

impl PciBridge {
    /// Configuration mechanism #1 for the partition's I/O-port table (x86): CONFIG_ADDRESS
    /// at port offset 0 (a dword: enable bit 31, bus 23:16, device 15:11, function 10:8,
    /// register 7:2), CONFIG_DATA at offsets 4-7 (any width), reaching the same registers
    /// as the ECAM.
    pub fn config_ports(&self) -> Box<dyn MmioDevice> {
        Box::new(ConfigPorts {
            bridge: self.inner.clone(),
            address: 0,
        })
    }
}

/// The 8 ports of configuration mechanism #1 (0xCF8-0xCFF).
struct ConfigPorts {
    bridge: Arc<Mutex<Bridge>>,
    address: u32,
}

impl ConfigPorts {
    const ENABLE: u32 = 1 << 31;

    /// The ECAM offset CONFIG_ADDRESS selects plus `offset` into CONFIG_DATA, if enabled
    /// and on bus 0 (the only bus).
    fn ecam_offset(&self, offset: u64) -> Option<u64> {
        let bus = (self.address >> 16) & 0xff;
        if self.address & Self::ENABLE == 0 || bus != 0 {
            return None;
        }
        let function = u64::from((self.address >> 8) & 0xff);
        let register = u64::from(self.address & 0xfc);
        Some((function << 12) | register | (offset - 4))
    }
}

impl MmioDevice for ConfigPorts {
    fn name(&self) -> &'static str {
        "pci-config-ports"
    }

    fn size(&self) -> u64 {
        8
    }

    fn read(
        &mut self,
        _vcpu: usize,
        offset: u64,
        width: AccessWidth,
        effects: &mut Effects,
    ) -> u64 {
        match offset {
            // Only dword accesses reach CONFIG_ADDRESS (narrower ones are other chipset
            // registers on a PC: nothing here).
            0 if width == AccessWidth::Word => u64::from(self.address),
            0..4 => width.mask(),
            _ => match self.ecam_offset(offset) {
                Some(at) => self.bridge.lock().read(Frame::Ecam, at, width, effects),
                None => width.mask(),
            },
        }
    }

    fn write(
        &mut self,
        _vcpu: usize,
        offset: u64,
        width: AccessWidth,
        value: u64,
        effects: &mut Effects,
    ) {
        match offset {
            0 if width == AccessWidth::Word => self.address = (value as u32) & !0x7f00_0003,
            0..4 => {}
            _ => {
                if let Some(at) = self.ecam_offset(offset) {
                    self.bridge
                        .lock()
                        .write(Frame::Ecam, at, width, value, effects);
                }
            }
        }
    }
}

/// Runs [`PciBridge::signal`] for one slot when the registry signals its device.
pub struct PciSignalTarget {
    bridge: PciBridge,
    slot: u8,
}

impl SignalTarget for PciSignalTarget {
    fn signalled(&self, effects: &mut Effects) {
        self.bridge.signal(self.slot, effects);
    }
}

/// One of the bridge's frames in the partition's device table.
struct Window {
    bridge: Arc<Mutex<Bridge>>,
    frame: Frame,
    size: u64,
    name: &'static str,
}

impl MmioDevice for Window {
    fn name(&self) -> &'static str {
        self.name
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn read(
        &mut self,
        _vcpu: usize,
        offset: u64,
        width: AccessWidth,
        effects: &mut Effects,
    ) -> u64 {
        self.bridge.lock().read(self.frame, offset, width, effects)
    }

    fn write(
        &mut self,
        _vcpu: usize,
        offset: u64,
        width: AccessWidth,
        value: u64,
        effects: &mut Effects,
    ) {
        self.bridge
            .lock()
            .write(self.frame, offset, width, value, effects);
    }
}
