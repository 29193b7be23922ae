//! glibc's malloc arena heaps, told from the system calls that make them, so that a trace of the
//! syscall recorder files them under `malloc_arena` as the shim's traces do (issue 15).
//!
//! glibc makes every heap of a non-main arena in `new_heap` (malloc/arena.c) with one pattern:
//! a PROT_NONE, MAP_NORESERVE anonymous reservation of twice HEAP_MAX (or of HEAP_MAX at the
//! aligned address left over from the last one), munmaps of what lies outside the HEAP_MAX-aligned
//! HEAP_MAX inside it, then `mprotect(heap, size, PROT_READ|PROT_WRITE)` of its first bytes, all
//! in the thread that needs the arena. Only that whole sequence, in one thread, makes a heap here:
//! Go's heap arena has the same aligned shape but is neither MAP_NORESERVE nor made by mprotect.
//!
//! The heap's arena (glibc's `malloc_state`, the heap_info's first word) is written by glibc
//! after `new_heap` returns, so a heap found at its mprotect is named at the process's next stop
//! ([`Heaps::take_named`]), when the recorder reads that word. This module only keeps state;
//! it reads nothing itself.

use vmshim_trace::HEAP_MAX;

/// A reservation that may become a heap: `[start, end)` as the munmaps have left it.
struct Reservation {
    tid: u32,
    start: u64,
    end: u64,
    time_ns: u64,
    stack: Vec<u64>,
}

/// A heap glibc made: `[heap, heap + HEAP_MAX)`, its first `size` bytes read-write.
pub struct Heap {
    pub heap: u64,
    pub size: u64,
    /// The thread that made it (the one that needed the arena), when, and its stack at the mmap.
    pub tid: u32,
    pub time_ns: u64,
    pub stack: Vec<u64>,
}

/// One process's heaps in the making, and the heaps whose arena is not read yet.
#[derive(Default)]
pub struct Heaps {
    reservations: Vec<Reservation>,
    unnamed: Vec<Heap>,
}

const NONE_NORESERVE: u64 = (libc::MAP_ANONYMOUS | libc::MAP_NORESERVE) as u64;
const RW: u64 = (libc::PROT_READ | libc::PROT_WRITE) as u64;

impl Heaps {
    /// A successful mmap (`args` as the kernel took them, `at` its result).
    pub fn mmap(&mut self, tid: u32, args: &[u64; 6], at: u64, time_ns: u64, stack: &[u64]) {
        let (len, prot, flags) = (args[1], args[2], args[3]);
        let end = at.saturating_add(len);
        if prot == 0
            && flags & NONE_NORESERVE == NONE_NORESERVE
            && flags & libc::MAP_FIXED as u64 == 0
            && (len == 2 * HEAP_MAX || len == HEAP_MAX)
        {
            self.reservations.push(Reservation { tid, start: at, end, time_ns, stack: stack.to_vec() });
        }
    }

    /// A successful munmap by thread `tid`: glibc's trims cut a reservation's head or tail, in
    /// the thread that made it. Only that thread's reservations are cut: the calls of different
    /// threads reach the recorder in an order of their own (one thread's mmap of what another's
    /// munmap freed may come first), while a thread's own come in the kernel's order.
    pub fn munmap(&mut self, tid: u32, addr: u64, len: u64) {
        let end = addr.saturating_add(len);
        self.reservations.retain_mut(|r| {
            if r.tid != tid || end <= r.start || r.end <= addr {
                return true;
            }
            if addr <= r.start && end < r.end {
                r.start = end;
                true
            } else if r.start < addr && r.end <= end {
                r.end = addr;
                true
            } else {
                // Unmapped whole, or a hole in the middle: not glibc's pattern.
                false
            }
        });
    }

    /// A successful mprotect by thread `tid`: the heap it completes, if any.
    pub fn mprotect(&mut self, tid: u32, addr: u64, len: u64, prot: u64) {
        if prot & RW != RW || !addr.is_multiple_of(HEAP_MAX) || len == 0 || len > HEAP_MAX {
            return;
        }
        let Some(i) = self
            .reservations
            .iter()
            .position(|r| r.tid == tid && r.start == addr && r.end == addr.saturating_add(HEAP_MAX))
        else {
            return;
        };
        let r = self.reservations.swap_remove(i);
        self.unnamed.push(Heap { heap: r.start, size: len, tid, time_ns: r.time_ns, stack: r.stack });
    }

