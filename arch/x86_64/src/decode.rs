//! Decoding the guest instruction behind an MMIO EPT violation into what emulation needs.
//!
//! An EPT-violation exit gives the guest-physical address and the direction, but neither the
//! width, the register nor the instruction length (the VM-exit instruction-length field is not
//! valid for EPT violations). The hypervisor fetches the bytes at the guest's RIP through the
//! guest's own page tables ([`translate`], [`fetch`]) and decodes the `mov` forms compilers emit
//! for device registers ([`decode`]); [`complete_load`] and [`store_value`] then do what the
//! instruction would have done with the register.
//!
//! Pure functions for a guest in 64-bit mode with 4-level paging: any input gives a result or a
//! typed error, never a panic.

use core::fmt;

use crate::paging::ADDRESS_MASK;

/// The longest x86 instruction in bytes; a longer one raises #GP.
pub const MAX_INSTRUCTION_LENGTH: usize = 15;

const PAGE_SIZE: u64 = 4096;
const PRESENT: u64 = 1 << 0;
/// Page size bit: a 1 GiB leaf in a PDPT entry, a 2 MiB leaf in a PD entry.
const LARGE_PAGE: u64 = 1 << 7;

/// Why a guest linear address has no guest-physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// Bits 63:47 are not all equal.
    NonCanonical {
        /// The address.
        linear: u64,
    },
    /// An entry has its present bit clear.
    NotPresent {
        /// The entry's level: 4 = PML4, 3 = PDPT, 2 = PD, 1 = PT.
        level: u8,
    },
    /// A page-table entry (or, from [`fetch`], the instruction's first bytes) lies outside
    /// guest RAM.
    Unreadable {
        /// Its guest-physical address.
        address: u64,
    },
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalkError::NonCanonical { linear } => {
                write!(f, "linear address {linear:#x} is not canonical")
            }
            WalkError::NotPresent { level } => {
                write!(f, "guest page-table entry not present at level {level}")
            }
            WalkError::Unreadable { address } => {
                write!(f, "guest-physical address {address:#x} is not guest RAM")
            }
        }
    }
}

/// Translates a guest linear address through the guest's 4-level IA-32e page tables rooted at
/// `cr3` (bits 51:12). `read(address)` returns the 8-byte entry at a guest-physical address, or
/// `None` outside guest RAM. 1 GiB and 2 MiB pages are followed; access rights and reserved bits
/// are not checked (the guest has just executed through these tables), nor is 5-level paging
/// supported.
pub fn translate(
    cr3: u64,
    linear: u64,
    mut read: impl FnMut(u64) -> Option<u64>,
) -> Result<u64, WalkError> {
    if (((linear as i64) << 16) >> 16) as u64 != linear {
        return Err(WalkError::NonCanonical { linear });
    }
    let mut table = cr3 & ADDRESS_MASK;
    let mut level = 4u8;
    loop {
        let shift = 12 + 9 * u32::from(level - 1);
        let address = table + ((linear >> shift) & 0x1ff) * 8;
        let entry = read(address).ok_or(WalkError::Unreadable { address })?;
        if entry & PRESENT == 0 {
            return Err(WalkError::NotPresent { level });
        }
        if level == 1 || ((level == 2 || level == 3) && entry & LARGE_PAGE != 0) {
            let offset_mask = (1u64 << shift) - 1;
            return Ok((entry & ADDRESS_MASK & !offset_mask) | (linear & offset_mask));
        }
        table = entry & ADDRESS_MASK;
        level -= 1;
    }
}

/// Up to [`MAX_INSTRUCTION_LENGTH`] bytes fetched from a guest's instruction pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstructionBytes {
    bytes: [u8; MAX_INSTRUCTION_LENGTH],
    length: u8,
}

impl InstructionBytes {
    /// The bytes fetched (fewer than 15 when the next page could not be read).
    pub fn as_slice(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.length)).unwrap_or(&[])
    }
}

