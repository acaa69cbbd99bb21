//! `policy`: one partition whose `vdev shmem` has `deny secret*` then `allow open*` (so every
//! other name is refused). It checks the factory page's verdicts: "secret1" and "other" →
//! NO_PERMISSION, "open1" → OK (its memory works), "open*" and "" → ILLEGAL_NAME, `find` of
//! "open-absent" → DOES_NOT_EXIST. Last it detaches "open1" and reads where its data was: the
//! hypervisor must stop the partition there (nothing after that line inside Bulkhead). The same
//! source builds for aarch64 and x86_64 (`guests/x86/policy-x86`).

#![no_std]
#![no_main]

use bulkhead_shmem::pci::Bus;
use bulkhead_shmem::qnx::{QnxShmem, Status};
use bulkhead_shmem::{exit_fail, exit_fail_with, println};

bulkhead_shmem::entry!(main);

/// Data pages asked for.
const PAGES: u32 = 1;
/// Pattern written to and read back from "open1".
const PATTERN: u32 = 0x5eed_f00d;

/// Expects `name` to be refused with `expected`.
fn expect_refused(device: &QnxShmem, name: &str, shown: &str, expected: Status) {
    match device.attach(name, PAGES) {
        Err(status) => {
            println!("policy: {shown} -> {status}");
            if status != expected {
                exit_fail_with(format_args!(
                    "policy: attach {shown}: got {status}, expected {expected}"
                ));
            }
        }
        Ok(region) => {
            println!("policy: {shown} -> OK (client {})", region.index());
            exit_fail_with(format_args!(
                "policy: attach {shown} succeeded, expected {expected}"
            ));
        }
    }
}

fn main() -> ! {
    let device = QnxShmem::pci(&Bus::discover(), 0)
        .or_else(|_| QnxShmem::from_platform(0))
        .unwrap_or_else(|error| exit_fail_with(format_args!("policy: QNX shmem device: {error}")));
    println!(
        "policy: QNX shmem factory page at {:#x} ({}), signature ok",
        device.factory_address(),
        device.location()
    );

    expect_refused(&device, "secret1", "secret1", Status::NoPermission);
    expect_refused(&device, "other", "other", Status::NoPermission);

    let region = device.attach("open1", PAGES).unwrap_or_else(|status| {
        println!("policy: open1 -> {status}");
        exit_fail_with(format_args!(
            "policy: attach open1: got {status}, expected OK"
        ))
    });
    let data = region.data();
    println!(
        "policy: open1 -> OK (client {}, {} page(s), control page {:#x}, data {:#x})",
        region.index(),
        region.pages(),
        region.control_address(),
        data.address()
    );
    let readback = data
        .write_u32(0, PATTERN)
        .and_then(|()| data.read_u32(0))
        .unwrap_or_else(|error| exit_fail_with(format_args!("policy: open1 memory: {error}")));
    if readback != PATTERN {
        exit_fail_with(format_args!(
            "policy: open1 memory read back {readback:#x}, wrote {PATTERN:#x}"
        ));
    }
    println!("policy: open1 memory is readable and writable");

    expect_refused(&device, "open*", "open*", Status::IllegalName);
    expect_refused(&device, "", "(empty name)", Status::IllegalName);

    match device.find("open-absent") {
        Err(status) => {
            println!("policy: find open-absent -> {status}");
            if status != Status::DoesNotExist {
                exit_fail_with(format_args!(
                    "policy: find open-absent: got {status}, expected {}",
                    Status::DoesNotExist
                ));
            }
        }
        Ok(_) => exit_fail("policy: find open-absent succeeded, expected DOES_NOT_EXIST"),
    }

    let address = data.address();
    region.detach();
    println!("policy: detached open1");
    println!("policy: touching detached region memory at {address:#x}");
    // SAFETY: deliberately reads memory this partition no longer has: the hypervisor must
    // stop the partition here. Should the read return, it only yields a value to report.
    let value = unsafe { core::ptr::read_volatile(address as *const u32) };
    println!("policy: survived, read {value:#x}");
    exit_fail("policy: the read of detached region memory was not stopped")
}
