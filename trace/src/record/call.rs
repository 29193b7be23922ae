//! [`Kind::Call`]: one interposed call (mmap, munmap, ...) or an event the shim inferred
//! (arena attach, large malloc, ...), with its stack inline or as a reference to a
//! [`Kind::Stack`] record.
//!
//! Body: call u16, flags u16, tid u32, time_ns u64, args u64 x6, result u64, errno i32, 0 u32,
//! frames (or, with [`CALL_FLAG_STACK_REF`], the u64 file offset of a Stack record).

use crate::encode::Encoder;
use crate::reader::Reader;
use crate::{CALL_FLAG_STACK_REF, CallKind, Error, Kind, MAX_FRAMES, RECORD_HEADER};

/// Room for the largest call record: header, fixed fields, a full stack.
pub const MAX_LEN: usize = RECORD_HEADER + 96 + 4 + MAX_FRAMES * 8 + 8;

/// One interposed call. `stack` holds absolute return addresses in the target, innermost first;
/// `stack[0]` is the hook's caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub call: CallKind,
    pub flags: u16,
    pub tid: u32,
    pub time_ns: u64,
    pub args: [u64; 6],
    pub result: u64,
    pub errno: i32,
    /// Innermost first. The stream fills it in from the Stack record a reference names.
    pub stack: Vec<u64>,
    /// The file offset of the [`Kind::Stack`] record holding the stack, or 0 when the frames
    /// are inline.
    pub stack_ref: u64,
}

/// Where a call record's stack is.
#[derive(Clone, Copy, Debug)]
pub enum CallStack<'a> {
    /// The frames themselves, at most [`MAX_FRAMES`] kept.
    Inline(&'a [u64]),
    /// The file offset of the Stack record that holds them; sets [`CALL_FLAG_STACK_REF`].
    Ref(u64),
}

/// What [`encode`] writes, borrowed from the caller.
#[derive(Clone, Copy, Debug)]
pub struct CallRecord<'a> {
    pub call: CallKind,
    /// [`crate::CALL_FLAG_OWN`] or 0; [`CALL_FLAG_STACK_REF`] follows from `stack`.
    pub flags: u16,
    pub tid: u32,
    pub time_ns: u64,
    pub args: [u64; 6],
    pub result: u64,
    pub errno: i32,
    pub stack: CallStack<'a>,
}

/// A call record encoded but for its result, for a call whose record takes its place in the
/// trace before the call is made (munmap: see the shim's `Order::Before`).
pub struct Pending<'a> {
    e: Encoder<'a>,
}

/// Byte offset of the result field in a call record.
const RESULT_AT: usize = RECORD_HEADER + 64;

/// Encodes `c` into `buf`; the record's length, or `None` if it does not fit.
#[inline]
pub fn encode(buf: &mut [u8], c: &CallRecord<'_>) -> Option<usize> {
    begin(buf, c).finish(c.result, c.errno)
}

/// Encodes `c` but leaves its result open: [`Pending::room`] says how much room the record will
/// take, [`Pending::finish`] writes the result and seals it.
#[inline]
pub fn begin<'a>(buf: &'a mut [u8], c: &CallRecord<'_>) -> Pending<'a> {
    let mut e = Encoder::new(buf, Kind::Call);
    let flags = match c.stack {
        CallStack::Inline(_) => c.flags & !CALL_FLAG_STACK_REF,
        CallStack::Ref(_) => c.flags | CALL_FLAG_STACK_REF,
    };
    e.put_u16(c.call as u16);
    e.put_u16(flags);
    e.put_u32(c.tid);
    e.put_u64(c.time_ns);
    for a in c.args {
        e.put_u64(a);
    }
    e.put_u64(c.result);
    e.put_i32(c.errno);
    e.put_u32(0);
    match c.stack {
        CallStack::Inline(frames) => e.put_frames(frames),
        CallStack::Ref(at) => e.put_u64(at),
    }
    Pending { e }
}