/// Fetches the instruction bytes at `rip`, translating each page through [`translate`].
/// `read(address, buffer)` fills `buffer` from guest-physical memory (never across a 4 KiB page)
/// and returns false outside guest RAM. Fails only when the first page cannot be read; when the
/// instruction may cross into a page that cannot be translated or read, the bytes from the first
/// page are returned and [`decode`] says [`DecodeError::Truncated`] if it needed more.
pub fn fetch(
    cr3: u64,
    rip: u64,
    mut read: impl FnMut(u64, &mut [u8]) -> bool,
) -> Result<InstructionBytes, WalkError> {
    let mut fetched = InstructionBytes {
        bytes: [0; MAX_INSTRUCTION_LENGTH],
        length: 0,
    };
    let mut linear = rip;
    while usize::from(fetched.length) < MAX_INSTRUCTION_LENGTH {
        let room = MAX_INSTRUCTION_LENGTH - usize::from(fetched.length);
        let in_page = (PAGE_SIZE - (linear % PAGE_SIZE)) as usize;
        let count = room.min(in_page);
        let physical = translate(cr3, linear, |address| {
            let mut entry = [0u8; 8];
            read(address, &mut entry).then(|| u64::from_le_bytes(entry))
        });
        let start = usize::from(fetched.length);
        let done = match (physical, fetched.bytes.get_mut(start..start + count)) {
            (Ok(address), Some(buffer)) => {
                if read(address, buffer) {
                    Ok(())
                } else {
                    Err(WalkError::Unreadable { address })
                }
            }
            (Err(error), _) => Err(error),
            (Ok(address), None) => Err(WalkError::Unreadable { address }),
        };
        match done {
            Ok(()) => fetched.length += count as u8,
            Err(error) if fetched.length == 0 => return Err(error),
            Err(_) => break,
        }
        linear = linear.wrapping_add(count as u64);
    }
    Ok(fetched)
}

/// One decoded MMIO `mov`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioInstruction {
    /// The instruction's length: what to add to RIP after emulating it.
    pub length: u8,
    /// The width of the memory access: 1, 2, 4 or 8 bytes.
    pub bytes: u8,
    /// What it does with the memory.
    pub operation: Operation,
}

/// The direction of an MMIO access and its register side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// A read of the device into a register ([`complete_load`]).
    Load(Load),
    /// A write to the device of a register or an immediate ([`store_value`]).
    Store(Source),
}

/// Where a load puts the value. General registers are numbered as in the encoding: 0 = RAX,
/// 1 = RCX, 2 = RDX, 3 = RBX, 4 = RSP, 5 = RBP, 6 = RSI, 7 = RDI, 8..=15 = R8..=R15. AH, CH,
/// DH and BH are the register holding them (0..=3) with `high_byte` set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Load {
    /// The destination register.
    pub register: u8,
    /// The destination is bits 15:8 (AH, CH, DH, BH; only with `register_bytes` = 1).
    pub high_byte: bool,
    /// The destination's width: the access width for `mov`, wider for `movzx`, `movsx` and
    /// `movsxd`. 1- and 2-byte writes keep the register's other bits; a 4-byte write clears
    /// bits 63:32, as the CPU does.
    pub register_bytes: u8,
    /// How the value read is extended to `register_bytes`.
    pub extend: Extend,
}

/// How a loaded value is widened to its destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extend {
    /// Zero-extended (`mov`, `movzx`).
    Zero,
    /// Sign-extended (`movsx`, `movsxd`).
    Sign,
}

/// What a store writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The low bytes of a register (numbered as in [`Load`]), or bits 15:8 with `high_byte`.
    Register {
        /// The register.
        register: u8,
        /// AH, CH, DH or BH (bits 15:8 of register 0..=3).
        high_byte: bool,
    },
    /// An immediate, already extended as the CPU does and truncated to the access width.
    Immediate(u64),
}

/// Why bytes do not decode to an MMIO `mov`. Opcodes are written as one byte (`0x8b`) or as
/// the 0x0f escape and the second byte (`0x0fb6`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end before the instruction does.
    Truncated {
        /// How many bytes there were.
        available: u8,
    },
    /// The instruction would be longer than 15 bytes (the CPU raises #GP).
    TooLong,
    /// A REP/REPNE prefix (0xf3, 0xf2): another instruction (`popcnt`, string operations) or a
    /// hardware lock elision hint, not emulated.
    Prefix {
        /// The prefix byte.
        prefix: u8,
    },
    /// Not one of the `mov` forms this decoder knows (arithmetic on memory, `xchg`, string
    /// instructions, VEX/EVEX vector instructions, `movsxd` without REX.W...).
    Opcode {
        /// The opcode.
        opcode: u16,
    },
    /// 0xc6 or 0xc7 with a ModRM reg field other than 0 (`xabort`, `xbegin`, undefined).
    OpcodeExtension {
        /// The opcode.
        opcode: u16,
        /// The ModRM reg field.
        extension: u8,
    },
    /// ModRM mod = 11: both operands are registers, so the instruction cannot touch memory.
    RegisterOperand {
        /// The opcode.
        opcode: u16,
        /// The ModRM byte.
        modrm: u8,
    },
}

/// Writes an opcode as its bytes in hexadecimal (`8b`, `0f b6`).
struct OpcodeText(u16);

