//! Decoding a guest's trapped data access into what MMIO emulation needs.
//!
//! With ESR_EL2.ISV = 1 the syndrome says everything (width, register, direction, sign
//! extension). With ISV = 0 (load/store pair, pre/post-index write-back, register offset)
//! the hypervisor reads the guest's instruction and decodes it here. Pure functions: any u32
//! decodes to a typed access or to [`DecodeError`], never a panic.

use core::fmt;

/// Width of one access in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessWidth {
    /// 1 byte.
    Byte = 1,
    /// 2 bytes.
    Half = 2,
    /// 4 bytes.
    Word = 4,
    /// 8 bytes.
    Double = 8,
}

impl AccessWidth {
    /// From the 2-bit size field (log2 of the byte count).
    pub fn from_size_field(size: u32) -> AccessWidth {
        match size & 0b11 {
            0 => AccessWidth::Byte,
            1 => AccessWidth::Half,
            2 => AccessWidth::Word,
            _ => AccessWidth::Double,
        }
    }

    /// Bytes in one access.
    pub fn bytes(self) -> u64 {
        self as u64
    }
}

/// How a loaded value is extended into its register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extend {
    /// Zero-extended (plain loads).
    Zero,
    /// Sign-extended to 32 bits, upper 32 bits cleared (LDRSB/LDRSH Wt).
    SignTo32,
    /// Sign-extended to 64 bits.
    SignTo64,
}

/// When the base register is updated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteBack {
    /// The base register is left alone.
    None,
    /// Base + offset is the address and is written back to the base (pre-index).
    PreIndex,
    /// The base alone is the address; base + offset is written back after (post-index).
    PostIndex,
}

/// Register number 31 in an Rt field: the zero register.
pub const ZERO_REGISTER: u8 = 31;

/// One decoded load or store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataAccess {
    /// Width of each access.
    pub width: AccessWidth,
    /// Store (true) or load.
    pub write: bool,
    /// Extension of loaded values.
    pub extend: Extend,
    /// Transfer register(s); 31 = zero register. A pair accesses `[address, address + width)`
    /// with the first and `[address + width, address + 2 * width)` with the second.
    pub registers: [u8; 2],
    /// Whether this is a pair (`registers[1]` used).
    pub pair: bool,
    /// Base register (31 = SP) when decoded from the instruction; `None` from the syndrome.
    pub base: Option<u8>,
    /// Offset added to the base (pre-index, plain offset) or written back (post-index).
    pub offset: i64,
    /// Register-offset form: the index register and how it is extended and shifted.
    pub index: Option<IndexRegister>,
    /// Base update.
    pub write_back: WriteBack,
}

/// The register-offset form's index: `extend(Rm) << shift`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexRegister {
    /// Rm (31 = zero register).
    pub register: u8,
    /// The `option` field: 0b010 UXTW, 0b011 LSL/UXTX, 0b110 SXTW, 0b111 SXTX.
    pub option: u8,
    /// Left shift applied after extension.
    pub shift: u8,
}

impl IndexRegister {
    /// The offset the index register's value contributes.
    pub fn offset(&self, value: u64) -> i64 {
        let extended = match self.option {
            0b010 => value & 0xffff_ffff,
            0b110 => i64::from(value as u32 as i32) as u64,
            _ => value,
        };
        (extended << self.shift) as i64
    }
}

/// Why an instruction cannot be emulated as an MMIO access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Not a general-purpose-register load or store Bulkhead emulates (exclusive, atomic,
    /// SIMD/FP, prefetch, unallocated...).
    Unsupported(u32),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Unsupported(word) => {
                write!(
                    f,
                    "instruction {word:#010x} is not a load/store MMIO emulation supports"
                )
            }
        }
    }
}

/// Decodes the data-abort syndrome when ESR_EL2.ISV = 1; `None` when ISV = 0.
pub fn from_syndrome(esr: u64) -> Option<DataAccess> {
    const ISV: u64 = 1 << 24;
    if esr & ISV == 0 {
        return None;
    }
    let size = ((esr >> 22) & 0b11) as u32;
    let sign_extend = esr & (1 << 21) != 0;
    let register = ((esr >> 16) & 0x1f) as u8;
    let sixty_four = esr & (1 << 15) != 0;
    let write = esr & (1 << 6) != 0;
    let extend = match (sign_extend, sixty_four) {
        (false, _) => Extend::Zero,
        (true, true) => Extend::SignTo64,
        (true, false) => Extend::SignTo32,
    };
    Some(DataAccess {
        width: AccessWidth::from_size_field(size),
        write,
        extend,
        registers: [register, ZERO_REGISTER],
        pair: false,
        base: None,
        offset: 0,
        index: None,
        write_back: WriteBack::None,
    })
}

fn bits(word: u32, high: u32, low: u32) -> u32 {
    (word >> low) & ((1 << (high - low + 1)) - 1)
}

fn sign_extend(value: u32, bit_count: u32) -> i64 {
    let shift = 64 - bit_count;
    (i64::from(value) << shift) >> shift
}

