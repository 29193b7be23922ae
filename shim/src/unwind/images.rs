//! The spans of the loaded images that the unwinder trusts: each image's whole span and its
//! executable (PF_X) part. A frame-pointer walk checks a candidate frame against them (a frame
//! pointer points at a stack, not into an image; a return address points into code), and fork
//! finds libc's code by them. The table is filled by `know::modules` as it records each image
//! (framehop's shape: the unwinder holds the modules its caller adds) and is append-only,
//! lock-free, in .bss.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*};

/// Most images kept.
pub const MAX: usize = 1024;

/// One image: its span `[lo, hi)`, its executable part, and the facts its caller keeps of it,
/// side by side, so that the first images of every process (the executable, the shim, libc,
/// the loader) are one page of .bss, not a page of each table: a first touch is a page fault in
/// every image of a shell loop (issue 12).
pub struct Image {
    pub lo: AtomicU64,
    pub hi: AtomicU64,
    text: (AtomicU64, AtomicU64),
    /// The caller's own words about the image (`know::modules`: its load bias and where its
    /// names were copied), written before [`publish`].
    pub facts: [AtomicU64; 4],
}

static IMAGES: [Image; MAX] = [const {
    Image {
        lo: AtomicU64::new(0),
        hi: AtomicU64::new(0),
        text: (AtomicU64::new(0), AtomicU64::new(0)),
        facts: [const { AtomicU64::new(0) }; 4],
    }
}; MAX];
#[unsafe(link_section = ".data.vmshim_hot")]
static LEN: AtomicUsize = AtomicUsize::new(0);

/// The images published so far, in the order they were added: entry `i` is the image that
/// [`next_index`] named `i` when it was added.
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn spans() -> &'static [Image] {
    &IMAGES[..LEN.load(Acquire).min(MAX)]
}

/// The index the next [`publish`] fills, so that the caller can write its facts of that image
/// first ([`facts`]; the Release in [`publish`] then covers them too). `None` when the table is
/// full.
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn next_index() -> Option<usize> {
    let i = LEN.load(Acquire);
    (i < MAX).then_some(i)
}

/// The caller's words about image `i` (from [`next_index`]), to write before publishing it.
pub fn facts(i: usize) -> Option<&'static [AtomicU64; 4]> {
    IMAGES.get(i).map(|image| &image.facts)
}

/// Publishes image `i` (from [`next_index`]): span `lo..hi`, executable part `text`. Index and
/// publication are a load and a store, not a compare-and-swap: two scans racing would fill the
/// same index, exactly as the table did when it lived in `modules.rs`.
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn publish(i: usize, lo: u64, hi: u64, text: (u64, u64)) {
    if let Some(image) = IMAGES.get(i) {
        image.text.0.store(text.0, Relaxed);
        image.text.1.store(text.1, Relaxed);
        image.hi.store(hi, Relaxed);
        image.lo.store(lo, Relaxed);
        LEN.store(i + 1, Release);
    }
}

/// Whether an image starting at `lo` was added already.
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn is_known(lo: u64) -> bool {
    spans().iter().any(|k| k.lo.load(Relaxed) == lo)
}

/// Whether `addr` lies in a recorded image (code or data).
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn in_image(addr: u64) -> bool {
    spans().iter().any(|k| (k.lo.load(Relaxed)..k.hi.load(Relaxed)).contains(&addr))
}

/// The span of the executable segment of the recorded image that holds `addr`.
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn text_of(addr: u64) -> Option<(u64, u64)> {
    spans()
        .iter()
        .map(|k| (k.text.0.load(Relaxed), k.text.1.load(Relaxed)))
        .find(|(lo, hi)| (*lo..*hi).contains(&addr))
}

/// Whether `addr` lies in a recorded image's executable segment (a plausible return address).
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn in_text(addr: u64) -> bool {
    spans().iter().any(|k| (k.text.0.load(Relaxed)..k.text.1.load(Relaxed)).contains(&addr))
}
