//! The QNX shmem device in its default form: a PCI function (1C05:0001) whose BAR0 is the
//! factory page, interrupting through INTx (the bridge owns the line; the device's own level
//! becomes the function's INTx level).

use alloc::sync::Arc;

use crate::device::{ClientId, Effect, Effects, SignalTarget};
use crate::exit::AccessWidth;
use crate::pci::{BAR_COUNT, BarKind, BarSpec, BarWidth, Context, Identity, PciFunction};
use crate::shmem::{InterruptKind, QnxShmem};

/// PCI vendor ID QNX uses for the shmem vdev.
pub const VENDOR: u16 = 0x1c05;
/// PCI device ID of the shmem vdev.
pub const DEVICE: u16 = 0x0001;

/// A [`QnxShmem`] behind the virtual PCI bridge.
pub struct QnxPciFunction {
    device: Arc<QnxShmem>,
}

impl QnxPciFunction {
    /// Wraps `device`, whose interrupt is delegated to the bridge's INTx: accesses to its
    /// control pages (which do not pass through the bridge) signal the device itself, and the
    /// bridge then re-reads the level.
    pub fn new(device: QnxShmem) -> (Self, Arc<QnxShmem>) {
        let device = Arc::new(device.with_interrupt_kind(InterruptKind::Delegated));
        (
            Self {
                device: Arc::clone(&device),
            },
            device,
        )
    }
}

/// Passes on what the device asked for except its interrupt, which INTx carries (the bridge
/// re-reads `intx_level` after every access and signal).
fn forward(own: ClientId, effects: &mut Effects, context: &mut Context<'_>) {
    for effect in effects.drain() {
        let interrupt = matches!(effect, Effect::SetLevel { .. } | Effect::Raise { .. })
            || effect == Effect::Signal(own);
        if !interrupt {
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
            forward(self.device.client(), &mut effects, context);
        }
    }

    fn intx_level(&self) -> bool {
        self.device.interrupt_pending()
    }

    fn signalled(&mut self, context: &mut Context<'_>) {
        let mut effects = Effects::default();
        self.device.signalled(&mut effects);
        forward(self.device.client(), &mut effects, context);
    }
}
