use super::*;
use std::vec::Vec;

/// A test vector: the assembly text and its encoding, assembled with GNU as 2.x
/// (`as --64`, Intel syntax) and checked against `llvm-mc`, as `objdump -d` shows it.
struct Case {
    assembly: &'static str,
    encoding: &'static [u8],
    bytes: u8,
    operation: Operation,
}

const fn load(register: u8, high_byte: bool, register_bytes: u8, extend: Extend) -> Operation {
    Operation::Load(Load {
        register,
        high_byte,
        register_bytes,
        extend,
    })
}

const fn store(register: u8, high_byte: bool) -> Operation {
    Operation::Store(Source::Register {
        register,
        high_byte,
    })
}

const fn immediate(value: u64) -> Operation {
    Operation::Store(Source::Immediate(value))
}

const fn case(
    assembly: &'static str,
    encoding: &'static [u8],
    bytes: u8,
    operation: Operation,
) -> Case {
    Case {
        assembly,
        encoding,
        bytes,
        operation,
    }
}

use super::Extend::{Sign, Zero};

#[rustfmt::skip]
const CASES: &[Case] = &[
    // 88 /r, 89 /r: stores of registers.
    case("mov byte ptr [rax], cl", &[0x88, 0x08], 1, store(1, false)),
    case("mov byte ptr [rbx+0x10], ah", &[0x88, 0x63, 0x10], 1, store(0, true)),
    case("mov byte ptr [rdi], bh", &[0x88, 0x3f], 1, store(3, true)),
    case("mov byte ptr [rsi], sil", &[0x40, 0x88, 0x36], 1, store(6, false)),
    case("mov byte ptr [rax], r9b", &[0x44, 0x88, 0x08], 1, store(9, false)),
    case("mov word ptr [rcx], dx", &[0x66, 0x89, 0x11], 2, store(2, false)),
    case("mov dword ptr [rdx+rcx*4+0x12345678], esi", &[0x89, 0xb4, 0x8a, 0x78, 0x56, 0x34, 0x12], 4, store(6, false)),
    case("mov qword ptr [rip+0x1000], r15", &[0x4c, 0x89, 0x3d, 0x00, 0x10, 0x00, 0x00], 8, store(15, false)),
    case("mov qword ptr fs:[rax], rax", &[0x64, 0x48, 0x89, 0x00], 8, store(0, false)),
    case("mov dword ptr gs:[r12], r10d", &[0x65, 0x45, 0x89, 0x14, 0x24], 4, store(10, false)),
    case("mov word ptr [r13], r8w", &[0x66, 0x45, 0x89, 0x45, 0x00], 2, store(8, false)),
    case("mov dword ptr [r13+0], r14d", &[0x45, 0x89, 0x75, 0x00], 4, store(14, false)),
    case("mov qword ptr [rsp], rsp", &[0x48, 0x89, 0x24, 0x24], 8, store(4, false)),
    case("cs mov dword ptr [rax], ebx", &[0x2e, 0x89, 0x18], 4, store(3, false)),
    case("lock mov dword ptr [rax], eax", &[0xf0, 0x89, 0x00], 4, store(0, false)),
    // llvm-mc's choice for `addr32 mov dword ptr [0xfee000b0], eax`: SIB, no base, disp32.
    case("addr32 mov dword ptr [0xfee000b0], eax", &[0x67, 0x89, 0x04, 0x25, 0xb0, 0x00, 0xe0, 0xfe], 4, store(0, false)),
    // 8a /r, 8b /r: loads into registers.
    case("mov al, byte ptr [rbx]", &[0x8a, 0x03], 1, load(0, false, 1, Zero)),
    case("mov ch, byte ptr [rbx]", &[0x8a, 0x2b], 1, load(1, true, 1, Zero)),
    case("mov dh, byte ptr [rsp+8]", &[0x8a, 0x74, 0x24, 0x08], 1, load(2, true, 1, Zero)),
    case("mov ah, byte ptr [rip+0x200]", &[0x8a, 0x25, 0x00, 0x02, 0x00, 0x00], 1, load(0, true, 1, Zero)),
    case("mov bl, byte ptr [rdx]", &[0x8a, 0x1a], 1, load(3, false, 1, Zero)),
    case("mov spl, byte ptr [rdx]", &[0x40, 0x8a, 0x22], 1, load(4, false, 1, Zero)),
    case("mov dil, byte ptr [rax]", &[0x40, 0x8a, 0x38], 1, load(7, false, 1, Zero)),
    case("mov r11b, byte ptr [rax]", &[0x44, 0x8a, 0x18], 1, load(11, false, 1, Zero)),
    case("mov ax, word ptr [rdi]", &[0x66, 0x8b, 0x07], 2, load(0, false, 2, Zero)),
    case("mov ebx, dword ptr [rip-0x20]", &[0x8b, 0x1d, 0xe0, 0xff, 0xff, 0xff], 4, load(3, false, 4, Zero)),
    case("mov rbp, qword ptr [rsp+rbx*8-0x80]", &[0x48, 0x8b, 0x6c, 0xdc, 0x80], 8, load(5, false, 8, Zero)),
    case("mov r14d, dword ptr [rbp]", &[0x44, 0x8b, 0x75, 0x00], 4, load(14, false, 4, Zero)),
    case("mov r12, qword ptr [r8+r9*2+0x7fffffff]", &[0x4f, 0x8b, 0xa4, 0x48, 0xff, 0xff, 0xff, 0x7f], 8, load(12, false, 8, Zero)),
    case("mov r8, qword ptr [rsp+r12*1]", &[0x4e, 0x8b, 0x04, 0x24], 8, load(8, false, 8, Zero)),
    case("addr32 mov esp, dword ptr [eax]", &[0x67, 0x8b, 0x20], 4, load(4, false, 4, Zero)),
    case("mov eax, dword ptr [rcx*4+0x1000]", &[0x8b, 0x04, 0x8d, 0x00, 0x10, 0x00, 0x00], 4, load(0, false, 4, Zero)),
    case("data16 mov rax, qword ptr [rax]", &[0x66, 0x48, 0x8b, 0x00], 8, load(0, false, 8, Zero)),
    case("mov r8d, dword ptr fs:[0x28]", &[0x64, 0x44, 0x8b, 0x04, 0x25, 0x28, 0x00, 0x00, 0x00], 4, load(8, false, 4, Zero)),
    // llvm-mc's choice for `addr32 mov al, byte ptr [0xfee00020]`.
    case("addr32 mov al, byte ptr [0xfee00020]", &[0x67, 0x8a, 0x04, 0x25, 0x20, 0x00, 0xe0, 0xfe], 1, load(0, false, 1, Zero)),
    // c6 /0 ib, c7 /0 iw/id: stores of immediates.
    case("mov byte ptr [rax], 0x7f", &[0xc6, 0x00, 0x7f], 1, immediate(0x7f)),
    case("mov byte ptr [rip+0x100], 0xff", &[0xc6, 0x05, 0x00, 0x01, 0x00, 0x00, 0xff], 1, immediate(0xff)),
    case("mov byte ptr [rbp+rdx*2-1], 0x80", &[0xc6, 0x44, 0x55, 0xff, 0x80], 1, immediate(0x80)),
    case("mov word ptr [rbx], 0x1234", &[0x66, 0xc7, 0x03, 0x34, 0x12], 2, immediate(0x1234)),
    case("mov word ptr [rax], 0xffff", &[0x66, 0xc7, 0x00, 0xff, 0xff], 2, immediate(0xffff)),
    case("ds mov word ptr [rax], 5", &[0x3e, 0x66, 0xc7, 0x00, 0x05, 0x00], 2, immediate(5)),
    case("mov dword ptr [rdi+0x40], 0xdeadbeef", &[0xc7, 0x47, 0x40, 0xef, 0xbe, 0xad, 0xde], 4, immediate(0xdead_beef)),
    case("mov dword ptr [rsp+rax*1+0x1000], 1", &[0xc7, 0x84, 0x04, 0x00, 0x10, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00], 4, immediate(1)),
    case("ss mov dword ptr [rax], 1", &[0x36, 0xc7, 0x00, 0x01, 0x00, 0x00, 0x00], 4, immediate(1)),
    case("mov qword ptr [rax], -1", &[0x48, 0xc7, 0x00, 0xff, 0xff, 0xff, 0xff], 8, immediate(u64::MAX)),
    case("mov qword ptr [r10], 0x7fffffff", &[0x49, 0xc7, 0x02, 0xff, 0xff, 0xff, 0x7f], 8, immediate(0x7fff_ffff)),
    case("mov qword ptr [rax+rax], -0x80000000", &[0x48, 0xc7, 0x04, 0x00, 0x00, 0x00, 0x00, 0x80], 8, immediate(0xffff_ffff_8000_0000)),
    // 15 bytes, the longest an instruction may be (two redundant ds prefixes added).
    case("ds ds mov qword ptr fs:[rsp+rax*1+0x1000], 1", &[0x3e, 0x3e, 0x64, 0x48, 0xc7, 0x84, 0x04, 0x00, 0x10, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00], 8, immediate(1)),
    // 0f b6, 0f b7 (movzx), 0f be, 0f bf (movsx), 63 with REX.W (movsxd).
    case("movzx eax, byte ptr [rdi]", &[0x0f, 0xb6, 0x07], 1, load(0, false, 4, Zero)),
    case("movzx r9, byte ptr [rdi]", &[0x4c, 0x0f, 0xb6, 0x0f], 1, load(9, false, 8, Zero)),
    case("movzx cx, byte ptr [rsi]", &[0x66, 0x0f, 0xb6, 0x0e], 1, load(1, false, 2, Zero)),
    case("movzx r10w, byte ptr [rcx]", &[0x66, 0x44, 0x0f, 0xb6, 0x11], 1, load(10, false, 2, Zero)),
    case("es movzx eax, byte ptr [rax]", &[0x26, 0x0f, 0xb6, 0x00], 1, load(0, false, 4, Zero)),
    case("movzx edx, word ptr [rbx+4]", &[0x0f, 0xb7, 0x53, 0x04], 2, load(2, false, 4, Zero)),
    case("movzx r13, word ptr [rax]", &[0x4c, 0x0f, 0xb7, 0x28], 2, load(13, false, 8, Zero)),
    case("movzx ax, word ptr [rax]", &[0x66, 0x0f, 0xb7, 0x00], 2, load(0, false, 2, Zero)),
    case("movsx eax, byte ptr [rdi]", &[0x0f, 0xbe, 0x07], 1, load(0, false, 4, Sign)),
    case("movsx rsi, byte ptr [rdi]", &[0x48, 0x0f, 0xbe, 0x37], 1, load(6, false, 8, Sign)),
    case("movsx bx, byte ptr [rdi]", &[0x66, 0x0f, 0xbe, 0x1f], 1, load(3, false, 2, Sign)),
    case("movsx r11w, byte ptr [r11]", &[0x66, 0x45, 0x0f, 0xbe, 0x1b], 1, load(11, false, 2, Sign)),
    case("movsx ecx, word ptr [rdx]", &[0x0f, 0xbf, 0x0a], 2, load(1, false, 4, Sign)),
    case("movsx r11d, word ptr [r11]", &[0x45, 0x0f, 0xbf, 0x1b], 2, load(11, false, 4, Sign)),
    case("movsx r8, word ptr [rip+0x40]", &[0x4c, 0x0f, 0xbf, 0x05, 0x40, 0x00, 0x00, 0x00], 2, load(8, false, 8, Sign)),
    case("movsxd rax, dword ptr [rdi]", &[0x48, 0x63, 0x07], 4, load(0, false, 8, Sign)),
    case("movsxd r15, dword ptr [rbx+rcx*8+0x100]", &[0x4c, 0x63, 0xbc, 0xcb, 0x00, 0x01, 0x00, 0x00], 4, load(15, false, 8, Sign)),
    // a0..=a3: AL/AX/EAX/RAX and an absolute address (moffs).
    case("movabs al, byte ptr [0x1122334455667788]", &[0xa0, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11], 1, load(0, false, 1, Zero)),
    case("movabs eax, dword ptr [0xfee00020]", &[0xa1, 0x20, 0x00, 0xe0, 0xfe, 0x00, 0x00, 0x00, 0x00], 4, load(0, false, 4, Zero)),
    case("movabs rax, qword ptr [0xfee00020]", &[0x48, 0xa1, 0x20, 0x00, 0xe0, 0xfe, 0x00, 0x00, 0x00, 0x00], 8, load(0, false, 8, Zero)),
    case("movabs ax, word ptr [0xfee00020]", &[0x66, 0xa1, 0x20, 0x00, 0xe0, 0xfe, 0x00, 0x00, 0x00, 0x00], 2, load(0, false, 2, Zero)),
    case("movabs byte ptr [0xfee00000], al", &[0xa2, 0x00, 0x00, 0xe0, 0xfe, 0x00, 0x00, 0x00, 0x00], 1, store(0, false)),
    case("movabs dword ptr [0xfee000b0], eax", &[0xa3, 0xb0, 0x00, 0xe0, 0xfe, 0x00, 0x00, 0x00, 0x00], 4, store(0, false)),
    case("movabs qword ptr [0xfee000b0], rax", &[0x48, 0xa3, 0xb0, 0x00, 0xe0, 0xfe, 0x00, 0x00, 0x00, 0x00], 8, store(0, false)),
    // GNU as's choice for the addr32 forms: 4-byte moffs.
    case("addr32 mov al, byte ptr [0xfee00020]", &[0x67, 0xa0, 0x20, 0x00, 0xe0, 0xfe], 1, load(0, false, 1, Zero)),
    case("addr32 mov dword ptr [0xfee000b0], eax", &[0x67, 0xa3, 0xb0, 0x00, 0xe0, 0xfe], 4, store(0, false)),
];

