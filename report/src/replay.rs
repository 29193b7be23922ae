//! Replaying recorded calls over the address space found at start: which recorded call made
//! each byte that is still mapped, and how large the address space seen by the hooks grew.
//!
//! Every figure in a trace may be forged or damaged: arithmetic on them saturates.
//!
//! The result is an interval map from address ranges to the event that created them. mprotect
//! changes permissions, not the cause; mremap moves a range's cause with it; munmap drops it.

use std::collections::BTreeMap;
use vmshim_trace::decode::Call;
use vmshim_trace::{CALL_FLAG_OWN, CallKind};

/// What made a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Present in the initial `/proc/self/maps` snapshot (index into `initial_maps`).
    Initial(usize),
    /// Made by the recorded call at this index of `Recording::calls`.
    Call(usize),
}

/// Non-overlapping `[start, end)` ranges keyed by start.
#[derive(Default, Debug)]
pub struct Space {
    map: BTreeMap<u64, (u64, Origin)>,
    total: u64,
}

impl Space {
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Removes `[start, end)`, splitting ranges that straddle its edges.
    pub fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let first = self.map.range(..start).next_back().map(|(&s, &v)| (s, v));
        if let Some((s, (e, o))) = first
            && e > start
        {
            self.map.insert(s, (start, o));
            self.total -= e - start;
            if e > end {
                self.map.insert(end, (e, o));
                self.total += e - end;
            }
        }
        let inside: Vec<u64> = self.map.range(start..end).map(|(&s, _)| s).collect();
        for s in inside {
            if let Some((e, o)) = self.map.remove(&s) {
                self.total -= e - s;
                if e > end {
                    self.map.insert(end, (e, o));
                    self.total += e - end;
                }
            }
        }
    }

    pub fn insert(&mut self, start: u64, end: u64, origin: Origin) {
        if start >= end {
            return;
        }
        self.remove(start, end);
        self.map.insert(start, (end, origin));
        self.total += end - start;
    }

    /// The pieces of `[start, end)`: `(piece_start, piece_end, origin or None for a gap)`.
    pub fn pieces(&self, start: u64, end: u64) -> Vec<(u64, u64, Option<Origin>)> {
        let mut out = Vec::new();
        let mut at = start;
        let before = self.map.range(..start).next_back().filter(|(_, (e, _))| *e > start);
        for (&s, &(e, o)) in before.into_iter().chain(self.map.range(start..end)) {
            let s = s.max(start);
            if s > at {
                out.push((at, s, None));
            }
            let e = e.min(end);
            out.push((s, e, Some(o)));
            at = e;
        }
        if at < end {
            out.push((at, end, None));
        }
        out
    }

    fn origin_at(&self, addr: u64) -> Option<Origin> {
        self.map.range(..=addr).next_back().filter(|(_, (e, _))| *e > addr).map(|(_, (_, o))| *o)
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, u64, Origin)> + '_ {
        self.map.iter().map(|(&s, &(e, o))| (s, e, o))
    }
}

/// The replay's outcome.
#[derive(Default)]
pub struct Replay {
    /// Ranges the hooks (or the initial snapshot) can explain, as they stood at the end.
    pub space: Space,
    /// The largest total the recorded calls reached (initial snapshot included).
    pub peak: u64,
    /// (time_ns, total) after recorded calls that changed the total: every one, or for a long
    /// trace an even thinning of them to at most [`MAX_SERIES`] points that keeps each
    /// thinned pair's larger total.
    pub series: Vec<(u64, u64)>,
}

/// Most points the VSZ series keeps.
pub const MAX_SERIES: usize = 1 << 16;

/// A non-main malloc arena heap's reservation on 64-bit glibc (HEAP_MAX_SIZE), defined once in trace/.
pub use vmshim_trace::HEAP_MAX;

fn page_up(n: u64, page: u64) -> u64 {
    n.div_ceil(page).saturating_mul(page)
}

/// Replays calls one at a time as a trace streams by.
pub struct Replayer {
    page: u64,
    pub out: Replay,
    /// Arena heaps already placed, by base: the arena that owns each.
    heaps: std::collections::HashMap<u64, u64>,
    /// Series points are kept one in `stride` calls that change the total.
    stride: u64,
    changes: u64,
}

