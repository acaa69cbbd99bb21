//! The x86_64 boot media: the image as a lean Multiboot2 ELF (loadable segments only) on a
//! GRUB rescue ISO whose `grub.cfg` boots it with a command line, over the serial console; and
//! the same lean ELF with its entry moved to the 64-bit one, which the UEFI loader embeds.

use std::path::{Path, PathBuf};
use std::process::Command;

use object::elf;
use object::read::elf::{FileHeader, ProgramHeader, Sym};

use crate::error::{Context, Error, Result};
use crate::setup::Requirement;
use crate::workspace;

/// The Multiboot2 header magic; the header must start 8-byte aligned in the first 32 KiB.
const MULTIBOOT2_MAGIC: u32 = 0xe852_50d6;
const MULTIBOOT2_SEARCH: usize = 32 << 10;
/// The image's 64-bit entry, which the UEFI loader jumps to: the entry of the ELF it embeds
/// (`boot::x86_64_handoff::UEFI_ENTRY_SYMBOL`).
pub const UEFI_ENTRY_SYMBOL: &str = "bulkhead_x86_uefi_entry";

/// The host tools `make` needs, with the Debian/Ubuntu packages providing them.
pub fn requirements() -> Vec<Requirement> {
    vec![
        Requirement::Program {
            program: "grub-mkrescue".to_string(),
            package: "grub-common".to_string(),
        },
        Requirement::File {
            path: PathBuf::from("/usr/lib/grub/i386-pc/multiboot2.mod"),
            package: "grub-pc-bin".to_string(),
        },
        Requirement::Program {
            program: "xorriso".to_string(),
            package: "xorriso".to_string(),
        },
        Requirement::Program {
            program: "mformat".to_string(),
            package: "mtools".to_string(),
        },
    ]
}

/// The `grub.cfg` that boots `/boot/bulkhead.elf` at once with `command_line`, on COM1.
pub fn grub_config(command_line: &str) -> Result<String> {
    let mut words = Vec::new();
    for word in command_line.split_whitespace() {
        if word.contains('\'') || word.chars().any(char::is_control) {
            return Err(Error::new(format!(
                "the boot option `{word}` cannot go on a GRUB command line (quote or control \
                 character)"
            )));
        }
        words.push(format!("'{word}'"));
    }
    let arguments = if words.is_empty() {
        String::new()
    } else {
        format!(" {}", words.join(" "))
    };
    Ok(format!(
        "# Written by `cargo xtask`: boot Bulkhead at once, console on COM1.\n\
         set timeout=0\n\
         set default=0\n\
         serial --unit=0 --speed=115200\n\
         terminal_input serial\n\
         terminal_output serial\n\
         menuentry \"Bulkhead\" {{\n\
         \x20   multiboot2 /boot/bulkhead.elf{arguments}\n\
         \x20   boot\n\
         }}\n"
    ))
}

/// Writes a GRUB ISO at `output` that boots `image` (a Multiboot2 ELF) with `command_line`.
/// The staging directory (`output` with the extension `isodir`) is removed afterwards.
pub fn make(image: &Path, command_line: &str, output: &Path) -> Result<PathBuf> {
    let staging = output.with_extension("isodir");
    let grub = staging.join("boot").join("grub");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .context(|| format!("cannot clear {}", staging.display()))?;
    }
    std::fs::create_dir_all(&grub).context(|| format!("cannot create {}", grub.display()))?;
    std::fs::write(grub.join("grub.cfg"), grub_config(command_line)?)
        .context(|| format!("cannot write {}", grub.join("grub.cfg").display()))?;
    let elf = staging.join("boot").join("bulkhead.elf");
    std::fs::copy(image, &elf)
        .context(|| format!("cannot copy {} to {}", image.display(), elf.display()))?;
    let mut command = Command::new("grub-mkrescue");
    command.arg("-o").arg(output).arg(&staging);
    let result = command
        .output()
        .context(|| "cannot run grub-mkrescue".to_string())?;
    if !result.status.success() {
        return Err(Error::new(format!(
            "`{}` failed ({}):\n{}",
            workspace::display(&command),
            result.status,
            String::from_utf8_lossy(&result.stderr).trim()
        )));
    }
    // The ISO holds everything; a leftover staging directory would only confuse.
    let _ = std::fs::remove_dir_all(&staging);
    Ok(output.to_path_buf())
}

