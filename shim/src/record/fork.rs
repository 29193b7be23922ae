//! A fork child's trace is created inside fork, in the child, before fork returns to the
//! program (issue 12): so a child that never makes a recorded call still has one, a child that
//! drops its privileges next keeps writing into the file it already holds open (created 0600 by
//! the parent's user), and its Start record names its real parent (read before a daemon's
//! re-parenting) and the call that forked it.
//!
//! glibc's pthread_atfork handlers carry it: the prepare handler runs in the parent's forking
//! thread and notes its thread id and the time in that thread's TLS block ([`crate::os::tls`]),
//! and the forking call's stack in one of a few static notes, claimed by a compare-and-swap
//! and released by the parent handler (no malloc, no lock; two threads that fork at once
//! claim two notes; with every note taken the stack is left out). The child, whose one thread
//! has a copy of the forking thread's TLS and of the notes, finds its note there and writes
//! its trace's start-up records on a shim stack (the forking thread's stack may be small).
//!
//! Under `vmshim run` (its exit watcher and its socket, `VMSHIM_SINK`), the child sends its
//! Start record to `vmshim run` instead ([`vmshim_trace::sent`]: one datagram, no file) and
//! creates its trace file only when it needs one: at its first recorded call, or before it
//! changes its credentials or root (`hooks::credentials`), so that the file is still created
//! 0600 by the parent's user and the child keeps writing into it after ([`super::sent`] keeps
//! what its Start record said meanwhile). Until then `vmshim run`
//! holds its Start record, and writes it as the trace the child would have created if the child
//! never did (a shell's child that execs at once, one that sleeps, one killed by a signal). The
//! Start record is the same either way; what the shim added to each fork child of a shell loop
//! was mostly the file (issue 12: the loop's 1.3x).
//!
//! vfork and posix_spawn children (CLONE_VM) run no atfork handler: they share the parent's
//! memory until they exec, and the exec'd image makes its own trace; nothing here touches them.

use crate::know::startup::Origin;
use crate::os::guard::Guard;
use crate::os::tls::{self, Slot};
use crate::{os::syscall as sys, unwind::walk};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering::*};
use vmshim_trace::MAX_FRAMES;

/// How many threads may be between the prepare and the parent handler at once with their
/// stacks noted (glibc runs the handlers of one fork at a time, under its atfork lock).
const NOTES: usize = 8;

/// Aligned so that a note lies within one page: the prepare handler's writes to it touch one
/// page, a copy-on-write fault per fork while the last child still shares it (two when a note
/// straddled a page boundary). Among the page-aligned tables, after `.bss` (see lib.rs).
#[repr(C, align(2048))]
struct Note {
    len: UnsafeCell<usize>,
    frames: UnsafeCell<[u64; MAX_FRAMES]>,
}

// SAFETY: a note's cells are written only by the thread that claimed it in `OWNER`, and
// read by that thread's fork child (a copy of the memory, single-threaded).
unsafe impl Sync for Note {}

#[unsafe(link_section = ".sbss.vmshim")]
static NOTE: [Note; NOTES] =
    [const { Note { len: UnsafeCell::new(0), frames: UnsafeCell::new([0; MAX_FRAMES]) } }; NOTES];

/// The process and thread that hold each note (`pid << 32 | tid`); 0 when free. A note a
/// thread of another process holds is free here: a fork child has its parent's notes as they
/// were at the fork, and need not write them free (a copy-on-write fault). On a page of their
/// own, wipe-on-fork from the image's first fork: then the parent's claim and release touch no
/// page the fork shared with the child (each was a copy-on-write fault in the parent per fork,
/// issue 12), and the child finds them all free.
#[repr(C, align(4096))]
struct Owners([AtomicU64; NOTES]);
#[unsafe(link_section = ".sbss.vmshim")]
static OWNER: Owners = Owners([const { AtomicU64::new(0) }; NOTES]);

/// The socket to `vmshim run` that this image's fork children send their Start records on
/// (-1: none), connected by the image's first fork, and its identity (st_dev, st_ino): a child
/// checks that the number still names it (the program may have closed it or put another file
/// there) before it sends.
#[unsafe(link_section = ".data.vmshim_hot")]
static SINK_FD: core::sync::atomic::AtomicI32 = core::sync::atomic::AtomicI32::new(-1);
#[unsafe(link_section = ".data.vmshim_hot")]
static SINK_ID: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
/// Where the socket's descriptor moves up to: beside the trace's (out::writer's), out of the
/// numbers a program gets from its own `open`, within the table a process begins with.
const SINK_FD_AT: i32 = 62;

