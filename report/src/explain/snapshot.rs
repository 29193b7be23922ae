//! Builds the report's [`Attribution`] of a running process from what was read outside it: the
//! kernel's map (smaps), the threads' stack pointers and stacks, glibc's heaps and arenas, large
//! chunks' headers, and what the map itself proves (files, [heap], [stack], the vdso). Every
//! region carries the evidence it was given its category on; what none explains is
//! `unattributed`, listed, never hidden.

use super::glibc::{self, Malloc};
use super::stop::{Memory, ThreadState, syscall_name};
use crate::analyze::attribute::{ArenaRow, Attributed, Attribution, Category, ThreadRow};
use crate::load::maps::Region;
use crate::replay::HEAP_MAX;
use crate::symbolize::{LoadedModule, Symbolizer};
use std::collections::BTreeMap;

/// What is known of the process besides its map.
pub struct Facts<'a> {
    pub pid: u32,
    pub page: u64,
    pub threads: &'a [ThreadState],
    pub names: &'a BTreeMap<u32, String>,
    pub malloc: &'a Malloc,
    /// The Go version that built the executable, when it is a Go program.
    pub go: Option<String>,
    /// The Go runtime's reservations found by their layout.
    pub go_ranges: &'a [super::golang::GoRange],
    /// The loader's link map (None for a static executable, or when it could not be read).
    pub link_map: Option<&'a super::linkmap::LinkMap>,
    pub peak: Option<u64>,
    /// Goroutine stacks read from `runtime.allgs`, sorted, adjacent ones merged: (lo, hi,
    /// evidence).
    pub goroutine_stacks: &'a [(u64, u64, String)],
}

/// The ELF images of the map, each from its lowest mapping.
pub fn modules(regions: &[Region]) -> Vec<LoadedModule> {
    let mut out: Vec<LoadedModule> = vec![];
    for r in regions.iter().filter(|r| r.is_file()) {
        if !out.iter().any(|m| m.lo <= r.start && r.start < m.hi)
            && let Some(m) = LoadedModule::from_mapping(r.file_path(), r.start, r.offset)
        {
            out.push(m);
        }
    }
    out
}

fn piece(r: &Region, start: u64, end: u64, category: Category, evidence: String) -> Attributed {
    Attributed { evidence: Some(evidence), ..Attributed::of_map(r, start, end, category) }
}

/// The thread whose stack pointer is in `r`, if any.
fn thread_in<'t>(threads: &'t [ThreadState], r: &Region) -> Option<&'t ThreadState> {
    threads.iter().find(|t| r.start <= t.sp && t.sp < r.end)
}

/// Whether `r` looks like a pthread stack: MAP_STACK's `nh` mark, or a guard page below it.
fn stack_shaped(regions: &[Region], i: usize, page: u64) -> bool {
    let r = &regions[i];
    r.has_flag("nh") || (i > 0 && is_guard(&regions[i - 1], r, page))
}

/// A PROT_NONE anonymous page run right below a stack, not a MAP_NORESERVE arena tail.
fn is_guard(g: &Region, above: &Region, page: u64) -> bool {
    g.end == above.start
        && g.perms.starts_with("---")
        && g.is_anonymous()
        && !g.has_flag("nr")
        && g.size() <= 256 * page
}

fn what_now(t: &ThreadState) -> &'static str {
    t.syscall.map_or("running", syscall_name)
}