/// Load (`opc` field of single-register forms) → direction and extension, for a size.
fn single_register_kind(size: u32, opc: u32, word: u32) -> Result<(bool, Extend), DecodeError> {
    match (size, opc) {
        (_, 0b00) => Ok((true, Extend::Zero)),
        (_, 0b01) => Ok((false, Extend::Zero)),
        (0b00 | 0b01, 0b10) => Ok((false, Extend::SignTo64)),
        (0b10, 0b10) => Ok((false, Extend::SignTo64)),
        (0b00 | 0b01, 0b11) => Ok((false, Extend::SignTo32)),
        _ => Err(DecodeError::Unsupported(word)),
    }
}

/// Decodes an AArch64 load/store instruction that touched MMIO.
pub fn from_instruction(word: u32) -> Result<DataAccess, DecodeError> {
    let unsupported = DecodeError::Unsupported(word);
    let rt = bits(word, 4, 0) as u8;
    let rn = bits(word, 9, 5) as u8;
    let vector = bits(word, 26, 26) == 1;
    if vector {
        return Err(unsupported);
    }
    // Load/store pair: bits 29:27 = 101, bit 25 = 0 (type in 24:23).
    if bits(word, 29, 27) == 0b101 && bits(word, 25, 25) == 0 {
        let opc = bits(word, 31, 30);
        let load = bits(word, 22, 22) == 1;
        let write_back = match bits(word, 24, 23) {
            0b01 => WriteBack::PostIndex,
            0b10 | 0b00 => WriteBack::None,
            _ => WriteBack::PreIndex,
        };
        let (width, extend) = match (opc, load) {
            (0b00, _) => (AccessWidth::Word, Extend::Zero),
            (0b10, _) => (AccessWidth::Double, Extend::Zero),
            (0b01, true) => (AccessWidth::Word, Extend::SignTo64),
            _ => return Err(unsupported),
        };
        let scale = if width == AccessWidth::Double { 3 } else { 2 };
        return Ok(DataAccess {
            width,
            write: !load,
            extend,
            registers: [rt, bits(word, 14, 10) as u8],
            pair: true,
            base: Some(rn),
            offset: sign_extend(bits(word, 21, 15), 7) << scale,
            index: None,
            write_back,
        });
    }
    // Single register: bits 29:27 = 111.
    if bits(word, 29, 27) != 0b111 {
        return Err(unsupported);
    }
    let size = bits(word, 31, 30);
    let opc = bits(word, 23, 22);
    let width = AccessWidth::from_size_field(size);
    let (write, extend) = single_register_kind(size, opc, word)?;
    let single = |offset, index, write_back| DataAccess {
        width,
        write,
        extend,
        registers: [rt, ZERO_REGISTER],
        pair: false,
        base: Some(rn),
        offset,
        index,
        write_back,
    };
    match bits(word, 25, 24) {
        // Unsigned immediate offset.
        0b01 => Ok(single(
            i64::from(bits(word, 21, 10)) << size,
            None,
            WriteBack::None,
        )),
        0b00 if bits(word, 21, 21) == 0 => {
            let offset = sign_extend(bits(word, 20, 12), 9);
            match bits(word, 11, 10) {
                0b00 | 0b10 => Ok(single(offset, None, WriteBack::None)),
                0b01 => Ok(single(offset, None, WriteBack::PostIndex)),
                _ => Ok(single(offset, None, WriteBack::PreIndex)),
            }
        }
        0b00 if bits(word, 11, 10) == 0b10 => {
            let option = bits(word, 15, 13) as u8;
            if option & 0b010 == 0 {
                return Err(unsupported);
            }
            let shift = if bits(word, 12, 12) == 1 {
                size as u8
            } else {
                0
            };
            let index = IndexRegister {
                register: bits(word, 20, 16) as u8,
                option,
                shift,
            };
            Ok(single(0, Some(index), WriteBack::None))
        }
        _ => Err(unsupported),
    }
}

/// Applies a load's extension to the raw value read from the device.
pub fn extend_loaded(value: u64, width: AccessWidth, extend: Extend) -> u64 {
    let bit_count = (width.bytes() * 8) as u32;
    let truncated = if bit_count >= 64 {
        value
    } else {
        value & ((1u64 << bit_count) - 1)
    };
    match extend {
        Extend::Zero => truncated,
        Extend::SignTo64 => sign_extend_u64(truncated, bit_count),
        Extend::SignTo32 => sign_extend_u64(truncated, bit_count) & 0xffff_ffff,
    }
}

