//! Starting the recording, once per process image and once more in each fork child: the
//! configuration read, the trace opened, the start-up records written. Every hook calls
//! [`ensure_started`] first; the constructor in `lib.rs` calls it before `main`.
//!
//! # Deferred start-up records (issue 12, cheap start)
//! Under `vmshim run` with the exit watcher (`VMSHIM_WATCHED=1`), the kernel's map of every
//! process of the tree is read at its exit, and a process that records nothing is explained by
//! that map alone. Such a process (a shell's `/bin/true`, the fork child that execs it) needs
//! only its Start record: who it is, its parent, the fork that made it. The records that matter
//! only for explaining recorded calls — the start-up map (`/proc/self/maps`), the Module
//! records, the resolver configuration — are then written by the first hook that records, before
//! its real call runs (or, for a malloc-family event, before its record), so a process that
//! never records never reads them: about a third of what the shim added to each process of a
//! 1,000-process shell loop. Nothing they describe is lost by the wait: until the first recorded
//! call, every change to the address space was made without one, exactly what the start-up map
//! stands for. The writing is plain system calls and appends (no loader call: the images were
//! listed eagerly, which the unwinder needs anyway), so any hook can do it, in a signal handler
//! too.

use crate::know::{modules, names, shadowed, startup};
use crate::os::syscall as sys;
use crate::out::writer;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering::*};

#[unsafe(link_section = ".data.vmshim_hot")]
static DEPTH: AtomicUsize = AtomicUsize::new(64);

/// What start-up left for the first recorded call: nothing, an exec'd image's records, or a
/// fork child's.
#[unsafe(link_section = ".data.vmshim_hot")]
static DEFERRED: AtomicU8 = AtomicU8::new(NONE);
const NONE: u8 = 0;
const IMAGE: u8 = 1;
const FORK: u8 = 2;

/// Most frames to record per stack.
pub fn depth() -> usize {
    DEPTH.load(Relaxed)
}

/// Opens the trace and records the start-up state, once per process image (and once more in
/// each fork child), and writes what start-up deferred when a recording is about to follow.
/// Safe to call from any hook: exactly one caller initialises; callers that race it find the
/// writer not yet ready and pass their call through unrecorded.
#[inline]
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn ensure_started() {
    if writer::is_ready() {
        if DEFERRED.load(Relaxed) != NONE {
            write_deferred();
        }
        return;
    }
    if writer::begin_init() {
        if !start_sent() {
            start(None);
        } else if writer::is_ready() && DEFERRED.load(Relaxed) != NONE {
            // The call about to be recorded is the child's first: what its start deferred
            // comes before it, as it does for a child that created its trace in the fork.
            write_deferred();
        }
    }
}

/// The trace of a fork child whose Start record went to `vmshim run`, now, and only that: what
/// its start defers waits for its first recorded call, as in a child that created its trace in
/// the fork (`hooks::credentials`, before a change of credentials). Nothing for any other
/// process, or while another caller initialises.
pub fn start_sent_now() {
    if writer::begin_init() && !start_sent() {
        writer::abandon_init();
    }
}

/// Creates the trace of a fork child whose Start record went to `vmshim run` (record/fork.rs),
/// as the child would have in the fork; the caller won [`writer::begin_init`]. False for any
/// other process (nothing done).
#[unsafe(link_section = ".text.hot.vmshim")]
fn start_sent() -> bool {
    let Some(origin) = super::sent::origin() else { return false };
    super::sent::forget();
    start(Some(&origin));
    true
}

/// Writes the deferred start-up records; exactly one caller does (the others record their calls
/// meanwhile: the report places the start-up map before every call wherever it lies).
#[cold]
fn write_deferred() {
    let what = DEFERRED.swap(NONE, Acquire);
    if what != NONE {
        writer::end_first_page();
        startup::record_deferred(what == FORK);
    }
}

