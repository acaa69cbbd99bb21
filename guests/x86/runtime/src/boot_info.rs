//! The boot information page Bulkhead writes into guest RAM (its address arrives in RDI):
//! `0x00` magic `BULKHEAD` (u64), `0x08` RAM bytes (u64), `0x10` vCPU index (u64), `0x18`
//! name length (u64, at most 64), `0x20` the partition's name (UTF-8, no NUL), `0x60` the TSC
//! rate in Hz as the hypervisor measured it (u64, 0: unknown), `0x68` how many times the
//! partition was restarted (u64), `0x70` the command line's length (u64, at most
//! [`COMMAND_LINE_CAPACITY`]; the text, ASCII, from `0x400`: the VM file's `cmdline`, then
//! `bulkhead.restarts=N`); `0x100` the
//! number of devices (u64, at most [`MAX_DEVICES`]), then from `0x108` one 24-byte entry per
//! device: kind (u32), number (u32), base (u64), size (u64) ([`Device`]).

use core::sync::atomic::{AtomicU64, Ordering};

/// The magic value at offset 0.
pub const MAGIC: u64 = u64::from_le_bytes(*b"BULKHEAD");
/// Most devices the list holds.
pub const MAX_DEVICES: usize = 16;
const NAME_OFFSET: usize = 0x20;
const NAME_CAPACITY: usize = 64;
const DEVICE_COUNT_OFFSET: usize = 0x100;
const DEVICES_OFFSET: usize = 0x108;
const DEVICE_ENTRY_SIZE: usize = 24;
const COMMAND_LINE_LENGTH_OFFSET: usize = 0x70;
const COMMAND_LINE_OFFSET: usize = 0x400;
/// Most bytes of command line the page holds.
pub const COMMAND_LINE_CAPACITY: usize = 0xc00;
/// Bytes of the page the runtime reads: all of it.
const PAGE_USED: usize = COMMAND_LINE_OFFSET + COMMAND_LINE_CAPACITY;

static ADDRESS: AtomicU64 = AtomicU64::new(0);

#[cfg_attr(not(target_os = "none"), allow(dead_code))]
pub(crate) fn set_address(address: u64) {
    ADDRESS.store(address, Ordering::Relaxed);
}

/// What a device-list entry describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// 1: an I/O APIC (`vdev ioapic`): base = its registers (4 KiB), number = its pins.
    IoApic,
    /// 2: a QNX shmem factory page in MMIO form (`vdev shmem loc ... intr NAME:N`): base =
    /// `loc` (4 KiB), number = the I/O APIC pin `N`.
    QnxShmem,
    /// 3: the PCI configuration space of bus 0 as ECAM: base, size.
    PciEcam,
    /// 4: the PCI host bridge's 32-bit memory window: base, size.
    PciMemory32,
    /// 5: the PCI host bridge's 64-bit prefetchable memory window: base, size.
    PciMemory64,
    /// 6: a 16550 UART: base = its first I/O port, size 8.
    Uart16550,
    /// A kind this runtime does not know.
    Other(u32),
}

impl DeviceKind {
    /// The kind with list value `raw`.
    pub fn from_raw(raw: u32) -> Self {
        match raw {
            1 => DeviceKind::IoApic,
            2 => DeviceKind::QnxShmem,
            3 => DeviceKind::PciEcam,
            4 => DeviceKind::PciMemory32,
            5 => DeviceKind::PciMemory64,
            6 => DeviceKind::Uart16550,
            other => DeviceKind::Other(other),
        }
    }
}

/// One entry of the device list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Device {
    /// What it is.
    pub kind: DeviceKind,
    /// Kind-specific: I/O APIC pins, or the I/O APIC pin of a QNX shmem device.
    pub number: u32,
    /// Guest-physical address (an I/O port for a UART).
    pub base: u64,
    /// Bytes (ports for a UART).
    pub size: u64,
}

/// The boot information page as bytes (`PAGE_USED` of them), if the hypervisor passed one.
fn page() -> Option<&'static [u8]> {
    let address = ADDRESS.load(Ordering::Relaxed);
    if address == 0 || !address.is_multiple_of(8) {
        return None;
    }
    // SAFETY: the hypervisor passed this address of a page in our identity-mapped RAM, wrote
    // it before entry and nobody writes it afterwards; the slice stays inside that page.
    let bytes = unsafe { core::slice::from_raw_parts(address as *const u8, PAGE_USED) };
    (read_u64(bytes, 0) == Some(MAGIC)).then_some(bytes)
}

fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    let field = bytes.get(offset..offset.checked_add(8)?)?;
    Some(u64::from_le_bytes(field.try_into().ok()?))
}

fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let field = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes(field.try_into().ok()?))
}

/// Whether the hypervisor passed boot information.
pub fn present() -> bool {
    page().is_some()
}

/// The partition's RAM in bytes (RAM starts at guest-physical 0).
pub fn ram_size() -> Option<u64> {
    read_u64(page()?, 0x08)
}

/// This vCPU's index in its partition (as vCPU 0 found it: secondaries get no page).
pub fn vcpu_index() -> Option<u64> {
    read_u64(page()?, 0x10)
}

/// The TSC rate in Hz the hypervisor measured (what this vCPU's TSC really counts, also
/// under an emulator), if it says.
pub fn tsc_hz() -> Option<u64> {
    read_u64(page()?, 0x60).filter(|&hz| hz != 0)
}

/// How many times the partition was restarted (fault policy `restart`, SYSTEM_RESET).
pub fn restarts() -> Option<u64> {
    read_u64(page()?, 0x68)
}

/// The partition's command line (the VM file's `cmdline`, then `bulkhead.restarts=N`), if
/// the hypervisor wrote one.
pub fn command_line() -> Option<&'static str> {
    command_line_in(page()?)
}

fn command_line_in(page: &'static [u8]) -> Option<&'static str> {
    let length = usize::try_from(read_u64(page, COMMAND_LINE_LENGTH_OFFSET)?)
        .ok()?
        .min(COMMAND_LINE_CAPACITY);
    let bytes = page.get(COMMAND_LINE_OFFSET..COMMAND_LINE_OFFSET + length)?;
    core::str::from_utf8(bytes)
        .ok()
        .filter(|line| !line.is_empty())
}

/// The partition's name (`system NAME`), or `"?"`.
pub fn name() -> &'static str {
    page().and_then(name_in).unwrap_or("?")
}

