//! Heap memory the kernel reads or writes while a request is in flight.
//!
//! A `Box` may not be used for it: a `Box` claims unique access to its
//! contents, and moving one (as leaking it on teardown would) re-asserts that
//! claim while the kernel may still be writing. A [`KernelBox`] is allocated
//! once, never moved, reached only through shared references (the parts the
//! kernel writes are `UnsafeCell`s) and raw pointers made from them, and freed
//! on drop unless [`KernelBox::leak`] was called because the kernel might
//! still hold a pointer into it.
#![allow(unsafe_code)]

use std::ptr::NonNull;

/// One heap allocation at a fixed address, shared with the kernel.
pub(super) struct KernelBox<T: ?Sized> {
    ptr: NonNull<T>,
    leaked: bool,
}

impl<T: ?Sized> KernelBox<T> {
    /// Takes over `value`'s allocation.
    pub fn new(value: Box<T>) -> Self {
        KernelBox {
            ptr: NonNull::from(Box::leak(value)),
            leaked: false,
        }
    }

    /// The contents. Only shared references are ever made: what the kernel
    /// writes must sit in `UnsafeCell`s inside `T`.
    pub fn get(&self) -> &T {
        // SAFETY: `ptr` came from `Box::leak`, so it is valid and aligned; it is
        // freed only by `drop`, which cannot run while this borrow of `self`
        // lives; and no `&mut T` is ever made, so this shared reference aliases
        // nothing unique.
        unsafe { self.ptr.as_ref() }
    }

    /// Never free this memory: the kernel may still write into it.
    pub fn leak(&mut self) {
        self.leaked = true;
    }
}

impl<T: ?Sized> Drop for KernelBox<T> {
    fn drop(&mut self) {
        if !self.leaked {
            // SAFETY: `ptr` came from `Box::leak` and is freed only here, once;
            // the owner drops this only when no request pointing into it is in
            // flight (otherwise it calls `leak` first, as `Driver::drop` does).
            drop(unsafe { Box::from_raw(self.ptr.as_ptr()) });
        }
    }
}

impl<T: ?Sized> std::fmt::Debug for KernelBox<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelBox")
            .field("at", &self.ptr.as_ptr().cast::<u8>())
            .field("leaked", &self.leaked)
            .finish()
    }
}
