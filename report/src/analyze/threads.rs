//! Threads: which final regions are whose stack (the threads' reported stack pointers, MAP_STACK's
//! VmFlags mark), and each thread's share of the attributed address space.

use super::arenas::ArenaRow;
use super::attribute::Attributed;
use super::categories::Category;
use crate::load::maps::Region;
use crate::load::read::Recording;
use std::collections::{BTreeMap, HashMap};

/// One thread's share.
#[derive(Clone, Debug, Default)]
pub struct ThreadRow {
    pub tid: u32,
    pub name: Option<String>,
    pub creator_tid: Option<u32>,
    pub stack_bytes: u64,
    pub arena_bytes: u64,
    pub reserved_bytes: u64,
    /// The malloc arenas the thread was seen using, in order: `None` is the main (brk) arena,
    /// `Some(n)` the n-th non-main arena to appear.
    pub arenas: Vec<Option<usize>>,
}

/// A thread stack found in the final map.
pub struct StackOwner {
    pub tid: Option<u32>,
    pub creator: Option<u32>,
    pub creator_stack: Vec<u64>,
}

/// Final-map region index -> the thread whose stack it is (its rw part and its guard page).
pub fn thread_stacks(rec: &Recording, regions: &[Region]) -> HashMap<usize, StackOwner> {
    let page = rec.page_size();
    let mut out = HashMap::new();
    let find = |addr: u64| regions.iter().position(|r| r.start <= addr && addr < r.end);
    // Later threads reuse cached stacks of exited ones: the last to start owns the region.
    for t in &rec.threads {
        let Some(i) = find(t.sp) else { continue };
        if regions[i].is_file() {
            continue;
        }
        out.insert(
            i,
            StackOwner {
                tid: Some(t.tid),
                creator: Some(t.creator_tid),
                creator_stack: t.creator_stack.clone(),
            },
        );
        let guard = match t.guard_size {
            u64::MAX => page,
            g => g.div_ceil(page).saturating_mul(page),
        };
        if guard > 0
            && i > 0
            && regions[i - 1].end == regions[i].start
            && regions[i - 1].size() == guard
            && regions[i - 1].perms.starts_with("---")
            && regions[i - 1].is_anonymous()
        {
            out.insert(
                i - 1,
                StackOwner {
                    tid: Some(t.tid),
                    creator: Some(t.creator_tid),
                    creator_stack: t.creator_stack.clone(),
                },
            );
        }
    }
    // Stacks no recorded thread runs on now (cached after their thread exited, or made before
    // the shim loaded) still carry MAP_STACK's VmFlags mark `nh` (kernel >= 6.7).
    for (i, r) in regions.iter().enumerate() {
        if !out.contains_key(&i)
            && r.is_anonymous()
            && r.perms.starts_with("rw")
            && r.has_flag("nh")
            && !r.has_flag("nr")
        {
            out.insert(i, StackOwner { tid: None, creator: None, creator_stack: vec![] });
            if i > 0
                && regions[i - 1].end == r.start
                && regions[i - 1].perms.starts_with("---")
                && regions[i - 1].size() == page
            {
                out.insert(i - 1, StackOwner { tid: None, creator: None, creator_stack: vec![] });
            }
        }
    }
    out
}

pub fn thread_rows(rec: &Recording, regions: &[Attributed], arenas: &[ArenaRow]) -> Vec<ThreadRow> {
    let mut rows: BTreeMap<u32, ThreadRow> = BTreeMap::new();
    if let Some(s) = &rec.start {
        let name = s.exe.rsplit('/').next().map(str::to_string);
        rows.insert(s.pid, ThreadRow { tid: s.pid, name, ..ThreadRow::default() });
    }
    for t in &rec.threads {
        let row = rows.entry(t.tid).or_insert_with(|| ThreadRow { tid: t.tid, ..ThreadRow::default() });
        row.creator_tid = Some(t.creator_tid);
    }
    for &tid in &rec.call_tids {
        rows.entry(tid).or_insert_with(|| ThreadRow { tid, ..ThreadRow::default() });
    }
    for a in arenas {
        for t in &a.tids {
            if let Some(row) = rows.get_mut(t) {
                row.arenas.push(a.id);
            }
        }
    }
    for row in rows.values_mut() {
        if let Some(name) = rec.thread_names.get(&row.tid) {
            row.name = Some(name.clone());
        }
    }
    for r in regions {
        let Some(row) = r.tid.and_then(|t| rows.get_mut(&t)) else { continue };
        row.reserved_bytes += r.size();
        match r.category {
            Category::ThreadStack | Category::MainStack => row.stack_bytes += r.size(),
            Category::MallocArena => row.arena_bytes += r.size(),
            _ => {}
        }
    }
    rows.into_values().collect()
}