fn name_in(page: &'static [u8]) -> Option<&'static str> {
    let length = usize::try_from(read_u64(page, 0x18)?)
        .unwrap_or(0)
        .min(NAME_CAPACITY);
    let bytes = page.get(NAME_OFFSET..NAME_OFFSET + length)?;
    core::str::from_utf8(bytes).ok()
}

/// The device list (empty without boot information).
pub fn devices() -> Devices {
    Devices::parse(page().unwrap_or(&[]))
}

/// The `nth` (from 0) listed device of `kind`.
pub fn device(kind: DeviceKind, nth: usize) -> Option<Device> {
    devices().filter(|device| device.kind == kind).nth(nth)
}

/// An iterator over the device list of a boot information page.
#[derive(Clone, Debug)]
pub struct Devices {
    page: &'static [u8],
    next: usize,
    count: usize,
}

impl Devices {
    /// The devices listed in `page` (the boot information page's bytes from offset 0; a count
    /// above [`MAX_DEVICES`] is cut to it, entries past the slice's end are left out).
    pub fn parse(page: &'static [u8]) -> Self {
        let count = read_u64(page, DEVICE_COUNT_OFFSET)
            .and_then(|count| usize::try_from(count).ok())
            .unwrap_or(0)
            .min(MAX_DEVICES);
        Self {
            page,
            next: 0,
            count,
        }
    }
}

impl Iterator for Devices {
    type Item = Device;

    fn next(&mut self) -> Option<Device> {
        if self.next >= self.count {
            return None;
        }
        let offset = DEVICES_OFFSET + self.next * DEVICE_ENTRY_SIZE;
        self.next += 1;
        let device = Device {
            kind: DeviceKind::from_raw(read_u32(self.page, offset)?),
            number: read_u32(self.page, offset + 4)?,
            base: read_u64(self.page, offset + 8)?,
            size: read_u64(self.page, offset + 16)?,
        };
        Some(device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern crate std;
    use std::boxed::Box;
    use std::vec;
    use std::vec::Vec;

    fn page_with(devices: &[(u32, u32, u64, u64)], count: u64) -> &'static [u8] {
        let mut page = vec![0u8; PAGE_USED];
        page[..8].copy_from_slice(&MAGIC.to_le_bytes());
        page[DEVICE_COUNT_OFFSET..DEVICE_COUNT_OFFSET + 8].copy_from_slice(&count.to_le_bytes());
        for (index, &(kind, number, base, size)) in devices.iter().enumerate() {
            let offset = DEVICES_OFFSET + index * DEVICE_ENTRY_SIZE;
            page[offset..offset + 4].copy_from_slice(&kind.to_le_bytes());
            page[offset + 4..offset + 8].copy_from_slice(&number.to_le_bytes());
            page[offset + 8..offset + 16].copy_from_slice(&base.to_le_bytes());
            page[offset + 16..offset + 24].copy_from_slice(&size.to_le_bytes());
        }
        Box::leak(page.into_boxed_slice())
    }

    #[test]
    fn parses_every_kind_in_order() {
        let page = page_with(
            &[
                (1, 24, 0xfec0_0000, 0x1000),
                (2, 10, 0x0a00_0000, 0x1000),
                (3, 0, 0xe000_0000, 0x10_0000),
                (4, 0, 0xc000_0000, 0x1000_0000),
                (5, 0, 0x80_0000_0000, 0x80_0000_0000),
                (6, 0, 0x3f8, 8),
                (9, 1, 2, 3),
            ],
            7,
        );
        let devices: Vec<Device> = Devices::parse(page).collect();
        assert_eq!(devices.len(), 7);
        assert_eq!(
            devices[0],
            Device {
                kind: DeviceKind::IoApic,
                number: 24,
                base: 0xfec0_0000,
                size: 0x1000
            }
        );
        assert_eq!(devices[1].kind, DeviceKind::QnxShmem);
        assert_eq!(devices[1].number, 10);
        assert_eq!(devices[2].kind, DeviceKind::PciEcam);
        assert_eq!(devices[3].kind, DeviceKind::PciMemory32);
        assert_eq!(devices[4].kind, DeviceKind::PciMemory64);
        assert_eq!(devices[4].size, 0x80_0000_0000);
        assert_eq!(devices[5].kind, DeviceKind::Uart16550);
        assert_eq!(devices[6].kind, DeviceKind::Other(9));
    }

    #[test]
    fn count_is_capped_and_zero_means_none() {
        let page = page_with(&[(1, 24, 0xfec0_0000, 0x1000)], 1000);
        assert_eq!(Devices::parse(page).count(), MAX_DEVICES);
        let page = page_with(&[(1, 24, 0xfec0_0000, 0x1000)], 0);
        assert_eq!(Devices::parse(page).count(), 0);
    }

    #[test]
    fn short_page_yields_what_fits() {
        let page = page_with(&[(1, 24, 0xfec0_0000, 0x1000), (2, 3, 4, 5)], 2);
        let short: &'static [u8] = &page[..DEVICES_OFFSET + DEVICE_ENTRY_SIZE + 10];
        assert_eq!(Devices::parse(short).count(), 1);
        assert_eq!(Devices::parse(&[]).count(), 0);
    }

    #[test]
    fn name_is_cut_to_its_capacity() {
        let mut page = page_with(&[], 0).to_vec();
        page[0x18..0x20].copy_from_slice(&500u64.to_le_bytes());
        page[NAME_OFFSET..NAME_OFFSET + NAME_CAPACITY].fill(b'a');
        let page: &'static [u8] = Box::leak(page.into_boxed_slice());
        assert_eq!(name_in(page).map(str::len), Some(NAME_CAPACITY));
    }

    #[test]
    fn command_line_is_read_up_to_its_length() {
        let page: &'static mut [u8] = Box::leak(vec![0u8; PAGE_USED].into_boxed_slice());
        let text = b"console=ttyS0 bulkhead.restarts=2 trailing";
        page[COMMAND_LINE_OFFSET..COMMAND_LINE_OFFSET + text.len()].copy_from_slice(text);
        page[COMMAND_LINE_LENGTH_OFFSET..COMMAND_LINE_LENGTH_OFFSET + 8]
            .copy_from_slice(&33u64.to_le_bytes());
        let page: &'static [u8] = page;
        assert_eq!(
            command_line_in(page),
            Some("console=ttyS0 bulkhead.restarts=2")
        );
        let empty: &'static [u8] = Box::leak(vec![0u8; PAGE_USED].into_boxed_slice());
        assert_eq!(command_line_in(empty), None);
    }
}