pub fn attribute(regions: &[Region], facts: &Facts, sym: &mut Symbolizer) -> Attribution {
    let mem = Memory { pid: facts.pid };
    let page = facts.page;
    let m = facts.malloc;
    // Arena ids as the trace report numbers them: in order of creation, main first.
    let arena_id = |a: u64| m.arenas.iter().position(|&x| x == a).map(|n| n + 1);
    let heap_of = |addr: u64| m.heaps.iter().find(|h| h.base <= addr && addr < h.base + HEAP_MAX);
    let module_ends: Vec<u64> = sym.modules().iter().map(|mm| mm.hi.div_ceil(page) * page).collect();
    let mut out: Vec<Attributed> = vec![];
    // Guard pages owned by the stack above them.
    let mut guard_of: BTreeMap<usize, (Option<u32>, String)> = BTreeMap::new();
    // HotSpot gives a Java thread no glibc guard page and protects the bottom of its stack itself
    // (StackOverflow::create_stack_guard_pages: the reserved, yellow and red zones).
    let jvm = sym.modules().iter().any(|mm| mm.path.ends_with("/libjvm.so"));
    for (i, r) in regions.iter().enumerate() {
        if !r.is_anonymous() || r.path.starts_with("[anon:") && r.path.contains("Go:") {
            continue;
        }
        let t = thread_in(facts.threads, r);
        let shaped = stack_shaped(regions, i, page);
        let go_heap = facts.go.is_some() && !shaped;
        let go_claims = facts.go_ranges.iter().any(|g| g.start < r.end && g.end > r.start);
        if i > 0
            && is_guard(&regions[i - 1], r, page)
            && !go_claims
            && (t.is_some() && !go_heap || r.has_flag("nh"))
        {
            let who = t.map(|t| t.tid);
            let g = &regions[i - 1];
            let ev = if jvm && g.size() > page {
                format!(
                    "the JVM's stack guard zones (reserved, yellow, red; {} KiB) at the bottom of the stack at {:#x}",
                    g.size() / 1024,
                    r.start
                )
            } else {
                format!("guard page below the stack at {:#x}", r.start)
            };
            guard_of.insert(i - 1, (who, ev));
        }
    }
    for (i, r) in regions.iter().enumerate() {
        let whole = |c: Category, ev: String| piece(r, r.start, r.end, c, ev);
        if let Some((tid, ev)) = guard_of.get(&i) {
            let mut a = whole(Category::ThreadStack, ev.clone());
            a.tid = *tid;
            out.push(a);
            continue;
        }
        match r.path.as_str() {
            "[heap]" => {
                out.push(whole(
                    Category::BrkHeap,
                    "kernel name [heap] (the brk heap, malloc's main arena)".into(),
                ));
                continue;
            }
            "[stack]" => {
                let mut a = whole(Category::MainStack, "kernel name [stack]".into());
                a.tid = Some(facts.pid);
                if let Some(t) = facts.threads.iter().find(|t| t.tid == facts.pid) {
                    a.stack = t.stack.clone();
                    a.cause = what_now(t);
                    a.evidence =
                        Some(format!("kernel name [stack]; thread {}'s stack pointer {:#x}", t.tid, t.sp));
                }
                out.push(a);
                continue;
            }
            "[vdso]" | "[vvar]" | "[vsyscall]" | "[vvar_vclock]" | "[uprobes]" => {
                out.push(whole(Category::Kernel, format!("kernel name {}", r.path)));
                continue;
            }
            _ => {}
        }
        if r.is_file() {
            let (c, ev) = match (sym.module_of(r.start), facts.link_map) {
                (Some(mm), None) => {
                    (Category::Library, format!("ELF image {} (its program headers span it)", mm.path))
                }
                (Some(mm), Some(lm)) => match lm.entry_of(mm) {
                    Some(o) => (
                        Category::Library,
                        format!(
                            "the loader's link map ({}, _r_debug at {:#x}): {} loaded at {:#x} {}",
                            lm.found_by,
                            lm.r_debug,
                            if o.name.is_empty() { "the executable" } else { o.name.as_str() },
                            o.bias,
                            if o.at_start {
                                "at start (the executable, its DT_NEEDED closure, a preload, the loader or the vdso)"
                            } else {
                                "by dlopen (outside the executable's DT_NEEDED closure)"
                            }
                        ),
                    ),
                    None => (
                        Category::FileMmap,
                        format!(
                            "file {}: an ELF image the loader's link map does not hold (mapped by mmap, not loaded)",
                            r.file_path()
                        ),
                    ),
                },
                (None, _) => (Category::FileMmap, format!("file {}", r.file_path())),
            };
            out.push(whole(c, ev));
            continue;
        }
        if !r.is_anonymous() {
            out.push(whole(Category::Unattributed, format!("pseudo-file {} no evidence explains", r.path)));
            continue;
        }
        // Go >= 1.25 names its own mappings where the kernel lets it.
        if let Some(words) = crate::analyze::gopurpose::from_kernel_name(&r.path) {
            let mut a = whole(Category::GoRuntime, format!("kernel name {}", r.path));
            a.purpose = Some(words);
            out.push(a);
            continue;
        }
        if let Some(h) = heap_of(r.start) {
            let id = arena_id(h.ar_ptr).map_or("?".to_string(), |n| format!("#{n}"));
            let mut a = whole(
                Category::MallocArena,
                format!(
                    "heap_info at {:#x} (size {:#x}, mprotect_size {:#x}) -> arena {id} (malloc_state at {:#x})",
                    h.base, h.size, h.mprotect_size, h.ar_ptr
                ),
            );
            a.cause = "malloc";
            out.push(a);
            continue;
        }
        let t = thread_in(facts.threads, r);
        let shaped = stack_shaped(regions, i, page);
        // What the Go runtime's layout claims is not a stack, whatever its VmFlags say (Go
        // marks some of its reservations MADV_NOHUGEPAGE, which shows as `nh` too).
        let go_claims = facts.go_ranges.iter().any(|g| g.start < r.end && g.end > r.start);
        let guarded = i > 0 && is_guard(&regions[i - 1], r, page);
        match t.filter(|_| !go_claims) {
            Some(t) if facts.go.is_none() || shaped => {
                let mut a = whole(
                    Category::ThreadStack,
                    format!(
                        "thread {}'s stack pointer {:#x}{}",
                        t.tid,
                        t.sp,
                        if shaped { " (MAP_STACK)" } else { "" }
                    ),
                );
                a.tid = Some(t.tid);
                a.stack = t.stack.clone();
                a.cause = what_now(t);
                out.push(a);
                continue;
            }
            None if !go_claims
                && (facts.go.is_none() || guarded)
                && r.has_flag("nh")
                && r.perms.starts_with("rw")
                && !r.has_flag("nr") =>
            {
                out.push(whole(
                    Category::ThreadStack,
                    "MAP_STACK (VmFlags nh) with no thread's stack pointer in it: a stack glibc keeps cached for reuse"
                        .into(),
                ));
                continue;
            }
            _ => {}
        }
        // Anonymous memory: cut where an image's .bss ends (the kernel merges what follows).
        let mut cuts: Vec<u64> = module_ends.iter().copied().filter(|&e| e > r.start && e < r.end).collect();
        cuts.sort_unstable();
        cuts.push(r.end);
        let mut at = r.start;
        for end in cuts {
            anonymous(&mem, r, at, end, facts, sym, page, &mut out);
            at = end;
        }
    }
    out.sort_by_key(|a| a.start);
    let final_bytes = crate::load::maps::vsz(regions);
    let arenas = arena_rows(m, &out);
    let threads = thread_rows(facts, &out, &arenas);
    Attribution {
        regions: out,
        threads,
        arenas,
        final_bytes,
        kernel_final_bytes: Some(final_bytes),
        peak_bytes: facts.peak.unwrap_or(final_bytes).max(final_bytes),
        rss_bytes: Some(regions.iter().filter_map(|r| r.rss).sum()),
        vmshim_rss_bytes: None,
    }
}

