//! The socket on which `vmshim run` takes the Start records of the tree's fork children
//! (issue 12). Under the run's exit watcher, a fork child sends its Start record there, one
//! datagram, from inside fork, instead of creating a trace file of its own: most fork children
//! of a shell exec at once and never record, and creating, sizing and mapping a file was most of
//! what the shim added to each of them. `vmshim run` writes the trace from the record (the one the
//! child would have written, in the file it would have named) unless the child created its own
//! at its first recorded call or before it changed its credentials.
//!
//! The socket is abstract (no path in the file system), named from the run id, so that a child
//! finds it from the configuration it inherited and nothing else; the datagram is a whole
//! encoded Start record ([`crate::record::start`]), its `trace_path` empty.

/// Length of [`name`]: a NUL, the prefix, sixteen hex digits.
pub const NAME_LEN: usize = 1 + PREFIX.len() + 16;
const PREFIX: &[u8] = b"vmshim-sink.";

/// The socket's abstract name (the leading NUL included) for run `run_id`.
pub fn name(run_id: u64) -> [u8; NAME_LEN] {
    let mut n = [0u8; NAME_LEN];
    n[1..1 + PREFIX.len()].copy_from_slice(PREFIX);
    for (i, d) in n[1 + PREFIX.len()..].iter_mut().enumerate() {
        let nibble = (run_id >> (60 - 4 * i)) & 0xf;
        *d = b"0123456789abcdef"[nibble as usize];
    }
    n
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_name_is_the_run_id_in_hex_after_a_nul() {
        let n = super::name(0x0123_4567_89ab_cdef);
        assert_eq!(&n[..], b"\0vmshim-sink.0123456789abcdef");
    }
}
