//! Finding the FDE of an address: `.eh_frame_hdr`'s sorted table, searched in place, or a walk
//! over `.eh_frame`'s entries for an image linked without one (`gcc -static` passes no
//! `--eh-frame-hdr` to the linker).

use crate::Memory;
use crate::cfi;
use crate::cursor::{Bases, Cursor, fixed_size};

/// What an `.eh_frame_hdr` says, once read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hdr {
    /// The address of `.eh_frame_hdr` itself.
    pub at: u64,
    /// The address of `.eh_frame`, if the header says.
    pub eh_frame: Option<u64>,
    /// The search table: where it starts, its entry count and encoding; None if it has none
    /// (or one that cannot be searched by index).
    table: Option<(u64, u64, u8)>,
}

/// Reads the `.eh_frame_hdr` at `at`.
pub fn read_hdr<M: Memory + ?Sized>(mem: &mut M, at: u64) -> Option<Hdr> {
    let mut b = Cursor::new(mem, at, u64::MAX - at)?;
    let [version, ptr_enc, count_enc, table_enc] = b.bytes::<4>()?;
    if version != 1 {
        return None;
    }
    // Values in the header are relative to the header's start where they say datarel.
    let bases = Bases { text: None, data: Some(at) };
    let eh_frame = b.pointer(ptr_enc, &bases);
    if eh_frame.is_none() {
        b.skip_pointer(ptr_enc)?;
    }
    let count = b.pointer(count_enc, &bases);
    if count.is_none() {
        b.skip_pointer(count_enc)?;
    }
    let table = match (count, fixed_size(table_enc)) {
        (Some(n), Some(_)) if table_enc != crate::op::DW_EH_PE_OMIT => Some((b.at, n, table_enc)),
        _ => None,
    };
    Some(Hdr { at, eh_frame, table })
}

impl Hdr {
    /// Whether the header has a table to search.
    pub fn searchable(&self) -> bool {
        self.table.is_some()
    }

    /// The FDE whose range may hold `pc`: the table's last entry that starts at or below it
    /// (the FDE itself says whether its range reaches `pc`). None if the table has none.
    pub fn find<M: Memory + ?Sized>(&self, mem: &mut M, pc: u64) -> Option<u64> {
        let (start, count, enc) = self.table?;
        let size = fixed_size(enc)?;
        let bases = Bases { text: None, data: Some(self.at) };
        let entry = |mem: &mut M, i: u64| -> Option<(u64, u64)> {
            let at = start.checked_add(i.checked_mul(2 * size)?)?;
            let mut b = Cursor::new(mem, at, 2 * size)?;
            Some((b.pointer(enc, &bases)?, b.pointer(enc, &bases)?))
        };
        // The first entry that starts above `pc`, by binary search.
        let (mut lo, mut hi) = (0u64, count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if entry(mem, mid)?.0 <= pc {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        entry(mem, lo.checked_sub(1)?).map(|e| e.1)
    }
}

/// One FDE of an `.eh_frame` walk: its address and the code it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdeEntry {
    pub fde: u64,
    pub pc_begin: u64,
    pub pc_end: u64,
}

/// The FDEs of the `.eh_frame` at `[at, at + len)`, in section order. The walk ends at the
/// terminator, at the section's end or at the first entry it cannot read; an FDE whose CIE
/// cannot be read is left out.
pub struct Fdes<'m, M: Memory + ?Sized> {
    mem: &'m mut M,
    at: u64,
    end: u64,
    bases: Bases,
}

pub fn fdes<M: Memory + ?Sized>(mem: &mut M, at: u64, len: u64, bases: Bases) -> Fdes<'_, M> {
    Fdes { mem, at, end: at.saturating_add(len), bases }
}

impl<M: Memory + ?Sized> Iterator for Fdes<'_, M> {
    type Item = FdeEntry;

    fn next(&mut self) -> Option<FdeEntry> {
        while self.at < self.end {
            let here = self.at;
            let Some((len, body)) = cfi::entry(self.mem, here) else {
                self.at = self.end;
                return None;
            };
            let Some(next) = body.checked_add(len).filter(|&n| n <= self.end) else {
                self.at = self.end;
                return None;
            };
            self.at = next;
            let mut b = Cursor::new(self.mem, body, 4)?;
            if b.u32()? == 0 {
                continue; // a CIE
            }
            if let Some(f) = cfi::parse_fde(self.mem, here, &self.bases) {
                return Some(FdeEntry { fde: here, pc_begin: f.pc_begin, pc_end: f.pc_end });
            }
        }
        None
    }
}
