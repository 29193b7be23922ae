//! [`Kind::ThreadName`]: a thread's name as the kernel had it at exit, appended by
//! `vmshim run`.
//!
//! Body: tid u32, 0 u32, name str.

use crate::encode::Encoder;
use crate::reader::Reader;
use crate::{Error, Kind};

/// A thread's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadName {
    pub tid: u32,
    pub name: String,
}

/// Encodes thread `tid`'s `name` (kept whole) into `buf`; the record's length, or `None` if it
/// does not fit.
pub fn encode(buf: &mut [u8], tid: u32, name: &[u8]) -> Option<usize> {
    let mut e = Encoder::new(buf, Kind::ThreadName);
    e.put_u32(tid);
    e.put_u32(0);
    e.put_str(name, name.len());
    e.finish()
}

pub(crate) fn decode(r: &mut Reader<'_>) -> Result<ThreadName, Error> {
    let tid = r.u32()?;
    r.u32()?;
    Ok(ThreadName { tid, name: r.string()? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::round_trip;

    #[test]
    fn round_trips() {
        for t in [ThreadName { tid: 7, name: "worker-1".into() }, ThreadName { tid: 0, name: String::new() }]
        {
            round_trip(&t, |b, t| encode(b, t.tid, t.name.as_bytes()), decode);
        }
    }
}
