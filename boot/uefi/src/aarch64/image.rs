//! The arm64 Linux Image header of the embedded hypervisor, read and checked.

use core::fmt;

/// `"ARM\x64"` at offset 0x38.
const MAGIC: u32 = 0x644d_5241;
/// Size of the header the boot protocol defines.
const HEADER_SIZE: usize = 64;
/// Header `flags` bit 0: the image is big-endian.
const FLAG_BIG_ENDIAN: u64 = 1 << 0;

/// What the header says about how to place the image.
#[derive(Clone, Copy, Debug)]
pub struct ImageHeader {
    /// Offset from a 2 MiB-aligned base near the start of RAM where the image goes.
    pub text_offset: u64,
    /// Bytes the image occupies once running: the file plus .bss and anything else it expects
    /// zeroed. Never smaller than the file.
    pub image_size: u64,
}

/// Why the embedded image cannot be booted.
#[derive(Clone, Copy, Debug)]
pub enum HeaderError {
    /// Shorter than the 64-byte header.
    TooShort(usize),
    /// No `ARM\x64` magic at 0x38.
    BadMagic(u32),
    /// `image_size` is smaller than the file itself.
    SizeBelowFile { image_size: u64, file_size: usize },
    /// Big-endian image; this loader and the CPU run little-endian.
    BigEndian,
    /// `text_offset` is not a multiple of 4 KiB (the image could not start a page).
    UnalignedOffset(u64),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort(len) => write!(f, "{len} bytes, shorter than an arm64 Image header"),
            Self::BadMagic(magic) => {
                write!(
                    f,
                    "magic {magic:#x} at 0x38 is not an arm64 Image's {MAGIC:#x}"
                )
            }
            Self::SizeBelowFile {
                image_size,
                file_size,
            } => write!(
                f,
                "header image_size {image_size:#x} is smaller than the file ({file_size:#x} bytes)"
            ),
            Self::BigEndian => {
                f.write_str("big-endian image (flags bit 0); only little-endian boots")
            }
            Self::UnalignedOffset(offset) => {
                write!(f, "text_offset {offset:#x} is not 4 KiB-aligned")
            }
        }
    }
}

fn le_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    let field = bytes.get(offset..offset.checked_add(8)?)?;
    Some(u64::from_le_bytes(field.try_into().ok()?))
}

fn le_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let field = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes(field.try_into().ok()?))
}

impl ImageHeader {
    /// Reads and checks the header at the start of `image` (the whole file).
    pub fn parse(image: &[u8]) -> Result<Self, HeaderError> {
        if image.len() < HEADER_SIZE {
            return Err(HeaderError::TooShort(image.len()));
        }
        let short = HeaderError::TooShort(image.len());
        let text_offset = le_u64(image, 0x08).ok_or(short)?;
        let image_size = le_u64(image, 0x10).ok_or(short)?;
        let flags = le_u64(image, 0x18).ok_or(short)?;
        let magic = le_u32(image, 0x38).ok_or(short)?;
        if magic != MAGIC {
            return Err(HeaderError::BadMagic(magic));
        }
        // image_size 0 means "unknown" in pre-3.17 kernels; Bulkhead always fills it in, and a
        // loader cannot zero a .bss of unknown size, so that case is refused here too.
        if image_size < image.len() as u64 {
            return Err(HeaderError::SizeBelowFile {
                image_size,
                file_size: image.len(),
            });
        }
        if flags & FLAG_BIG_ENDIAN != 0 {
            return Err(HeaderError::BigEndian);
        }
        if !text_offset.is_multiple_of(4096) {
            return Err(HeaderError::UnalignedOffset(text_offset));
        }
        Ok(Self {
            text_offset,
            image_size,
        })
    }
}
