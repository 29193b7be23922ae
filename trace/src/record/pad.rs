//! [`Kind::Pad`]: filler the writer puts up to a segment's end, or in a slot whose record was
//! never made; the reader skips it. Its body is never written (it is whatever the file held), so
//! its second word is a check of its length alone; an 8-byte gap holds a bare first word.

use crate::{Kind, RECORD_HEADER, record_word0};

/// The words of a pad of `total_len` bytes (a multiple of 8, at least 8): word0, and word1 for
/// a pad of at least [`RECORD_HEADER`] bytes. The writer stores word1 first and publishes word0
/// last.
#[inline]
pub fn words(total_len: u32) -> (u64, Option<u64>) {
    let word1 = (total_len as usize >= RECORD_HEADER).then(|| check(total_len));
    (record_word0(Kind::Pad, total_len), word1)
}

/// word1 of a pad record.
#[inline]
pub fn check(total_len: u32) -> u64 {
    !(total_len as u64) ^ 0x5041_4450_4144_5041
}

#[cfg(test)]
mod tests {
    use crate::parse;

    /// A pad of each length between two calls is skipped, whatever its body holds.
    #[test]
    fn pads_of_every_length_are_skipped() {
        for len in [8u32, 16, 24, 4096] {
            let (w0, w1) = super::words(len);
            let mut pad = vec![0xa5u8; len as usize];
            pad[..8].copy_from_slice(&w0.to_le_bytes());
            if let Some(w1) = w1 {
                pad[8..16].copy_from_slice(&w1.to_le_bytes());
            }
            let exit = crate::record::tests::record_bytes(|b| crate::record::exit::encode(b, 0, b"ok"));
            let f = crate::record::tests::file_with(&[exit.clone(), pad, exit]);
            let t = parse(&f).unwrap();
            assert_eq!((t.events.len(), t.torn, t.cursor), (2, 0, f.len() as u64), "pad of {len}");
        }
    }
}
