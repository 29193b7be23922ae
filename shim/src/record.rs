//! Turning one intercepted call into one trace record. Hooks stay thin: they call
//! [`traced`] with the real call as a closure; everything here is plain code that unit tests can
//! drive without LD_PRELOAD.

use crate::guard::Guard;
use crate::{syscall as sys, unwind, writer};
use vmshim_trace::{CALL_FLAG_OWN, CALL_FLAG_STACK_REF, CallKind, Encoder, Kind, MAX_FRAMES, RECORD_HEADER};

/// Room for the largest call record: header, fixed fields, a full stack.
pub const CALL_BUF: usize = RECORD_HEADER + 96 + 4 + MAX_FRAMES * 8 + 8;

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
    crate::ensure_started();
    if !writer::is_ready() {
        return op();
    }
    let mut frames = [0u64; MAX_FRAMES];
    let depth = crate::depth();
    let mut buf = [0u8; CALL_BUF];
    let (result_at, mut enc) = if order == Order::Before {
        let (c0, t0) = (sys::cycles(), sys::monotonic_ns());
        let (n, stack_ref) = unwind::capture_interned(&mut frames[..depth]);
        let r = encode_call(&mut buf, call, 0, t0, args, &frames[..n], stack_ref);
        writer::account(sys::ns_since(c0));
        r
    } else {
        // Unwound after the call in this order; encoded below.
        let ret = op();
        if call == CallKind::Mmap && args[3] & libc::MAP_ANONYMOUS as u64 != 0 && sys::split(ret).1 == 0 {
            crate::names::name(ret as u64, args[1], "mmap", sys::gettid());
        }
        let (c0, t0) = (sys::cycles(), sys::monotonic_ns());
        let (n, stack_ref) = unwind::capture_interned(&mut frames[..depth]);
        let (at, mut enc) = encode_call(&mut buf, call, 0, t0, args, &frames[..n], stack_ref);
        patch_result(&mut enc, at, call, ret);
        if let Some(len) = enc.finish() {
            writer::append(&buf[..len]);
        }
        writer::account(sys::ns_since(c0));
        return ret;
    };
    let len = enc.position().next_multiple_of(8);
    let slot = writer::reserve(len);
    let ret = op();
    patch_result(&mut enc, result_at, call, ret);
    if let (Some(slot), Some(len)) = (slot, enc.finish()) {
        slot.commit(&buf[..len]);
    }
    ret
}

/// Encodes a call record; returns the position of its result field and the open encoder.
fn encode_call<'a>(
    buf: &'a mut [u8],
    call: CallKind,
    flags: u16,
    time_ns: u64,
    args: [u64; 6],
    frames: &[u64],
    stack_ref: u64,
) -> (usize, Encoder<'a>) {
    let mut e = Encoder::new(buf, Kind::Call);
    e.put_u16(call as u16);
    e.put_u16(if stack_ref != 0 { flags | CALL_FLAG_STACK_REF } else { flags });
    e.put_u32(sys::gettid());
    e.put_u64(time_ns);
    for a in args {
        e.put_u64(a);
    }
    let at = e.position();
    e.put_u64(0); // result
    e.put_u64(0); // errno, 0
    if stack_ref != 0 {
        e.put_u64(stack_ref);
    } else {
        e.put_frames(frames);
    }
    (at, e)
}

fn patch_result(e: &mut Encoder<'_>, at: usize, call: CallKind, ret: isize) {
    let (value, errno) = match call {
        // pthread_create returns an error number and leaves errno alone.
        CallKind::PthreadCreate => (ret as u64, 0),
        _ => {
            let (v, e) = sys::split(ret);
            (v as u64, e)
        }
    };
    e.patch_u64(at, value);
    e.patch_u64(at + 8, errno as u32 as u64);
}

/// Records a mapping the shim made (`Mmap`) or removed (`Munmap`) for itself (a trace
/// segment); no stack.
pub fn own_mapping(call: CallKind, args: [u64; 6], result: u64) {
    let mut buf = [0u8; CALL_BUF];
    let (at, mut e) = encode_call(&mut buf, call, CALL_FLAG_OWN, sys::monotonic_ns(), args, &[], 0);
    e.patch_u64(at, result);
    if let Some(len) = e.finish() {
        writer::append(&buf[..len]);
    }
}

/// Records an event the shim inferred (no real call of its own to run): its stack is the
/// current one, its result 0.
pub fn note(_g: &Guard, call: CallKind, args: [u64; 6]) {
    crate::ensure_started();
    if !writer::is_ready() {
        return;
    }
    match call {
        CallKind::ArenaAttach if args[0] != 0 => {
            crate::names::name(args[0], crate::arena::HEAP_MAX as u64, "arena", sys::gettid())
        }
        CallKind::MallocLarge => crate::names::name(args[0], args[1], "malloc", sys::gettid()),
        _ => {}
    }
    let (c0, t0) = (sys::cycles(), sys::monotonic_ns());
    let mut frames = [0u64; MAX_FRAMES];
    let (n, stack_ref) = unwind::capture_interned(&mut frames[..crate::depth()]);
    let mut buf = [0u8; CALL_BUF];
    let (_, mut enc) = encode_call(&mut buf, call, 0, t0, args, &frames[..n], stack_ref);
    if let Some(len) = enc.finish() {
        writer::append(&buf[..len]);
    }
    writer::account(sys::ns_since(c0));
}