/// Opens the trace and writes the start-up records; the caller won [`writer::begin_init`]:
/// [`ensure_started`], or the fork child's handler in `fork.rs`. An exec'd image under the
/// exit watcher may instead note its start and wait for its first recorded call with no trace
/// ([`super::waiting`]); that call's [`ensure_started`] comes back here and creates it.
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn start(fork: Option<&startup::Origin<'_>>) {
    if fork.is_none() && super::waiting::foreign() {
        writer::abandon_init();
        return;
    }
    // A fork child has no deferred records of its parent's to write: its own replace them.
    DEFERRED.store(NONE, Relaxed);
    // A fork child goes on with its parent's configuration; an image reads its own (once: a
    // waiting image's first record finds what its start-up kept).
    let began = if fork.is_none() { super::waiting::started() } else { None };
    let kept = if fork.is_some() || began.is_some() { crate::config::kept() } else { None };
    let (cfg, template) = kept.unwrap_or_else(crate::config::load);
    DEPTH.store(cfg.depth, Relaxed);
    names::enable(cfg.name_mappings);
    if fork.is_none() && began.is_none() && learn_image(&cfg) {
        writer::abandon_init();
        return;
    }
    // The start's parent and clocks: a waiting image's from its note, a fork child's from the
    // fork (record/fork.rs), else asked by record_start.
    let fork_clocks = fork.filter(|f| f.mono_ns != 0).map(|f| (f.parent_pid, f.mono_ns, f.real_ns));
    let clocks = began.as_ref().map(|b| (b.ppid, b.mono_ns, b.real_ns)).or(fork_clocks);
    // A fork child's failure to create its trace says nothing: its stderr is the program's.
    if !writer::open(&cfg, template, fork.is_some(), fork_clocks.map(|c| c.1)) {
        return;
    }
    startup::record_start(fork, cfg.run_id, clocks);
    if fork.is_none() {
        shadowed::record();
    }
    if began.is_some() {
        super::waiting::end();
    }
    // A waiting image begins its calibration now, and so does the fork child of one that
    // forked before it recorded (its copy of the state says not begun).
    if (fork.is_none() && began.is_some()) || (fork.is_some() && !sys::tsc_calibration_begun()) {
        sys::begin_tsc_calibration();
    }
    if cfg.watched {
        if began.is_some() {
            write_kept_loader_evidence();
        } else if fork.is_none() {
            startup::record_loader_evidence();
        }
        DEFERRED.store(if fork.is_some() { FORK } else { IMAGE }, Release);
    } else {
        writer::end_first_page();
        startup::record_deferred(fork.is_some());
    }
}

/// A new image's own start-up, before its trace: the images, for the unwinder (their Module
/// records may wait; a fork child has its parent's libraries and calibration), the shadowing
/// check, the calibration's start. True when the image waits for its first record with no file
/// instead (under the watcher, an image that vmshim did not launch itself: `waiting`, a
/// shell's `/bin/true` never records); the loader's addresses are read now, on the main thread,
/// for whoever writes the trace, and the calibration starts with the first record. Apart from
/// [`start`], and never inlined, so that a fork child's start-up, which runs on its parent's
/// stack copy, does not carry this path's buffers in its frame: each page of stack it goes
/// deeper is a page copied (issue 12).
#[inline(never)]
#[unsafe(link_section = ".text.hot.vmshim")]
fn learn_image(cfg: &crate::config::Config) -> bool {
    modules::scan();
    let shadowed = shadowed::find();
    // One getppid for both questions (the parent a waiting image notes is the one that told).
    let mut ppid = None;
    let mut parent = || *ppid.get_or_insert_with(sys::getppid);
    if cfg.watched && !shadowed && !crate::config::launched_by_tracer_of(&mut parent) {
        let mut at = [0u64; vmshim_trace::waiting::AT_MAX];
        let n = startup::loader_addresses(&mut at);
        // An image that waits starts the calibration when it begins to record (a prctl and
        // both clocks that a shell's /bin/true never needs).
        if n < at.len() && super::waiting::wait(cfg.run_id, &at[..n], parent()) {
            return true;
        }
    }
    sys::begin_tsc_calibration();
    false
}

/// The `loader.at` record of a waiting image's first record, from its note (see
/// [`learn_image`] on the frame).
#[inline(never)]
fn write_kept_loader_evidence() {
    let mut at = [0u64; vmshim_trace::waiting::AT_MAX];
    let n = super::waiting::loader_at(&mut at);
    startup::write_loader_evidence(&at[..n]);
}
