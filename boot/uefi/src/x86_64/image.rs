//! The embedded x86_64 image: an ELF64 whose loadable segments go to their physical addresses
//! and whose entry is the image's 64-bit entry (xtask writes it so; see
//! `boot/src/x86_64_handoff.rs`). Read with the `elf` crate and checked before anything is
//! allocated.

use core::fmt;

use elf::ElfBytes;
use elf::abi::{EM_X86_64, ET_EXEC, PF_X, PT_LOAD};
use elf::endian::LittleEndian;
use elf::file::Class;
use elf::segment::ProgramHeader;

use crate::{PAGE_SIZE, Range};

/// The highest end the image may have: the hand-off reaches it through 32-bit addresses and
/// identity maps of the low 4 GiB.
const LIMIT: u64 = 1 << 32;

/// Why the embedded image cannot be booted.
#[derive(Clone, Copy, Debug)]
pub enum ImageError {
    /// The `elf` crate refused the file (not ELF, not little-endian, truncated tables).
    Unparsable,
    /// Not a 64-bit executable for x86-64.
    WrongKind,
    /// No `PT_LOAD` segment.
    NothingToLoad,
    /// A segment's file bytes are outside the file or larger than its memory size.
    BadSegment(u64),
    /// The segments reach above 4 GiB (or their addresses overflow).
    AboveLimit(u64),
    /// The entry is not inside an executable segment.
    EntryOutside(u64),
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unparsable => f.write_str("not a little-endian ELF file"),
            Self::WrongKind => f.write_str("not an ELF64 x86-64 executable"),
            Self::NothingToLoad => f.write_str("the ELF has no loadable segment"),
            Self::BadSegment(address) => write!(
                f,
                "the segment at {address:#x} has file bytes outside the file or beyond its size"
            ),
            Self::AboveLimit(end) => {
                write!(
                    f,
                    "the segments end at {end:#x}, above 4 GiB where the hand-off cannot reach"
                )
            }
            Self::EntryOutside(entry) => write!(
                f,
                "the entry {entry:#x} is not in an executable segment (is this the UEFI copy of \
                 the image, whose entry is the 64-bit one?)"
            ),
        }
    }
}

/// The image, checked: where it goes and where it starts.
pub struct ElfImage {
    file: ElfBytes<'static, LittleEndian>,
    /// Pages the image occupies once running: every loadable segment's memory, page-rounded.
    pub destination: Range,
    /// The 64-bit entry (physical address).
    pub entry: u64,
}

impl ElfImage {
    /// Reads and checks `bytes` (the whole file).
    pub fn parse(bytes: &'static [u8]) -> Result<Self, ImageError> {
        let file =
            ElfBytes::<LittleEndian>::minimal_parse(bytes).map_err(|_| ImageError::Unparsable)?;
        let header = &file.ehdr;
        if header.class != Class::ELF64 || header.e_machine != EM_X86_64 || header.e_type != ET_EXEC
        {
            return Err(ImageError::WrongKind);
        }
        let entry = header.e_entry;
        let mut span: Option<Range> = None;
        let mut entry_executable = false;
        for segment in loadable(&file) {
            let data = file
                .segment_data(&segment)
                .map_err(|_| ImageError::BadSegment(segment.p_paddr))?;
            if data.len() as u64 > segment.p_memsz {
                return Err(ImageError::BadSegment(segment.p_paddr));
            }
            let range = Range::new(segment.p_paddr, segment.p_memsz)
                .ok_or(ImageError::AboveLimit(u64::MAX))?;
            if segment.p_flags & PF_X != 0 && range.start <= entry && entry < range.end {
                entry_executable = true;
            }
            span = Some(match span {
                None => range,
                Some(span) => Range {
                    start: span.start.min(range.start),
                    end: span.end.max(range.end),
                },
            });
        }
        let span = span.ok_or(ImageError::NothingToLoad)?;
        let end = span
            .end
            .checked_next_multiple_of(PAGE_SIZE)
            .ok_or(ImageError::AboveLimit(span.end))?;
        if end > LIMIT {
            return Err(ImageError::AboveLimit(end));
        }
        if !entry_executable {
            return Err(ImageError::EntryOutside(entry));
        }
        Ok(Self {
            file,
            destination: Range {
                start: span.start - span.start % PAGE_SIZE,
                end,
            },
            entry,
        })
    }

    /// Writes the running image, as it must sit at [`Self::destination`], to `address`: the
    /// segments' file bytes at their offsets, everything else zero.
    ///
    /// # Safety
    ///
    /// `[address, address + destination.len())` must be identity-mapped memory the loader
    /// owns, disjoint from the embedded file.
    pub unsafe fn write(&self, address: u64) {
        let len = usize::try_from(self.destination.len()).unwrap_or(0);
        // SAFETY: the caller guarantees the range is the loader's and writable.
        unsafe { core::ptr::write_bytes(address as *mut u8, 0, len) };
        for segment in loadable(&self.file) {
            let Ok(data) = self.file.segment_data(&segment) else {
                continue;
            };
            let offset = segment.p_paddr - self.destination.start;
            // SAFETY: `parse` checked that the segment (`p_memsz >= data.len()` bytes from
            // `p_paddr`) lies inside the destination, so `offset + data.len() <= len`.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    data.as_ptr(),
                    (address as *mut u8).add(offset as usize),
                    data.len(),
                );
            }
        }
    }
}

/// The file's `PT_LOAD` program headers.
fn loadable(file: &ElfBytes<'static, LittleEndian>) -> impl Iterator<Item = ProgramHeader> {
    file.segments()
        .into_iter()
        .flatten()
        .filter(|segment| segment.p_type == PT_LOAD)
}
