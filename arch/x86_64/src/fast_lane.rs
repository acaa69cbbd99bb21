//! The core's fast lane ([`hypervisor::fast`]) for the x86 backends: an MMIO exit to a
//! register the partition published (an ivshmem doorbell, a reserved register) is answered
//! inside the backend's run loop and the guest re-entered at once, without the core's run
//! loop or the partition's device table. Both backends (VMX, SVM) ask it after decoding.

use hypervisor::exit::{Action, Exit};
use hypervisor::partition::{Partition, Platform};

/// The fast lane's answer to `exit` of vCPU `vcpu` (what to complete it with), or `None`
/// when the run loop must take it.
#[inline]
pub fn answer(
    partition: &Partition,
    vcpu: usize,
    platform: &dyn Platform,
    exit: &Exit,
) -> Option<Action> {
    let (address, width, write) = match *exit {
        Exit::MmioRead { address, width, .. } => (address, width, None),
        Exit::MmioWrite {
            address,
            width,
            value,
            ..
        } => (address, width, Some(value)),
        _ => return None,
    };
    // The backends' loops sync the virtual APIC before every entry: no self-kick needed.
    partition
        .fast_mmio(
            vcpu,
            address.as_u64(),
            width.bytes(),
            write,
            platform,
            false,
        )
        .then_some(match write {
            Some(_) => Action::Resume,
            None => Action::CompleteRead(0),
        })
}
