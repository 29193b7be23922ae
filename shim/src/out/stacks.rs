//! Call stacks written once each. A stack seen for the first time goes into the trace as a
//! `Stack` record; every call record with that stack carries the record's file offset instead
//! of its frames (`CALL_FLAG_STACK_REF`). Writing the trace costs the target by the byte (page
//! cache pages to allocate, zero and write back): a call record with a 20-frame stack is 270
//! bytes inline and 104 with a reference.
//!
//! The table maps a 64-bit hash of the frames to the offset, lock-free: a slot is claimed by a
//! compare-and-swap on its hash after the Stack record was committed, so a reference is only
//! ever handed out for a record already in the file, before any record that refers to it.

use crate::out::writer;
use core::sync::atomic::{AtomicU64, Ordering::*};
use vmshim_trace::record::stack;

const SLOTS: usize = 1 << 14;
const PROBES: usize = 16;

/// Stack hash (key) to the file offset of its Stack record (value).
#[unsafe(link_section = ".sbss.vmshim")]
static TABLE: crate::out::pairs::Table<SLOTS> = crate::out::pairs::Table::new();

/// Bumped when the table is cleared (a fork child starts its own trace file): references taken
/// in an earlier epoch name records of another file.
#[unsafe(link_section = ".data.vmshim_hot")]
static EPOCH: AtomicU64 = AtomicU64::new(1);

pub fn epoch() -> u64 {
    EPOCH.load(Acquire)
}

/// Fork children start with an empty table instead of a copy of this one (see
/// [`crate::out::pairs::Table::wipe_on_fork`]), which [`reset`] then has nothing to drop.
pub fn wipe_on_fork() {
    TABLE.wipe_on_fork();
}

/// In a fork child, before its first record: forget the parent's file offsets.
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn reset() {
    EPOCH.fetch_add(1, AcqRel);
    TABLE.forget();
}

fn hash(frames: &[u64]) -> u64 {
    let mut h = 0x9E37_79B9_7F4A_7C15u64 ^ frames.len() as u64;
    for &f in frames {
        h = (h ^ f).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 32;
    }
    h | 1 // 0 marks an empty slot
}

/// The file offset of a Stack record holding `frames`, writing one if this stack is new; None
/// when the trace cannot take it (the caller then writes the frames inline).
pub fn intern(frames: &[u64]) -> Option<u64> {
    if frames.is_empty() {
        return None;
    }
    let h = hash(frames);
    let home = (h >> 48) as usize & (SLOTS - 1);
    let mut free = None;
    for i in 0..PROBES {
        let e = TABLE.slot(home, i);
        match e.key.load(Acquire) {
            0 => {
                free = Some(e);
                break;
            }
            x if x == h => match e.value.load(Acquire) {
                // Claimed, its offset not stored yet: write a copy of our own, unlisted.
                0 => return write(frames),
                off => return Some(off),
            },
            _ => {}
        }
    }
    let off = write(frames)?;
    if let Some(e) = free
        && TABLE.claim(e, h).is_ok()
    {
        e.value.store(off, Release);
    }
    Some(off)
}

fn write(frames: &[u64]) -> Option<u64> {
    let mut buf = [0u8; stack::MAX_LEN];
    let len = stack::encode(&mut buf, frames)?;
    writer::append(&buf[..len])
}