fn sign_extend_u64(value: u64, bit_count: u32) -> u64 {
    if bit_count >= 64 {
        return value;
    }
    let shift = 64 - bit_count;
    (((value << shift) as i64) >> shift) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    // Encodings checked by assembling the instructions with rustc (global_asm!, aarch64 target)
    // and disassembling with llvm-objdump.
    #[test]
    fn syndrome_with_isv() {
        // str w1, [x0] : ISV, SAS=2, SRT=1, WnR
        let esr = (0x24 << 26) | (1 << 25) | (1 << 24) | (2 << 22) | (1 << 16) | (1 << 6);
        let access = from_syndrome(esr).unwrap();
        assert_eq!(access.width, AccessWidth::Word);
        assert!(access.write);
        assert_eq!(access.registers[0], 1);
        assert_eq!(from_syndrome(0x9200_0046 & !(1 << 24)), None);
        // ldrsh x3, [..]: SSE, SF
        let esr = (1 << 24) | (1 << 22) | (1 << 21) | (3 << 16) | (1 << 15);
        assert_eq!(from_syndrome(esr).unwrap().extend, Extend::SignTo64);
    }

    #[test]
    fn store_pair_signed_offset() {
        // stp x1, x2, [x0, #16]
        let access = from_instruction(0xa9010801).unwrap();
        assert!(access.pair && access.write);
        assert_eq!(access.width, AccessWidth::Double);
        assert_eq!(access.registers, [1, 2]);
        assert_eq!(access.base, Some(0));
        assert_eq!(access.offset, 16);
        assert_eq!(access.write_back, WriteBack::None);
    }

    #[test]
    fn load_pair_pre_and_post_index() {
        // ldp w3, w4, [x5, #-8]!
        let access = from_instruction(0x29ff10a3).unwrap();
        assert!(access.pair && !access.write);
        assert_eq!(access.width, AccessWidth::Word);
        assert_eq!(access.registers, [3, 4]);
        assert_eq!(access.offset, -8);
        assert_eq!(access.write_back, WriteBack::PreIndex);
        // ldp x6, x7, [sp], #32
        let access = from_instruction(0xa8c21fe6).unwrap();
        assert_eq!(access.base, Some(31));
        assert_eq!(access.offset, 32);
        assert_eq!(access.write_back, WriteBack::PostIndex);
    }

    #[test]
    fn single_register_forms() {
        // str w1, [x0, #4]!
        let access = from_instruction(0xb8004c01).unwrap();
        assert_eq!(
            (access.write, access.offset, access.write_back),
            (true, 4, WriteBack::PreIndex)
        );
        // ldr x2, [x3], #-16
        let access = from_instruction(0xf85f0462).unwrap();
        assert_eq!(
            (access.write, access.offset, access.write_back),
            (false, -16, WriteBack::PostIndex)
        );
        // ldrb w4, [x5, #0xfff]
        let access = from_instruction(0x397ffca4).unwrap();
        assert_eq!((access.width, access.offset), (AccessWidth::Byte, 0xfff));
        // ldrsw x6, [x7, #8]
        let access = from_instruction(0xb98008e6).unwrap();
        assert_eq!(
            (access.width, access.extend, access.offset),
            (AccessWidth::Word, Extend::SignTo64, 8)
        );
        // ldur w1, [x2, #-3]
        let access = from_instruction(0xb85fd041).unwrap();
        assert_eq!((access.offset, access.write_back), (-3, WriteBack::None));
        // ldrsh w1, [x2]
        assert_eq!(
            from_instruction(0x79c00041).unwrap().extend,
            Extend::SignTo32
        );
    }

    #[test]
    fn register_offset() {
        // ldr w0, [x1, x2, lsl #2]
        let access = from_instruction(0xb8627820).unwrap();
        let index = access.index.unwrap();
        assert_eq!((index.register, index.option, index.shift), (2, 0b011, 2));
        assert_eq!(index.offset(3), 12);
        // strh w0, [x1, w2, sxtw]
        let access = from_instruction(0x7822c820).unwrap();
        let index = access.index.unwrap();
        assert_eq!(index.offset(0xffff_ffff), -1);
    }

    #[test]
    fn unsupported_forms_are_errors() {
        // ldr q0, [x0] (SIMD)
        assert!(from_instruction(0x3dc00000).is_err());
        // ldxr x0, [x1] (exclusive)
        assert!(from_instruction(0xc85f7c20).is_err());
        // prfm pldl1keep, [x0]
        assert!(from_instruction(0xf9800000).is_err());
        // ldadd w0, w1, [x2] (atomic)
        assert!(from_instruction(0xb8200041).is_err());
        // nop, and every top-level pattern of garbage, never panics
        assert!(from_instruction(0xd503201f).is_err());
        for top in 0..=0xffu32 {
            let _ = from_instruction((top << 24) | 0x00ab_cdef);
        }
    }

    #[test]
    fn load_extension() {
        assert_eq!(
            extend_loaded(0x80, AccessWidth::Byte, Extend::SignTo64),
            0xffff_ffff_ffff_ff80
        );
        assert_eq!(
            extend_loaded(0x8000, AccessWidth::Half, Extend::SignTo32),
            0xffff_8000
        );
        assert_eq!(
            extend_loaded(0x1_2345, AccessWidth::Half, Extend::Zero),
            0x2345
        );
        assert_eq!(
            extend_loaded(u64::MAX, AccessWidth::Double, Extend::Zero),
            u64::MAX
        );
    }
}
