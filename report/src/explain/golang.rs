//! The Go runtime's reservations read from outside, by the layout the runtime keeps in its
//! `runtime.mheap_` (found by shape in the executable's data, so stripped binaries too; linux/amd64,
//! 48-bit heap addresses, Go 1.19 to 1.27):
//! - `pages.summary`: five slice headers (ptr, len, cap) whose caps are 2^14, 2^17, 2^20, 2^23
//!   and 2^26 eight-byte entries (`levelBits` {14, 3, 3, 3, 3}): each level's reservation is
//!   `[ptr, ptr + cap * 8)`;
//! - the scavenge index after it: a slice of 2^23 bytes (Go 1.19-1.20, reserved with the
//!   summaries) or 2^26 eight-byte entries (Go >= 1.21, reserved by `(*scavengeIndex).sysInit`);
//! - `arenas`, the heap index: a pointer to 2^22 `*heapArena` entries (32 MiB); entry i non-nil
//!   means the 64 MiB at `(i << 26) + arenaBaseOffset` (0xffff800000000000) is heap.
//!
//! Purposes are given in the words `vmshim run` gives the same bytes ([`crate::analyze::gopurpose`]): a
//! reservation's read-write parts are what its grower mapped. Only reads.

use super::stop::Memory;
use crate::load::maps::Region;

/// A range of the Go runtime's with its purpose for the PROT_NONE part and the mapped part.
#[derive(Clone, Debug)]
pub struct GoRange {
    pub start: u64,
    pub end: u64,
    pub reserved: &'static str,
    pub mapped: &'static str,
    pub evidence: String,
}

const SUMMARY_CAPS: [u64; 5] = [1 << 14, 1 << 17, 1 << 20, 1 << 23, 1 << 26];
const ARENA_BASE_OFFSET: u64 = 0xffff_8000_0000_0000;
const HEAP_ARENA: u64 = 64 << 20;
const L2_ENTRIES: u64 = 1 << 22;

fn anon_at(regions: &[Region], addr: u64) -> Option<&Region> {
    regions.iter().find(|r| r.start <= addr && addr < r.end && r.is_anonymous() && !r.path.starts_with('['))
}

/// Finds the runtime's layout in the writable data of the executable `exe` (its regions).
pub fn read(mem: &Memory, regions: &[Region], exe: &str, version: &str) -> Vec<GoRange> {
    let mut out = vec![];
    // The executable's writable data and .bss (the kernel shows .bss as anonymous right after).
    let mut data: Vec<(u64, Vec<u8>)> = vec![];
    let mut last_exe_end = None;
    for r in regions {
        let is_exe = r.is_file() && r.file_path() == exe;
        let bss = last_exe_end == Some(r.start) && r.path.is_empty();
        if (is_exe || bss) && r.perms.starts_with("rw") && r.size() <= 64 << 20 {
            let mut b = vec![0u8; r.size() as usize];
            if mem.read(r.start, &mut b) {
                data.push((r.start, b));
            }
        }
        last_exe_end = if is_exe || bss { Some(r.end) } else { None };
    }
    for (base, b) in &data {
        let word =
            |off: usize| b.get(off..off + 8).map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8])));
        let triple = |off: usize| Some((word(off)?, word(off + 8)?, word(off + 16)?));
        let Some(at) = (0..b.len().saturating_sub(120)).step_by(8).find(|&o| {
            SUMMARY_CAPS.iter().enumerate().all(|(l, &cap)| {
                triple(o + 24 * l)
                    .is_some_and(|(p, len, c)| c == cap && len <= cap && anon_at(regions, p).is_some())
            })
        }) else {
            continue;
        };
        let at_addr = base + at as u64;
        for (l, &cap) in SUMMARY_CAPS.iter().enumerate() {
            let Some((p, _, _)) = triple(at + 24 * l) else { continue };
            out.push(GoRange {
                start: p,
                end: p + cap * 8,
                reserved: "page summary",
                mapped: "page alloc",
                evidence: format!(
                    "layout ({version}): page summary level {l}, {cap} entries at {p:#x} (runtime.mheap_.pages.summary at {:#x})",
                    at_addr + 24 * l as u64
                ),
            });
        }
        let window = (at + 120)..b.len().min(at + (512 << 10));
        // The scavenge index: the first slice after the summaries with one of its two shapes.
        if let Some((p, cap)) = window.clone().step_by(8).find_map(|o| {
            let (p, len, cap) = triple(o)?;
            let starts = anon_at(regions, p).is_some_and(|r| r.start == p);
            (starts && len <= cap && (cap == 1 << 23 || cap == 1 << 26)).then_some((p, cap))
        }) {
            let (bytes, reserved, what) = if cap == 1 << 23 {
                (cap, "page summary", "a 2^23-byte bitmap reserved with the summaries (Go < 1.21)")
            } else {
                (cap * 8, "scavenge index", "2^26 eight-byte entries")
            };
            out.push(GoRange {
                start: p,
                end: p + bytes,
                reserved,
                mapped: "scavenge index",
                evidence: format!("layout ({version}): scavenge index at {p:#x}, {what}"),
            });
        }
        // The heap index: a pointer to the start of a mapping that holds 2^22 entries, some of
        // which point at heap arena metadata.
        for o in window.step_by(8) {
            let Some(p) = word(o) else { break };
            // Mapped read-write whole (the kernel may have merged it with a neighbour).
            if !p.is_multiple_of(4096) || !rw_throughout(regions, p, p + L2_ENTRIES * 8) {
                continue;
            }
            let arenas = heap_arenas(mem, regions, p);
            if arenas.is_empty() {
                continue;
            }
            out.push(GoRange {
                start: p,
                end: p + L2_ENTRIES * 8,
                reserved: "heap index",
                mapped: "heap index",
                evidence: format!(
                    "layout ({version}): heap index (runtime.mheap_.arenas[0] -> {p:#x}, 2^22 entries)"
                ),
            });
            for a in arenas {
                out.push(GoRange {
                    start: a,
                    end: a + HEAP_ARENA,
                    reserved: "heap reservation",
                    mapped: "heap",
                    evidence: format!("layout ({version}): heap arena {a:#x} (its heap index entry is set)"),
                });
            }
            break;
        }
        break;
    }
    out.sort_by_key(|g| g.start);
    out
}

/// Whether `[start, end)` is anonymous read-write memory from end to end.
fn rw_throughout(regions: &[Region], start: u64, end: u64) -> bool {
    let mut at = start;
    while at < end {
        match anon_at(regions, at) {
            Some(r) if r.perms.starts_with("rw") => at = r.end,
            _ => return false,
        }
    }
    true
}

/// The 64 MiB heap arenas whose entry in the heap index at `l2` is non-nil, among the anonymous
/// mappings of the map.
fn heap_arenas(mem: &Memory, regions: &[Region], l2: u64) -> Vec<u64> {
    let mut out: Vec<u64> = vec![];
    for r in regions.iter().filter(|r| r.is_anonymous() && !r.path.starts_with('[')) {
        let mut a = r.start & !(HEAP_ARENA - 1);
        while a < r.end {
            let i = a.wrapping_sub(ARENA_BASE_OFFSET) >> 26;
            if i < L2_ENTRIES
                && !out.contains(&a)
                && mem
                    .u64(l2 + i * 8)
                    .is_some_and(|m| m != 0 && regions.iter().any(|x| x.start <= m && m < x.end))
            {
                out.push(a);
            }
            a += HEAP_ARENA;
        }
    }
    out
}