/// Instructions that must be refused, assembled the same way.
#[rustfmt::skip]
const REFUSED: &[(&str, &[u8], DecodeError)] = &[
    ("mov eax, ecx", &[0x89, 0xc8], DecodeError::RegisterOperand { opcode: 0x89, modrm: 0xc8, }),
    ("movzx eax, cl", &[0x0f, 0xb6, 0xc1], DecodeError::RegisterOperand { opcode: 0x0fb6, modrm: 0xc1, }),
    ("xabort 0x12", &[0xc6, 0xf8, 0x12], DecodeError::OpcodeExtension { opcode: 0xc6, extension: 7, }),
    ("movsxd eax, dword ptr [rdi]", &[0x63, 0x07], DecodeError::Opcode { opcode: 0x63 }),
    ("lock add dword ptr [rax], 1", &[0xf0, 0x83, 0x00, 0x01], DecodeError::Opcode { opcode: 0x83 }),
    ("add dword ptr [rax], ecx", &[0x01, 0x08], DecodeError::Opcode { opcode: 0x01 }),
    ("xchg dword ptr [rax], eax", &[0x87, 0x00], DecodeError::Opcode { opcode: 0x87 }),
    ("cmpxchg dword ptr [rax], ecx", &[0x0f, 0xb1, 0x08], DecodeError::Opcode { opcode: 0x0fb1 }),
    ("movnti dword ptr [rax], eax", &[0x0f, 0xc3, 0x00], DecodeError::Opcode { opcode: 0x0fc3 }),
    ("movbe eax, dword ptr [rax]", &[0x0f, 0x38, 0xf0, 0x00], DecodeError::Opcode { opcode: 0x0f38 }),
    ("mov es, word ptr [rax]", &[0x8e, 0x00], DecodeError::Opcode { opcode: 0x8e }),
    ("movsb", &[0xa4], DecodeError::Opcode { opcode: 0xa4 }),
    ("ud2", &[0x0f, 0x0b], DecodeError::Opcode { opcode: 0x0f0b }),
    ("vmovdqu ymm0, ymmword ptr [rax]", &[0xc5, 0xfe, 0x6f, 0x00], DecodeError::Opcode { opcode: 0xc5 }),
    ("rep stosd", &[0xf3, 0xab], DecodeError::Prefix { prefix: 0xf3 }),
    ("popcnt eax, dword ptr [rax]", &[0xf3, 0x0f, 0xb8, 0x00], DecodeError::Prefix { prefix: 0xf3 }),
    ("xrelease mov dword ptr [rax], eax", &[0xf3, 0x89, 0x00], DecodeError::Prefix { prefix: 0xf3 }),
    ("xacquire lock add dword ptr [rax], 1", &[0xf2, 0xf0, 0x83, 0x00, 0x01], DecodeError::Prefix { prefix: 0xf2 }),
];

