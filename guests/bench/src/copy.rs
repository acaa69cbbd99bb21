//! Copy bandwidth: 1 MiB copies between private RAM and the shared region, with both clocks.
//!
//! Cases: private RAM → private RAM, private RAM → the shared region, and back. Every case runs
//! the same copy loop (64 bytes per iteration, SIMD pairs), so instruction counts are equal
//! and any difference is the memory behind it.
//!
//! Buffer placement matters under QEMU TCG: its software TLB is direct-mapped by page number
//! (at least 64 entries, typically 256), so two buffers a multiple of 1 MiB apart evict each
//! other's entries on every access and run about twice as slowly, which would look like a
//! memory difference. The three buffers are therefore placed [`SPACING_PAGES`] apart modulo
//! 256 pages, the same distance for every pair.

use core::arch::asm;
use core::cell::UnsafeCell;

use bulkhead_guest::exit_fail_with;
use bulkhead_shmem::memory::SharedMemory;

use crate::clock::Clock;
use crate::stats::{self, Samples};

/// Bytes per copy.
pub const COPY_BYTES: usize = 1 << 20;
/// Timed copies per case.
pub const REPETITIONS: usize = 20;
/// Bytes the copy loop moves per iteration.
const CHUNK: usize = 64;
const PAGE: usize = 4096;
/// Pages between the buffers modulo 256 (source → destination → shared → source): distinct
/// TLB indices for TLBs of 64 entries and more.
const SPACING_PAGES: usize = 0x55;
/// Private RAM for the source (at 0) and the destination (1 MiB + `SPACING_PAGES` pages on).
const PRIVATE_BYTES: usize = 2 * COPY_BYTES + SPACING_PAGES * PAGE;

/// Page-aligned memory in the partition's own RAM (.bss), reached only through raw pointers.
#[repr(C, align(4096))]
struct PrivateBuffer(UnsafeCell<[u8; PRIVATE_BYTES]>);

// SAFETY: only the benchmark's one vCPU touches the buffers, and only through raw pointers
// handed to the copy loop; no reference to the contents is ever made.
unsafe impl Sync for PrivateBuffer {}

static PRIVATE: PrivateBuffer = PrivateBuffer(UnsafeCell::new([0; PRIVATE_BYTES]));

fn source() -> *mut u8 {
    PRIVATE.0.get().cast::<u8>()
}

fn destination() -> *mut u8 {
    source().wrapping_add(COPY_BYTES + SPACING_PAGES * PAGE)
}

/// Offset in the shared region's data for the copies: past the doorbell slots (first page),
/// 2 x `SPACING_PAGES` pages after the source modulo 256 pages.
fn shared_offset(shared: SharedMemory) -> usize {
    let source_page = source() as usize / PAGE;
    let data_page = shared.address() as usize / PAGE;
    let pages = (source_page + 2 * SPACING_PAGES).wrapping_sub(data_page) % 256;
    if pages == 0 { 256 * PAGE } else { pages * PAGE }
}

/// Copies `COPY_BYTES` from `source` to `destination`.
///
/// # Safety
/// Both ranges must be mapped Normal memory, `CHUNK`-aligned, not overlapping, with no Rust
/// reference to either alive.
#[inline(never)]
unsafe fn copy(destination: *mut u8, source: *const u8) {
    let iterations = COPY_BYTES / CHUNK;
    // SAFETY: the caller guarantees both ranges; the loop reads and writes exactly
    // COPY_BYTES bytes of each.
    unsafe {
        asm!(
            "2:",
            "ldp q0, q1, [{source}], #32",
            "ldp q2, q3, [{source}], #32",
            "stp q0, q1, [{destination}], #32",
            "stp q2, q3, [{destination}], #32",
            "subs {count}, {count}, #1",
            "b.ne 2b",
            source = inout(reg) source => _,
            destination = inout(reg) destination => _,
            count = inout(reg) iterations => _,
            out("v0") _,
            out("v1") _,
            out("v2") _,
            out("v3") _,
            options(nostack)
        );
    }
}

