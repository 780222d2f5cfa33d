//! The binary's global allocator: mimalloc, asked the way `malloc` is asked.
//!
//! The `mimalloc` crate's allocator passes every request to
//! `mi_malloc_aligned`, alignment 8 included. mimalloc serves that from its
//! fast path only for blocks up to 1 KiB; above that it takes its generic
//! aligned path, about 450 instructions a call. A single-recipient job
//! makes several such allocations (the job's task, its delivery, the
//! result batch): 2,600 instructions, 3% of the gateway's per job
//! (callgrind, docs/benchmarks.md round 7). mimalloc aligns every block to
//! at least a word, so a request for a word's alignment or less goes to
//! plain `mi_malloc`, `mi_zalloc` and `mi_realloc`; larger alignments keep
//! the aligned calls.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// Every block mimalloc hands out is aligned to at least this.
const WORD: usize = std::mem::size_of::<usize>();

/// mimalloc as the global allocator (`#[global_allocator]` in `main.rs`).
pub struct MiMalloc;

// SAFETY: every method forwards to mimalloc, which returns null on failure,
// blocks of at least the requested size, aligned to a word by `mi_malloc`
// and friends and to `align` by the `_aligned` calls; `mi_free` frees both.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_malloc(layout.size()).cast()
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_zalloc(layout.size()).cast()
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
        } else {
            mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: [usize; 9] = [1, 7, 24, 100, 1_000, 1_025, 3_144, 70_000, 5 << 20];
    const ALIGNS: [usize; 7] = [1, 2, 4, 8, 16, 128, 4_096];

    fn aligned(p: *mut u8, align: usize) -> bool {
        !p.is_null() && (p as usize).is_multiple_of(align)
    }

    #[test]
    fn blocks_are_aligned_and_hold_their_size() {
        for size in SIZES {
            for align in ALIGNS {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a non-zero layout; the block is written within its
                // size and freed once with the same layout.
                unsafe {
                    let p = MiMalloc.alloc(layout);
                    assert!(aligned(p, align), "size {size} align {align}: {p:p}");
                    p.write_bytes(0xa5, size);
                    assert_eq!(*p.add(size - 1), 0xa5);
                    MiMalloc.dealloc(p, layout);
                }
            }
        }
    }

    #[test]
    fn zeroed_blocks_are_zero() {
        for size in SIZES {
            for align in [8, 64] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: as above; the block is only read within its size.
                unsafe {
                    let p = MiMalloc.alloc_zeroed(layout);
                    assert!(aligned(p, align));
                    assert!(std::slice::from_raw_parts(p, size).iter().all(|&b| b == 0));
                    MiMalloc.dealloc(p, layout);
                }
            }
        }
    }

    #[test]
    fn realloc_keeps_the_contents_and_the_alignment() {
        for align in ALIGNS {
            let mut layout = Layout::from_size_align(100, align).unwrap();
            // SAFETY: as above; after each realloc only the new block is
            // used, with its new layout, and the last one is freed once.
            unsafe {
                let mut p = MiMalloc.alloc(layout);
                for i in 0..10 {
                    *p.add(i) = i as u8;
                }
                for new_size in [50_000, 10, 2_000_000] {
                    p = MiMalloc.realloc(p, layout, new_size);
                    layout = Layout::from_size_align(new_size, align).unwrap();
                    assert!(aligned(p, align), "align {align} -> {new_size}");
                    for i in 0..10 {
                        assert_eq!(*p.add(i), i as u8, "align {align} -> {new_size}");
                    }
                }
                MiMalloc.dealloc(p, layout);
            }
        }
    }
}
