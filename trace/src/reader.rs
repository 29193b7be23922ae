//! The bounds-checked field reader the record decoders share: every read either yields the
//! field or an [`Error`] naming the byte offset where the record ran out.

use crate::{Error, MAX_FRAMES};

pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) pos: usize,
    /// File offset of `buf[0]`, for error messages.
    pub(crate) base: u64,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], base: u64) -> Reader<'a> {
        Reader { buf, pos: 0, base }
    }
    pub(crate) fn err(&self, message: impl Into<String>) -> Error {
        Error { offset: self.base + self.pos as u64, message: message.into() }
    }
    /// Bytes left in the record body (its padding included).
    pub(crate) fn left(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.err(format!("record field of {n} bytes runs past the record"))),
        }
    }
    pub(crate) fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.bytes(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_le_bytes(self.bytes(2)?.try_into().unwrap_or_default()))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().unwrap_or_default()))
    }
    pub(crate) fn i32(&mut self) -> Result<i32, Error> {
        Ok(self.u32()? as i32)
    }
    pub(crate) fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().unwrap_or_default()))
    }
    pub(crate) fn blob(&mut self) -> Result<&'a [u8], Error> {
        let n = self.u32()? as usize;
        self.bytes(n)
    }
    pub(crate) fn string(&mut self) -> Result<String, Error> {
        Ok(String::from_utf8_lossy(self.blob()?).into_owned())
    }
    pub(crate) fn frames(&mut self) -> Result<Vec<u64>, Error> {
        let n = self.u32()? as usize;
        if n > MAX_FRAMES {
            return Err(self.err(format!("stack of {n} frames exceeds the limit of {MAX_FRAMES}")));
        }
        (0..n).map(|_| self.u64()).collect()
    }
}
