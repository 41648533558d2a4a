//! A growable byte buffer whose start is aligned to [`BLOCK`], as O_DIRECT writes require.

use super::format::BLOCK;
use std::alloc::{self, Layout};
use std::ptr::NonNull;

/// Heap buffer aligned to [`BLOCK`]; all `cap` bytes are initialised (zeroed on allocation).
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    cap: usize,
    len: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only allow reading the initialised bytes.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    pub fn new() -> Self {
        AlignedBuf {
            ptr: NonNull::dangling(),
            cap: 0,
            len: 0,
        }
    }

    #[allow(clippy::expect_used)] // see below: the layout is valid for every `cap` used
    fn layout(cap: usize) -> Layout {
        // BLOCK is a power of two and `cap` comes from `reserve`, which keeps it far below
        // isize::MAX (frames are at most MAX_FRAME_BODY plus a block).
        Layout::from_size_align(cap, BLOCK as usize).expect("aligned buffer layout is valid")
    }

    /// Sets the length to `len` bytes, growing the allocation if needed. Bytes keep whatever
    /// they held (always initialised: allocations are zeroed); callers overwrite or zero them.
    pub fn resize(&mut self, len: usize) {
        if len > self.cap {
            let new_cap = (len.div_ceil(BLOCK as usize) * BLOCK as usize).max(BLOCK as usize);
            let layout = Self::layout(new_cap);
            // SAFETY: `layout` has non-zero size (at least BLOCK).
            let p = unsafe { alloc::alloc_zeroed(layout) };
            let Some(p) = NonNull::new(p) else {
                alloc::handle_alloc_error(layout)
            };
            self.free();
            self.ptr = p;
            self.cap = new_cap;
        }
        self.len = len;
    }

    fn free(&mut self) {
        if self.cap > 0 {
            // SAFETY: `ptr` was allocated by `alloc_zeroed` with exactly this layout.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.cap)) };
            self.cap = 0;
            self.len = 0;
            self.ptr = NonNull::dangling();
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the first `len <= cap` bytes are initialised and owned by us; for `len == 0` a
        // dangling, well-aligned pointer is valid for an empty slice.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Default for AlignedBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        self.free();
    }
}