#[test]
fn assembled_moves_decode() {
    for case in CASES {
        let decoded = decode(case.encoding);
        let expected = MmioInstruction {
            length: case.encoding.len() as u8,
            bytes: case.bytes,
            operation: case.operation,
        };
        assert_eq!(decoded, Ok(expected), "{}", case.assembly);
        // What follows the instruction does not change it.
        let mut longer = case.encoding.to_vec();
        longer.extend_from_slice(&[0x0f, 0xff, 0x66, 0x90]);
        assert_eq!(decode(&longer), Ok(expected), "{} + bytes", case.assembly);
        // Every strict prefix is cut off.
        for end in 0..case.encoding.len() {
            assert_eq!(
                decode(&case.encoding[..end]),
                Err(DecodeError::Truncated {
                    available: end as u8
                }),
                "{} cut at {end}",
                case.assembly
            );
        }
    }
}

#[test]
fn assembled_other_instructions_are_refused() {
    for (assembly, encoding, error) in REFUSED {
        assert_eq!(decode(encoding), Err(*error), "{assembly}");
    }
}

#[test]
fn hand_built_prefix_orders() {
    // REX before 0x66 is not right before the opcode: ignored, so `mov ax, [rax]`.
    assert_eq!(
        decode(&[0x48, 0x66, 0x8b, 0x00]).map(|instruction| instruction.bytes),
        Ok(2)
    );
    // Two REX prefixes: only the last counts (REX.R from 0x44, no REX.W).
    assert_eq!(
        decode(&[0x48, 0x44, 0x8b, 0x00]).map(|instruction| instruction.operation),
        Ok(load(8, false, 4, Zero))
    );
    // A REX without bits still turns register 4..=7 of a byte move into SPL..DIL.
    assert_eq!(
        decode(&[0x40, 0x88, 0x20]).map(|instruction| instruction.operation),
        Ok(store(4, false))
    );
    // 16 bytes: one prefix too many for the 15-byte case above.
    let mut too_long = std::vec![0x3e];
    too_long.extend_from_slice(
        CASES
            .iter()
            .map(|case| case.encoding)
            .max_by_key(|e| e.len())
            .unwrap(),
    );
    assert_eq!(decode(&too_long), Err(DecodeError::TooLong));
    assert_eq!(decode(&[0x66; 20]), Err(DecodeError::TooLong));
    assert_eq!(
        decode(&[0x66; 14]),
        Err(DecodeError::Truncated { available: 14 })
    );
    assert_eq!(decode(&[]), Err(DecodeError::Truncated { available: 0 }));
}

