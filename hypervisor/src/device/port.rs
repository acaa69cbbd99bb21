//! x86 I/O ports: the per-partition table that finds a device by port number. Port devices
//! are register devices like MMIO ones (offset inside their range, width, effects), so they
//! implement the same [`MmioDevice`] trait; only the address space differs.

use alloc::boxed::Box;

use crate::addr::GuestPhysAddr;
use crate::device::{DeviceTable, DispatchError, Effects, MmioDevice};
use crate::exit::AccessWidth;

/// The port devices of one partition, non-overlapping.
#[derive(Default)]
pub struct PortTable {
    table: DeviceTable,
}

impl PortTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a device whose first port is `port`; refuses (returning it) one that would
    /// overlap another or run past port 0xffff.
    pub fn insert(
        &mut self,
        port: u16,
        device: Box<dyn MmioDevice>,
    ) -> Result<(), Box<dyn MmioDevice>> {
        if u64::from(port).saturating_add(device.size()) > 0x1_0000 {
            return Err(device);
        }
        self.table.insert(Self::key(port), device)
    }

    fn key(port: u16) -> GuestPhysAddr {
        GuestPhysAddr::new(u64::from(port))
    }

    /// Dispatches an `in` by vCPU `vcpu`.
    pub fn read(
        &mut self,
        vcpu: usize,
        port: u16,
        width: AccessWidth,
        effects: &mut Effects,
    ) -> Result<u64, DispatchError> {
        self.table.read(vcpu, Self::key(port), width, effects)
    }

    /// Dispatches an `out` by vCPU `vcpu`.
    pub fn write(
        &mut self,
        vcpu: usize,
        port: u16,
        width: AccessWidth,
        value: u64,
        effects: &mut Effects,
    ) -> Result<(), DispatchError> {
        self.table
            .write(vcpu, Self::key(port), width, value, effects)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Effect;
    use crate::device::uart16550::Virtual16550;

    #[test]
    fn dispatch_by_port() {
        let mut ports = PortTable::new();
        assert!(ports.insert(0x3f8, Box::new(Virtual16550::new())).is_ok());
        assert!(ports.insert(0x3fc, Box::new(Virtual16550::new())).is_err());
        assert!(ports.insert(0xfffc, Box::new(Virtual16550::new())).is_err());
        let mut effects = Effects::default();
        assert_eq!(
            ports.write(0, 0x3f8, AccessWidth::Byte, u64::from(b'x'), &mut effects),
            Ok(())
        );
        assert_eq!(
            effects.drain().collect::<alloc::vec::Vec<_>>(),
            [Effect::ConsoleByte(b'x')]
        );
        assert_eq!(
            ports.read(0, 0x3fd, AccessWidth::Byte, &mut effects),
            Ok(0x60)
        );
        assert_eq!(
            ports.read(0, 0x2f8, AccessWidth::Byte, &mut effects),
            Err(DispatchError::NoDevice)
        );
        assert_eq!(
            ports.read(0, 0x3ff, AccessWidth::Word, &mut effects),
            Err(DispatchError::Straddles)
        );
    }
}
