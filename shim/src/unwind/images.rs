//! The spans of the loaded images that the unwinder trusts: each image's whole span and its
//! executable (PF_X) part. A frame-pointer walk checks a candidate frame against them (a frame
//! pointer points at a stack, not into an image; a return address points into code), and fork
//! finds libc's code by them. The table is filled by `know::modules` as it records each image
//! (framehop's shape: the unwinder holds the modules its caller adds) and is append-only,
//! lock-free, in .bss.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*};

/// Most images kept.
pub const MAX: usize = 1024;
/// Spans `[lo, hi)` of the images added so far.
static SPAN: [(AtomicU64, AtomicU64); MAX] = [const { (AtomicU64::new(0), AtomicU64::new(0)) }; MAX];
/// The executable part of each, by the same index.
static TEXT: [(AtomicU64, AtomicU64); MAX] = [const { (AtomicU64::new(0), AtomicU64::new(0)) }; MAX];
#[unsafe(link_section = ".data.vmshim_hot")]
static LEN: AtomicUsize = AtomicUsize::new(0);

/// The spans published so far, in the order they were added: entry `i` is the image that
/// [`next_index`] named `i` when it was added.
pub fn spans() -> &'static [(AtomicU64, AtomicU64)] {
    &SPAN[..LEN.load(Acquire).min(MAX)]
}

/// The index the next [`publish`] fills, so that the caller can keep its own facts of that
/// image by the same index, written before it publishes (the Release in [`publish`] then
/// covers them too). `None` when the table is full.
pub fn next_index() -> Option<usize> {
    let i = LEN.load(Acquire);
    (i < MAX).then_some(i)
}

/// Publishes image `i` (from [`next_index`]): span `lo..hi`, executable part `text`. Index and
/// publication are a load and a store, not a compare-and-swap: two scans racing would fill the
/// same index, exactly as the table did when it lived in `modules.rs`.
pub fn publish(i: usize, lo: u64, hi: u64, text: (u64, u64)) {
    if let (Some(slot), Some(t)) = (SPAN.get(i), TEXT.get(i)) {
        t.0.store(text.0, Relaxed);
        t.1.store(text.1, Relaxed);
        slot.1.store(hi, Relaxed);
        slot.0.store(lo, Relaxed);
        LEN.store(i + 1, Release);
    }
}

/// Whether an image starting at `lo` was added already.
pub fn is_known(lo: u64) -> bool {
    spans().iter().any(|k| k.0.load(Relaxed) == lo)
}

/// Whether `addr` lies in a recorded image (code or data).
pub fn in_image(addr: u64) -> bool {
    spans().iter().any(|(lo, hi)| (lo.load(Relaxed)..hi.load(Relaxed)).contains(&addr))
}

/// The span of the executable segment of the recorded image that holds `addr`.
pub fn text_of(addr: u64) -> Option<(u64, u64)> {
    TEXT[..spans().len()]
        .iter()
        .map(|(lo, hi)| (lo.load(Relaxed), hi.load(Relaxed)))
        .find(|(lo, hi)| (*lo..*hi).contains(&addr))
}

/// Whether `addr` lies in a recorded image's executable segment (a plausible return address).
pub fn in_text(addr: u64) -> bool {
    TEXT[..spans().len()].iter().any(|(lo, hi)| (lo.load(Relaxed)..hi.load(Relaxed)).contains(&addr))
}