#[test]
fn errors_read_well() {
    use std::string::ToString;
    assert_eq!(
        DecodeError::Opcode { opcode: 0x0fb1 }.to_string(),
        "opcode 0f b1 is not an MMIO mov"
    );
    assert_eq!(
        DecodeError::RegisterOperand {
            opcode: 0x89,
            modrm: 0xc8
        }
        .to_string(),
        "opcode 89 with ModRM c8 has no memory operand"
    );
    assert_eq!(
        DecodeError::OpcodeExtension {
            opcode: 0xc6,
            extension: 7
        }
        .to_string(),
        "opcode c6 /7 is not an MMIO mov"
    );
    assert_eq!(
        WalkError::NotPresent { level: 2 }.to_string(),
        "guest page-table entry not present at level 2"
    );
}

/// A small deterministic generator (Knuth's MMIX LCG constants).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

#[test]
fn random_bytes_never_panic_and_stay_consistent() {
    // Half the bytes come from the ones the decoder looks at, so deep paths are reached.
    const INTERESTING: &[u8] = &[
        0x66, 0x67, 0x2e, 0x3e, 0x64, 0x65, 0xf0, 0xf3, 0x40, 0x44, 0x48, 0x4c, 0x4f, 0x0f, 0x88,
        0x89, 0x8a, 0x8b, 0xc6, 0xc7, 0x63, 0xa0, 0xa1, 0xa2, 0xa3, 0xb6, 0xb7, 0xbe, 0xbf, 0x04,
        0x05, 0x25, 0x44, 0x84, 0xc0, 0x00,
    ];
    let mut random = Lcg(0x5eed);
    let mut decoded = 0;
    for _ in 0..200_000 {
        let length = (random.next() % 20) as usize;
        let bytes: Vec<u8> = (0..length)
            .map(|_| {
                let pick = random.next();
                if pick & 1 == 0 {
                    INTERESTING[(pick >> 1) as usize % INTERESTING.len()]
                } else {
                    (pick >> 1) as u8
                }
            })
            .collect();
        match decode(&bytes) {
            Ok(instruction) => {
                decoded += 1;
                let used = usize::from(instruction.length);
                assert!(used >= 1 && used <= bytes.len().min(MAX_INSTRUCTION_LENGTH));
                assert!([1, 2, 4, 8].contains(&instruction.bytes), "{bytes:02x?}");
                match instruction.operation {
                    Operation::Load(load) => {
                        assert!(load.register < 16);
                        assert!(load.register_bytes >= instruction.bytes);
                        assert!(!load.high_byte || load.register < 4);
                    }
                    Operation::Store(Source::Register {
                        register,
                        high_byte,
                    }) => {
                        assert!(register < 16 && (!high_byte || register < 4));
                    }
                    Operation::Store(Source::Immediate(value)) => {
                        assert_eq!(value & !mask(instruction.bytes), 0);
                    }
                }
                assert_eq!(decode(&bytes[..used]), Ok(instruction));
                assert!(matches!(
                    decode(&bytes[..used - 1]),
                    Err(DecodeError::Truncated { .. })
                ));
            }
            Err(DecodeError::Truncated { available }) => {
                assert_eq!(usize::from(available), bytes.len());
            }
            Err(_) => {}
        }
    }
    assert!(decoded > 1000, "only {decoded} inputs decoded");
}

