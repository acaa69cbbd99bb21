//! Shared memory between partitions: the host-wide region registry, each device's restriction list and name substitution, and the QNX `vdev shmem` personality.
//!
//! - [`registry::Registry`] owns the regions (keyed by host name), their memory, their up to 16
//!   clients, the pending "notified by" masks and membership changes. It never calls a device:
//!   it answers with the clients to signal ([`Signals`]) and the caller turns them into
//!   [`crate::device::Effect::Signal`]s.
//! - [`policy::Policy`] turns a guest-visible name into a host name: validate, check the
//!   restriction list, substitute.
//! - [`qnx::QnxShmem`] is what a guest sees of `vdev shmem`: the factory page and the window
//!   of control and data pages.
//!
//! Nothing a guest writes can panic here: names, offsets, widths and masks are checked.

pub mod glob;
pub mod policy;
pub mod qnx;
pub mod qnx_pci;
pub mod registry;
mod signals;
mod window;

#[cfg(test)]
mod tests;

use core::fmt;

pub use policy::{Policy, Rule, Subst};
pub use qnx::{InterruptKind, QnxShmem};
pub use registry::{Attachment, RegionId, RegionInfo, Registry, ZeroMemory};
pub use signals::Signals;

/// Clients one region can have (QNX `GUEST_SHM_MAX_CLIENTS`).
pub const MAX_CLIENTS: usize = 16;
/// Bytes of the factory page's name field, NUL included (QNX `GUEST_SHM_MAX_NAME`).
pub const NAME_FIELD_SIZE: usize = 32;
/// Longest region name, without its NUL.
pub const MAX_NAME_LEN: usize = NAME_FIELD_SIZE - 1;

/// Outcome of a create/attach/find request: the QNX factory page's status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Status {
    /// Done.
    Ok = 0,
    /// Failed for another reason (a start-up region created twice with different sizes,
    /// a size of 0).
    UnknownFailure = 1,
    /// The shared-memory pool (or the device's window) cannot hold the region.
    NoMemory = 2,
    /// The region already has 16 clients.
    ClientMax = 3,
    /// The name is empty, too long, unterminated, or holds glob or non-printable bytes.
    IllegalName = 4,
    /// The restriction list refuses the name.
    NoPermission = 5,
    /// A find (or an attach that cannot create) named a region that does not exist.
    DoesNotExist = 6,
}

impl Status {
    /// The value the factory page's status register shows.
    pub const fn code(self) -> u32 {
        self as u32
    }
}

impl From<Status> for u32 {
    fn from(status: Status) -> u32 {
        status.code()
    }
}

/// Whether `byte` may appear in a region name: printable ASCII other than the glob
/// characters `*`, `?` and `[`.
pub(crate) const fn is_name_byte(byte: u8) -> bool {
    matches!(byte, 0x20..=0x7e) && !matches!(byte, b'*' | b'?' | b'[')
}

/// A region's name in the registry (after `subst`): 1 to 31 bytes of printable ASCII
/// without glob characters. Fixed size, so the registry needs no allocation per name.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostName {
    bytes: [u8; MAX_NAME_LEN],
    len: u8,
}

impl HostName {
    /// Checks and copies `name`; [`Status::IllegalName`] if it is empty, longer than 31
    /// bytes, or holds a byte that is not printable ASCII or is `*`, `?` or `[`.
    pub fn new(name: &[u8]) -> Result<HostName, Status> {
        HostName::concat(&[], name)
    }

    /// `prefix` followed by `rest`, checked as [`HostName::new`] checks.
    pub fn concat(prefix: &[u8], rest: &[u8]) -> Result<HostName, Status> {
        let mut bytes = [0; MAX_NAME_LEN];
        let mut len = 0usize;
        for &byte in prefix.iter().chain(rest) {
            let slot = bytes.get_mut(len).ok_or(Status::IllegalName)?;
            if !is_name_byte(byte) {
                return Err(Status::IllegalName);
            }
            *slot = byte;
            len += 1;
        }
        let len = u8::try_from(len).map_err(|_| Status::IllegalName)?;
        if len == 0 {
            return Err(Status::IllegalName);
        }
        Ok(HostName { bytes, len })
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// The name (always ASCII).
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl fmt::Debug for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostName({:?})", self.as_str())
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
