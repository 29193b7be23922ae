//! The bounds-checked reader: a window `[at, end)` of addresses in a caller's [`Memory`], read
//! one field at a time. Every read is checked against the window and goes through the
//! caller's `read`, which may refuse (an unmapped page in a tracee): either makes the field
//! `None`, never a fault or a panic. Arithmetic on addresses and values is checked or wrapping.

use crate::Memory;
use crate::op::*;

/// Where encoded pointers are relative to, beyond their own address (`DW_EH_PE_pcrel`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bases {
    /// `DW_EH_PE_textrel`: the start of `.text`, where known.
    pub text: Option<u64>,
    /// `DW_EH_PE_datarel`: the start of `.eh_frame_hdr` for its own table, `.got` elsewhere.
    pub data: Option<u64>,
}

pub struct Cursor<'m, M: Memory + ?Sized> {
    pub mem: &'m mut M,
    pub at: u64,
    pub end: u64,
}

impl<'m, M: Memory + ?Sized> Cursor<'m, M> {
    /// The window of `len` bytes at `at`; None if it wraps around the address space.
    pub fn new(mem: &'m mut M, at: u64, len: u64) -> Option<Cursor<'m, M>> {
        Some(Cursor { mem, end: at.checked_add(len)?, at })
    }

    pub fn remaining(&self) -> u64 {
        self.end.saturating_sub(self.at)
    }

    pub fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        if self.remaining() < N as u64 {
            return None;
        }
        let mut b = [0u8; N];
        if !self.mem.read(self.at, &mut b) {
            return None;
        }
        self.at += N as u64;
        Some(b)
    }

    pub fn u8(&mut self) -> Option<u8> {
        self.bytes::<1>().map(|b| b[0])
    }
    pub fn u16(&mut self) -> Option<u16> {
        self.bytes().map(u16::from_le_bytes)
    }
    pub fn u32(&mut self) -> Option<u32> {
        self.bytes().map(u32::from_le_bytes)
    }
    pub fn u64(&mut self) -> Option<u64> {
        self.bytes().map(u64::from_le_bytes)
    }

    pub fn uleb(&mut self) -> Option<u64> {
        let (mut v, mut shift) = (0u64, 0u32);
        loop {
            let b = self.u8()?;
            if shift < 64 {
                v |= ((b & 0x7f) as u64) << shift;
            }
            shift = shift.saturating_add(7);
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
    }

    pub fn sleb(&mut self) -> Option<i64> {
        let (mut v, mut shift) = (0i64, 0u32);
        loop {
            let b = self.u8()?;
            if shift < 64 {
                v |= ((b & 0x7f) as i64) << shift;
            }
            shift = shift.saturating_add(7);
            if b & 0x80 == 0 {
                if shift < 64 && b & 0x40 != 0 {
                    v |= -1i64 << shift;
                }
                return Some(v);
            }
        }
    }

    pub fn skip(&mut self, n: u64) -> Option<()> {
        if n > self.remaining() {
            return None;
        }
        self.at += n;
        Some(())
    }

    /// A value in the format (low four bits) of encoding `enc`, before its application: what
    /// an FDE's address range is.
    pub fn value(&mut self, enc: u8) -> Option<u64> {
        Some(match enc & 0x0f {
            DW_EH_PE_ABSPTR | DW_EH_PE_UDATA8 | DW_EH_PE_SDATA8 => self.u64()?,
            DW_EH_PE_ULEB128 => self.uleb()?,
            DW_EH_PE_SLEB128 => self.sleb()? as u64,
            DW_EH_PE_UDATA2 => self.u16()? as u64,
            DW_EH_PE_SDATA2 => self.u16()? as i16 as i64 as u64,
            DW_EH_PE_UDATA4 => self.u32()? as u64,
            DW_EH_PE_SDATA4 => self.u32()? as i32 as i64 as u64,
            _ => return None,
        })
    }

    /// A pointer in encoding `enc`, applied: relative to its own address, or to a base. None
    /// for an encoding this crate does not resolve (indirect, aligned, function-relative, a
    /// base that is not known) or omitted.
    pub fn pointer(&mut self, enc: u8, bases: &Bases) -> Option<u64> {
        if enc == DW_EH_PE_OMIT || enc & DW_EH_PE_INDIRECT != 0 {
            return None;
        }
        let field = self.at;
        let v = self.value(enc)?;
        let base = match enc & 0x70 {
            0 => 0,
            DW_EH_PE_PCREL => field,
            DW_EH_PE_TEXTREL => bases.text?,
            DW_EH_PE_DATAREL => bases.data?,
            _ => return None,
        };
        Some(base.wrapping_add(v))
    }

    /// Skips a pointer in encoding `enc`; only its size matters.
    pub fn skip_pointer(&mut self, enc: u8) -> Option<()> {
        if enc == DW_EH_PE_OMIT {
            return Some(());
        }
        self.value(enc & 0x0f).map(drop)
    }
}

/// The size of a fixed-size value format, for a table searched by index.
pub fn fixed_size(enc: u8) -> Option<u64> {
    match enc & 0x0f {
        DW_EH_PE_UDATA2 | DW_EH_PE_SDATA2 => Some(2),
        DW_EH_PE_UDATA4 | DW_EH_PE_SDATA4 => Some(4),
        DW_EH_PE_ABSPTR | DW_EH_PE_UDATA8 | DW_EH_PE_SDATA8 => Some(8),
        _ => None,
    }
}
