//! The bounds-checked reader of a walk: every stack word the unwinder reads goes through
//! [`SafeReader`], so a stale or garbage frame pointer makes a read fail, never a SIGSEGV in
//! the target. It also keeps the log of the words a walk read, for the walk's memo.

use crate::os::tls::{self, Slot};
use core::sync::atomic::{
    AtomicUsize,
    Ordering::{Relaxed, SeqCst},
};

/// Most words a walk's log holds for the memo (`walk.rs`): a walk that reads more is not
/// memoized.
pub const LOG_WORDS: usize = 96;

/// Words inside the current thread's stack range known readable (`lo..hi`, kept in TLS across
/// walks) are read directly: a thread's own stack stays mapped while it runs on it. So are words
/// in a second range found readable by a probe during a frame-pointer walk (a Go goroutine
/// stack, which lives in Go's heap and stays mapped), for as long as no munmap, mremap, MAP_FIXED
/// mmap or mprotect that takes away read access has run since ([`address_space_shrinks`]).
/// Anything else goes through `process_vm_readv`, which fails on an unmapped address instead
/// of faulting: each miss copies up to a page-sized window starting at the address (a short
/// read stops at the first unmapped page), and words that follow in the same window cost
/// nothing more.
pub struct SafeReader<'w> {
    lo: usize,
    hi: usize,
    alt_lo: usize,
    alt_hi: usize,
    /// Whether this walk has probed for the second range already.
    alt_probed: bool,
    base: usize,
    len: usize,
    /// Where the words read in known ranges are logged for a memo, and how many so far; None
    /// once a read went anywhere else or the log filled up (the walk is then not memoized).
    #[cfg(target_arch = "x86_64")]
    pub log: Option<(&'w mut [(usize, usize); LOG_WORDS], usize)>,
    /// The window; only its first `len` bytes were ever written.
    buf: &'w mut core::mem::MaybeUninit<[u8; 4096]>,
}

/// Most of a stack, above the address probed, that one probe declares readable.
const PROBE_PAGES: usize = 64;
/// The same for the second range: a goroutine's frames above a cgo call rarely span more.
const ALT_PROBE_PAGES: usize = 8;

/// Bumped before every call that can unmap or protect memory: a range found readable in an
/// earlier generation is not trusted any more.
#[unsafe(link_section = ".data.vmshim_hot")]
static SHRINK_GEN: AtomicUsize = AtomicUsize::new(1);

/// Called by the hooks before a call that may take memory away (munmap, mremap, MAP_FIXED mmap,
/// mprotect without PROT_READ).
pub fn address_space_shrinks() {
    // A read-modify-write on one shared line per munmap costs every thread that unmaps; it
    // only matters once some thread holds a second range (a program with code without unwind
    // information).
    if ALT_IN_USE.load(SeqCst) {
        SHRINK_GEN.fetch_add(1, SeqCst);
    }
}

/// Set for good by the first probe of a second range.
#[unsafe(link_section = ".data.vmshim_hot")]
static ALT_IN_USE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

