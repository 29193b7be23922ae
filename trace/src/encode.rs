//! The field writer the record encoders in [`crate::record`] share: fills a caller-provided
//! buffer, never allocates, never panics. Private to the crate, so that no record is put together
//! field by field anywhere else.

use crate::{Kind, MAX_FRAMES, RECORD_HEADER, checksum, record_word0};

/// Builds one record in a caller-provided buffer. Every `put_*` on a full buffer sets an overflow
/// flag instead of panicking; [`Encoder::finish`] then returns `None`.
pub(crate) struct Encoder<'a> {
    buf: &'a mut [u8],
    pos: usize,
    overflow: bool,
    kind: Kind,
}

impl<'a> Encoder<'a> {
    /// Starts a record of `kind`; the header words are written by [`Encoder::finish`].
    #[inline]
    pub fn new(buf: &'a mut [u8], kind: Kind) -> Encoder<'a> {
        let overflow = buf.len() < RECORD_HEADER;
        Encoder { buf, pos: RECORD_HEADER, overflow, kind }
    }

    /// Current length of the record, header included.
    #[inline]
    pub fn position(&self) -> usize {
        self.pos
    }

    #[inline]
    pub fn put_bytes(&mut self, bytes: &[u8]) {
        match self.buf.get_mut(self.pos..self.pos + bytes.len()) {
            Some(dst) if !self.overflow => {
                dst.copy_from_slice(bytes);
                self.pos += bytes.len();
            }
            _ => self.overflow = true,
        }
    }

    #[inline]
    pub fn put_u8(&mut self, v: u8) {
        self.put_bytes(&[v]);
    }
    #[inline]
    pub fn put_u16(&mut self, v: u16) {
        self.put_bytes(&v.to_le_bytes());
    }
    #[inline]
    pub fn put_u32(&mut self, v: u32) {
        self.put_bytes(&v.to_le_bytes());
    }
    #[inline]
    pub fn put_i32(&mut self, v: i32) {
        self.put_bytes(&v.to_le_bytes());
    }
    #[inline]
    pub fn put_u64(&mut self, v: u64) {
        self.put_bytes(&v.to_le_bytes());
    }

    /// A length-prefixed byte string, cut to `max` bytes.
    #[inline]
    pub fn put_str(&mut self, s: &[u8], max: usize) {
        let s = &s[..s.len().min(max)];
        self.put_u32(s.len() as u32);
        self.put_bytes(s);
    }

    /// A count-prefixed list of return addresses, at most [`MAX_FRAMES`].
    #[inline]
    pub fn put_frames(&mut self, frames: &[u64]) {
        let frames = &frames[..frames.len().min(MAX_FRAMES)];
        self.put_u32(frames.len() as u32);
        for &f in frames {
            self.put_u64(f);
        }
    }

    /// Overwrites 8 bytes at `at` (a position returned by [`Encoder::position`] before the field
    /// was put), for fields known only after the record's slot was reserved.
    #[inline]
    pub fn patch_u64(&mut self, at: usize, v: u64) {
        match self.buf.get_mut(at..at + 8) {
            Some(dst) => dst.copy_from_slice(&v.to_le_bytes()),
            None => self.overflow = true,
        }
    }

    /// Pads to 8 bytes and writes word0 and the checksum. Returns the record's total length, or
    /// `None` if it did not fit. The caller copies `buf[8..len]` first and publishes word0
    /// (`buf[0..8]`) last.
    #[inline]
    pub fn finish(&mut self) -> Option<usize> {
        while !self.pos.is_multiple_of(8) && !self.overflow {
            self.put_u8(0);
        }
        if self.overflow {
            return None;
        }
        let len = self.pos as u32;
        let check = checksum(&self.buf[RECORD_HEADER..self.pos], len);
        self.buf[0..8].copy_from_slice(&record_word0(self.kind, len).to_le_bytes());
        self.buf[8..16].copy_from_slice(&check.to_le_bytes());
        Some(self.pos)
    }
}