#[test]
fn loads_write_registers_like_the_cpu() {
    let old = 0x1122_3344_5566_7788;
    let run = |assembly: &str, value: u64| {
        let case = CASES.iter().find(|case| case.assembly == assembly).unwrap();
        let Operation::Load(load) = case.operation else {
            panic!("{assembly} is not a load");
        };
        complete_load(old, value, case.bytes, load)
    };
    assert_eq!(run("mov al, byte ptr [rbx]", 0x1ab), 0x1122_3344_5566_77ab);
    assert_eq!(run("mov ch, byte ptr [rbx]", 0xab), 0x1122_3344_5566_ab88);
    assert_eq!(run("mov ax, word ptr [rdi]", 0xabcd), 0x1122_3344_5566_abcd);
    assert_eq!(
        run("mov ebx, dword ptr [rip-0x20]", 0xdead_beef),
        0xdead_beef
    );
    assert_eq!(
        run("mov r12, qword ptr [r8+r9*2+0x7fffffff]", u64::MAX),
        u64::MAX
    );
    assert_eq!(run("movzx eax, byte ptr [rdi]", 0x80), 0x80);
    assert_eq!(run("movzx cx, byte ptr [rsi]", 0xff), 0x1122_3344_5566_00ff);
    assert_eq!(run("movzx r13, word ptr [rax]", 0xffff), 0xffff);
    assert_eq!(run("movsx eax, byte ptr [rdi]", 0x80), 0xffff_ff80);
    assert_eq!(
        run("movsx rsi, byte ptr [rdi]", 0x80),
        0xffff_ffff_ffff_ff80
    );
    assert_eq!(run("movsx bx, byte ptr [rdi]", 0x80), 0x1122_3344_5566_ff80);
    assert_eq!(run("movsx bx, byte ptr [rdi]", 0x7f), 0x1122_3344_5566_007f);
    assert_eq!(run("movsx ecx, word ptr [rdx]", 0x8000), 0xffff_8000);
    assert_eq!(
        run("movsx r8, word ptr [rip+0x40]", 0x8000),
        0xffff_ffff_ffff_8000
    );
    assert_eq!(
        run("movsxd rax, dword ptr [rdi]", 0x8000_0000),
        0xffff_ffff_8000_0000
    );
    assert_eq!(run("movsxd rax, dword ptr [rdi]", 0x7fff_ffff), 0x7fff_ffff);
}