impl Replayer {
    /// Starts from the initial snapshot.
    pub fn new(page: u64, start_ns: u64, initial: &[crate::load::maps::Region]) -> Replayer {
        let mut space = Space::default();
        for (i, r) in initial.iter().enumerate() {
            space.insert(r.start, r.end, Origin::Initial(i));
        }
        let peak = space.total();
        Replayer {
            page: page.max(1),
            out: Replay { series: vec![(start_ns, peak)], space, peak },
            heaps: std::collections::HashMap::new(),
            stride: 1,
            changes: 0,
        }
    }

    /// Applies recorded call number `i`.
    pub fn apply(&mut self, i: usize, c: &Call) {
        if c.errno != 0 {
            return;
        }
        let (page, space) = (self.page, &mut self.out.space);
        match c.call {
            CallKind::Mmap => {
                let len = page_up(c.args[1], page);
                space.insert(c.result, c.result.saturating_add(len), Origin::Call(i));
            }
            CallKind::Munmap => space.remove(c.args[0], c.args[0].saturating_add(page_up(c.args[1], page))),
            CallKind::Mremap => {
                let (old, old_len, new_len) = (c.args[0], page_up(c.args[1], page), page_up(c.args[2], page));
                let origin = space.origin_at(old).unwrap_or(Origin::Call(i));
                // MREMAP_DONTUNMAP (4) leaves the old range mapped.
                if c.args[3] & 4 == 0 {
                    space.remove(old, old.saturating_add(old_len));
                }
                space.insert(c.result, c.result.saturating_add(new_len), origin);
            }
            CallKind::Mprotect | CallKind::PthreadCreate => {}
            // The first thread seen on a heap made it (or a new arena now owns the base);
            // later ones only share it.
            CallKind::ArenaAttach => {
                let (heap, arena) = (c.args[0], c.args[2]);
                if heap != 0 && self.heaps.insert(heap, arena) != Some(arena) {
                    space.insert(heap, heap.saturating_add(HEAP_MAX), Origin::Call(i));
                }
            }
            CallKind::MallocLarge => {
                space.insert(c.args[0], c.args[0].saturating_add(c.args[1]), Origin::Call(i))
            }
            CallKind::FreeLarge => space.remove(c.args[0], c.args[0].saturating_add(c.args[1])),
            CallKind::BrkGrow if c.args[0] != 0 => {
                space.insert(c.args[0], page_up(c.args[1], page), Origin::Call(i))
            }
            CallKind::BrkGrow => {}
            CallKind::ModuleLoad => space.insert(c.args[1], page_up(c.args[2], page), Origin::Call(i)),
        }
        let total = self.out.space.total();
        if c.flags & CALL_FLAG_OWN == 0 || c.call == CallKind::Mmap {
            self.out.peak = self.out.peak.max(total);
        }
        let series = &mut self.out.series;
        if series.last().is_none_or(|&(_, t)| t != total) {
            self.changes += 1;
            if self.changes.is_multiple_of(self.stride) {
                series.push((c.time_ns, total));
            }
            if series.len() >= 2 * MAX_SERIES {
                // Thin out: each pair of points becomes the one with the larger total.
                let first = series[0];
                let thinned: Vec<_> =
                    series[1..].chunks(2).map(|p| *p.iter().max_by_key(|x| x.1).unwrap_or(&p[0])).collect();
                *series = std::iter::once(first).chain(thinned).collect();
                self.stride *= 2;
            }
        }
    }

    /// The call numbers the space still refers to: the calls that explain a live range.
    pub fn live_calls(&self) -> std::collections::HashSet<usize> {
        self.out
            .space
            .iter()
            .filter_map(|(_, _, o)| if let Origin::Call(i) = o { Some(i) } else { None })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_remove_splits_a_range_and_keeps_the_total() {
        let mut s = Space::default();
        s.insert(0x1000, 0x9000, Origin::Call(0));
        s.remove(0x3000, 0x5000);
        assert_eq!(s.total(), 0x6000);
        assert_eq!(
            s.pieces(0x0, 0xa000),
            vec![
                (0x0, 0x1000, None),
                (0x1000, 0x3000, Some(Origin::Call(0))),
                (0x3000, 0x5000, None),
                (0x5000, 0x9000, Some(Origin::Call(0))),
                (0x9000, 0xa000, None)
            ]
        );
        s.insert(0x2000, 0x6000, Origin::Call(1));
        assert_eq!(s.total(), 0x8000);
        assert_eq!(s.origin_at(0x5fff), Some(Origin::Call(1)));
        assert_eq!(s.origin_at(0x6000), Some(Origin::Call(0)));
    }
}