impl<'w> SafeReader<'w> {
    /// A reader for a walk starting at stack pointer `sp`. The first walk on a thread (or on a
    /// stack the thread switched to) probes how far its stack reaches above `sp`.
    #[inline(always)]
    pub fn new(sp: usize, window: &'w mut core::mem::MaybeUninit<[u8; 4096]>) -> SafeReader<'w> {
        let mut r = SafeReader {
            lo: 0,
            hi: 0,
            alt_lo: 0,
            alt_hi: 0,
            alt_probed: false,
            #[cfg(target_arch = "x86_64")]
            log: None,
            base: 0,
            len: 0,
            buf: window,
        };
        let (lo, hi) = (tls::get(Slot::StackLo), tls::get(Slot::StackHi));
        if (lo..hi).contains(&sp) {
            (r.lo, r.hi) = (lo, hi);
        } else if sp != 0 {
            let page = sp & !4095;
            let n = crate::os::syscall::read_own_pages(page, PROBE_PAGES, r.buf.as_mut_ptr().cast());
            if n > 0 {
                (r.lo, r.hi) = (page, page + n);
                tls::set(Slot::StackLo, r.lo);
                tls::set(Slot::StackHi, r.hi);
            }
        }
        if tls::get(Slot::AltGen) == SHRINK_GEN.load(Relaxed) {
            (r.alt_lo, r.alt_hi) = (tls::get(Slot::AltLo), tls::get(Slot::AltHi));
        }
        r
    }

    /// Whether `[addr, addr + len)` lies in a range known readable.
    pub fn known(&self, addr: usize, len: usize) -> bool {
        addr.is_multiple_of(8)
            && addr.checked_add(len).is_some_and(|end| {
                (addr >= self.lo && end <= self.hi) || (addr >= self.alt_lo && end <= self.alt_hi)
            })
    }

    /// Probes the pages from `addr` up as the second range (once per walk).
    fn probe_alt(&mut self, addr: usize) {
        if self.alt_probed {
            return;
        }
        self.alt_probed = true;
        ALT_IN_USE.store(true, SeqCst);
        let generation = SHRINK_GEN.load(SeqCst);
        let page = addr & !4095;
        let n = crate::os::syscall::read_own_pages(page, ALT_PROBE_PAGES, self.buf.as_mut_ptr().cast());
        self.len = 0; // the window's contents were overwritten
        if n > 0 {
            (self.alt_lo, self.alt_hi) = (page, page + n);
            tls::set(Slot::AltLo, page);
            tls::set(Slot::AltHi, page + n);
            tls::set(Slot::AltGen, generation);
        }
    }

    /// The word at `addr`, or None if it is not mapped readable.
    pub fn word(&mut self, addr: usize) -> Option<usize> {
        if self.known(addr, 8) {
            // SAFETY: inside a range known readable (see the type's doc).
            let v = unsafe { (addr as *const usize).read() };
            self.logged(addr, v);
            return Some(v);
        }
        self.pair(addr).map(|p| p.0)
    }

    /// The word at `addr` and whether it lay in a known range, without logging it for the memo
    /// ([`SafeReader::log_word`] does that if the value turns out to matter).
    pub fn word_unlogged(&mut self, addr: usize) -> Option<(usize, bool)> {
        #[cfg(target_arch = "x86_64")]
        let log = self.log.take();
        let v = self.word(addr);
        #[cfg(target_arch = "x86_64")]
        {
            self.log = log;
        }
        Some((v?, self.known(addr, 8)))
    }

    /// Logs a word read earlier by [`SafeReader::word_unlogged`].
    pub fn log_word(&mut self, addr: usize, v: usize, known: bool) {
        if known {
            self.logged(addr, v);
        } else {
            #[cfg(target_arch = "x86_64")]
            {
                self.log = None;
            }
        }
    }

    /// Adds a word read in a known range to the memo log.
    #[inline(always)]
    fn logged(&mut self, _addr: usize, _v: usize) {
        #[cfg(target_arch = "x86_64")]
        if let Some((log, n)) = &mut self.log {
            match log.get_mut(*n) {
                Some(e) => {
                    *e = (_addr, _v);
                    *n += 1;
                }
                None => self.log = None,
            }
        }
    }

    /// The two words at `addr`, or None if they are not mapped readable.
    pub fn pair(&mut self, addr: usize) -> Option<(usize, usize)> {
        // Small integers and non-canonical values, common in a register used for data, are no
        // address of this process: no system call to find that out.
        if !(0x10000..1 << 47).contains(&addr) {
            return None;
        }
        let end = addr.checked_add(16)?;
        if !self.known(addr, 16)
            && addr.is_multiple_of(8)
            && !(addr >= self.base && end <= self.base + self.len)
        {
            self.probe_alt(addr);
        }
        if self.known(addr, 16) {
            // SAFETY: as in word().
            let (a, b) = unsafe { ((addr as *const usize).read(), (addr as *const usize).add(1).read()) };
            self.logged(addr, a);
            self.logged(addr + 8, b);
            return Some((a, b));
        }
        // A read outside the known ranges cannot be checked again without a system call.
        #[cfg(target_arch = "x86_64")]
        {
            self.log = None;
        }
        if !(addr >= self.base && end <= self.base + self.len) {
            let n = crate::os::syscall::read_own_memory_raw(addr, self.buf.as_mut_ptr().cast(), 4096);
            if n < 16 {
                self.len = 0;
                return None;
            }
            (self.base, self.len) = (addr, n);
        }
        let at = addr - self.base;
        let base = self.buf.as_ptr() as *const u8;
        // SAFETY: `at + 16 <= len`, and the kernel wrote the window's first `len` bytes.
        let word = |i: usize| unsafe { (base.add(i) as *const usize).read_unaligned() };
        Some((word(at), word(at + 8)))
    }
}
