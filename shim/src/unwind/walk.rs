//! Stack capture inside a hook: DWARF unwind rules through C and glibc frames, continued with
//! frame pointers where a frame has no unwind information — Go code has no `.eh_frame`, so a
//! cgo call such as `x_cgo_mmap` unwinds by DWARF up to `runtime.asmcgocall` and by frame
//! pointers from there to `runtime.rt0_go` or `runtime.mstart`.
//!
//! On x86_64 the rules come from [`cfi`]'s table, computed once per return address, and a walk
//! that would read the same stack words as one of the last four on its slot is replayed
//! ([`memo`]); frames the table does not model (signal frames, DWARF expressions) and other
//! architectures go through libgcc's `_Unwind_Backtrace` (which finds unwind tables with
//! `_dl_find_object`: no lock, no malloc).
//!
//! Every stack read is bounds-checked ([`SafeReader`], in `reader.rs`): inside a range known readable, or
//! through `process_vm_readv` on this process, so a stale or garbage frame pointer makes a read
//! fail, never a SIGSEGV in the target. Frames inside the shim itself are left out, so
//! `frames[0]` is the return address into the hook's caller.

use super::cfi;
use super::fp::follow_frame_pointers;
use super::reader::SafeReader;
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

const URC_NO_REASON: c_int = 0;
const URC_END_OF_STACK: c_int = 5;

#[cfg(target_arch = "x86_64")]
const FP_REG: c_int = 6; // DWARF number of rbp
#[cfg(target_arch = "aarch64")]
const FP_REG: c_int = 29; // x29

unsafe extern "C" {
    fn _Unwind_Backtrace(cb: extern "C" fn(*mut c_void, *mut c_void) -> c_int, arg: *mut c_void) -> c_int;
    fn _Unwind_GetIP(ctx: *mut c_void) -> usize;
    fn _Unwind_GetGR(ctx: *mut c_void, reg: c_int) -> usize;
    fn _Unwind_GetCFA(ctx: *mut c_void) -> usize;
}

/// Absolute address range of the shim's own code, set once at start.
#[unsafe(link_section = ".data.vmshim_hot")]
static SELF_LO: AtomicUsize = AtomicUsize::new(0);
#[unsafe(link_section = ".data.vmshim_hot")]
static SELF_HI: AtomicUsize = AtomicUsize::new(0);

#[unsafe(link_section = ".text.hot.vmshim")]
pub fn set_self_range(lo: usize, hi: usize) {
    SELF_LO.store(lo, Relaxed);
    SELF_HI.store(hi, Relaxed);
}

/// Whether `ip` lies in the shim's own image (always false before the images' scan set its
/// range).
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn in_self(ip: usize) -> bool {
    ip >= SELF_LO.load(Relaxed) && ip < SELF_HI.load(Relaxed)
}

/// Whether the images' scan found the shim's own image ([`in_self`] can answer).
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn knows_self() -> bool {
    SELF_LO.load(Relaxed) < SELF_HI.load(Relaxed)
}

struct Walk<'a> {
    frames: &'a mut [u64],
    n: usize,
    started: bool,
    /// The frame pointer as restored in the last frame DWARF reached.
    last_fp: usize,
    /// What libgcc reports as the CFA in the last frame's context: the CFA of the frame it
    /// unwound from, i.e. the last frame's stack pointer above its call's return address, where
    /// a scan for its saved frame pointer starts.
    cfa: usize,
}

extern "C" fn on_frame(ctx: *mut c_void, arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `&mut Walk` that capture() passed to _Unwind_Backtrace, alive for the
    // whole walk; `ctx` is libgcc's context for the current frame.
    let (w, ip, fp) = unsafe { (&mut *(arg as *mut Walk), _Unwind_GetIP(ctx), _Unwind_GetGR(ctx, FP_REG)) };
    if ip == 0 {
        return URC_END_OF_STACK;
    }
    // SAFETY: as above.
    w.cfa = unsafe { _Unwind_GetCFA(ctx) };
    if !w.started && in_self(ip) {
        return URC_NO_REASON;
    }
    w.started = true;
    w.frames[w.n] = ip as u64;
    w.n += 1;
    w.last_fp = fp;
    if w.n == w.frames.len() { URC_END_OF_STACK } else { URC_NO_REASON }
}

