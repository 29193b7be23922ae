//! Number formatting without an allocator or `core::fmt` (whose machinery is large and may
//! panic): for the trace path, messages on stderr and the names of mappings.

/// Decimal digits of `v` into `out`; returns how many were written (0 if they do not fit).
pub fn fmt_u64(mut v: u64, out: &mut [u8]) -> usize {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    copy_out(&tmp[i..], out)
}

/// Lowercase hex digits of `v`, without a prefix, into `out`; how many were written (0 if they
/// do not fit).
pub fn fmt_hex(mut v: u64, out: &mut [u8]) -> usize {
    let mut tmp = [0u8; 16];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b"0123456789abcdef"[(v & 15) as usize];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    copy_out(&tmp[i..], out)
}

/// Copies `digits` to the start of `out`; their number, or 0 when they do not fit.
fn copy_out(digits: &[u8], out: &mut [u8]) -> usize {
    match out.get_mut(..digits.len()) {
        Some(dst) => {
            dst.copy_from_slice(digits);
            digits.len()
        }
        None => 0,
    }
}
