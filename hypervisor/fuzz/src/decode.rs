//! Fuzz targets for the decoders a trap goes through first: the aarch64 load/store decoder
//! (ISV = 0 data aborts), the data-abort syndrome and exception-class decoding, and the x86
//! MMIO `mov` decoder with the guest page walk that fetches its bytes.
//!
//! Inputs are biased toward the encodings each decoder accepts (load/store classes, `mov`
//! opcodes after prefix runs), so most executions reach the deep cases, with fully random
//! inputs mixed in. Invariants: no panic; decoded fields in range and consistent with the
//! encoding; the syndrome path and the instruction path agree on what one load or store does;
//! a decoded x86 instruction does not depend on the bytes after it.

use arch_aarch64::decode::{
    self as a64, AccessWidth, DataAccess, Extend, WriteBack, ZERO_REGISTER,
};
use arch_aarch64::esr;
use arch_x86_64::decode::{self as x86, MAX_INSTRUCTION_LENGTH, Operation, Source};

use crate::random::Rng;
use crate::{SessionResult, Target, Trace};

/// The decoder targets.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "decode-aarch64",
            description: "aarch64 load/store instruction decoder (ISV=0 data aborts)",
            session_length: 10_000,
            session: aarch64_session,
        },
        Target {
            name: "esr",
            description: "ESR_EL2 data-abort syndrome and exception-class decoding",
            session_length: 10_000,
            session: esr_session,
        },
        Target {
            name: "decode-x86",
            description: "x86 MMIO mov decoder and the guest page walk that fetches it",
            session_length: 5_000,
            session: x86_session,
        },
    ]
}

fn bits(word: u32, high: u32, low: u32) -> u32 {
    (word >> low) & ((1 << (high - low + 1)) - 1)
}

/// A 32-bit word that is often a load/store encoding.
fn aarch64_word(rng: &mut Rng) -> u32 {
    let random = rng.next_u32();
    match rng.below(4) {
        // Load/store pair class: bits 29:27 = 101, bit 25 = 0.
        0 => (random & !(0b111 << 27) & !(1 << 25)) | (0b101 << 27),
        // Single register: bits 29:27 = 111, often with bit 26 (SIMD) clear.
        1 | 2 => {
            let word = (random & !(0b111 << 27)) | (0b111 << 27);
            if rng.chance(3, 4) {
                word & !(1 << 26)
            } else {
                word
            }
        }
        _ => random,
    }
}

fn check_access(word: u32, access: &DataAccess) -> Result<(), String> {
    let fail = |what: &str| Err(format!("instruction {word:#010x}: {what}: {access:?}"));
    if access
        .registers
        .iter()
        .any(|&register| register > ZERO_REGISTER)
    {
        return fail("a transfer register above 31");
    }
    if access.base.is_none_or(|base| base > 31) {
        return fail("no base register, or one above 31");
    }
    if access.write && access.extend != Extend::Zero {
        return fail("a store with a load's sign extension");
    }
    if bits(word, 26, 26) == 1 {
        return fail("a SIMD/FP access decoded as a general-register one");
    }
    if access.pair {
        if access.registers[1] != bits(word, 14, 10) as u8 {
            return fail("the pair's second register is not Rt2");
        }
        if access.offset % access.width.bytes() as i64 != 0 {
            return fail("a pair offset that is not a multiple of the width");
        }
        if access.index.is_some() {
            return fail("a pair with an index register");
        }
    } else {
        if access.registers[1] != ZERO_REGISTER {
            return fail("a single access with a second register");
        }
        if access.width != AccessWidth::from_size_field(bits(word, 31, 30)) {
            return fail("a width that is not the size field");
        }
        if let Some(index) = access.index {
            if index.option & 0b010 == 0 || index.register > 31 {
                return fail("an index register with an option that is not an extend");
            }
            if index.shift != 0 && u64::from(index.shift) != access.width.bytes().ilog2() as u64 {
                return fail("an index shift other than 0 or log2(width)");
            }
            if access.write_back != WriteBack::None {
                return fail("register offset with write-back");
            }
            let _ = index.offset(rng_free_value(word));
        }
    }
    Ok(())
}

