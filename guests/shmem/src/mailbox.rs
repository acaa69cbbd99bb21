//! A one-slot message box in shared memory: the writer fills payload, length and checksum,
//! then publishes the sequence number; the reader waits for the number it expects, then reads.
//!
//! Layout at the box's offset (256 bytes): 0x00 sequence u32 (0 = empty), 0x04 length u32,
//! 0x08 checksum u32 (the writer's FNV-1a of the payload), 0x0C reserved, 0x10 payload.

use crate::memory::{OutOfBounds, SharedMemory};

/// Bytes one box takes in shared memory.
pub const MAILBOX_SIZE: usize = 0x100;
/// Largest payload.
pub const PAYLOAD_MAX: usize = MAILBOX_SIZE - PAYLOAD;

const SEQUENCE: usize = 0x00;
const LENGTH: usize = 0x04;
const CHECKSUM: usize = 0x08;
const PAYLOAD: usize = 0x10;

/// What a box holds, read by [`Mailbox::read`].
#[derive(Clone, Copy, Debug)]
pub struct Letter {
    /// Sequence number.
    pub sequence: u32,
    /// Payload bytes (the first `len` of `payload`).
    pub len: usize,
    /// Checksum the writer stored.
    pub checksum: u32,
    /// Payload buffer.
    pub payload: [u8; PAYLOAD_MAX],
}

impl Letter {
    /// The payload's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.payload.get(..self.len).unwrap_or(&[])
    }

    /// Whether the stored checksum matches the payload's FNV-1a.
    pub fn checksum_ok(&self) -> bool {
        crate::fnv1a(self.bytes()) == self.checksum
    }
}

/// A box at a fixed offset of a shared-memory range.
#[derive(Clone, Copy, Debug)]
pub struct Mailbox {
    memory: SharedMemory,
    offset: usize,
}

impl Mailbox {
    /// The box at `offset` (4-byte aligned, [`MAILBOX_SIZE`] bytes inside `memory`).
    pub fn new(memory: SharedMemory, offset: usize) -> Result<Self, OutOfBounds> {
        let error = OutOfBounds {
            offset,
            len: MAILBOX_SIZE,
        };
        let end = offset.checked_add(MAILBOX_SIZE).ok_or(error)?;
        if end > memory.len() || !offset.is_multiple_of(4) {
            return Err(error);
        }
        Ok(Self { memory, offset })
    }

    /// Writes `payload` (at most [`PAYLOAD_MAX`] bytes, the rest is cut) and its FNV-1a
    /// checksum, then publishes `sequence`. Returns the checksum.
    pub fn post(&self, sequence: u32, payload: &[u8]) -> Result<u32, OutOfBounds> {
        let payload = payload.get(..PAYLOAD_MAX).unwrap_or(payload);
        let checksum = crate::fnv1a(payload);
        self.memory.write_bytes(self.offset + PAYLOAD, payload)?;
        self.memory
            .write_u32(self.offset + LENGTH, payload.len() as u32)?;
        self.memory.write_u32(self.offset + CHECKSUM, checksum)?;
        self.memory
            .store_release_u32(self.offset + SEQUENCE, sequence)?;
        Ok(checksum)
    }

    /// The published sequence number (0: nothing posted yet).
    pub fn sequence(&self) -> u32 {
        self.memory
            .load_acquire_u32(self.offset + SEQUENCE)
            .unwrap_or(0)
    }

    /// Reads the box (after [`sequence`](Self::sequence) showed the number expected).
    pub fn read(&self) -> Result<Letter, OutOfBounds> {
        let sequence = self.memory.load_acquire_u32(self.offset + SEQUENCE)?;
        let len = (self.memory.read_u32(self.offset + LENGTH)? as usize).min(PAYLOAD_MAX);
        let checksum = self.memory.read_u32(self.offset + CHECKSUM)?;
        let mut payload = [0; PAYLOAD_MAX];
        if let Some(buffer) = payload.get_mut(..len) {
            self.memory.read_bytes(self.offset + PAYLOAD, buffer)?;
        }
        Ok(Letter {
            sequence,
            len,
            checksum,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_posted_letter_reads_back_with_its_checksum() {
        let mut backing = [0u32; 256];
        // SAFETY: the buffer outlives the test's accesses and holds no Rust object the
        // volatile writes could break (plain integers).
        let memory = unsafe { SharedMemory::new(backing.as_mut_ptr() as usize, 1024) };
        let mailbox = Mailbox::new(memory, 0x100).unwrap();
        assert_eq!(mailbox.sequence(), 0);
        let checksum = mailbox.post(7, b"hello").unwrap();
        assert_eq!(checksum, crate::fnv1a(b"hello"));
        assert_eq!(mailbox.sequence(), 7);
        let letter = mailbox.read().unwrap();
        assert_eq!(letter.bytes(), b"hello");
        assert!(letter.checksum_ok());
        // The layout: sequence at 0x100, length at 0x104, checksum at 0x108.
        assert_eq!(memory.read_u32(0x100).unwrap(), 7);
        assert_eq!(memory.read_u32(0x104).unwrap(), 5);
        assert_eq!(memory.read_u32(0x108).unwrap(), checksum);
    }

    #[test]
    fn boxes_must_fit_and_be_aligned() {
        let mut backing = [0u32; 128];
        // SAFETY: as above.
        let memory = unsafe { SharedMemory::new(backing.as_mut_ptr() as usize, 512) };
        assert!(Mailbox::new(memory, 0x100).is_ok());
        assert!(Mailbox::new(memory, 0x101).is_err());
        assert!(Mailbox::new(memory, 0x180).is_err());
        assert!(memory.read_u32(510).is_err());
    }
}
