//! Starting the recording, once per process image and once more in each fork child: the
//! configuration read, the trace opened, the start-up records written. Every hook calls
//! [`ensure_started`] first; the constructor in `lib.rs` calls it before `main`.

use crate::know::{names, shadowed, startup};
use crate::os::syscall as sys;
use crate::out::writer;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

static DEPTH: AtomicUsize = AtomicUsize::new(64);

/// Most frames to record per stack.
pub fn depth() -> usize {
    DEPTH.load(Relaxed)
}

/// Opens the trace and records the start-up state, once per process image (and once more in
/// each fork child). Safe to call from any hook: exactly one caller initialises; callers that
/// race it find the writer not yet ready and pass their call through unrecorded.
pub fn ensure_started() {
    if writer::is_ready() || !writer::begin_init() {
        return;
    }
    start(None);
}

/// Opens the trace and writes the start-up records; the caller won [`writer::begin_init`]:
/// [`ensure_started`], or the fork child's handler in `fork.rs`.
pub fn start(fork: Option<&startup::Origin<'_>>) {
    let cfg = crate::config::load();
    DEPTH.store(cfg.depth, Relaxed);
    names::enable(cfg.name_mappings);
    // A fork child's failure to create its trace says nothing: its stderr is the program's.
    if writer::open(&cfg, fork.is_some()) {
        startup::record_all(fork);
        if fork.is_none() {
            // The child has the parent's libraries and calibration.
            shadowed::record();
            sys::begin_tsc_calibration();
        }
    }
}
