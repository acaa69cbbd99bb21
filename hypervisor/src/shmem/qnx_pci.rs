//! The QNX shmem device in its default form: a PCI function (1C05:0001) whose BAR0 is the
//! factory page, interrupting through INTx (the bridge owns the line; the device's own level
//! becomes the function's INTx level).

use alloc::sync::Arc;

use crate::device::{Effect, Effects, SignalTarget};
use crate::exit::AccessWidth;
use crate::pci::{BAR_COUNT, BarKind, BarSpec, BarWidth, Context, Identity, PciFunction};
use crate::shmem::QnxShmem;

/// PCI vendor ID QNX uses for the shmem vdev.
pub const VENDOR: u16 = 0x1c05;
/// PCI device ID of the shmem vdev.
pub const DEVICE: u16 = 0x0001;

/// A [`QnxShmem`] behind the virtual PCI bridge.
pub struct QnxPciFunction {
    device: Arc<QnxShmem>,
}

impl QnxPciFunction {
    /// Wraps `device` (its own interrupt effects are replaced by the bridge's INTx).
    pub fn new(device: Arc<QnxShmem>) -> Self {
        Self { device }
    }
}

/// Passes on what the device asked for except its interrupt, which INTx carries.
fn forward(effects: &mut Effects, context: &mut Context<'_>) {
    for effect in effects.drain() {
        if !matches!(effect, Effect::SetLevel { .. } | Effect::Raise { .. }) {
            context.push(effect);
        }
    }
}

impl PciFunction for QnxPciFunction {
    fn identity(&self) -> Identity {
        Identity {
            vendor: VENDOR,
            device: DEVICE,
            revision: 1,
            // Memory controller, "other".
            class_code: 0x05_8000,
            subsystem_vendor: VENDOR,
            subsystem: DEVICE,
        }
    }

    fn bars(&self) -> [Option<BarSpec>; BAR_COUNT] {
        let factory_page = BarSpec {
            size: 0x1000,
            width: BarWidth::Bits32,
            prefetchable: false,
            kind: BarKind::Mmio,
        };
        [Some(factory_page), None, None, None, None, None]
    }

    fn interrupt_pin(&self) -> u8 {
        1
    }

    fn bar_read(
        &mut self,
        bar: u8,
        offset: u64,
        width: AccessWidth,
        _context: &mut Context<'_>,
    ) -> u64 {
        if bar == 0 {
            self.device.read_factory(offset, width)
        } else {
            0
        }
    }

    fn bar_write(
        &mut self,
        bar: u8,
        offset: u64,
        width: AccessWidth,
        value: u64,
        context: &mut Context<'_>,
    ) {
        if bar == 0 {
            let mut effects = Effects::default();
            self.device
                .write_factory(offset, width, value, &mut effects);
            forward(&mut effects, context);
        }
    }

    fn intx_level(&self) -> bool {
        self.device.interrupt_pending()
    }

    fn signalled(&mut self, context: &mut Context<'_>) {
        let mut effects = Effects::default();
        self.device.signalled(&mut effects);
        forward(&mut effects, context);
    }
}