impl Pending<'_> {
    /// The record's total length once finished (padding included).
    #[inline]
    pub fn room(&self) -> usize {
        self.e.position().next_multiple_of(8)
    }

    /// Writes the result and errno and seals the record; its length, or `None` if it did not
    /// fit.
    #[inline]
    pub fn finish(mut self, result: u64, errno: i32) -> Option<usize> {
        self.e.patch_u64(RESULT_AT, result);
        self.e.patch_u64(RESULT_AT + 8, errno as u32 as u64);
        self.e.finish()
    }
}

pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Call, Error> {
    let raw = r.u16()?;
    let call = CallKind::from_u16(raw).ok_or_else(|| r.err(format!("unknown call {raw}")))?;
    let flags = r.u16()?;
    let tid = r.u32()?;
    let time_ns = r.u64()?;
    let mut args = [0u64; 6];
    for a in &mut args {
        *a = r.u64()?;
    }
    let result = r.u64()?;
    let errno = r.i32()?;
    r.u32()?;
    let (stack, stack_ref) =
        if flags & CALL_FLAG_STACK_REF != 0 { (Vec::new(), r.u64()?) } else { (r.frames()?, 0) };
    Ok(Call { call, flags, tid, time_ns, args, result, errno, stack, stack_ref })
}

impl Call {
    /// The record this call encodes to: its stack as the reference it was read with, if it was.
    pub fn record(&self) -> CallRecord<'_> {
        CallRecord {
            call: self.call,
            flags: self.flags,
            tid: self.tid,
            time_ns: self.time_ns,
            args: self.args,
            result: self.result,
            errno: self.errno,
            stack: if self.flags & CALL_FLAG_STACK_REF != 0 {
                CallStack::Ref(self.stack_ref)
            } else {
                CallStack::Inline(&self.stack)
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::round_trip;

    fn mmap(stack: Vec<u64>) -> Call {
        Call {
            call: CallKind::Mmap,
            flags: crate::CALL_FLAG_OWN,
            tid: 42,
            time_ns: 7,
            args: [0, 4096, 3, 0x22, u64::MAX, 0],
            result: 0x7f00_0000_0000,
            errno: 0,
            stack,
            stack_ref: 0,
        }
    }

    #[test]
    fn round_trips_inline_and_referenced_stacks() {
        round_trip(&mmap(vec![]), |b, c| encode(b, &c.record()), decode);
        round_trip(&mmap(vec![1, 2, 3]), |b, c| encode(b, &c.record()), decode);
        let by_ref = Call {
            flags: CALL_FLAG_STACK_REF,
            stack_ref: 0x1040,
            errno: 12,
            result: u64::MAX,
            ..mmap(vec![])
        };
        round_trip(&by_ref, |b, c| encode(b, &c.record()), decode);
    }

    #[test]
    fn a_pending_record_takes_the_room_it_said_and_equals_the_whole_one() {
        let c = Call { call: CallKind::Munmap, errno: 22, result: u64::MAX, ..mmap(vec![9; 20]) };
        let (mut whole, mut pending) = ([0u8; MAX_LEN], [0u8; MAX_LEN]);
        let n = encode(&mut whole, &c.record()).unwrap();
        let p = begin(&mut pending, &CallRecord { result: 0, errno: 0, ..c.record() });
        let len = p.room();
        assert_eq!((p.finish(c.result, c.errno), len), (Some(n), n));
        assert_eq!(whole[..n], pending[..n]);
        let full = mmap((0..MAX_FRAMES as u64 + 3).collect());
        assert!(encode(&mut whole, &full.record()).is_some_and(|n| n <= MAX_LEN));
    }

    #[test]
    fn an_unknown_call_is_an_error() {
        let mut buf = [0u8; MAX_LEN];
        let n = encode(&mut buf, &mmap(vec![]).record()).unwrap();
        let mut body = crate::record::tests::body_of(&buf[..n]).to_vec();
        body[0] = 0xee;
        assert!(decode(&mut Reader::new(&body, 0)).unwrap_err().message.contains("unknown call 238"));
    }
}