#[test]
fn stores_take_the_register_or_immediate() {
    let registers: [u64; 16] = core::array::from_fn(|n| 0x0101_0101_0101_0101 * (n as u64 + 1));
    let run = |encoding: &[u8]| {
        let instruction = decode(encoding).unwrap();
        let Operation::Store(source) = instruction.operation else {
            panic!("{encoding:02x?} is not a store");
        };
        store_value(source, instruction.bytes, |n| registers[usize::from(n)])
    };
    // mov byte ptr [rax], cl; mov byte ptr [rdi], bh (RBX = 0x0404..., BH = 0x04).
    assert_eq!(run(&[0x88, 0x08]), 0x02);
    assert_eq!(run(&[0x88, 0x3f]), 0x04);
    // mov word ptr [rcx], dx; mov dword ptr [rdx+rcx*4+0x12345678], esi.
    assert_eq!(run(&[0x66, 0x89, 0x11]), 0x0303);
    assert_eq!(
        run(&[0x89, 0xb4, 0x8a, 0x78, 0x56, 0x34, 0x12]),
        0x0707_0707
    );
    // mov qword ptr [rip+0x1000], r15.
    assert_eq!(
        run(&[0x4c, 0x89, 0x3d, 0x00, 0x10, 0x00, 0x00]),
        0x1010_1010_1010_1010
    );
    // mov qword ptr [rax], -1; mov word ptr [rbx], 0x1234.
    assert_eq!(run(&[0x48, 0xc7, 0x00, 0xff, 0xff, 0xff, 0xff]), u64::MAX);
    assert_eq!(run(&[0x66, 0xc7, 0x03, 0x34, 0x12]), 0x1234);
    // A hand-made immediate wider than the access is cut to it.
    assert_eq!(store_value(Source::Immediate(0x1_2345), 2, |_| 0), 0x2345);
}