/// Connects the socket of this image's fork children (its first fork, in the parent), when the
/// run takes their Start records.
fn connect_sink() {
    let Some((cfg, _)) = crate::config::kept() else { return };
    if !(cfg.watched && cfg.sink) {
        return;
    }
    let fd = sys::connect_datagram(&vmshim_trace::sent::name(cfg.run_id));
    if fd < 0 {
        return;
    }
    let mut fd = fd as i32;
    let high = sys::dup_cloexec_at_least(fd, SINK_FD_AT);
    if high >= 0 {
        sys::close(fd);
        fd = high as i32;
    }
    if let Some((dev, ino)) = sys::file_id(fd) {
        SINK_ID[0].store(dev, Relaxed);
        SINK_ID[1].store(ino, Relaxed);
        SINK_FD.store(fd, Release);
    } else {
        sys::close(fd);
    }
}

/// Set by the image's first fork, which marks the caches wipe-on-fork.
#[unsafe(link_section = ".data.vmshim_hot")]
static WIPED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
/// RLIMIT_STACK's soft value as the image's first fork read it (0: not read), for
/// [`crate::os::ownstack::run_roomy`]; a fork child has its parent's.
#[unsafe(link_section = ".data.vmshim_hot")]
static STACK_LIMIT: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The prepare handler: runs in the forking thread, before the fork.
pub extern "C" fn before_fork() {
    // The caches' pages stay out of every fork from now on (once per image; the flag is in the
    // children's copy too, as is the setting on the mapping).
    // Loaded first: a store to the flag's page would be a copy-on-write fault at every fork.
    if !WIPED.load(Relaxed) && !WIPED.swap(true, Relaxed) {
        let (owners, len) = (OWNER.0.as_ptr() as usize, core::mem::size_of::<Owners>());
        sys::madvise(owners, len, libc::MADV_WIPEONFORK);
        crate::unwind::cfi::wipe_on_fork();
        crate::out::stacks::wipe_on_fork();
        crate::out::writer::wipe_on_fork();
        crate::unwind::walk::memo::wipe_on_fork();
        crate::know::startup::wipe_on_fork();
        STACK_LIMIT.store(sys::stack_limit(), Relaxed);
        connect_sink();
    }
    let tid = sys::gettid();
    tls::set(Slot::ForkTid, tid as usize);
    // The child's start is the fork's moment: the child takes both clocks from here, and
    // calls neither clock itself (each a page of libc's text and the vDSO's that a fork child
    // faults in anew: it shares no page table of its parent's file mappings).
    tls::set(Slot::ForkNs, sys::monotonic_ns() as usize);
    tls::set(Slot::ForkRealNs, sys::realtime_ns() as usize);
    tls::set(Slot::ForkPid, sys::own_pid() as usize);
    tls::set(Slot::ForkNote, 0);
    // A thread inside a hook already (a signal handler that forked) leaves the stack out: the
    // unwinder and its caches are in use.
    let Some(_guard) = Guard::enter() else { return };
    let pid = sys::own_pid();
    let me = (pid as u64) << 32 | tid as u64;
    let free = |v: u64| v == 0 || (v >> 32) as u32 != pid;
    let claim = |o: &AtomicU64| {
        let v = o.load(Relaxed);
        free(v) && o.compare_exchange(v, me, Acquire, Relaxed).is_ok()
    };
    // A sent child that has no trace yet still needs the stack of the fork that made it.
    let kept = super::sent::kept_stack();
    let in_use = |i: usize| kept == Some(NOTE[i].frames.get() as usize);
    let Some(i) = (0..NOTES).find(|&i| !in_use(i) && claim(&OWNER.0[i])) else {
        return;
    };
    let note = &NOTE[i];
    let ran = crate::os::ownstack::run_roomy(STACK_LIMIT.load(Relaxed), || {
        // SAFETY: this thread claimed the note above and holds it until after_fork_in_parent.
        let frames = unsafe { &mut *note.frames.get() };
        let n = walk::capture(&mut frames[..crate::record::start::depth()]);
        // Leave out __run_fork_handlers and fork itself (and daemon(), which forks in libc):
        // the stack begins where the program called.
        let libc = crate::unwind::images::text_of(libc::fork as *const () as u64);
        let skip =
            frames[..n].iter().take_while(|&&f| libc.is_some_and(|(lo, hi)| (lo..hi).contains(&f))).count();
        frames.copy_within(skip..n, 0);
        // SAFETY: as above.
        unsafe { *note.len.get() = n - skip };
    });
    if ran {
        tls::set(Slot::ForkNote, i + 1);
    } else {
        OWNER.0[i].store(0, Release);
    }
}

