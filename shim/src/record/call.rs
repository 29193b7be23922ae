//! Turning one intercepted call into one trace record. Hooks stay thin: they call
//! [`traced`] with the real call as a closure; everything here is plain code that unit tests can
//! drive without LD_PRELOAD.

use crate::os::guard::Guard;
use crate::{os::syscall as sys, out::writer, unwind::walk};
use vmshim_trace::record::call::{self, CallRecord, CallStack};
use vmshim_trace::{CallKind, MAX_FRAMES};

/// Room for the largest call record: header, fixed fields, a full stack.
pub const CALL_BUF: usize = call::MAX_LEN;

/// When the record's place in the trace is taken, relative to the real call.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Calls that create address space (mmap): reserve after, so the record follows the call that
    /// made the range.
    After,
    /// Calls that release address space (munmap, mremap): reserve before, so that a range freed
    /// here and reused at once by another thread's mmap replays in the order it happened.
    Before,
}

/// Runs `op` (the real call, returning the kernel's raw result) and records it, unless the
/// trace is not open. Returns `op`'s raw result untouched.
pub fn traced(_g: &Guard, call: CallKind, args: [u64; 6], order: Order, op: impl FnOnce() -> isize) -> isize {
    crate::record::start::ensure_started();
    if !writer::is_ready() {
        return op();
    }
    let mut frames = [0u64; MAX_FRAMES];
    let depth = crate::record::start::depth();
    let mut buf = [0u8; CALL_BUF];
    let pending = if order == Order::Before {
        let (c0, t0) = (sys::cycles(), sys::monotonic_ns());
        let (n, stack_ref) = walk::capture_interned(&mut frames[..depth]);
        let p = call::begin(&mut buf, &call_record(call, 0, t0, args, &frames[..n], stack_ref));
        writer::account(sys::ns_since(c0));
        p
    } else {
        // Unwound after the call in this order; encoded below.
        let ret = op();
        if call == CallKind::Mmap && args[3] & libc::MAP_ANONYMOUS as u64 != 0 && sys::split(ret).1 == 0 {
            crate::know::names::name(ret as u64, args[1], "mmap", sys::gettid());
        }
        let (c0, t0) = (sys::cycles(), sys::monotonic_ns());
        let (n, stack_ref) = walk::capture_interned(&mut frames[..depth]);
        let (result, errno) = result_of(call, ret);
        let c = CallRecord { result, errno, ..call_record(call, 0, t0, args, &frames[..n], stack_ref) };
        if let Some(len) = call::encode(&mut buf, &c) {
            writer::append(&buf[..len]);
        }
        writer::account(sys::ns_since(c0));
        return ret;
    };
    let slot = writer::reserve(pending.room());
    let ret = op();
    let (result, errno) = result_of(call, ret);
    if let (Some(slot), Some(len)) = (slot, pending.finish(result, errno)) {
        slot.commit(&buf[..len]);
    }
    ret
}

/// A call record of this thread with result 0; the stack is the Stack record at `stack_ref`
/// if that is not 0, else `frames`.
fn call_record<'a>(
    call: CallKind,
    flags: u16,
    time_ns: u64,
    args: [u64; 6],
    frames: &'a [u64],
    stack_ref: u64,
) -> CallRecord<'a> {
    CallRecord {
        call,
        flags,
        tid: sys::gettid(),
        time_ns,
        args,
        result: 0,
        errno: 0,
        stack: if stack_ref != 0 { CallStack::Ref(stack_ref) } else { CallStack::Inline(frames) },
    }
}

/// The result and errno a call record holds for the real call's raw result.
fn result_of(call: CallKind, ret: isize) -> (u64, i32) {
    match call {
        // pthread_create returns an error number and leaves errno alone.
        CallKind::PthreadCreate => (ret as u64, 0),
        _ => {
            let (v, e) = sys::split(ret);
            (v as u64, e)
        }
    }
}

/// Records an event the shim inferred (no real call of its own to run): its stack is the
/// current one, its result 0.
pub fn note(_g: &Guard, call: CallKind, args: [u64; 6]) {
    crate::record::start::ensure_started();
    if !writer::is_ready() {
        return;
    }
    match call {
        CallKind::ArenaAttach if args[0] != 0 => {
            crate::know::names::name(args[0], vmshim_trace::HEAP_MAX, "arena", sys::gettid())
        }
        CallKind::MallocLarge => crate::know::names::name(args[0], args[1], "malloc", sys::gettid()),
        _ => {}
    }
    let (c0, t0) = (sys::cycles(), sys::monotonic_ns());
    let mut frames = [0u64; MAX_FRAMES];
    let (n, stack_ref) = walk::capture_interned(&mut frames[..crate::record::start::depth()]);
    let mut buf = [0u8; CALL_BUF];
    if let Some(len) = call::encode(&mut buf, &call_record(call, 0, t0, args, &frames[..n], stack_ref)) {
        writer::append(&buf[..len]);
    }
    writer::account(sys::ns_since(c0));
}

/// Records the images loaded since the last scan ([`crate::know::modules`]) and, after each
/// one's Module record, a ModuleLoad event naming the watched call that loaded it (`via`, an
/// index into `vmshim_trace::LOADING_FUNCTIONS`) with the current stack.
pub fn new_modules(g: &Guard, via: usize) {
    // Deferred start-up records first: they write every image known so far, and the scan below
    // adds the new ones once each.
    crate::record::start::ensure_started();
    crate::know::modules::record_new(|base, lo, hi| {
        note(g, CallKind::ModuleLoad, [base, lo, hi, via as u64, 0, 0]);
    });
}
