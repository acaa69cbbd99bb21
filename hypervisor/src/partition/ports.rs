//! x86 port I/O exits of a partition: dispatched by port number to the partition's port
//! devices (the virtual 16550); a port no device claims is a fault like an access outside the
//! partition's map.

use alloc::format;

use super::{Partition, Platform};
use crate::device::{DispatchError, Effects};
use crate::exit::{AccessWidth, Action};

impl Partition {
    /// An `in` of `width` from `port` by vCPU `vcpu`.
    pub(super) fn port_read(
        &self,
        vcpu: usize,
        port: u16,
        width: AccessWidth,
        platform: &dyn Platform,
    ) -> Action {
        let mut effects = Effects::default();
        let mut inner = self.inner.lock();
        let result = inner.ports.read(vcpu, port, width, &mut effects);
        self.apply_memory(&mut effects, platform);
        drop(inner);
        self.apply(vcpu, &mut effects, platform);
        match result {
            Ok(value) => Action::CompleteRead(value),
            Err(error) => self.fault(vcpu, port_report("in", port, width, error)),
        }
    }

    /// An `out` of `value` (`width`) to `port` by vCPU `vcpu`.
    pub(super) fn port_write(
        &self,
        vcpu: usize,
        port: u16,
        width: AccessWidth,
        value: u64,
        platform: &dyn Platform,
    ) -> Action {
        let mut effects = Effects::default();
        let mut inner = self.inner.lock();
        let result = inner.ports.write(vcpu, port, width, value, &mut effects);
        self.apply_memory(&mut effects, platform);
        drop(inner);
        self.apply(vcpu, &mut effects, platform);
        match result {
            Ok(()) => Action::Resume,
            Err(error) => self.fault(vcpu, port_report("out", port, width, error)),
        }
    }
}

fn port_report(
    kind: &str,
    port: u16,
    width: AccessWidth,
    error: DispatchError,
) -> alloc::string::String {
    let what = match error {
        DispatchError::NoDevice => "no device",
        DispatchError::Straddles => "straddling a device's end",
    };
    format!(
        "{kind} of {} bytes at I/O port {port:#x}: {what}",
        width.bytes()
    )
}
