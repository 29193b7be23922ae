//! [`Kind::Stack`]: a call stack that call records refer to by this record's file offset
//! ([`crate::CALL_FLAG_STACK_REF`]), so each distinct stack is written once. Not an event of its
//! own: the stream files its frames under its offset and fills them into the calls.
//!
//! Body: frames.

use crate::encode::Encoder;
use crate::reader::Reader;
use crate::{Error, Kind, MAX_FRAMES, RECORD_HEADER};

/// Room for the largest Stack record.
pub const MAX_LEN: usize = RECORD_HEADER + 8 + MAX_FRAMES * 8;

/// Encodes `frames` (absolute return addresses, innermost first; at most [`MAX_FRAMES`] are
/// kept) into `buf`; the record's length, or `None` if it does not fit.
#[inline]
pub fn encode(buf: &mut [u8], frames: &[u64]) -> Option<usize> {
    let mut e = Encoder::new(buf, Kind::Stack);
    e.put_frames(frames);
    e.finish()
}

pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Vec<u64>, Error> {
    r.frames()
}

#[cfg(test)]
mod tests {
    use crate::record::tests::round_trip;

    #[test]
    fn round_trips_and_fits_its_largest() {
        for frames in [vec![], vec![1, 2, 3], (0..crate::MAX_FRAMES as u64).collect()] {
            round_trip(&frames, |b, f| super::encode(b, f), super::decode);
        }
        let mut buf = [0u8; super::MAX_LEN];
        assert_eq!(super::encode(&mut buf, &[7; crate::MAX_FRAMES + 5]), Some(super::MAX_LEN));
    }
}