/// A value derived from the word, for exercising offset arithmetic without more input.
fn rng_free_value(word: u32) -> u64 {
    u64::from(word).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// What a single-register access's syndrome (ISV = 1) would say, built from the decoded
/// instruction: the two decode paths must agree.
fn syndrome_of(access: &DataAccess) -> u64 {
    let size = access.width.bytes().trailing_zeros() as u64;
    let (sse, sf) = match access.extend {
        Extend::Zero => (0, u64::from(access.width == AccessWidth::Double)),
        Extend::SignTo32 => (1, 0),
        Extend::SignTo64 => (1, 1),
    };
    (1 << 24)
        | (size << 22)
        | (sse << 21)
        | (u64::from(access.registers[0]) << 16)
        | (sf << 15)
        | (u64::from(access.write) << 6)
}

fn aarch64_session(seed: u64, steps: u64, trace: &mut Trace) -> SessionResult {
    let mut rng = Rng::new(seed);
    for _ in 0..steps {
        let word = aarch64_word(&mut rng);
        trace.note(|| format!("from_instruction({word:#010x})"));
        let decoded = a64::from_instruction(word);
        if a64::from_instruction(word) != decoded {
            return Err(format!("instruction {word:#010x} decodes two ways"));
        }
        let Ok(access) = decoded else { continue };
        check_access(word, &access)?;
        if !access.pair {
            let esr = syndrome_of(&access);
            let from_syndrome = a64::from_syndrome(esr);
            let agrees = from_syndrome.is_some_and(|other| {
                other.width == access.width
                    && other.write == access.write
                    && other.extend == access.extend
                    && other.registers == access.registers
            });
            if !agrees {
                return Err(format!(
                    "instruction {word:#010x} ({access:?}) and its syndrome {esr:#x} \
                     ({from_syndrome:?}) disagree"
                ));
            }
        }
        let value = rng.value();
        let loaded = a64::extend_loaded(value, access.width, access.extend);
        let width_mask = match access.width {
            AccessWidth::Double => u64::MAX,
            width => (1u64 << (width.bytes() * 8)) - 1,
        };
        let wrong = match access.extend {
            Extend::Zero => loaded != value & width_mask,
            Extend::SignTo32 => loaded > 0xffff_ffff || loaded & width_mask != value & width_mask,
            Extend::SignTo64 => loaded & width_mask != value & width_mask,
        };
        if wrong {
            return Err(format!(
                "extend_loaded({value:#x}, {:?}, {:?}) = {loaded:#x}",
                access.width, access.extend
            ));
        }
    }
    Ok(steps)
}

fn esr_session(seed: u64, steps: u64, trace: &mut Trace) -> SessionResult {
    let mut rng = Rng::new(seed);
    for _ in 0..steps {
        // Data aborts from a lower EL most of the time, with ISV set half of the time.
        let mut syndrome = rng.next_u64();
        if rng.chance(3, 4) {
            syndrome = (syndrome & !(0x3f << 26)) | (0x24 << 26);
        }
        if rng.chance(1, 2) {
            syndrome |= 1 << 24;
        }
        trace.note(|| format!("syndrome {syndrome:#x}"));
        let class = esr::exception_class(syndrome);
        if class > 0x3f || esr::class_name(class).is_empty() {
            return Err(format!("syndrome {syndrome:#x}: class {class:#x} unnamed"));
        }
        match a64::from_syndrome(syndrome) {
            None if syndrome & (1 << 24) != 0 => {
                return Err(format!("syndrome {syndrome:#x} with ISV=1 not decoded"));
            }
            None => {}
            Some(_) if syndrome & (1 << 24) == 0 => {
                return Err(format!("syndrome {syndrome:#x} with ISV=0 decoded"));
            }
            Some(access) => {
                let register = ((syndrome >> 16) & 0x1f) as u8;
                let size = ((syndrome >> 22) & 3) as u32;
                let write = syndrome & (1 << 6) != 0;
                let fine = access.registers == [register, ZERO_REGISTER]
                    && access.width == AccessWidth::from_size_field(size)
                    && access.write == write
                    && !access.pair
                    && access.base.is_none()
                    && access.write_back == WriteBack::None;
                if !fine {
                    return Err(format!("syndrome {syndrome:#x} decoded as {access:?}"));
                }
            }
        }
    }
    Ok(steps)
}

/// Bytes that often form a `mov` the decoder knows, after a run of prefixes.
fn x86_bytes(rng: &mut Rng) -> Vec<u8> {
    const PREFIXES: [u8; 11] = [
        0x66, 0x67, 0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65, 0xf0, 0xf2, 0x48,
    ];
    const OPCODES: [&[u8]; 14] = [
        &[0x88],
        &[0x89],
        &[0x8a],
        &[0x8b],
        &[0xc6],
        &[0xc7],
        &[0x0f, 0xb6],
        &[0x0f, 0xb7],
        &[0x0f, 0xbe],
        &[0x0f, 0xbf],
        &[0x63],
        &[0xa0],
        &[0xa1],
        &[0xa3],
    ];
    let mut bytes = Vec::with_capacity(20);
    if rng.chance(1, 8) {
        let length = rng.index(20);
        bytes.extend((0..length).map(|_| rng.byte()));
        return bytes;
    }
    let prefixes = if rng.chance(1, 10) { 16 } else { 4 };
    for _ in 0..rng.below(prefixes) {
        let prefix = if rng.chance(1, 3) {
            0x40 | (rng.byte() & 0xf)
        } else {
            rng.pick(&PREFIXES).copied().unwrap_or(0x66)
        };
        bytes.push(prefix);
    }
    if let Some(opcode) = rng.pick(&OPCODES) {
        bytes.extend_from_slice(opcode);
    }
    let tail = rng.index(12);
    bytes.extend((0..tail).map(|_| rng.byte()));
    bytes
}

fn check_x86(bytes: &[u8], decoded: &x86::MmioInstruction) -> Result<(), String> {
    let fail = |what: &str| Err(format!("bytes {bytes:02x?}: {what}: {decoded:?}"));
    if !matches!(decoded.bytes, 1 | 2 | 4 | 8) {
        return fail("an access width that is not 1, 2, 4 or 8");
    }
    let length = usize::from(decoded.length);
    if length == 0 || length > bytes.len() {
        return fail("a length beyond the bytes given");
    }
    if bytes.len() <= MAX_INSTRUCTION_LENGTH && length > MAX_INSTRUCTION_LENGTH {
        return fail("longer than 15 bytes");
    }
    match decoded.operation {
        Operation::Load(load) => {
            if load.register > 15 || !matches!(load.register_bytes, 1 | 2 | 4 | 8) {
                return fail("a load into no register");
            }
            if load.high_byte && (load.register > 3 || load.register_bytes != 1) {
                return fail("a high-byte register that does not exist");
            }
            if load.register_bytes < decoded.bytes {
                return fail("a load wider than its register");
            }
        }
        Operation::Store(Source::Register {
            register,
            high_byte,
        }) => {
            if register > 15 || (high_byte && (register > 3 || decoded.bytes != 1)) {
                return fail("a store from no register");
            }
        }
        Operation::Store(Source::Immediate(value)) => {
            let fits = decoded.bytes == 8 || value < (1u64 << (u32::from(decoded.bytes) * 8));
            if !fits {
                return fail("an immediate wider than the access");
            }
        }
    }
    // The instruction ends at its length: the same bytes without what follows decode the same.
    let own = bytes.get(..length).unwrap_or(&[]);
    if x86::decode(own).as_ref() != Ok(decoded) {
        return fail("the instruction alone decodes differently");
    }
    Ok(())
}

/// A small guest memory of a few pages at random places, filled with entries that mostly
/// point into it.
struct GuestMemory {
    pages: Vec<(u64, [u8; 4096])>,
}

impl GuestMemory {
    fn random(rng: &mut Rng) -> GuestMemory {
        let count = 1 + rng.index(6);
        let bases: Vec<u64> = (0..count)
            .map(|_| {
                (rng.below(64) << 12)
                    | if rng.chance(1, 8) {
                        rng.value() & !0xfff
                    } else {
                        0
                    }
            })
            .collect();
        let pages = bases
            .iter()
            .map(|&base| {
                let mut page = [0u8; 4096];
                for entry in page.chunks_exact_mut(8) {
                    let value = match rng.below(4) {
                        0 => rng.value(),
                        1 => 0,
                        _ => {
                            let target = rng.pick(&bases).copied().unwrap_or(0);
                            target | (rng.byte() as u64 & 0x81) | 1
                        }
                    };
                    entry.copy_from_slice(&value.to_le_bytes());
                }
                (base, page)
            })
            .collect();
        GuestMemory { pages }
    }

    fn read(&self, address: u64, buffer: &mut [u8]) -> bool {
        let page = address & !0xfff;
        let offset = (address & 0xfff) as usize;
        let Some((_, data)) = self.pages.iter().find(|(base, _)| *base == page) else {
            return false;
        };
        match data.get(offset..offset + buffer.len()) {
            Some(source) => {
                buffer.copy_from_slice(source);
                true
            }
            None => false,
        }
    }
}

fn x86_session(seed: u64, steps: u64, trace: &mut Trace) -> SessionResult {
    let mut rng = Rng::new(seed);
    let memory = GuestMemory::random(&mut rng);
    for _ in 0..steps {
        let bytes = x86_bytes(&mut rng);
        trace.note(|| format!("decode({bytes:02x?})"));
        if let Ok(decoded) = x86::decode(&bytes) {
            check_x86(&bytes, &decoded)?;
            let old = rng.value();
            let value = rng.value();
            if let Operation::Load(load) = decoded.operation {
                let _ = x86::complete_load(old, value, decoded.bytes, load);
            }
            if let Operation::Store(source) = decoded.operation {
                let stored = x86::store_value(source, decoded.bytes, |_| value);
                if decoded.bytes < 8 && stored >> (u32::from(decoded.bytes) * 8) != 0 {
                    return Err(format!(
                        "bytes {bytes:02x?}: store value {stored:#x} too wide"
                    ));
                }
            }
        }
        // The page walk and fetch over random tables.
        let cr3 = rng.pick(&memory.pages).map_or(0, |(base, _)| *base) | (rng.below(2) << 63);
        let linear = if rng.chance(1, 2) {
            rng.value()
        } else {
            rng.below(1 << 30)
        };
        trace.note(|| format!("fetch(cr3 {cr3:#x}, rip {linear:#x})"));
        let translated = x86::translate(cr3, linear, |address| {
            let mut entry = [0u8; 8];
            memory
                .read(address, &mut entry)
                .then(|| u64::from_le_bytes(entry))
        });
        if let Ok(physical) = translated
            && physical & 0xfff != linear & 0xfff
        {
            return Err(format!(
                "translate({cr3:#x}, {linear:#x}) = {physical:#x} lost the page offset"
            ));
        }
        if let Ok(fetched) = x86::fetch(cr3, linear, |address, buffer| memory.read(address, buffer))
            && (fetched.as_slice().is_empty() || fetched.as_slice().len() > MAX_INSTRUCTION_LENGTH)
        {
            return Err(format!(
                "fetch({cr3:#x}, {linear:#x}) returned {} bytes",
                fetched.as_slice().len()
            ));
        }
    }
    Ok(steps)
}