/// An anonymous piece `[start, end)` of `r` that neither a heap nor a stack explains.
#[allow(clippy::too_many_arguments)]
fn anonymous(
    mem: &Memory,
    r: &Region,
    start: u64,
    end: u64,
    facts: &Facts,
    sym: &Symbolizer,
    page: u64,
    out: &mut Vec<Attributed>,
) {
    if let Some(mm) = sym.module_of(start) {
        out.push(piece(r, start, end, Category::Library, format!("inside {}'s span (its .bss)", mm.path)));
        return;
    }
    // The Go runtime's own layout first: its heap's rw pages must not be taken for a chunk.
    let mut at = start;
    for g in facts.go_ranges.iter().filter(|g| g.start < end && g.end > start) {
        let (s, e) = (g.start.max(start), g.end.min(end));
        if s > at {
            anonymous_rest(mem, r, at, s, facts, page, out);
        }
        let mapped = r.perms.starts_with('r') || r.perms.as_bytes().get(1) == Some(&b'w');
        let purpose = if mapped { g.mapped } else { g.reserved };
        let mut go_piece = |from: u64, to: u64, evidence: String| {
            let mut a = piece(r, from, to, Category::GoRuntime, evidence);
            a.purpose = Some(purpose.to_string());
            out.push(a);
        };
        // The heap's spans that hold goroutine stacks say so (their purpose stays the heap's:
        // the runtime allocates stacks from heap spans).
        let mut from = s;
        if mapped && g.mapped == "heap" {
            for (lo, hi, ev) in facts.goroutine_stacks.iter().filter(|(lo, hi, _)| *lo < e && *hi > s) {
                let (lo, hi) = ((*lo).max(s), (*hi).min(e));
                if lo > from {
                    go_piece(from, lo, g.evidence.clone());
                }
                go_piece(lo, hi, ev.clone());
                from = hi;
            }
        }
        if from < e {
            go_piece(from, e, g.evidence.clone());
        }
        at = e;
    }
    if at < end {
        anonymous_rest(mem, r, at, end, facts, page, out);
    }
}