    /// Whether a heap waits for its arena's name.
    pub fn waiting(&self) -> bool {
        !self.unnamed.is_empty()
    }

    /// The heaps whose arena `read_arena` now gives (their heap_info's first word, non-zero), or
    /// every waiting heap when `last` (the process is leaving: an unwritten word names the heap
    /// by its own address, an arena of its own).
    pub fn take_named(
        &mut self,
        mut read_arena: impl FnMut(u64) -> Option<u64>,
        last: bool,
    ) -> Vec<(Heap, u64)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.unnamed.len() {
            match read_arena(self.unnamed[i].heap).filter(|&a| a != 0) {
                Some(arena) => out.push((self.unnamed.swap_remove(i), arena)),
                None if last => {
                    let h = self.unnamed.swap_remove(i);
                    let own = h.heap;
                    out.push((h, own));
                }
                None => i += 1,
            }
        }
        out.sort_by_key(|(h, _)| h.time_ns);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NORESERVE: u64 = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE) as u64;

    fn mmap_args(len: u64, prot: u64, flags: u64) -> [u64; 6] {
        [0, len, prot, flags, u64::MAX, 0]
    }

    #[test]
    fn the_new_heap_pattern_makes_a_heap_and_nothing_else_does() {
        let mut h = Heaps::default();
        // new_heap's first way: 128 MiB, trimmed to the aligned 64 MiB inside.
        let p1 = 5 * HEAP_MAX + 0x3000;
        let p2 = 6 * HEAP_MAX;
        h.mmap(7, &mmap_args(2 * HEAP_MAX, 0, NORESERVE), p1, 1, &[0x10]);
        h.munmap(7, p1, p2 - p1);
        // Another thread's munmap there is not glibc's trim.
        h.munmap(8, p2, 4096);
        h.munmap(7, p2 + HEAP_MAX, HEAP_MAX - (p2 - p1));
        // Another thread's mprotect there is not this thread's heap.
        h.mprotect(8, p2, 135168, RW);
        assert!(!h.waiting());
        h.mprotect(7, p2, 135168, RW);
        let named = h.take_named(|a| (a == p2).then_some(p2 + 0x20), false);
        assert_eq!(named.len(), 1);
        let (heap, arena) = &named[0];
        assert_eq!(
            (heap.heap, heap.size, heap.tid, *arena, heap.stack.as_slice()),
            (p2, 135168, 7, p2 + 0x20, &[0x10][..])
        );
        // The second way: 64 MiB at an aligned hint; named late, by itself.
        h.mmap(9, &mmap_args(HEAP_MAX, 0, NORESERVE), p2 + HEAP_MAX, 2, &[]);
        h.mprotect(9, p2 + HEAP_MAX, 4096, RW);
        assert!(h.take_named(|_| Some(0), false).is_empty());
        let last = h.take_named(|_| None, true);
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].1, p2 + HEAP_MAX);
        // Go's aligned reservations: no MAP_NORESERVE.
        let go = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        h.mmap(7, &mmap_args(HEAP_MAX, 0, go), 20 * HEAP_MAX, 3, &[]);
        h.mprotect(7, 20 * HEAP_MAX, 4096, RW);
        // A reservation not trimmed to the aligned 64 MiB, or holed, is not a heap either.
        h.mmap(7, &mmap_args(2 * HEAP_MAX, 0, NORESERVE), 30 * HEAP_MAX, 4, &[]);
        h.mprotect(7, 30 * HEAP_MAX, 4096, RW);
        h.mmap(7, &mmap_args(2 * HEAP_MAX, 0, NORESERVE), 40 * HEAP_MAX + 0x1000, 5, &[]);
        h.munmap(7, 40 * HEAP_MAX + 0x2000, 0x1000);
        h.mprotect(7, 41 * HEAP_MAX, 4096, RW);
        assert!(!h.waiting());
    }
}