/// The address of the symbol `name` in `elf_bytes` (a 64-bit ELF with its symbol table).
pub fn symbol_address(elf_bytes: &[u8], name: &str) -> Result<u64> {
    let header = elf::FileHeader64::<object::Endianness>::parse(elf_bytes)
        .context(|| "not a 64-bit ELF file".to_string())?;
    let endian = header
        .endian()
        .context(|| "unknown ELF byte order".to_string())?;
    let sections = header
        .sections(endian, elf_bytes)
        .context(|| "bad section headers".to_string())?;
    let symbols = sections
        .symbols(endian, elf_bytes, elf::SHT_SYMTAB)
        .context(|| "bad symbol table".to_string())?;
    symbols
        .iter()
        .find(|symbol| symbols.symbol_name(endian, symbol) == Ok(name.as_bytes()))
        .map(|symbol| symbol.st_value(endian))
        .context(|| format!("no symbol `{name}` in the image"))
}

/// An ELF64 with only the loadable segments of `elf_bytes` (no sections, no symbols, no debug
/// information): what GRUB needs, a fraction of the size, so emulated disk reads stay short.
/// Each segment keeps its file offset's alignment to its address within a page. `entry`
/// replaces the ELF entry (the UEFI loader's copy enters at the 64-bit entry).
pub fn loadable_elf(elf_bytes: &[u8], entry: Option<u64>) -> Result<Vec<u8>> {
    const HEADER: usize = 64;
    const PROGRAM_HEADER: usize = 56;
    const PAGE: u64 = 4096;
    let header = elf::FileHeader64::<object::Endianness>::parse(elf_bytes)
        .context(|| "not a 64-bit ELF file".to_string())?;
    let endian = header
        .endian()
        .context(|| "unknown ELF byte order".to_string())?;
    if header.e_machine(endian) != elf::EM_X86_64 {
        return Err(Error::new("the ELF is not an x86-64 executable"));
    }
    let program_headers = header
        .program_headers(endian, elf_bytes)
        .context(|| "bad program headers".to_string())?;
    let loadable: Vec<_> = program_headers
        .iter()
        .filter(|program_header| program_header.p_type(endian) == elf::PT_LOAD)
        .collect();
    if loadable.is_empty() {
        return Err(Error::new("the ELF has no loadable segment"));
    }
    let mut output = vec![0_u8; HEADER + PROGRAM_HEADER * loadable.len()];
    let mut tables = Vec::new();
    for program_header in &loadable {
        let data = program_header
            .data(endian, elf_bytes)
            .map_err(|()| Error::new("a PT_LOAD segment lies outside the file"))?;
        let address = program_header.p_vaddr(endian);
        let mut offset = (output.len() as u64).div_ceil(PAGE) * PAGE + address % PAGE;
        if data.is_empty() {
            offset = output.len() as u64;
        }
        let offset_usize = usize::try_from(offset).context(|| "image too large".to_string())?;
        output.resize(offset_usize, 0);
        output.extend_from_slice(data);
        let mut entry = Vec::with_capacity(PROGRAM_HEADER);
        entry.extend_from_slice(&elf::PT_LOAD.0.to_le_bytes());
        entry.extend_from_slice(&program_header.p_flags(endian).0.to_le_bytes());
        entry.extend_from_slice(&offset.to_le_bytes());
        entry.extend_from_slice(&address.to_le_bytes());
        entry.extend_from_slice(&program_header.p_paddr(endian).to_le_bytes());
        entry.extend_from_slice(&(data.len() as u64).to_le_bytes());
        entry.extend_from_slice(&program_header.p_memsz(endian).to_le_bytes());
        entry.extend_from_slice(&PAGE.to_le_bytes());
        tables.extend_from_slice(&entry);
    }
    let mut file_header = Vec::with_capacity(HEADER);
    file_header.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    file_header.extend_from_slice(&elf::ET_EXEC.0.to_le_bytes());
    file_header.extend_from_slice(&elf::EM_X86_64.0.to_le_bytes());
    file_header.extend_from_slice(&1_u32.to_le_bytes());
    file_header.extend_from_slice(&entry.unwrap_or(header.e_entry(endian)).to_le_bytes());
    file_header.extend_from_slice(&(HEADER as u64).to_le_bytes()); // e_phoff
    file_header.extend_from_slice(&0_u64.to_le_bytes()); // e_shoff
    file_header.extend_from_slice(&0_u32.to_le_bytes()); // e_flags
    file_header.extend_from_slice(&(HEADER as u16).to_le_bytes());
    file_header.extend_from_slice(&(PROGRAM_HEADER as u16).to_le_bytes());
    let count = u16::try_from(loadable.len()).context(|| "too many segments".to_string())?;
    file_header.extend_from_slice(&count.to_le_bytes());
    file_header.extend_from_slice(&64_u16.to_le_bytes()); // e_shentsize
    file_header.extend_from_slice(&0_u16.to_le_bytes()); // e_shnum
    file_header.extend_from_slice(&0_u16.to_le_bytes()); // e_shstrndx
    output
        .get_mut(..HEADER)
        .context(|| "output too short".to_string())?
        .copy_from_slice(&file_header);
    output
        .get_mut(HEADER..HEADER + tables.len())
        .context(|| "output too short".to_string())?
        .copy_from_slice(&tables);
    Ok(output)
}