/// What neither a glibc heap, a stack, an image nor the Go layout explains: a large chunk by its
/// header, else memory known by layout only.
fn anonymous_rest(
    mem: &Memory,
    r: &Region,
    start: u64,
    end: u64,
    facts: &Facts,
    page: u64,
    out: &mut Vec<Attributed>,
) {
    let mut at = start;
    if r.perms.starts_with("rw") {
        for (s, e) in glibc::mmapped_chunks_in(mem, start, end, page) {
            if s > at {
                out.push(layout_only(r, at, s, facts));
            }
            let mut a = piece(
                r,
                s,
                e,
                Category::MallocLarge,
                format!("chunk header at {s:#x}: IS_MMAPPED, {} bytes", e - s),
            );
            a.cause = "malloc";
            out.push(a);
            at = e;
        }
    }
    if at < end {
        out.push(layout_only(r, at, end, facts));
    }
}

/// Anonymous memory `[at, end)` known by its layout only.
fn layout_only(r: &Region, at: u64, end: u64, facts: &Facts) -> Attributed {
    let goroutine = facts.threads.iter().find(|t| at <= t.sp && t.sp < end);
    let (c, ev) = match (&facts.go, goroutine) {
        (Some(v), Some(t)) => (
            Category::GoRuntime,
            format!(
                "layout only: a {v} program's memory; thread {}'s stack pointer is here (a goroutine or g0 stack)",
                t.tid
            ),
        ),
        (Some(v), None) => (
            Category::GoRuntime,
            format!(
                "layout only: anonymous memory of a {v} program that no glibc heap, chunk or thread stack explains"
            ),
        ),
        (None, _) => (
            Category::AnonMmap,
            "layout only: anonymous mapping (mmap) that no glibc heap, chunk header or thread stack explains"
                .into(),
        ),
    };
    piece(r, at, end, c, ev)
}

fn arena_rows(m: &Malloc, regions: &[Attributed]) -> Vec<ArenaRow> {
    let mut rows = vec![ArenaRow {
        id: None,
        address: m.main_arena.unwrap_or(0),
        creator: 0,
        tids: vec![],
        heaps: 0,
        bytes: 0,
    }];
    for (n, &a) in m.arenas.iter().enumerate() {
        rows.push(ArenaRow { id: Some(n + 1), address: a, creator: 0, tids: vec![], heaps: 0, bytes: 0 });
    }
    for (&tid, &a) in &m.thread_arena {
        let row = if Some(a) == m.main_arena {
            rows.first_mut()
        } else {
            rows.iter_mut().find(|r| r.id.is_some() && r.address == a)
        };
        if let Some(row) = row.filter(|_| a != 0) {
            row.tids.push(tid);
        }
    }
    for h in &m.heaps {
        let Some(row) = rows.iter_mut().find(|r| r.id.is_some() && r.address == h.ar_ptr) else { continue };
        row.heaps += 1;
        row.bytes += regions
            .iter()
            .filter(|r| {
                r.category == Category::MallocArena && h.base <= r.start && r.start < h.base + HEAP_MAX
            })
            .map(Attributed::size)
            .sum::<u64>();
    }
    // Who created an arena is not in memory: `creator` stays 0 (printed as unknown).
    for r in &mut rows {
        r.tids.sort_unstable();
    }
    // The main arena with no thread known to use it says nothing the brk heap does not.
    if rows[0].tids.is_empty() {
        rows.remove(0);
    }
    rows
}

fn thread_rows(facts: &Facts, regions: &[Attributed], arenas: &[ArenaRow]) -> Vec<ThreadRow> {
    let mut rows: Vec<ThreadRow> = facts
        .threads
        .iter()
        .map(|t| ThreadRow { tid: t.tid, name: facts.names.get(&t.tid).cloned(), ..ThreadRow::default() })
        .collect();
    for row in &mut rows {
        row.arenas = arenas.iter().filter(|a| a.tids.contains(&row.tid)).map(|a| a.id).collect();
        for r in regions.iter().filter(|r| r.tid == Some(row.tid)) {
            row.reserved_bytes += r.size();
            if matches!(r.category, Category::ThreadStack | Category::MainStack) {
                row.stack_bytes += r.size();
            }
        }
    }
    rows
}