/// The parent handler: the fork is done; the note is free again. The thread's ForkNote slot
/// is left as it is (a store to the TLS page would be a copy-on-write fault): the next prepare
/// handler sets it before anything reads it.
pub extern "C" fn after_fork_in_parent() {
    if let Some(owner) = tls::get(Slot::ForkNote).checked_sub(1).and_then(|i| OWNER.0.get(i)) {
        owner.store(0, Release);
    }
}

/// In the child: what the parent's forking thread noted (found through the TLS block this
/// thread copied from it), or None when the prepare handler did not run (the shim's handlers
/// were registered by another fork's time, or `_Fork`).
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn origin_in_child() -> Option<Origin<'static>> {
    let parent_tid = tls::get(Slot::ForkTid) as u32;
    if parent_tid == 0 {
        return None;
    }
    let (mono_ns, real_ns) = (tls::get(Slot::ForkNs) as u64, tls::get(Slot::ForkRealNs) as u64);
    let parent_pid = tls::get(Slot::ForkPid) as u32;
    let stack: &[u64] = match tls::get(Slot::ForkNote).checked_sub(1).and_then(|i| NOTE.get(i)) {
        // SAFETY: the child is single-threaded and has its own copy of the note, which its
        // parent thread finished writing before it forked; nothing writes it in the child.
        Some(note) => unsafe {
            let len = (*note.len.get()).min(MAX_FRAMES);
            &(&*note.frames.get())[..len]
        },
        None => &[],
    };
    tls::set(Slot::ForkTid, 0);
    tls::set(Slot::ForkNote, 0);
    // The notes stay as they are: those the parent's threads held are free in this process
    // (see Note::owner), and the child's stack is read from one below.
    Some(Origin { parent_pid, parent_tid, mono_ns, real_ns, stack })
}

/// Sends the child's Start record to `vmshim run` when the run takes them ([`vmshim_trace::sent`]);
/// true when it went, and the child then creates no trace until it needs one.
#[unsafe(link_section = ".text.hot.vmshim")]
fn send(origin: &Origin<'static>) -> bool {
    let Some((cfg, _)) = crate::config::kept() else { return false };
    let fd = SINK_FD.load(Acquire);
    // Only a child whose fork the prepare handler saw: the record needs the fork's clocks.
    if fd < 0 || origin.mono_ns == 0 {
        return false;
    }
    if sys::file_id(fd) != Some((SINK_ID[0].load(Relaxed), SINK_ID[1].load(Relaxed))) {
        return false;
    }
    let mut sent = false;
    let ran = crate::os::ownstack::run_roomy(STACK_LIMIT.load(Relaxed), || {
        sent = crate::know::startup::send_start(origin, cfg.run_id, fd);
    });
    if !(ran && sent) {
        return false;
    }
    super::sent::keep(origin);
    true
}

/// The atfork child handler: the child's own trace, created before fork returns, or its Start
/// record sent to `vmshim run` ([`send`]).
#[unsafe(link_section = ".text.hot.vmshim")]
pub extern "C" fn after_fork_in_child() {
    // A child of a sent child that had no trace yet: its own origin is this fork.
    super::sent::forget();
    let origin = origin_in_child();
    crate::out::writer::reset_after_fork();
    crate::out::stacks::reset();
    crate::os::ownstack::reset_after_fork();
    super::waiting::forget();
    // The child's one thread has a new id, the new process's pid (its only thread leads its
    // thread group): one system call gives both.
    let pid = sys::getpid();
    sys::set_own_pid(pid);
    tls::set(Slot::Tid, pid as usize);
    let Some(_guard) = Guard::enter() else {
        // Forked from a signal handler that interrupted a hook: the first hook after that
        // handler returns opens the trace, as before issue 12.
        return;
    };
    if crate::out::writer::begin_init() {
        let origin = origin.unwrap_or_else(|| Origin {
            parent_pid: sys::getppid(),
            parent_tid: 0,
            mono_ns: 0,
            real_ns: 0,
            stack: &[],
        });
        if send(&origin) {
            crate::out::writer::abandon_init();
            return;
        }
        // The forking thread's stack may be small: start-up runs on a shim stack, unless it is
        // the main thread's with room to spare.
        if !crate::os::ownstack::run_roomy(STACK_LIMIT.load(Relaxed), || super::start::start(Some(&origin))) {
            crate::out::writer::abandon_init();
        }
    }
}
