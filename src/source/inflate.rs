//! Whole-buffer gzip inflate with libdeflate, about twice as fast as streaming
//! zlib, for the common file: one gzip member whose trailer gives its size.
//! Anything else (several members, a trailer that lies, damage) is left to the
//! streaming decoder, which also reports how far a damaged file could be read.

use std::ffi::c_void;
use std::ptr::NonNull;

use libdeflate_sys::{
    libdeflate_alloc_decompressor, libdeflate_decompressor, libdeflate_free_decompressor,
    libdeflate_gzip_decompress_ex, libdeflate_result_LIBDEFLATE_SUCCESS,
};

/// One libdeflate decompressor (a few KiB of tables), kept per thread.
struct Decompressor(NonNull<libdeflate_decompressor>);

impl Decompressor {
    fn new() -> Self {
        // SAFETY: no preconditions; NULL (out of memory) is handled.
        let ptr = unsafe { libdeflate_alloc_decompressor() };
        Decompressor(NonNull::new(ptr).expect("memory for a libdeflate decompressor"))
    }
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: allocated by libdeflate_alloc_decompressor, freed once.
        unsafe { libdeflate_free_decompressor(self.0.as_ptr()) }
    }
}

thread_local! {
    static DECOMPRESSOR: Decompressor = Decompressor::new();
}

/// Appends the inflated `raw` to `out` and returns true when `raw` is exactly one
/// gzip member that inflates to `size` bytes; otherwise returns false, `out` as it was.
pub fn one_member(raw: &[u8], size: usize, out: &mut Vec<u8>) -> bool {
    let start = out.len();
    out.reserve(size);
    let (mut read, mut written) = (0usize, 0usize);
    let result = DECOMPRESSOR.with(|d| {
        // SAFETY: the input is `raw` whole; the output is the vector's spare
        // capacity, at least `size` bytes, which libdeflate never writes past.
        unsafe {
            libdeflate_gzip_decompress_ex(
                d.0.as_ptr(),
                raw.as_ptr().cast::<c_void>(),
                raw.len(),
                out.as_mut_ptr().add(start).cast::<c_void>(),
                size,
                &mut read,
                &mut written,
            )
        }
    });
    // A second member after the first would be left unread: not this path's case.
    let whole = result == libdeflate_result_LIBDEFLATE_SUCCESS && read == raw.len();
    if whole {
        // SAFETY: libdeflate initialised `written` ≤ `size` bytes after `start`.
        unsafe { out.set_len(start + written) }
    }
    whole
}
