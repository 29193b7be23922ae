//! A fixed table of `(key, value)` word pairs in the shim's .bss, the storage of two lock-free
//! caches: the unwinder's rule cache (code address -> unwind rule) and the stack table (stack
//! hash -> file offset of its Stack record). Key 0 marks an empty slot; a cache claims a slot with
//! [`Table::claim`] and publishes the value its own way.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};

/// Key and value side by side: one cache line per lookup.
#[repr(C, align(16))]
pub struct Entry {
    pub key: AtomicU64,
    pub value: AtomicU64,
}

/// `N` entries (a power of two), probed linearly from a home slot. Page-aligned, so that a fork
/// child can drop its copy of the entries without writing to them ([`Table::forget`]).
#[repr(C, align(4096))]
pub struct Table<const N: usize> {
    entries: [Entry; N],
    /// Whether any slot was claimed since the last [`Table::clear`].
    used: AtomicBool,
    /// Set once the entries are `MADV_WIPEONFORK` ([`Table::wipe_on_fork`]): a fork child finds
    /// them zero.
    wiped: AtomicBool,
}

impl<const N: usize> Table<N> {
    pub const fn new() -> Table<N> {
        Table {
            entries: [const { Entry { key: AtomicU64::new(0), value: AtomicU64::new(0) } }; N],
            used: AtomicBool::new(false),
            wiped: AtomicBool::new(false),
        }
    }

    /// The slot `i` steps after `home`.
    #[inline(always)]
    pub fn slot(&self, home: usize, i: usize) -> &Entry {
        &self.entries[(home + i) & (N - 1)]
    }

    /// Claims the empty slot `e` for `key`: Ok if this call did, else the key already there.
    pub fn claim(&self, e: &Entry, key: u64) -> Result<u64, u64> {
        let r = e.key.compare_exchange(0, key, AcqRel, Acquire);
        if r.is_ok() {
            self.used.store(true, Release);
        }
        r
    }

    /// Empties the table in a fork child (one thread, the parent's entries shared with it
    /// copy-on-write): `MADV_DONTNEED` drops the child's view of the entries' pages, which then
    /// read as zeros (the table is in .bss, private anonymous memory; were it in .data, they would
    /// read as the file's bytes, its zero initial value, alike), so no page is copied. Clearing
    /// slot by slot copied every page the parent had used: 64 page copies per fork for the
    /// stack table, the largest share of what the shim added to a fork (issue 12). Falls back
    /// to [`Table::clear`] where the entries do not fill whole pages.
    pub fn forget(&self) {
        if !self.used.load(Acquire) || self.wiped.load(Acquire) {
            return;
        }
        // `used` stays set (writing it would copy its page): a later clear finds nothing to do.
        if self.advise(libc::MADV_DONTNEED) {
            return;
        }
        self.clear();
    }

    /// Asks the kernel to give every later fork child zeros for the entries' pages
    /// (`MADV_WIPEONFORK`, Linux >= 4.14; .bss is private anonymous memory, which it needs): a
    /// fork then copies none of their page-table entries, nor makes the parent's pages
    /// copy-on-write, so the parent's next stores into the table take no page copy. A process
    /// that forks in a loop (a shell) had both caches' pages copied at every fork: 86 pages in a
    /// shell loop's bash (issue 12). Done once per process image, by its first fork; the setting
    /// stays with the mapping in the children and goes at exec. False when the kernel refused
    /// (the child then drops its copy as [`Table::forget`] does).
    pub fn wipe_on_fork(&self) -> bool {
        let wiped = self.advise(libc::MADV_WIPEONFORK);
        if wiped {
            self.wiped.store(true, Release);
        }
        wiped
    }

    /// `madvise(advice)` over the entries, when they fill whole pages; whether it was done.
    fn advise(&self, advice: i32) -> bool {
        let (addr, len) = (self.entries.as_ptr() as usize, core::mem::size_of_val(&self.entries));
        // SAFETY: getauxval reads the auxiliary vector the kernel gave the process.
        let page = unsafe { libc::getauxval(libc::AT_PAGESZ) } as usize;
        page.is_power_of_two()
            && addr % page == 0
            && len % page == 0
            && crate::os::syscall::madvise(addr, len, advice) == 0
    }

    /// Empties the table. An untouched table stays untouched: clearing it would fault in all of
    /// its pages for nothing (every process loads its images, and so invalidates, at start).
    pub fn clear(&self) {
        // Read first: a store to an untouched flag would take a page of its own.
        if !self.used.load(Acquire) || !self.used.swap(false, AcqRel) {
            return;
        }
        // Only the slots in use are written: in a fork child each page written is a page
        // copied from the parent.
        for e in &self.entries {
            if e.key.load(Relaxed) != 0 || e.value.load(Relaxed) != 0 {
                e.value.store(0, Relaxed);
                e.key.store(0, Release);
            }
        }
    }
}

impl<const N: usize> Default for Table<N> {
    fn default() -> Table<N> {
        Table::new()
    }
}
