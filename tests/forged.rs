//! Issue 6: hostile traces. Records whose bytes are damaged *and* whose checksums are fixed up
//! pass the reader's integrity check and reach every later stage (decoding, replay,
//! attribution, symbolization, rendering) with forged figures: the report must answer each
//! with a report or a clear error, never a crash, hang or runaway allocation.

use crate::common::*;
use crate::under_vmshim::*;
use std::process::Command;
use vmshim_trace::{HEADER_SIZE, RECORD_HEADER, checksum};

/// A small deterministic generator (xorshift64*), so a failure names its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Offsets and lengths of the records in a trace.
fn records(bytes: &[u8]) -> Vec<(usize, usize)> {
    let cursor = u64::from_le_bytes(bytes[24..32].try_into().unwrap()) as usize;
    let mut out = Vec::new();
    let mut at = HEADER_SIZE;
    while at + 8 <= cursor.min(bytes.len()) {
        let w0 = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        let len = (w0 >> 32) as usize;
        if w0 as u16 != vmshim_trace::RECORD_MAGIC || len < 8 {
            break;
        }
        out.push((at, len));
        at += len;
    }
    out
}

#[test]
fn forged_records_give_a_report_or_an_error_never_a_crash() {
    let dir = TestDir::new("forged");
    let run = run_handshake(&dir, &build_c("mapseq"), &[]);
    let good = std::fs::read(&run.trace).unwrap();
    let recs: Vec<(usize, usize)> =
        records(&good).into_iter().filter(|(_, len)| *len > RECORD_HEADER).collect();
    assert!(recs.len() > 10);
    let forged = dir.join("forged.trace");
    let mut rng = Rng(0x005e_ed0f_7ace);
    // Each round runs the whole pipeline twice (symbolizing libc with its debug info): 40 rounds
    // keep the test near 20 s.
    for round in 0..40 {
        let mut bytes = good.clone();
        // Damage a few bodies: random bytes, or extreme values in whole words.
        for _ in 0..1 + rng.next() % 4 {
            let (at, len) = recs[(rng.next() as usize) % recs.len()];
            let word = at + RECORD_HEADER + 8 * ((rng.next() as usize) % ((len - RECORD_HEADER) / 8));
            let value = match rng.next() % 4 {
                0 => u64::MAX,
                1 => 1 << 63,
                2 => rng.next(),
                _ => u64::from_le_bytes(bytes[word..word + 8].try_into().unwrap()) ^ (1 << (rng.next() % 64)),
            };
            bytes[word..word + 8].copy_from_slice(&value.to_le_bytes());
            let sum = checksum(&bytes[at + RECORD_HEADER..at + len], len as u32);
            bytes[at + 8..at + 16].copy_from_slice(&sum.to_le_bytes());
        }
        std::fs::write(&forged, &bytes).unwrap();
        for args in [&["report", "--json"][..], &["events", "--json"][..]] {
            let out = run_with_timeout(Command::new(vmshim_bin()).args(args).arg(&forged), TIMEOUT);
            assert!(
                matches!(out.status.code(), Some(0 | 2)),
                "round {round}, {args:?}: {:?}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
