//! The GICv2m MSI frame a GICv2 partition's device tree describes: MSI_TYPER, MSI_IIDR and MSI_SETSPI_NS.
//!
//! Linux's `irq-gic-v2m` maps the frame and reads MSI_IIDR (to spot vendor quirks) even when the
//! device tree gives `arm,msi-base-spi`/`arm,msi-num-spis`, so the frame must answer. A store to
//! MSI_SETSPI_NS raises the SPI it names when that is one of the MSI INTIDs (a real device's MSI
//! write would land here; our virtual functions raise their INTIDs directly, but a guest may
//! also write the register itself). Everything else reads zero and ignores writes.

use super::GuestPci;
use crate::device::{Effect, Effects, MmioDevice};
use crate::exit::AccessWidth;

/// MSI_TYPER: base SPI in bits 25:16, number of SPIs in bits 9:0.
const MSI_TYPER: u64 = 0x008;
/// MSI_SETSPI_NS: write an SPI's INTID to raise it.
const MSI_SETSPI_NS: u64 = 0x040;
/// MSI_IIDR: implementer identification (0: no vendor quirk applies).
const MSI_IIDR: u64 = 0xfcc;

/// The v2m frame of one partition.
#[derive(Debug)]
pub struct V2mFrame {
    layout: GuestPci,
    first: u32,
    count: u32,
}

impl V2mFrame {
    /// The frame for `layout`, or `None` when the layout has no MSI INTIDs.
    pub fn new(layout: GuestPci) -> Option<Self> {
        let (first, count) = layout.msi?;
        Some(Self {
            layout,
            first,
            count,
        })
    }
}

impl MmioDevice for V2mFrame {
    fn name(&self) -> &'static str {
        "gic-v2m"
    }

    fn size(&self) -> u64 {
        self.layout.v2m_frame.1
    }

    fn read(
        &mut self,
        _vcpu: usize,
        offset: u64,
        width: AccessWidth,
        _effects: &mut Effects,
    ) -> u64 {
        let value = match offset {
            MSI_TYPER => u64::from((self.first & 0x3ff) << 16 | (self.count & 0x3ff)),
            MSI_IIDR => 0,
            _ => 0,
        };
        value & width.mask()
    }

    fn write(
        &mut self,
        _vcpu: usize,
        offset: u64,
        width: AccessWidth,
        value: u64,
        effects: &mut Effects,
    ) {
        if offset == MSI_SETSPI_NS
            && matches!(width, AccessWidth::Word | AccessWidth::Half)
            && let Some(intid) = u32::try_from(value)
                .ok()
                .and_then(|data| self.layout.msi_intid(data))
        {
            effects.push(Effect::Raise { intid });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn typer_iidr_and_setspi() {
        let mut frame = V2mFrame::new(GuestPci::QEMU_VIRT).unwrap();
        let mut effects = Effects::default();
        assert_eq!(frame.size(), 0x1000);
        assert_eq!(
            frame.read(0, MSI_TYPER, AccessWidth::Word, &mut effects),
            (96 << 16) | 32
        );
        assert_eq!(frame.read(0, MSI_IIDR, AccessWidth::Word, &mut effects), 0);
        frame.write(0, MSI_SETSPI_NS, AccessWidth::Word, 100, &mut effects);
        frame.write(0, MSI_SETSPI_NS, AccessWidth::Word, 95, &mut effects);
        frame.write(0, MSI_SETSPI_NS, AccessWidth::Word, 128, &mut effects);
        frame.write(0, 0x44, AccessWidth::Word, 100, &mut effects);
        assert_eq!(
            effects.drain().collect::<Vec<_>>(),
            [Effect::Raise { intid: 100 }]
        );
        let mut no_msi = GuestPci::QEMU_VIRT;
        no_msi.msi = None;
        assert!(V2mFrame::new(no_msi).is_none());
    }
}
