#!/usr/bin/env python3
"""Counts a QEMU x86 `-singlestep -d exec,nochain` log per CPU and per mode, between marks.

The independent check of `cargo xtask bench`'s SVM figures (README, "Benchmarks"). With
`-singlestep` every translation block holds one instruction, and `-d exec,nochain` logs each
block as it is entered: `Trace CPU: HOST_PTR [CS_BASE/PC/FLAGS/CFLAGS] SYMBOL`. Bit 21 of
FLAGS (HF_GUEST) is set while the CPU runs an SVM guest. Each time CPU MARK_CPU enters
MARK_PC (hex) in guest mode the counts are noted; the script prints what each CPU ran in each
mode between consecutive marks.

A logged block is not always an executed instruction: the guest's intercepted instruction at
each exit is logged but does not complete, and a host access to emulated MMIO (the xAPIC page)
is logged, re-translated as I/O and logged again. Take those off before comparing.

Usage (the QNX bench image, ping on CPU 0; MARK_PC is the instruction after the
`bulkhead_guest_x86::time::tsc` call in `QuietWindows::round`, from
`objdump -d guests/x86/target/x86_64-unknown-none/release/pingpong-x86`):

    mkfifo /tmp/trace
    python3 xtask/tools/svm-trace-count.py MARK_PC 0 < /tmp/trace &
    qemu-system-x86_64 -M q35 -cpu max -smp 2 -m 256M -display none \\
        -serial file:serial.txt -device isa-debug-exit,iobase=0xf4,iosize=0x04 \\
        -cdrom target/bench/svm-qnx.iso -icount shift=0,sleep=off \\
        -singlestep -d exec,nochain -D /tmp/trace
"""
import sys

HF_GUEST = 1 << 21


def main():
    mark_pc = int(sys.argv[1], 16)
    mark_cpu = int(sys.argv[2])
    counts = {}
    marks = []
    for line in sys.stdin:
        if not line.startswith("Trace "):
            continue
        head, _, rest = line.partition(": ")
        cpu = int(head[len("Trace "):])
        start = rest.index("[")
        fields = rest[start + 1:rest.index("]", start)].split("/")
        pc = int(fields[1], 16)
        guest = int(fields[2], 16) & HF_GUEST != 0
        key = (cpu, "guest" if guest else "host")
        counts[key] = counts.get(key, 0) + 1
        if cpu == mark_cpu and guest and pc == mark_pc:
            marks.append(dict(counts))
    keys = sorted(counts)
    for index in range(1, len(marks)):
        before, after = marks[index - 1], marks[index]
        deltas = {key: after.get(key, 0) - before.get(key, 0) for key in keys}
        cells = " ".join(f"cpu{cpu}-{mode}={value}" for (cpu, mode), value in deltas.items())
        print(f"between marks {index} and {index + 1}: total={sum(deltas.values())} {cells}")


if __name__ == "__main__":
    main()
