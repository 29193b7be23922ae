//! [`Kind::Maps`]: a chunk of a `/proc/PID/maps` or `smaps` text; the chunks of one source
//! concatenate in `chunk` order.
//!
//! Body: source u8, 0 u8 x3, chunk u32, text str.

use crate::encode::Encoder;
use crate::reader::Reader;
use crate::{Error, Kind, MapsSource};

/// One chunk of a maps text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapsChunk {
    pub source: MapsSource,
    pub chunk: u32,
    pub text: Vec<u8>,
}

/// What [`encode`] writes, borrowed from the caller.
#[derive(Clone, Copy, Debug)]
pub struct MapsRecord<'a> {
    pub source: MapsSource,
    pub chunk: u32,
    /// Kept whole: the buffer must hold it (and 24 bytes more, and padding).
    pub text: &'a [u8],
}

/// Encodes `m` into `buf`; the record's length, or `None` if it does not fit.
pub fn encode(buf: &mut [u8], m: &MapsRecord<'_>) -> Option<usize> {
    let mut e = Encoder::new(buf, Kind::Maps);
    e.put_u8(m.source as u8);
    e.put_bytes(&[0; 3]);
    e.put_u32(m.chunk);
    e.put_str(m.text, m.text.len());
    e.finish()
}

pub(crate) fn decode(r: &mut Reader<'_>) -> Result<MapsChunk, Error> {
    let source = match r.u8()? {
        0 => MapsSource::Initial,
        1 => MapsSource::KernelFinal,
        2 => MapsSource::KernelStatm,
        s => return Err(r.err(format!("unknown maps source {s}"))),
    };
    r.bytes(3)?;
    let chunk = r.u32()?;
    let text = r.blob()?.to_vec();
    Ok(MapsChunk { source, chunk, text })
}

impl MapsChunk {
    pub fn record(&self) -> MapsRecord<'_> {
        MapsRecord { source: self.source, chunk: self.chunk, text: &self.text }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::round_trip;

    #[test]
    fn round_trips_every_source() {
        for (source, chunk, text) in [
            (MapsSource::Initial, 0, &b"55d0-55d1 r--p 00000000 08:01 12 /bin/true\n"[..]),
            (MapsSource::KernelFinal, 3, b""),
            (MapsSource::KernelStatm, 0, b"3557 454 391 5 0 82 0\n"),
        ] {
            let m = MapsChunk { source, chunk, text: text.to_vec() };
            round_trip(&m, |b, m| encode(b, &m.record()), decode);
        }
    }

    #[test]
    fn an_unknown_source_is_an_error() {
        let mut buf = [0u8; 64];
        let n = encode(&mut buf, &MapsRecord { source: MapsSource::Initial, chunk: 0, text: b"" }).unwrap();
        let mut body = crate::record::tests::body_of(&buf[..n]).to_vec();
        body[0] = 9;
        assert!(decode(&mut Reader::new(&body, 0)).unwrap_err().message.contains("unknown maps source 9"));
    }
}