/// 128 KiB of guest RAM at guest-physical 0 holding page tables: PML4 at 0x1000, PDPT at
/// 0x2000, PD at 0x3000, PT at 0x4000.
struct Guest {
    memory: Vec<u8>,
}

const CR3: u64 = 0x1000;

impl Guest {
    fn new() -> Guest {
        let mut guest = Guest {
            memory: std::vec![0; 0x2_0000],
        };
        guest.entry(0x1000, 0, 0x2000 | 0x3);
        guest.entry(0x1000, 1, 0x100_0000 | 0x3); // A PDPT outside guest RAM.
        guest.entry(0x2000, 0, 0x3000 | 0x3);
        guest.entry(0x2000, 1, 0x4000_0000 | 0x83); // 1 GiB page.
        guest.entry(0x3000, 0, 0x4000 | 0x3);
        guest.entry(0x3000, 1, 0x1000 | 0x83); // 2 MiB page at 0 with PAT (bit 12).
        guest.entry(0x4000, 0x10, 0x8000 | 0x3); // Linear page 0x10 at 0x8000,
        guest.entry(0x4000, 0x11, 0x5000 | 0x3); // 0x11 at 0x5000, 0x12 absent,
        guest.entry(0x4000, 0x13, 0x40_0000 | 0x3); // 0x13 outside guest RAM.
        guest
    }

