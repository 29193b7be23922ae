//! Malloc arenas: each arena the hooks saw a thread attach to, who made and used it, and the
//! heaps (HEAP_MAX reservations) it holds in the final map.

use super::attribute::Attributed;
use super::categories::Category;
use crate::load::read::Recording;
use std::collections::HashMap;
use vmshim_trace::CallKind;

/// A malloc arena and the threads seen using it.
#[derive(Clone, Debug)]
pub struct ArenaRow {
    /// `None` for the main arena.
    pub id: Option<usize>,
    /// glibc's malloc_state address (0 for the main arena).
    pub address: u64,
    /// The thread that created it (the first seen on it), and the threads seen using it.
    pub creator: u32,
    pub tids: Vec<u32>,
    /// Heaps (64 MiB reservations) it has in the final map, and their bytes.
    pub heaps: usize,
    pub bytes: u64,
}

/// Arenas in order of appearance, with who uses them and what they hold at the end.
pub fn arena_rows(rec: &Recording, regions: &[Attributed]) -> Vec<ArenaRow> {
    let mut rows: Vec<ArenaRow> = Vec::new();
    for c in rec.calls.values().filter(|c| c.call == CallKind::ArenaAttach) {
        let address = c.args[2];
        match rows.iter_mut().find(|r| r.address == address) {
            Some(r) => {
                if !r.tids.contains(&c.tid) {
                    r.tids.push(c.tid);
                }
            }
            None => {
                let id = (address != 0).then(|| rows.iter().filter(|r| r.id.is_some()).count() + 1);
                rows.push(ArenaRow { id, address, creator: c.tid, tids: vec![c.tid], heaps: 0, bytes: 0 });
            }
        }
    }
    // Heaps in the final map: the regions each arena event placed, grouped by heap base.
    let mut heap_of: HashMap<u64, u64> = HashMap::new();
    for c in rec.calls.values().filter(|c| c.call == CallKind::ArenaAttach && c.args[0] != 0) {
        heap_of.entry(c.args[0]).or_insert(c.args[2]);
    }
    let mut seen_heaps: HashMap<u64, ()> = HashMap::new();
    for r in regions.iter().filter(|r| r.category == Category::MallocArena) {
        let base = r.start & !(crate::replay::HEAP_MAX - 1);
        if let Some(row) = heap_of.get(&base).and_then(|a| rows.iter_mut().find(|x| x.address == *a)) {
            row.bytes += r.size();
            if seen_heaps.insert(base, ()).is_none() {
                row.heaps += 1;
            }
        }
    }
    rows
}