impl fmt::Display for OpcodeText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [escape, opcode] = self.0.to_be_bytes();
        if escape == 0 {
            write!(f, "{opcode:02x}")
        } else {
            write!(f, "{escape:02x} {opcode:02x}")
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeError::Truncated { available } => {
                write!(f, "instruction cut off after {available} byte(s)")
            }
            DecodeError::TooLong => write!(f, "instruction longer than 15 bytes"),
            DecodeError::Prefix { prefix } => {
                write!(f, "prefix {prefix:02x} is not emulated for MMIO")
            }
            DecodeError::Opcode { opcode } => {
                write!(f, "opcode {} is not an MMIO mov", OpcodeText(opcode))
            }
            DecodeError::OpcodeExtension { opcode, extension } => {
                write!(
                    f,
                    "opcode {} /{extension} is not an MMIO mov",
                    OpcodeText(opcode)
                )
            }
            DecodeError::RegisterOperand { opcode, modrm } => write!(
                f,
                "opcode {} with ModRM {modrm:02x} has no memory operand",
                OpcodeText(opcode)
            ),
        }
    }
}

/// Reads instruction bytes in order, within the 15-byte limit.
struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl Cursor<'_> {
    fn next(&mut self) -> Result<u8, DecodeError> {
        if self.position >= MAX_INSTRUCTION_LENGTH {
            return Err(DecodeError::TooLong);
        }
        let byte = self
            .bytes
            .get(self.position)
            .copied()
            .ok_or(DecodeError::Truncated {
                available: self.bytes.len() as u8,
            })?;
        self.position += 1;
        Ok(byte)
    }

    /// A little-endian value of `count` bytes.
    fn little_endian(&mut self, count: u8) -> Result<u64, DecodeError> {
        let mut value = 0;
        for index in 0..count {
            value |= u64::from(self.next()?) << (8 * index);
        }
        Ok(value)
    }

    /// Reads the ModRM byte of `opcode` and skips its memory operand (SIB, displacement);
    /// returns the ModRM byte. Address-size prefixes do not change the length in 64-bit mode.
    fn memory_operand(&mut self, opcode: u16) -> Result<u8, DecodeError> {
        let modrm = self.next()?;
        self.skip_memory_operand(opcode, modrm)?;
        Ok(modrm)
    }

    fn skip_memory_operand(&mut self, opcode: u16, modrm: u8) -> Result<(), DecodeError> {
        let mode = modrm >> 6;
        let rm = modrm & 7;
        if mode == 0b11 {
            return Err(DecodeError::RegisterOperand { opcode, modrm });
        }
        // rm = 100: a SIB byte; with mod = 00 its base 101 means "no base, disp32".
        let no_base = if rm == 0b100 {
            self.next()? & 7 == 0b101
        } else {
            // mod = 00, rm = 101: RIP-relative disp32.
            rm == 0b101
        };
        let displacement = match mode {
            0b00 if no_base => 4,
            0b00 => 0,
            0b01 => 1,
            _ => 4,
        };
        self.little_endian(displacement).map(|_| ())
    }
}

/// The REX prefix's bits.
#[derive(Clone, Copy)]
struct Rex(Option<u8>);

impl Rex {
    fn wide(self) -> bool {
        self.0.is_some_and(|rex| rex & 0b1000 != 0)
    }

    /// The ModRM reg field extended by REX.R.
    fn register(self, modrm: u8) -> u8 {
        let extension = self.0.map_or(0, |rex| (rex & 0b0100) << 1);
        ((modrm >> 3) & 7) | extension
    }

    /// An 8-bit register in the ModRM reg field: AH..BH (4..=7) without REX.
    fn byte_register(self, modrm: u8) -> (u8, bool) {
        let register = self.register(modrm);
        match self.0 {
            None if (4..8).contains(&register) => (register - 4, true),
            _ => (register, false),
        }
    }
}