    fn entry(&mut self, table: u64, index: u64, value: u64) {
        let at = (table + index * 8) as usize;
        self.memory[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }

    fn read(&self, address: u64, buffer: &mut [u8]) -> bool {
        let start = address as usize;
        match self.memory.get(start..start + buffer.len()) {
            Some(bytes) => {
                buffer.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }

    fn read_entry(&self, address: u64) -> Option<u64> {
        let mut entry = [0; 8];
        self.read(address, &mut entry)
            .then(|| u64::from_le_bytes(entry))
    }

    fn translate(&self, linear: u64) -> Result<u64, WalkError> {
        translate(CR3, linear, |address| self.read_entry(address))
    }
}

#[test]
fn page_walk_follows_all_page_sizes() {
    let guest = Guest::new();
    assert_eq!(guest.translate(0x10_abc), Ok(0x8abc));
    assert_eq!(guest.translate(0x11_000), Ok(0x5000));
    assert_eq!(guest.translate(0x20_1234), Ok(0x1234));
    assert_eq!(guest.translate(0x4001_2345), Ok(0x4001_2345));
    assert_eq!(
        guest.translate(0x12_000),
        Err(WalkError::NotPresent { level: 1 })
    );
    assert_eq!(
        guest.translate(0x40_0000),
        Err(WalkError::NotPresent { level: 2 })
    );
    assert_eq!(
        guest.translate(0x8000_0000),
        Err(WalkError::NotPresent { level: 3 })
    );
    assert_eq!(
        guest.translate(0xffff_ff80_0000_0000),
        Err(WalkError::NotPresent { level: 4 })
    );
    assert_eq!(
        guest.translate(0x80_0000_0000),
        Err(WalkError::Unreadable {
            address: 0x100_0000
        })
    );
    assert_eq!(
        guest.translate(0x8000_0000_0000),
        Err(WalkError::NonCanonical {
            linear: 0x8000_0000_0000
        })
    );
}

#[test]
fn fetch_crosses_pages_and_keeps_what_it_got() {
    let mut guest = Guest::new();
    // mov r12, qword ptr [r8+r9*2+0x7fffffff], 5 bytes at the end of linear page 0x10
    // (guest-physical 0x8ffb) and 3 at the start of page 0x11 (guest-physical 0x5000).
    let encoding = [0x4f, 0x8b, 0xa4, 0x48, 0xff, 0xff, 0xff, 0x7f];
    guest.memory[0x8ffb..0x9000].copy_from_slice(&encoding[..5]);
    guest.memory[0x5000..0x5003].copy_from_slice(&encoding[5..]);
    let read = |address: u64, buffer: &mut [u8]| guest.read(address, buffer);
    let fetched = fetch(CR3, 0x10_ffb, read).unwrap();
    assert_eq!(fetched.as_slice().len(), MAX_INSTRUCTION_LENGTH);
    assert_eq!(&fetched.as_slice()[..8], &encoding);
    assert_eq!(decode(fetched.as_slice()).unwrap().length, 8);

    // Page 0x12 is absent: 4 bytes from the end of page 0x11, enough for a short move.
    let mut guest = Guest::new();
    guest.memory[0x5ffc..0x6000].copy_from_slice(&[0x8b, 0x04, 0x8d, 0x00]);
    let read = |address: u64, buffer: &mut [u8]| guest.read(address, buffer);
    let fetched = fetch(CR3, 0x11_ffc, read).unwrap();
    assert_eq!(fetched.as_slice(), &[0x8b, 0x04, 0x8d, 0x00]);
    assert_eq!(
        decode(fetched.as_slice()),
        Err(DecodeError::Truncated { available: 4 })
    );
    guest.memory[0x5ffc..0x6000].copy_from_slice(&[0x90, 0x89, 0x08, 0x90]);
    let read = |address: u64, buffer: &mut [u8]| guest.read(address, buffer);
    let fetched = fetch(CR3, 0x11_ffd, read).unwrap();
    assert_eq!(decode(fetched.as_slice()).map(|i| i.length), Ok(2));

    let read = |address: u64, buffer: &mut [u8]| guest.read(address, buffer);
    assert_eq!(
        fetch(CR3, 0x12_000, read),
        Err(WalkError::NotPresent { level: 1 })
    );
    let read = |address: u64, buffer: &mut [u8]| guest.read(address, buffer);
    assert_eq!(
        fetch(CR3, 0x13_010, read),
        Err(WalkError::Unreadable { address: 0x40_0010 })
    );
}
