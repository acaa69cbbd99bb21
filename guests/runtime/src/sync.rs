//! A spin lock that also masks IRQs on the vCPU holding it, so an interrupt handler on the
//! same vCPU can never spin on a lock its own interrupted code holds.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

use crate::cpu;

/// Mutual exclusion between vCPUs (and against this vCPU's interrupt handlers).
pub struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through a guard, and `locked` admits one guard at a time.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// A new, unlocked lock.
    pub const fn new(value: T) -> Self {
        Self {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Masks IRQs, then spins until the lock is free.
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        let daif = cpu::disable_interrupts();
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            cpu::relax();
        }
        SpinLockGuard { lock: self, daif }
    }
}

/// Access to a [`SpinLock`]'s value; unlocks and restores the IRQ mask when dropped.
pub struct SpinLockGuard<'a, T> {
    lock: &'a SpinLock<T>,
    daif: u64,
}

impl<T> Deref for SpinLockGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: this guard is the only one (the lock is held), so no `&mut` exists.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: this guard is the only one and `&mut self` makes this borrow exclusive.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinLockGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
        cpu::restore_interrupts(self.daif);
    }
}