/// Decodes the `mov` at the start of `bytes` (64-bit mode): `mov` between a register and memory
/// (88, 89, 8a, 8b), `mov` of an immediate to memory (c6 /0, c7 /0), `movzx`/`movsx`
/// (0f b6, 0f b7, 0f be, 0f bf), `movsxd` with REX.W (63) and `mov` between AL/AX/EAX/RAX and
/// an absolute address (a0..=a3), after any 0x66, 0x67, segment-override and lock prefixes and
/// a REX prefix. Only the length of the memory operand matters: its address comes from the exit.
/// Another vCPU may have rewritten the bytes since the exit: check that the direction agrees
/// with the exit qualification before emulating.
pub fn decode(bytes: &[u8]) -> Result<MmioInstruction, DecodeError> {
    let mut cursor = Cursor { bytes, position: 0 };
    let mut operand_size_16 = false;
    let mut address_size_32 = false;
    let mut rex = Rex(None);
    let first = loop {
        let byte = cursor.next()?;
        match byte {
            // A REX prefix counts only right before the opcode.
            0x40..=0x4f => rex = Rex(Some(byte)),
            0x66 => (operand_size_16, rex) = (true, Rex(None)),
            0x67 => (address_size_32, rex) = (true, Rex(None)),
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0xf0 => rex = Rex(None),
            0xf2 | 0xf3 => return Err(DecodeError::Prefix { prefix: byte }),
            _ => break byte,
        }
    };
    let opcode = if first == 0x0f {
        0x0f00 | u16::from(cursor.next()?)
    } else {
        u16::from(first)
    };
    let operand_bytes = if rex.wide() {
        8
    } else if operand_size_16 {
        2
    } else {
        4
    };
    let load = |register: (u8, bool), register_bytes, extend| {
        Operation::Load(Load {
            register: register.0,
            high_byte: register.1,
            register_bytes,
            extend,
        })
    };
    let store = |register: (u8, bool)| {
        Operation::Store(Source::Register {
            register: register.0,
            high_byte: register.1,
        })
    };
    let (access_bytes, operation) = match opcode {
        0x88 => {
            let modrm = cursor.memory_operand(opcode)?;
            (1, store(rex.byte_register(modrm)))
        }
        0x89 => {
            let modrm = cursor.memory_operand(opcode)?;
            (operand_bytes, store((rex.register(modrm), false)))
        }
        0x8a => {
            let modrm = cursor.memory_operand(opcode)?;
            (1, load(rex.byte_register(modrm), 1, Extend::Zero))
        }
        0x8b => {
            let modrm = cursor.memory_operand(opcode)?;
            let register = (rex.register(modrm), false);
            (operand_bytes, load(register, operand_bytes, Extend::Zero))
        }
        0xc6 | 0xc7 => {
            let modrm = cursor.next()?;
            let extension = (modrm >> 3) & 7;
            if extension != 0 {
                return Err(DecodeError::OpcodeExtension { opcode, extension });
            }
            cursor.skip_memory_operand(opcode, modrm)?;
            let access_bytes = if opcode == 0xc6 { 1 } else { operand_bytes };
            // The immediate is at most 4 bytes; a 64-bit store sign-extends it.
            let immediate = cursor.little_endian(access_bytes.min(4))?;
            let value = if access_bytes == 8 {
                immediate as u32 as i32 as i64 as u64
            } else {
                immediate
            };
            (access_bytes, Operation::Store(Source::Immediate(value)))
        }
        0x0fb6 | 0x0fb7 | 0x0fbe | 0x0fbf => {
            let modrm = cursor.memory_operand(opcode)?;
            let access_bytes = if opcode & 1 == 0 { 1 } else { 2 };
            let extend = if opcode & 0x08 == 0 {
                Extend::Zero
            } else {
                Extend::Sign
            };
            let register = (rex.register(modrm), false);
            (access_bytes, load(register, operand_bytes, extend))
        }
        0x63 if rex.wide() => {
            let modrm = cursor.memory_operand(opcode)?;
            (4, load((rex.register(modrm), false), 8, Extend::Sign))
        }
        0xa0..=0xa3 => {
            cursor.little_endian(if address_size_32 { 4 } else { 8 })?;
            let access_bytes = if opcode & 1 == 0 { 1 } else { operand_bytes };
            let operation = if opcode & 2 == 0 {
                load((0, false), access_bytes, Extend::Zero)
            } else {
                store((0, false))
            };
            (access_bytes, operation)
        }
        _ => return Err(DecodeError::Opcode { opcode }),
    };
    Ok(MmioInstruction {
        length: cursor.position as u8,
        bytes: access_bytes,
        operation,
    })
}

/// The all-ones mask of `bytes` bytes (8 for anything else).
fn mask(bytes: u8) -> u64 {
    match bytes {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// The destination register's new value after `load` read `value` (`bytes` wide) into a
/// register that held `old`.
pub fn complete_load(old: u64, value: u64, bytes: u8, load: Load) -> u64 {
    let extended = match (load.extend, bytes) {
        (Extend::Sign, 1) => value as u8 as i8 as i64 as u64,
        (Extend::Sign, 2) => value as u16 as i16 as i64 as u64,
        (Extend::Sign, 4) => value as u32 as i32 as i64 as u64,
        _ => value & mask(bytes),
    };
    match (load.register_bytes, load.high_byte) {
        (1, true) => (old & !0xff00) | ((extended & 0xff) << 8),
        (1, false) => (old & !0xff) | (extended & 0xff),
        (2, _) => (old & !0xffff) | (extended & 0xffff),
        (4, _) => extended & 0xffff_ffff,
        _ => extended,
    }
}

/// The value a store of `source` writes, `bytes` wide; `register(number)` returns a general
/// register's value (numbered as in [`Load`]).
pub fn store_value(source: Source, bytes: u8, register: impl FnOnce(u8) -> u64) -> u64 {
    let value = match source {
        Source::Register {
            register: number,
            high_byte: true,
        } => register(number) >> 8,
        Source::Register {
            register: number, ..
        } => register(number),
        Source::Immediate(value) => value,
    };
    value & mask(bytes)
}

#[cfg(test)]
mod tests;
