//! Tests of the shared-memory core: policy, registry, and the QNX personality end to end.

mod policy;
mod qnx;
mod registry;

use alloc::boxed::Box;
use alloc::vec::Vec;

use spin::Mutex;

use super::{Registry, ZeroMemory};
use crate::addr::PhysRange;
use crate::device::ClientId;

/// Base of the test pools.
const POOL: u64 = 0x8000_0000;
const MIB: u64 = 1 << 20;

/// Records what was zeroed.
#[derive(Default)]
struct Zeroes(Mutex<Vec<PhysRange>>);

impl ZeroMemory for Zeroes {
    fn zero(&self, range: PhysRange) {
        self.0.lock().push(range);
    }
}

impl Zeroes {
    fn take(&self) -> Vec<PhysRange> {
        core::mem::take(&mut *self.0.lock())
    }
}

fn range(start: u64, size: u64) -> PhysRange {
    PhysRange::from_start_size(start, size).unwrap()
}

/// A registry over `size` bytes at [`POOL`], and its zero recorder.
fn registry(size: u64) -> (Registry, &'static Zeroes) {
    let zeroes: &'static Zeroes = Box::leak(Box::default());
    let registry = Registry::new(range(POOL, size), zeroes);
    // All of it zeroed once, up front: the pool only ever holds zeroed memory.
    if size != 0 && size.is_multiple_of(crate::addr::PAGE_SIZE) {
        assert_eq!(zeroes.take(), [range(POOL, size)]);
    }
    zeroes.take();
    (registry, zeroes)
}

/// The same, shared as the system shares it.
fn shared_registry(size: u64) -> (&'static Mutex<Registry>, &'static Zeroes) {
    let (registry, zeroes) = registry(size);
    (Box::leak(Box::new(Mutex::new(registry))), zeroes)
}

fn client(partition: u16, device: u16) -> ClientId {
    ClientId { partition, device }
}