/// Bounds-checked reads of this process's memory for one stack walk.
///
/// Fills `frames` with return addresses, innermost first; returns how many.
pub fn capture(frames: &mut [u64]) -> usize {
    capture_with(frames, false).0
}

/// As [`capture`], and also returns the file offset of the trace's Stack record for the frames
/// ([`crate::out::stacks`]; 0 when there is none: write them inline).
pub fn capture_interned(frames: &mut [u64]) -> (usize, u64) {
    capture_with(frames, true)
}

#[inline(always)]
fn capture_with(frames: &mut [u64], intern: bool) -> (usize, u64) {
    if frames.is_empty() {
        return (0, 0);
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(r) = capture_cached(frames, intern) {
        return r;
    }
    let n = capture_libgcc(frames);
    (n, if intern { crate::out::stacks::intern(&frames[..n]).unwrap_or(0) } else { 0 })
}

/// The last walk made on a slot's threads, to be replayed when the next one would read the
/// same words: a loop that maps from one call site walks the same stack every time.
///
/// A walk is a function of its start registers (sp, and rbp if a rule uses it before restoring
/// it), the rule table (its generation) and the stack words it reads. A memo keeps all of
/// these; when every word it read still holds the same value, the walk would compute the very
/// same frames, so they are copied instead: one independent load per word rather than a chain
/// of dependent lookups per frame. Only walks whose every read was inside a known-readable
/// range are memoized, and the check reads only inside such ranges.
#[cfg(target_arch = "x86_64")]
pub mod memo {
    use core::cell::UnsafeCell;
    use core::sync::atomic::{AtomicBool, Ordering::*};

    pub const READS: usize = crate::unwind::reader::LOG_WORDS;
    pub const FRAMES: usize = 64;
    /// Walks kept per slot: a loop's mmap and munmap, say, come from different stacks in turn.
    pub const WAYS: usize = 4;
    const SLOTS: usize = 32;

    pub struct Data {
        pub valid: bool,
        pub cfi_gen: usize,
        pub sp: usize,
        pub fp: usize,
        pub need_fp: bool,
        pub depth: usize,
        pub nreads: usize,
        pub reads: [(usize, usize); READS],
        pub nframes: usize,
        pub frames: [u64; FRAMES],
        /// The frames' Stack record in the trace ([`crate::out::stacks`]), 0 if none, and the
        /// epoch of that reference.
        pub stack_ref: u64,
        pub stack_epoch: u64,
    }

    pub struct Ways {
        pub ways: [Data; WAYS],
        /// The way the next new walk replaces.
        pub next: usize,
    }

    pub struct Slot {
        busy: AtomicBool,
        data: UnsafeCell<Ways>,
    }

    // SAFETY: `data` is only touched by the thread that set `busy` (see Guard).
    unsafe impl Sync for Slot {}

    /// Page-aligned and a whole number of pages, so that it can be wipe-on-fork.
    #[repr(C, align(4096))]
    struct Memos([Slot; SLOTS]);

    /// Marks the memos wipe-on-fork (the image's first fork): an all-zero slot is a free one
    /// with no valid way, which is what a fork child's one thread should find; the forking
    /// thread writes its slot at every fork, which cost the parent a copy-on-write fault each
    /// (issue 12).
    pub fn wipe_on_fork() {
        let (addr, len) = (MEMOS.0.as_ptr() as usize, core::mem::size_of::<Memos>());
        crate::os::syscall::madvise(addr, len, libc::MADV_WIPEONFORK);
    }

    #[unsafe(link_section = ".sbss.vmshim")]
    static MEMOS: Memos = Memos(
        [const {
            Slot {
                busy: AtomicBool::new(false),
                data: UnsafeCell::new(Ways {
                    next: 0,
                    ways: [const {
                        Data {
                            valid: false,
                            cfi_gen: 0,
                            sp: 0,
                            fp: 0,
                            need_fp: false,
                            depth: 0,
                            nreads: 0,
                            reads: [(0, 0); READS],
                            nframes: 0,
                            frames: [0; FRAMES],
                            stack_ref: 0,
                            stack_epoch: 0,
                        }
                    }; WAYS],
                }),
            }
        }; SLOTS],
    );

    /// Exclusive use of one slot, released on drop. Threads share slots by id; one that finds
    /// its slot busy (another thread mid-walk) walks without a memo: nothing waits.
    pub struct Guard(&'static Slot);

    impl Guard {
        pub fn try_take(tid: u32) -> Option<Guard> {
            let slot = &MEMOS.0[tid as usize % SLOTS];
            if slot.busy.swap(true, Acquire) { None } else { Some(Guard(slot)) }
        }

        pub fn data(&mut self) -> &mut Ways {
            // SAFETY: this guard holds `busy`, so no other reference to the data exists.
            unsafe { &mut *self.0.data.get() }
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.busy.store(false, Release);
        }
    }
}

/// The walk with cached rules ([`cfi`]): None when a frame needs what only libgcc models.
#[cfg(target_arch = "x86_64")]
#[inline(never)]
fn capture_cached(frames: &mut [u64], intern: bool) -> Option<(usize, u64)> {
    let interned = |frames: &[u64]| if intern { crate::out::stacks::intern(frames).unwrap_or(0) } else { 0 };
    let (mut pc, mut sp, mut fp): (usize, usize, usize);
    // SAFETY: reads this instruction's address and the stack and frame pointers; the unwind
    // rule at the `lea`'s successor describes this function's frame with exactly these values.
    unsafe {
        core::arch::asm!(
            "lea {pc}, [rip]",
            "mov {sp}, rsp",
            "mov {fp}, rbp",
            pc = out(reg) pc,
            sp = out(reg) sp,
            fp = out(reg) fp,
            options(nomem, nostack, preserves_flags),
        );
    }
    // On a shim stack ([`crate::os::ownstack`]) the walk starts where the thread left its own: at the
    // return address its stack pointer pointed at when it switched (the walk reads it, so that a
    // memo of this walk checks it too).
    let from_return = match crate::os::ownstack::caller() {
        Some((caller_sp, caller_fp)) => {
            (pc, sp, fp) = (0, caller_sp + 8, caller_fp);
            true
        }
        None => false,
    };
    // The fallback reads' window, outside the reader so that nothing copies its 4 KiB.
    let mut window = core::mem::MaybeUninit::uninit();
    let mut mem = SafeReader::new(sp, &mut window);
    let mut slot = memo::Guard::try_take(crate::os::syscall::gettid());
    let Some(ways) = slot.as_mut().map(|g| g.data()).filter(|_| frames.len() <= memo::FRAMES) else {
        let n = walk(frames, pc, sp, fp, from_return, &mut mem)?.0;
        return Some((n, interned(&frames[..n])));
    };
    let cfi_gen = cfi::generation();
    let hit = ways.ways.iter().position(|m| {
        m.valid
            && m.sp == sp
            && (!m.need_fp || m.fp == fp)
            && m.depth == frames.len()
            && m.cfi_gen == cfi_gen
            && m.reads[..m.nreads].iter().all(|&(a, v)| {
                mem.known(a, 8) && {
                    // SAFETY: inside a range known readable (see SafeReader).
                    let now = unsafe { (a as *const usize).read() };
                    now == v
                }
            })
    });
    if let Some(i) = hit {
        let m = &mut ways.ways[i];
        frames[..m.nframes].copy_from_slice(&m.frames[..m.nframes]);
        if !intern {
            return Some((m.nframes, 0));
        }
        let epoch = crate::out::stacks::epoch();
        if m.stack_ref == 0 || m.stack_epoch != epoch {
            m.stack_ref = interned(&frames[..m.nframes]);
            m.stack_epoch = epoch;
        }
        return Some((m.nframes, m.stack_ref));
    }
    let victim = ways.next;
    ways.next = (victim + 1) % memo::WAYS;
    let m = &mut ways.ways[victim];
    m.valid = false;
    mem.log = Some((&mut m.reads, 0));
    let (n, need_fp) = walk(frames, pc, sp, fp, from_return, &mut mem)?;
    let epoch = crate::out::stacks::epoch();
    let stack_ref = interned(&frames[..n]);
    if let Some((_, nreads)) = mem.log.take() {
        m.frames[..n].copy_from_slice(&frames[..n]);
        (m.nframes, m.nreads, m.sp, m.fp, m.need_fp, m.depth, m.cfi_gen) =
            (n, nreads, sp, fp, need_fp, frames.len(), cfi_gen);
        (m.stack_ref, m.stack_epoch) = (stack_ref, epoch);
        m.valid = true;
    }
    Some((n, stack_ref))
}

/// Walks from `pc`, `sp`, `fp` by cached rules. Returns the number of frames and whether the walk
/// used the starting `fp` (a rule read rbp before any frame restored it). With `from_return`,
/// `pc` is ignored: the walk starts in the frame that made a call, at the return address just
/// below `sp`.
#[cfg(target_arch = "x86_64")]
fn walk(
    frames: &mut [u64],
    mut pc: usize,
    mut sp: usize,
    mut fp: usize,
    from_return: bool,
    mem: &mut SafeReader<'_>,
) -> Option<(usize, bool)> {
    let mut n = 0;
    let mut fp_restored = false;
    let mut need_fp = false;
    // The last rbp restored from the stack, not yet used: (address, value, read in a known range).
    let mut restored: Option<(usize, usize, bool)> = None;
    // The first address is the current instruction; every later one is a return address, whose
    // call instruction (and so its rule) lies just before it.
    let mut key = pc;
    if from_return {
        pc = mem.word(sp.checked_sub(8)?)?;
        if pc < 4096 {
            return Some((0, false));
        }
        if !in_self(pc) {
            frames[0] = pc as u64;
            n = 1;
            if n == frames.len() {
                return Some((n, false));
            }
        }
        key = pc - 1;
    }
    loop {
        match cfi::rule_for(key as u64) {
            cfi::Rule::Step { cfa_rbp, cfa_off, rbp_slot } => {
                need_fp |= cfa_rbp && !fp_restored;
                if cfa_rbp && let Some((a, v, known)) = restored.take() {
                    mem.log_word(a, v, known);
                }
                let cfa = (if cfa_rbp { fp } else { sp }).checked_add(cfa_off as usize)?;
                // Callers' frames lie higher on the stack; anything else is not a stack to follow.
                if cfa <= sp {
                    return None;
                }
                let ret = mem.word(cfa - 8)?;
                if rbp_slot != 0 {
                    // Logged for the memo only once a rule uses it: code built without frame
                    // pointers keeps data in rbp, which differs from call to call.
                    let at = cfa.checked_sub(8 * rbp_slot as usize)?;
                    let (v, known) = mem.word_unlogged(at)?;
                    (fp, restored, fp_restored) = (v, Some((at, v, known)), true);
                }
                (pc, sp) = (ret, cfa);
                if pc < 4096 {
                    return Some((n, need_fp));
                }
                if n == 0 && in_self(pc) {
                    key = pc - 1;
                    continue;
                }
                frames[n] = pc as u64;
                n += 1;
                if n == frames.len() {
                    return Some((n, need_fp));
                }
                key = pc - 1;
            }
            cfi::Rule::End => return Some((n, need_fp)),
            // Code without unwind information: Go's, on from here by frame pointers. The
            // shim's own frames all have it, so a miss among them is not that.
            cfi::Rule::NoFde if n > 0 => {
                need_fp |= !fp_restored;
                if let Some((a, v, known)) = restored.take() {
                    mem.log_word(a, v, known);
                }
                return Some((follow_frame_pointers(frames, n, fp, sp, mem), need_fp));
            }
            cfi::Rule::NoFde | cfi::Rule::Complex => return None,
        }
    }
}

/// The walk by libgcc's `_Unwind_Backtrace`, for stacks the rule table does not model.
fn capture_libgcc(frames: &mut [u64]) -> usize {
    let mut w = Walk { frames, n: 0, started: false, last_fp: 0, cfa: 0 };
    // SAFETY: the callback only touches `w` through the pointer given here, which outlives the call.
    unsafe { _Unwind_Backtrace(on_frame, &mut w as *mut Walk as *mut c_void) };
    let n = w.n;
    let frames = w.frames;
    if n == 0 || n == frames.len() {
        return n;
    }
    // DWARF stopped. A last frame with unwind information is the true root (_start, clone3:
    // their CFI ends the stack): nothing to continue. Only a frame without any (Go code) goes
    // on by frame pointers. The address is a return address, so its call lies at `last - 1`.
    if cfi::rule_for(frames[n - 1] - 1) != cfi::Rule::NoFde {
        return n;
    }
    let mut window = core::mem::MaybeUninit::uninit();
    let mut mem = SafeReader::new(w.cfa, &mut window);
    follow_frame_pointers(frames, n, w.last_fp, w.cfa, &mut mem)
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Recurses `depth` frames, then captures the same stack with both walkers.
    #[inline(never)]
    fn both_at(depth: u32) -> (Vec<u64>, Vec<u64>) {
        if depth > 0 {
            let r = both_at(depth - 1);
            // Keeps the recursion from becoming a loop or a tail call.
            std::hint::black_box(depth);
            return r;
        }
        let mut a = [0u64; 64];
        let mut b = [0u64; 64];
        let n = capture_cached(&mut a, false).expect("the test binary's frames all have plain CFI").0;
        let m = capture_libgcc(&mut b);
        (a[..n].to_vec(), b[..m].to_vec())
    }

    #[test]
    fn cached_rules_walk_the_same_stack_as_libgcc() {
        for depth in [0, 3, 17] {
            let (cached, libgcc) = both_at(depth);
            // The walkers start in different frames of their own (capture_cached vs.
            // _Unwind_Backtrace's caller); from both_at's return address on, they must agree.
            let here = cached.iter().position(|a| libgcc.contains(a)).expect("a common frame");
            let there = libgcc.iter().position(|a| *a == cached[here]).unwrap();
            assert_eq!(&cached[here..], &libgcc[there..], "depth {depth}");
            assert!(cached.len() - here >= depth as usize + 2, "depth {depth}: {cached:x?}");
        }
        // Walks again from the same place (the memo of the last walk replays: the same start,
        // the same words on the stack) and from places in turn (the memo must not replay).
        for depth in [5, 5, 5, 6, 5, 6, 0, 0] {
            let (a, b) = both_at(depth);
            let here = a.iter().position(|x| b.contains(x)).unwrap();
            assert!(b.ends_with(&a[here..]), "depth {depth}");
            assert!(a.len() - here >= depth as usize + 2, "depth {depth}: {a:x?}");
        }
        // Two call sites at the same stack depth: the same start registers, different return
        // addresses on the stack; each walk must show its own call site.
        let agree = |(a, b): (Vec<u64>, Vec<u64>)| {
            let here = a.iter().position(|x| b.contains(x)).unwrap();
            assert!(b.ends_with(&a[here..]));
            a
        };
        for _ in 0..3 {
            let first = agree(both_at(2));
            let second = agree(both_at(2));
            assert_ne!(first, second, "two call sites, two stacks");
        }
    }
}
