//! What a glibc malloc chunk says about where it came from. glibc makes arenas, large chunks
//! and brk growth with its internal mmap and sbrk, which no interposed function sees; but every
//! chunk it returns carries its size word at `ptr - 8` with two flag bits (malloc/malloc.c):
//! `IS_MMAPPED` (0x2): the chunk is its own mapping, `[ptr - 16 - prev_size, + size + prev_size)`;
//! `NON_MAIN_ARENA` (0x4): the chunk lies in a non-main arena's heap, which starts at the chunk
//! address rounded down to HEAP_MAX_SIZE (64 MiB on 64-bit) with a `heap_info` header whose
//! first word is the arena (`malloc_state *`) and whose third is the heap's current size.
//!
//! Reading these words is safe for any pointer glibc's malloc returned (they are inside the
//! chunk, or inside the heap's first page). This module must only be given such pointers.

/// glibc's HEAP_MAX_SIZE, as the trace format defines it for both sides (a usize here for address
/// arithmetic).
pub const HEAP_MAX: usize = vmshim_trace::HEAP_MAX as usize;
pub const IS_MMAPPED: usize = 0x2;
pub const NON_MAIN_ARENA: usize = 0x4;
const SIZE_BITS: usize = 0x7;

/// Where a chunk lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Its own mapping: `[block, block + size)`.
    Mapped { block: usize, size: usize },
    /// In a non-main arena heap (its header is read only when needed: [`heap_info`]).
    Heap { heap: usize },
    /// In the main (brk) arena; `end` is the chunk's end.
    Main { end: usize },
}

/// The size word of the chunk at `ptr`: its size with the flag bits.
///
/// # Safety
/// As for [`classify`].
#[inline(always)]
pub unsafe fn size_word(ptr: usize) -> usize {
    // SAFETY: the size word precedes every chunk's user memory.
    unsafe { *((ptr - 8) as *const usize) }
}

/// The end of a main-arena chunk at `ptr` with size word `word`.
#[inline(always)]
pub fn main_chunk_end(ptr: usize, word: usize) -> usize {
    ptr - 16 + (word & !SIZE_BITS)
}

/// # Safety
/// `ptr` is a non-null pointer returned by glibc's malloc family and not yet freed.
pub unsafe fn classify(ptr: usize) -> Chunk {
    // SAFETY: as the caller promises.
    let size_word = unsafe { size_word(ptr) };
    let size = size_word & !SIZE_BITS;
    if size_word & IS_MMAPPED != 0 {
        // SAFETY: as above; for a mapped chunk prev_size holds the alignment padding.
        let pad = unsafe { *((ptr - 16) as *const usize) };
        let chunk = ptr - 16;
        Chunk::Mapped { block: chunk - pad, size: size + pad }
    } else if size_word & NON_MAIN_ARENA != 0 {
        Chunk::Heap { heap: ptr & !(HEAP_MAX - 1) }
    } else {
        Chunk::Main { end: main_chunk_end(ptr, size_word) }
    }
}

/// The arena (`malloc_state *`) a heap belongs to and the heap's current size, from its
/// `heap_info` header.
///
/// # Safety
/// `heap` is the base of a live non-main arena heap (from [`classify`] of a live chunk).
pub unsafe fn heap_info(heap: usize) -> (usize, usize) {
    // SAFETY: a non-main arena heap starts with heap_info, in its first (read-write) page:
    // ar_ptr, prev, size.
    unsafe { (*(heap as *const usize), *((heap + 16) as *const usize)) }
}
