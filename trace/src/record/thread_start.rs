//! [`Kind::ThreadStart`]: a thread made by `pthread_create` began running. `sp` is an address
//! on its stack; the creator's stack is the one `pthread_create` was called from.
//!
//! Body: tid u32, creator_tid u32, time_ns u64, sp u64, stack_size u64, guard_size u64,
//! start_routine u64, creator frames.

use crate::encode::Encoder;
use crate::reader::Reader;
use crate::{Error, Kind, MAX_FRAMES};

/// Room for the largest ThreadStart record.
pub const MAX_LEN: usize = 96 + MAX_FRAMES * 8;

/// A thread made by `pthread_create` started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadStart {
    pub tid: u32,
    pub creator_tid: u32,
    pub time_ns: u64,
    pub sp: u64,
    /// From the attribute passed to `pthread_create`; 0 when none was given.
    pub stack_size: u64,
    /// From the attribute passed to `pthread_create`; `u64::MAX` when none was given.
    pub guard_size: u64,
    pub start_routine: u64,
    pub creator_stack: Vec<u64>,
}

/// What [`encode`] writes, borrowed from the caller.
#[derive(Clone, Copy, Debug)]
pub struct ThreadStartRecord<'a> {
    pub tid: u32,
    pub creator_tid: u32,
    pub time_ns: u64,
    pub sp: u64,
    pub stack_size: u64,
    pub guard_size: u64,
    pub start_routine: u64,
    /// Innermost first, at most [`MAX_FRAMES`] kept.
    pub creator_stack: &'a [u64],
}

/// Encodes `t` into `buf`; the record's length, or `None` if it does not fit.
pub fn encode(buf: &mut [u8], t: &ThreadStartRecord<'_>) -> Option<usize> {
    let mut e = Encoder::new(buf, Kind::ThreadStart);
    e.put_u32(t.tid);
    e.put_u32(t.creator_tid);
    e.put_u64(t.time_ns);
    e.put_u64(t.sp);
    e.put_u64(t.stack_size);
    e.put_u64(t.guard_size);
    e.put_u64(t.start_routine);
    e.put_frames(t.creator_stack);
    e.finish()
}

pub(crate) fn decode(r: &mut Reader<'_>) -> Result<ThreadStart, Error> {
    Ok(ThreadStart {
        tid: r.u32()?,
        creator_tid: r.u32()?,
        time_ns: r.u64()?,
        sp: r.u64()?,
        stack_size: r.u64()?,
        guard_size: r.u64()?,
        start_routine: r.u64()?,
        creator_stack: r.frames()?,
    })
}

impl ThreadStart {
    pub fn record(&self) -> ThreadStartRecord<'_> {
        ThreadStartRecord {
            tid: self.tid,
            creator_tid: self.creator_tid,
            time_ns: self.time_ns,
            sp: self.sp,
            stack_size: self.stack_size,
            guard_size: self.guard_size,
            start_routine: self.start_routine,
            creator_stack: &self.creator_stack,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::round_trip;

    #[test]
    fn round_trips_and_fits_its_largest() {
        let t = ThreadStart {
            tid: 101,
            creator_tid: 100,
            time_ns: 5,
            sp: 0x7ffd_0000_1000,
            stack_size: 0,
            guard_size: u64::MAX,
            start_routine: 0x5555_0000_1234,
            creator_stack: vec![1, 2],
        };
        round_trip(&t, |b, t| encode(b, &t.record()), decode);
        let full = ThreadStart { creator_stack: vec![3; MAX_FRAMES], ..t };
        round_trip(&full, |b, t| encode(b, &t.record()), decode);
        assert!(encode(&mut [0u8; MAX_LEN], &full.record()).is_some());
    }
}