/// Fills the source buffer with a pattern (every 8-byte word its own offset, mixed).
fn fill_source() {
    let base = source().cast::<u64>();
    for index in 0..COPY_BYTES / 8 {
        let value = (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5a5a;
        // SAFETY: `index * 8` is inside the 1 MiB buffer, which nothing else references.
        unsafe { base.add(index).write_volatile(value) };
    }
}

/// Whether the destination buffer holds the source pattern (one word per 512 bytes).
fn destination_matches_source() -> bool {
    let source = source().cast::<u64>();
    let destination = destination().cast::<u64>();
    (0..COPY_BYTES / 8).step_by(64).all(|index| {
        // SAFETY: both words are inside their 1 MiB buffers, read without references.
        unsafe { source.add(index).read_volatile() == destination.add(index).read_volatile() }
    })
}

/// Clears the destination buffer so the next check proves a fresh copy.
fn clear_destination() {
    let destination = destination().cast::<u64>();
    for index in 0..COPY_BYTES / 8 {
        // SAFETY: inside the buffer, no references to it.
        unsafe { destination.add(index).write_volatile(0) };
    }
}

/// The three cases, in the order they are measured and printed.
pub const CASES: [&str; 3] = ["private->private", "private->shared", "shared->private"];

/// Times every case `REPETITIONS` times, interleaved (case 1, 2, 3, 1, 2, 3, ...) so drifting
/// host speed hits all alike; one untimed copy per case first. Prints one line per case and
/// unit, then the shared/private ratios of the medians.
pub fn run(clock: &Clock, shared: SharedMemory) {
    let offset = shared_offset(shared);
    if shared.len() < offset + COPY_BYTES {
        exit_fail_with(format_args!(
            "benchping: the shared region has {} bytes, copies need {}",
            shared.len(),
            offset + COPY_BYTES
        ));
    }
    let shared_area = shared.as_ptr().wrapping_add(offset);
    let source = source();
    let destination = destination();
    bulkhead_guest::println!(
        "benchping: copy buffers: source {:#x}, destination {:#x} (private), shared {:#x}",
        source as usize,
        destination as usize,
        shared_area as usize
    );
    let ranges: [(*mut u8, *const u8); 3] = [
        (destination, source),
        (shared_area, source),
        (destination, shared_area),
    ];
    fill_source();

    // Prove each direction copies, untimed (also the warm-up).
    for (index, &(to, from)) in ranges.iter().enumerate() {
        clear_destination();
        // SAFETY: the private buffers and the region's copy area (checked above) are mapped
        // Normal memory, 4 KiB-aligned, disjoint; nothing references them.
        unsafe { copy(to, from) };
        if index != 1 && !destination_matches_source() {
            exit_fail_with(format_args!(
                "benchping: copy {} did not reproduce the source",
                CASES.get(index).copied().unwrap_or("?")
            ));
        }
    }

    let mut samples = [const { Samples::<REPETITIONS>::new() }; 3];
    for _ in 0..REPETITIONS {
        for (&(to, from), series) in ranges.iter().zip(samples.iter_mut()) {
            let start = clock.stamp();
            // SAFETY: as above.
            unsafe { copy(to, from) };
            let end = clock.stamp();
            series.push(start.until(end));
        }
    }

    let mut medians = [(0u64, 0u64); 3];
    for ((name, series), median) in CASES.iter().zip(samples.iter_mut()).zip(medians.iter_mut()) {
        let (ns, cycles) = series.summaries(clock);
        stats::print("copy", name, "ns", ns, Some(COPY_BYTES as u64));
        stats::print("copy", name, "cycles", cycles, Some(COPY_BYTES as u64));
        *median = (
            ns.map_or(0, |summary| summary.median),
            cycles.map_or(0, |summary| summary.median),
        );
    }
    let [private, to_shared, from_shared] = medians;
    for (name, shared_median) in [
        ("private->shared", to_shared),
        ("shared->private", from_shared),
    ] {
        let (ns_whole, ns_fraction) = stats::ratio_thousandths(shared_median.0, private.0);
        if clock.has_cycles() {
            let (whole, fraction) = stats::ratio_thousandths(shared_median.1, private.1);
            bulkhead_guest::println!(
                "benchping: copy ratio {name} / private->private: {ns_whole}.{ns_fraction:03} (ns), {whole}.{fraction:03} (cycles)"
            );
        } else {
            bulkhead_guest::println!(
                "benchping: copy ratio {name} / private->private: {ns_whole}.{ns_fraction:03} (ns)"
            );
        }
    }
}
