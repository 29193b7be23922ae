//! One module per record kind, each with its encoder and decoder side by side.
//!
//! The encoders are the only code that writes record bytes, in the shim (from inside hooks) and
//! in the report (the records `vmshim run` appends). They take typed, borrowed arguments, fill a
//! caller-provided buffer and return the record's length or `None` when it does not fit: no
//! allocation, no panic. The caller copies `buf[8..len]` into the trace and publishes word0
//! (`buf[0..8]`) last.
//!
//! The decoders read a record's body into owned values (they may allocate); [`Record`] names
//! every kind, Stack and Pad included, for tools that look at records one by one rather than as
//! the events a [`crate::Stream`] yields.

pub mod call;
pub mod config;
pub mod exit;
pub mod maps;
pub mod module;
pub mod pad;
pub mod resolve;
pub mod stack;
pub mod start;
pub mod thread_name;
pub mod thread_start;

use crate::reader::Reader;
use crate::{Error, Kind, RECORD_HEADER};

/// Any one record, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// Its total length; the body is not read.
    Pad(u32),
    Start(start::Start),
    Maps(maps::MapsChunk),
    Module(module::Module),
    Call(call::Call),
    ThreadStart(thread_start::ThreadStart),
    Exit(exit::Exit),
    ThreadName(thread_name::ThreadName),
    Resolve(resolve::Resolve),
    Config(String),
    /// The frames; calls refer to it by its file offset.
    Stack(Vec<u64>),
}

impl Record {
    /// Decodes the body of a record of `kind` (the bytes after its two header words, padding
    /// included); `offset` is the body's file offset, for errors. A Pad's body is not read.
    pub fn decode(kind: Kind, body: &[u8], offset: u64) -> Result<Record, Error> {
        let r = &mut Reader::new(body, offset);
        Ok(match kind {
            Kind::Pad => Record::Pad((body.len() + RECORD_HEADER) as u32),
            Kind::Start => Record::Start(start::decode(r)?),
            Kind::Maps => Record::Maps(maps::decode(r)?),
            Kind::Module => Record::Module(module::decode(r)?),
            Kind::Call => Record::Call(call::decode(r)?),
            Kind::ThreadStart => Record::ThreadStart(thread_start::decode(r)?),
            Kind::Exit => Record::Exit(exit::decode(r)?),
            Kind::ThreadName => Record::ThreadName(thread_name::decode(r)?),
            Kind::Resolve => Record::Resolve(resolve::decode(r)?),
            Kind::Config => Record::Config(config::decode(r)?),
            Kind::Stack => Record::Stack(stack::decode(r)?),
        })
    }

    /// Encodes the record again with its kind's encoder; its length, or `None` if it does not
    /// fit. A Pad gets its header words only (its body was never written).
    pub fn encode(&self, buf: &mut [u8]) -> Option<usize> {
        match self {
            Record::Pad(len) => {
                let (w0, w1) = pad::words(*len);
                let n = (*len as usize).min(RECORD_HEADER);
                let dst = buf.get_mut(..n)?;
                dst[..8].copy_from_slice(&w0.to_le_bytes());
                if let Some(w1) = w1 {
                    dst[8..16].copy_from_slice(&w1.to_le_bytes());
                }
                Some(n)
            }
            Record::Start(s) => start::encode(buf, &s.record()),
            Record::Maps(m) => maps::encode(buf, &m.record()),
            Record::Module(m) => module::encode(buf, &m.record()),
            Record::Call(c) => call::encode(buf, &c.record()),
            Record::ThreadStart(t) => thread_start::encode(buf, &t.record()),
            Record::Exit(e) => exit::encode(buf, e.raw_status, e.how.as_bytes()),
            Record::ThreadName(t) => thread_name::encode(buf, t.tid, t.name.as_bytes()),
            Record::Resolve(q) => resolve::encode(buf, &q.record()),
            Record::Config(text) => config::encode(buf, text.as_bytes()),
            Record::Stack(frames) => stack::encode(buf, frames),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::reader::Reader;
    use crate::{Error, FILE_MAGIC, HEADER_SIZE, RECORD_HEADER, VERSION, header};

    /// A record's body: what follows its two header words.
    pub fn body_of(record: &[u8]) -> &[u8] {
        &record[RECORD_HEADER..]
    }

    /// The bytes of the one record `encode` writes.
    pub fn record_bytes(encode: impl FnOnce(&mut [u8]) -> Option<usize>) -> Vec<u8> {
        let mut buf = vec![0u8; 1 << 16];
        let n = encode(&mut buf).expect("the record fits");
        buf.truncate(n);
        buf
    }

    /// A trace file holding `records` after its header.
    pub fn file_with(records: &[Vec<u8>]) -> Vec<u8> {
        let mut f = vec![0u8; HEADER_SIZE];
        f[..8].copy_from_slice(&FILE_MAGIC);
        f[8..12].copy_from_slice(&VERSION.to_le_bytes());
        for r in records {
            f.extend_from_slice(r);
        }
        let cursor = f.len() as u64;
        f[header::CURSOR..header::CURSOR + 8].copy_from_slice(&cursor.to_le_bytes());
        f
    }

    /// Encodes `value`, checks that the stream takes the record as valid, decodes it back to
    /// `value`, re-encodes the decoded value to the same bytes, and reads every shortened body
    /// to an error (never a panic).
    pub fn round_trip<T: PartialEq + std::fmt::Debug>(
        value: &T,
        encode: impl Fn(&mut [u8], &T) -> Option<usize>,
        decode: fn(&mut Reader<'_>) -> Result<T, Error>,
    ) {
        let bytes = record_bytes(|b| encode(b, value));
        assert!(bytes.len().is_multiple_of(8) && bytes.len() >= RECORD_HEADER);
        let w0 = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        let kind = crate::Kind::from_u16((w0 >> 16) as u16).unwrap();
        assert_eq!(w0, crate::record_word0(kind, bytes.len() as u32));
        let w1 = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
        assert_eq!(w1, crate::checksum(body_of(&bytes), bytes.len() as u32));
        let back = decode(&mut Reader::new(body_of(&bytes), 0)).unwrap();
        assert_eq!(&back, value);
        let again = record_bytes(|b| encode(b, &back));
        assert_eq!(again, bytes);
        let record = super::Record::decode(kind, body_of(&bytes), 0).unwrap();
        assert_eq!(record_bytes(|b| record.encode(b)), bytes, "through Record");
        // The body's fixed part ends before its padding: every cut into it is an error.
        for cut in 0..body_of(&bytes).len() {
            let _ = decode(&mut Reader::new(&body_of(&bytes)[..cut], 0));
        }
        // A buffer one byte short of the record is refused, not overrun.
        let mut short = vec![0u8; bytes.len() - 1];
        assert_eq!(encode(&mut short, value), None);
    }
}
