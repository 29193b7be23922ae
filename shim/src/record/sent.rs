//! The state of a fork child whose Start record went to `vmshim run` (record/fork.rs) and that
//! has no trace of its own yet: the origin its trace's Start record will name when it creates
//! one (record/start.rs, at its first recorded call; hooks/credentials.rs, before it changes its
//! credentials). Kept in the child's own memory, set in its fork handler, cleared once used.

use crate::know::startup::Origin;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

#[unsafe(link_section = ".data.vmshim_hot")]
static SENT: AtomicBool = AtomicBool::new(false);
/// The parent's pid and forking thread.
#[unsafe(link_section = ".data.vmshim_hot")]
static PIDS: [AtomicU32; 2] = [AtomicU32::new(0), AtomicU32::new(0)];
/// The fork's monotonic and real clocks.
#[unsafe(link_section = ".data.vmshim_hot")]
static CLOCKS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
/// The forking call's stack (address, length): in one of record/fork.rs's static notes, which
/// its prepare handler leaves alone while this is set ([`kept_stack`]).
#[unsafe(link_section = ".data.vmshim_hot")]
static STACK: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

/// Notes that this fork child sent its Start record, made from `origin`.
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn keep(origin: &Origin<'static>) {
    PIDS[0].store(origin.parent_pid, Relaxed);
    PIDS[1].store(origin.parent_tid, Relaxed);
    CLOCKS[0].store(origin.mono_ns, Relaxed);
    CLOCKS[1].store(origin.real_ns, Relaxed);
    STACK[0].store(origin.stack.as_ptr() as usize, Relaxed);
    STACK[1].store(origin.stack.len(), Relaxed);
    SENT.store(true, Release);
}

/// The origin of this fork child if it sent its Start record and has no trace yet.
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn origin() -> Option<Origin<'static>> {
    if !SENT.load(Acquire) {
        return None;
    }
    let (at, len) = (STACK[0].load(Relaxed), STACK[1].load(Relaxed));
    let stack: &'static [u64] = if len == 0 {
        &[]
    } else {
        // SAFETY: `keep` took these from a `&'static [u64]` (a static note, which nothing
        // writes while SENT is set: see kept_stack).
        unsafe { core::slice::from_raw_parts(at as *const u64, len) }
    };
    Some(Origin {
        parent_pid: PIDS[0].load(Relaxed),
        parent_tid: PIDS[1].load(Relaxed),
        mono_ns: CLOCKS[0].load(Relaxed),
        real_ns: CLOCKS[1].load(Relaxed),
        stack,
    })
}

/// The child has its own trace now (or will never have one), or is a new fork child.
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn forget() {
    if SENT.load(Relaxed) {
        SENT.store(false, Release);
    }
}

/// Where the kept origin's stack lies, while one is kept: the note a fork must not reuse.
pub fn kept_stack() -> Option<usize> {
    (SENT.load(Acquire) && STACK[1].load(Relaxed) > 0).then(|| STACK[0].load(Relaxed))
}