/// Checks that a Multiboot2 header with a valid checksum starts 8-byte aligned within the
/// file's first 32 KiB (where boot loaders look for it).
pub fn check_multiboot2_header(file: &[u8]) -> Result<()> {
    let word = |offset: usize| {
        file.get(offset..offset + 4)
            .and_then(|bytes| <[u8; 4]>::try_from(bytes).ok())
            .map(u32::from_le_bytes)
    };
    let found = (0..MULTIBOOT2_SEARCH.min(file.len()))
        .step_by(8)
        .any(|offset| {
            word(offset) == Some(MULTIBOOT2_MAGIC)
                && match (word(offset + 4), word(offset + 8), word(offset + 12)) {
                    (Some(architecture), Some(length), Some(checksum)) => {
                        MULTIBOOT2_MAGIC
                            .wrapping_add(architecture)
                            .wrapping_add(length)
                            .wrapping_add(checksum)
                            == 0
                    }
                    _ => false,
                }
        });
    if found {
        Ok(())
    } else {
        Err(Error::new(
            "no Multiboot2 header (magic 0xe85250d6, valid checksum) in the first 32 KiB: GRUB \
             would refuse the image",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_bytes() -> Vec<u8> {
        let mut bytes = Vec::new();
        for word in [
            MULTIBOOT2_MAGIC,
            0,
            24,
            0_u32.wrapping_sub(MULTIBOOT2_MAGIC + 24),
        ] {
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        bytes.extend_from_slice(&[0, 0, 0, 0, 8, 0, 0, 0]);
        bytes
    }

    #[test]
    fn grub_config_quotes_words_and_refuses_quotes() {
        let config = grub_config("bulkhead.exit=debug-exit  bulkhead.poweroff").unwrap();
        assert!(config.contains(
            "    multiboot2 /boot/bulkhead.elf 'bulkhead.exit=debug-exit' 'bulkhead.poweroff'\n"
        ));
        assert!(config.contains("terminal_output serial\n"));
        assert!(config.contains("set timeout=0\n"));
        assert!(
            grub_config("")
                .unwrap()
                .contains("multiboot2 /boot/bulkhead.elf\n")
        );
        assert!(grub_config("it's").is_err());
    }

    #[test]
    fn multiboot2_header_must_be_aligned_valid_and_early() {
        let mut file = vec![0_u8; 0x1000];
        file.extend_from_slice(&header_bytes());
        check_multiboot2_header(&file).unwrap();
        let mut misaligned = vec![0_u8; 0x1004];
        misaligned.extend_from_slice(&header_bytes());
        assert!(check_multiboot2_header(&misaligned).is_err());
        let mut late = vec![0_u8; MULTIBOOT2_SEARCH];
        late.extend_from_slice(&header_bytes());
        assert!(check_multiboot2_header(&late).is_err());
        let mut bad_checksum = header_bytes();
        bad_checksum[12] ^= 1;
        assert!(check_multiboot2_header(&bad_checksum).is_err());
    }

    /// A minimal ELF64 for x86-64 with two PT_LOAD segments, a note and trailing "debug" bytes.
    fn sample_elf() -> Vec<u8> {
        let segments: [(u32, u64, &[u8], u64); 3] = [
            (1, 0x20_0000, b"code", 4),
            (4, 0, b"note", 4),
            (1, 0x20_1008, b"data", 0x100),
        ];
        let mut data_offset = 64 + 56 * segments.len();
        let mut file = Vec::new();
        file.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
        file.extend_from_slice(&2_u16.to_le_bytes());
        file.extend_from_slice(&elf::EM_X86_64.0.to_le_bytes());
        file.extend_from_slice(&1_u32.to_le_bytes());
        file.extend_from_slice(&0x20_0018_u64.to_le_bytes());
        file.extend_from_slice(&64_u64.to_le_bytes());
        file.extend_from_slice(&0_u64.to_le_bytes());
        file.extend_from_slice(&0_u32.to_le_bytes());
        file.extend_from_slice(&64_u16.to_le_bytes());
        file.extend_from_slice(&56_u16.to_le_bytes());
        file.extend_from_slice(&(segments.len() as u16).to_le_bytes());
        file.extend_from_slice(&64_u16.to_le_bytes());
        file.extend_from_slice(&0_u16.to_le_bytes());
        file.extend_from_slice(&0_u16.to_le_bytes());
        for (kind, address, data, memsz) in segments {
            file.extend_from_slice(&kind.to_le_bytes());
            file.extend_from_slice(&5_u32.to_le_bytes());
            file.extend_from_slice(&(data_offset as u64).to_le_bytes());
            file.extend_from_slice(&address.to_le_bytes());
            file.extend_from_slice(&address.to_le_bytes());
            file.extend_from_slice(&(data.len() as u64).to_le_bytes());
            file.extend_from_slice(&memsz.to_le_bytes());
            file.extend_from_slice(&0x1000_u64.to_le_bytes());
            data_offset += data.len();
        }
        for (_, _, data, _) in segments {
            file.extend_from_slice(data);
        }
        file.extend_from_slice(&[0xdb; 4096]);
        file
    }

    #[test]
    fn loadable_elf_keeps_segments_at_page_congruent_offsets() {
        let lean = loadable_elf(&sample_elf(), None).unwrap();
        let header = elf::FileHeader64::<object::Endianness>::parse(lean.as_slice()).unwrap();
        let endian = header.endian().unwrap();
        assert_eq!(header.e_entry(endian), 0x20_0018);
        assert_eq!(header.e_shnum(endian), 0);
        let program_headers = header.program_headers(endian, lean.as_slice()).unwrap();
        assert_eq!(program_headers.len(), 2, "the note is gone");
        let code = &program_headers[0];
        assert_eq!(code.p_offset(endian) % 4096, 0);
        assert_eq!(code.data(endian, lean.as_slice()).unwrap(), b"code");
        let data = &program_headers[1];
        assert_eq!(data.p_offset(endian) % 4096, 0x008);
        assert_eq!(data.data(endian, lean.as_slice()).unwrap(), b"data");
        assert_eq!(data.p_memsz(endian), 0x100);
        assert!(!lean.windows(4).any(|window| window == [0xdb; 4]));
        assert!(loadable_elf(b"not an elf", None).is_err());
        let moved = loadable_elf(&sample_elf(), Some(0x20_0002)).unwrap();
        let header = elf::FileHeader64::<object::Endianness>::parse(moved.as_slice()).unwrap();
        assert_eq!(header.e_entry(header.endian().unwrap()), 0x20_0002);
        assert_eq!(moved.len(), lean.len());
    }
}
