//! An exec'd image that waits for its first recorded call with no trace file (issue 12).
//!
//! Under `vmshim run`'s exit watcher (`VMSHIM_WATCHED=1`) every process's map is read at its
//! `exit_group`, and an image that records nothing is explained by that map alone. Such an
//! image (a shell's `/bin/true`) need not create a file at all: it keeps what its Start record
//! would say and cannot be read from /proc later (its parent at start, its start time, the
//! run's id, the loader's addresses, an address in its executable) in this note, in its own
//! memory. The first hook that
//! records creates the trace then, with the Start record the note describes (the times of the
//! image's start, not of the first record: forks and images order by them). An image that never
//! records is written by `vmshim run`: the watcher reads the note (the exported symbol, see
//! `vmshim_trace::waiting`) and /proc while the process waits in `exit_group`.
//!
//! What waits: an image (not a fork child, which creates its trace in the fork), under the
//! watcher, with a run id, not the process `vmshim run` launched (it finds that trace by
//! name), with no other library taking a hooked function (that warning needs a trace), and with
//! at most [`AT_MAX`] loader addresses. What is lost by waiting: an image that leaves by exec
//! or is killed by a signal before it records leaves no trace (the watcher sees only
//! `exit_group`); its process is still listed by its other images.

use crate::os::syscall as sys;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use vmshim_trace::waiting::{AT_MAX, MAGIC};

/// The note; its layout is `vmshim_trace::waiting`'s (the offsets are checked below).
#[repr(C)]
pub struct Note {
    magic: AtomicU64,
    pid: AtomicU32,
    ppid: AtomicU32,
    mono_ns: AtomicU64,
    real_ns: AtomicU64,
    run_id: AtomicU64,
    page_size: AtomicU32,
    at_count: AtomicU32,
    exe_at: AtomicU64,
    at: [AtomicU64; AT_MAX],
}

const _: () = {
    use core::mem::offset_of;
    use vmshim_trace::waiting as w;
    assert!(offset_of!(Note, magic) == w::OFF_MAGIC);
    assert!(offset_of!(Note, pid) == w::OFF_PID);
    assert!(offset_of!(Note, ppid) == w::OFF_PPID);
    assert!(offset_of!(Note, mono_ns) == w::OFF_MONO_NS);
    assert!(offset_of!(Note, real_ns) == w::OFF_REAL_NS);
    assert!(offset_of!(Note, run_id) == w::OFF_RUN_ID);
    assert!(offset_of!(Note, page_size) == w::OFF_PAGE_SIZE);
    assert!(offset_of!(Note, at_count) == w::OFF_AT_COUNT);
    assert!(offset_of!(Note, exe_at) == w::OFF_EXE_AT);
    assert!(offset_of!(Note, at) == w::OFF_AT);
    assert!(core::mem::size_of::<Note>() == w::SIZE);
};

/// The note the watcher reads (its name is `vmshim_trace::waiting::SYMBOL`). In the hot data:
/// start-up writes its page anyway.
// The exported name is the symbol the watcher looks up, lower case as C names are.
#[allow(non_upper_case_globals)]
#[cfg_attr(not(test), unsafe(no_mangle))]
#[unsafe(link_section = ".data.vmshim_hot")]
pub static vmshim_waiting_image: Note = Note {
    magic: AtomicU64::new(0),
    pid: AtomicU32::new(0),
    ppid: AtomicU32::new(0),
    mono_ns: AtomicU64::new(0),
    real_ns: AtomicU64::new(0),
    run_id: AtomicU64::new(0),
    page_size: AtomicU32::new(0),
    at_count: AtomicU32::new(0),
    exe_at: AtomicU64::new(0),
    at: [const { AtomicU64::new(0) }; AT_MAX],
};

/// What the Start record of a waiting image says when it is written at last.
pub struct Started {
    pub ppid: u32,
    pub mono_ns: u64,
    pub real_ns: u64,
}

/// Notes this image's start and waits: true when the note is set (the caller then creates no
/// trace). `at`: the loader's addresses; more than the note holds and the image does not wait.
/// `ppid`: the parent now.
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn wait(run_id: u64, at: &[u64], ppid: u32) -> bool {
    if at.len() > AT_MAX || run_id == 0 {
        return false;
    }
    let n = &vmshim_waiting_image;
    n.pid.store(sys::getpid(), Relaxed);
    n.ppid.store(ppid, Relaxed);
    let (mono_ns, real_ns) = sys::clocks_by_syscall();
    n.mono_ns.store(mono_ns, Relaxed);
    n.real_ns.store(real_ns, Relaxed);
    n.run_id.store(run_id, Relaxed);
    n.page_size.store(sys::page_size() as u32, Relaxed);
    for (w, &a) in n.at.iter().zip(at) {
        w.store(a, Relaxed);
    }
    n.at_count.store(at.len() as u32, Relaxed);
    // SAFETY: getauxval reads the auxiliary vector libc kept; no system call.
    n.exe_at.store(unsafe { libc::getauxval(libc::AT_PHDR) }, Relaxed);
    n.magic.store(MAGIC, Release);
    true
}

/// The waiting image's start, for the trace the caller is about to create ([`end`] once it
/// exists); None when the image does not wait, or when the caller is not the image's process (a
/// vfork child, which shares its memory, must not take its parent's note).
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn started() -> Option<Started> {
    let n = &vmshim_waiting_image;
    if n.magic.load(Acquire) != MAGIC || n.pid.load(Relaxed) != sys::getpid() {
        return None;
    }
    Some(Started {
        ppid: n.ppid.load(Relaxed),
        mono_ns: n.mono_ns.load(Relaxed),
        real_ns: n.real_ns.load(Relaxed),
    })
}

/// The image has its own trace now: the watcher must not write one for it. (An image whose
/// trace could not be created keeps its note, and `vmshim run` writes it from there.)
pub fn end() {
    vmshim_waiting_image.magic.store(0, Release);
}

/// Whether this is a copy of a waiting image's memory in another process that no fork handler
/// reset: a vfork child, which shares it, before its exec (or a raw clone). It records nothing:
/// starting there would take or overwrite the parent's note.
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn foreign() -> bool {
    let n = &vmshim_waiting_image;
    n.magic.load(Acquire) == MAGIC && n.pid.load(Relaxed) != sys::getpid()
}

/// Whether this image waits (it has no trace yet).
pub fn waiting() -> bool {
    vmshim_waiting_image.magic.load(Relaxed) == MAGIC
}

/// The loader's addresses the note holds, copied into `out`; how many.
pub fn loader_at(out: &mut [u64]) -> usize {
    let n = &vmshim_waiting_image;
    let count = (n.at_count.load(Relaxed) as usize).min(AT_MAX).min(out.len());
    for (o, w) in out.iter_mut().zip(&n.at[..count]) {
        *o = w.load(Relaxed);
    }
    count
}

/// In a fork child: the parent's note is not the child's (the child creates its own trace).
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn forget() {
    if waiting() {
        vmshim_waiting_image.magic.store(0, Relaxed);
    }
}
