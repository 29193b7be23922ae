//! Attribution: every byte of the final address space gets a category, and where the trace
//! knows it, a thread and the call stack that caused it.
//!
//! The final address space is the kernel's own map at exit when `vmshim run` captured it, else
//! the replayed one. Each final region is cut into the pieces the replay explains (a recorded
//! call, or the initial snapshot) and the gaps it does not (mappings made inside glibc: thread
//! stacks, arenas, large malloc chunks, loader work). Gaps are classified from what the map
//! itself proves (path, permissions, adjacency, VmFlags) and the threads' reported stack
//! addresses; whatever no evidence explains is `unattributed`, listed, never dropped.

use crate::load::maps::{Perms, Region};
use crate::load::read::Recording;
use crate::replay::{Origin, Replay};
use crate::symbolize::{Frame, LoadedModule, Symbolizer};
use std::collections::{BTreeMap, HashMap};
use vmshim_trace::{CALL_FLAG_OWN, CallKind};

pub use super::arenas::ArenaRow;
use super::arenas::arena_rows;
use super::categories::{by_map, canonical};
// The attribution's vocabulary, named where attributions are used.
pub use super::categories::Category;
pub use super::threads::ThreadRow;
use super::threads::{StackOwner, thread_rows, thread_stacks};

/// A piece of the final address space with its cause.
#[derive(Clone, Debug)]
pub struct Attributed {
    pub start: u64,
    pub end: u64,
    pub perms: Perms,
    pub path: String,
    pub category: Category,
    /// The thread the bytes belong to: the caller of the recorded call, or the thread whose
    /// stack this is.
    pub tid: Option<u32>,
    /// For a thread stack: the thread that called pthread_create.
    pub creator_tid: Option<u32>,
    /// Absolute return addresses, innermost first: the recorded call's stack, or the creator's
    /// stack for a thread stack.
    pub stack: Vec<u64>,
    /// What made it: `mmap`, `mremap`, `pthread_create`, or `map` (known from the map alone).
    pub cause: &'static str,
    /// In a fork child: the piece came from the parent at the fork (the cause, thread and
    /// stack above are then the parent's).
    pub inherited: Option<Inherited>,
    /// For `go_runtime`: what Go reserved it for, in the runtime's own words
    /// ([`crate::analyze::gopurpose`]), from the kernel's name for the mapping or the asking function.
    pub purpose: Option<String>,
    /// What the category rests on, in words (`vmshim explain`: "heap_info at 0x.. -> arena #3",
    /// "thread 1240's stack pointer"); `None` in a trace report, whose evidence is the call.
    pub evidence: Option<String>,
}

/// One line of the Go runtime's reservations by purpose.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GoPurpose {
    pub purpose: String,
    pub bytes: u64,
    /// Readable or writable: committed, as opposed to a PROT_NONE reservation.
    pub rw_bytes: u64,
    pub regions: usize,
}

/// Where an inherited piece of a fork child came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Inherited {
    /// The parent's pid.
    pub pid: u32,
    /// The parent's thread the bytes belong to, when the parent's trace says.
    pub tid: Option<u32>,
    /// Whether the parent's trace was found (else only the child's own map explains it).
    pub parent_traced: bool,
}

/// What a fork child's report knows about the address space it got in the fork.
pub enum Inheritance {
    /// The parent's attribution of the child's start-up map, replayed from the parent's trace
    /// up to the fork: the parent's categories, threads and stacks, by address.
    Parent { pid: u32, regions: Vec<Attributed> },
    /// The parent left no trace in the run.
    NotTraced { ppid: u32 },
}

impl Attributed {
    /// `start..end` of the kernel's region `r`, filed under `category` on the map's word alone
    /// (no call, thread or stack yet).
    pub fn of_map(r: &Region, start: u64, end: u64, category: Category) -> Attributed {
        Attributed {
            start,
            end,
            perms: r.perms,
            path: r.path.clone(),
            category,
            tid: None,
            creator_tid: None,
            stack: vec![],
            cause: "map",
            inherited: None,
            purpose: None,
            evidence: None,
        }
    }

    pub fn size(&self) -> u64 {
        self.end - self.start
    }
}

pub struct Attribution {
    pub regions: Vec<Attributed>,
    pub threads: Vec<ThreadRow>,
    pub arenas: Vec<ArenaRow>,
    /// Bytes of the final address space.
    pub final_bytes: u64,
    /// The kernel's own VSZ at exit, when captured.
    pub kernel_final_bytes: Option<u64>,
    pub peak_bytes: u64,
    pub rss_bytes: Option<u64>,
    /// Of `rss_bytes`, the kernel's Rss of the final regions filed wholly under `vmshim` (its
    /// trace window, its image): what the tool itself costs in memory.
    pub vmshim_rss_bytes: Option<u64>,
}

impl Attribution {
    pub fn bytes_of(&self, c: Category) -> (u64, usize) {
        self.regions.iter().filter(|r| r.category == c).fold((0, 0), |(b, n), r| (b + r.size(), n + 1))
    }
    /// What no evidence explains: `unattributed`, and what a fork child got from an untraced
    /// parent.
    pub fn unexplained_bytes(&self) -> u64 {
        self.bytes_of(Category::Unattributed).0 + self.bytes_of(Category::Inherited).0
    }
    pub fn attributed_fraction(&self) -> f64 {
        if self.final_bytes == 0 {
            return 1.0;
        }
        1.0 - self.unexplained_bytes() as f64 / self.final_bytes as f64
    }
    /// The `go_runtime` regions by purpose, largest first.
    pub fn go_purposes(&self) -> Vec<GoPurpose> {
        let mut by: BTreeMap<&str, GoPurpose> = BTreeMap::new();
        for r in self.regions.iter().filter(|r| r.category == Category::GoRuntime) {
            let words = r.purpose.as_deref().unwrap_or("other");
            let row = by
                .entry(words)
                .or_insert_with(|| GoPurpose { purpose: words.to_owned(), ..Default::default() });
            row.bytes += r.size();
            if r.perms.contains('r') || r.perms.contains('w') {
                row.rw_bytes += r.size();
            }
            row.regions += 1;
        }
        let mut rows: Vec<GoPurpose> = by.into_values().collect();
        rows.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.purpose.cmp(&b.purpose)));
        rows
    }
    /// Bytes a fork child still has from its parent.
    pub fn inherited_bytes(&self) -> u64 {
        self.regions.iter().filter(|r| r.inherited.is_some()).map(Attributed::size).sum()
    }
}

/// Modules from the trace, plus ELF images the final map shows that the start-up list missed.
pub fn modules(rec: &Recording) -> Vec<LoadedModule> {
    let mut out: Vec<LoadedModule> = rec
        .modules
        .iter()
        .map(|m| LoadedModule {
            path: m.path.clone(),
            base: m.base,
            lo: m.lo,
            hi: m.hi,
            build_id: m.build_id.clone(),
        })
        .collect();
    let maps = rec.final_maps.iter().flatten().chain(&rec.initial_maps);
    // The process's own trace, which the shim maps, is not an ELF file: the report of the
    // 1,000-process loop opened each of a thousand traces to find that out (issue 12).
    let own_trace = rec.start.as_ref().map(|s| s.trace_path.as_str()).filter(|p| !p.is_empty());
    for r in maps {
        if r.is_file()
            && Some(r.file_path()) != own_trace
            && !out.iter().any(|m| m.lo <= r.start && r.start < m.hi)
            && let Some(m) = LoadedModule::from_mapped_file(r.file_path(), r.inode, r.start, r.offset)
        {
            out.push(m);
        }
    }
    out
}

/// Whether a recorded call came from Go's runtime, and if so what for (Go's words for it, or
/// `other (FUNCTION)`): a runtime function asked for it, the first named frame above the memory
/// primitives (frames are named by the binary's Go table even when it is stripped, so this does
/// not depend on a symbol such as `x_cgo_mmap` being present).
fn go_purpose(sym: &mut Symbolizer, stack: &[u64]) -> Option<String> {
    let frames: Vec<Frame> = stack.iter().flat_map(|&f| sym.symbolize(f, true)).collect();
    let names: Vec<Option<&str>> = frames.iter().map(|fr| fr.function.as_deref()).collect();
    crate::analyze::gopurpose::from_stack(&names).map(|(words, _)| words)
}

/// The parent's region at `at`, for a fork child's piece there.
fn inherited_piece(inh: &Inheritance, at: u64) -> Option<&Attributed> {
    match inh {
        Inheritance::Parent { regions, .. } => parent_piece(regions, at),
        Inheritance::NotTraced { .. } => None,
    }
}

/// The addresses a shim that read no start-up map wrote as the loader's (`loader.at`: the main
/// thread's TCB and DTV, 0 where unknown, then every link map), with what each one is.
fn loader_evidence(rec: &Recording) -> Vec<(u64, &'static str)> {
    let Some((_, v)) = rec.config.iter().find(|(k, _)| k == "loader.at") else { return vec![] };
    v.split(',')
        .filter_map(|h| u64::from_str_radix(h.trim(), 16).ok())
        .enumerate()
        .filter(|&(_, at)| at != 0)
        .map(|(i, at)| {
            let what = match i {
                0 => "holds the main thread's TCB (the loader's static TLS block)",
                1 => "holds the main thread's DTV (the loader's)",
                _ => "holds a link map (the loader's own allocation)",
            };
            (at, what)
        })
        .collect()
}

/// `inherited` is set for a fork child: the pieces its start-up map explains came from the
/// parent, and are attributed as the parent's.
pub fn attribute(
    rec: &Recording,
    replay: &Replay,
    sym: &mut Symbolizer,
    inherited: Option<&Inheritance>,
) -> Attribution {
    // Borrowed when the kernel's map is there: cloning it (a String or two per region) was half
    // of this function's time over the thousand processes of a shell loop's run (issue 12).
    let final_regions: std::borrow::Cow<[Region]> = match &rec.final_maps {
        Some(m) => std::borrow::Cow::Borrowed(m),
        None => std::borrow::Cow::Owned(replayed_regions(rec, replay)),
    };
    let pid = rec.start.as_ref().map_or(0, |s| s.pid);
    let trace_path = rec.start.as_ref().map(|s| s.trace_path.clone()).unwrap_or_default();
    let stacks = thread_stacks(rec, &final_regions);
    // Per recorded call: None when no Go runtime frame is on its stack, else the purpose.
    let mut go_stack: HashMap<usize, Option<String>> = HashMap::new();
    let shim_libs = shim_only_libraries(sym.modules());
    // The kernel merges an image's .bss with anonymous memory mapped right after it (the
    // loader's TLS block, say); an image's span ends at its last PT_LOAD, page-rounded.
    let page = rec.page_size();
    let module_ends: Vec<u64> =
        sym.modules().iter().map(|m| m.hi.div_ceil(page).saturating_mul(page)).collect();
    let brk_baseline = rec.calls.values().find(|c| c.call == CallKind::BrkGrow && c.args[0] == 0);
    let loader_at = if rec.initial_maps.is_empty() { loader_evidence(rec) } else { vec![] };
    let mut out = Vec::new();
    let mut vmshim_rss = 0;
    for (ri, r) in final_regions.iter().enumerate() {
        let first_piece = out.len();
        let mut pieces = cut_at_module_ends(replay.space.pieces(r.start, r.end), &module_ends);
        if let Some(Inheritance::Parent { regions, .. }) = inherited {
            pieces = cut_at_parent_regions(pieces, regions);
        }
        for (s, e, origin) in pieces {
            let mut a = Attributed::of_map(r, s, e, Category::Unattributed);
            // What the child's start-up map holds came from the parent at the fork. A child that
            // recorded nothing has no start-up map: what its map at exit shares with the
            // parent's at the fork came from the parent too (no recorded call made it since),
            // and the rest is explained as any other region.
            let from_start = match origin {
                Some(Origin::Initial(_)) => true,
                None => rec.initial_maps.is_empty(),
                Some(Origin::Call(_)) => false,
            };
            if let (true, Some(inh)) = (from_start, inherited)
                && (matches!(origin, Some(Origin::Initial(_))) || inherited_piece(inh, s).is_some())
            {
                let parent = match inh {
                    Inheritance::Parent { pid, regions } => parent_piece(regions, s).map(|p| (*pid, p)),
                    Inheritance::NotTraced { .. } => None,
                };
                match parent {
                    Some((pid, p)) => {
                        (a.category, a.tid, a.creator_tid) = (p.category, p.tid, p.creator_tid);
                        (a.stack, a.cause) = (p.stack.clone(), p.cause);
                        // What the parent had inherited itself names the process it came from.
                        a.inherited =
                            Some(p.inherited.unwrap_or(Inherited { pid, tid: p.tid, parent_traced: true }));
                    }
                    None => {
                        let ppid = match inh {
                            Inheritance::Parent { pid, .. } => *pid,
                            Inheritance::NotTraced { ppid } => *ppid,
                        };
                        a.category = if stacks.contains_key(&ri) {
                            Category::ThreadStack
                        } else {
                            match by_map(r, s, &trace_path, &shim_libs, sym) {
                                Category::Unattributed => Category::Inherited,
                                c => c,
                            }
                        };
                        a.cause = "fork";
                        a.inherited = Some(Inherited { pid: ppid, tid: None, parent_traced: false });
                    }
                }
                out.push(a);
                continue;
            }
            let call = match origin {
                Some(Origin::Call(i)) => rec.call(i).map(|c| (i, c)),
                _ => None,
            };
            // A recorded call explains this piece only if the map agrees on its kind: a file
            // mapping for a file-backed call, an anonymous one otherwise (glibc may have reused
            // the range without the hooks seeing it).
            let file_call = call.is_some_and(|(_, c)| {
                c.call == CallKind::Mmap && c.args[3] & libc::MAP_ANONYMOUS as u64 == 0
            });
            // Without the kernel's map the replayed regions carry no paths to compare. An arena
            // heap is mapped MAP_NORESERVE: where smaps shows flags, it must show that one.
            let arena_ok = call.is_none_or(|(_, c)| {
                c.call != CallKind::ArenaAttach || r.vm_flags.is_empty() || r.has_flag("nr")
            });
            // A loaded image spans file pages and its anonymous .bss alike.
            let image = call.is_some_and(|(_, c)| c.call == CallKind::ModuleLoad);
            let agrees = (rec.final_maps.is_none() || image || file_call == r.is_file()) && arena_ok;
            match call {
                Some((i, c)) if agrees => {
                    a.tid = Some(c.tid);
                    a.stack = c.stack.clone();
                    a.cause = cause_of(c);
                    a.category = if let Some(cat) = malloc_category(c.call) {
                        cat
                    } else if c.flags & CALL_FLAG_OWN != 0 || (r.is_file() && r.file_path() == trace_path) {
                        Category::Vmshim
                    } else if r.is_file() {
                        by_map(r, s, &trace_path, &shim_libs, sym)
                    } else if let Some(t) = recorded_stack(rec, c, stacks.get(&ri), sym) {
                        // Issue 15: the syscall recorder sees libc map a thread's stack; the
                        // thread that started on it owns it, the mapping call says who made it.
                        (a.tid, a.creator_tid) = (t.tid, t.creator);
                        a.cause = "pthread_create";
                        Category::ThreadStack
                    } else if let Some(purpose) =
                        go_stack.entry(i).or_insert_with(|| go_purpose(sym, &c.stack))
                    {
                        // The kernel's own name for the mapping (Go >= 1.25 names it) wins, and
                        // the region says that is where its purpose came from.
                        a.purpose = Some(match crate::analyze::gopurpose::from_kernel_name(&r.path) {
                            Some(words) => {
                                a.evidence = Some(format!("kernel name {}", r.path));
                                words
                            }
                            None => purpose.clone(),
                        });
                        Category::GoRuntime
                    } else {
                        Category::AnonMmap
                    };
                }
                _ => {
                    if let Some(t) = stacks.get(&ri) {
                        a.category = Category::ThreadStack;
                        a.tid = t.tid;
                        a.creator_tid = t.creator;
                        a.stack = t.creator_stack.clone();
                        a.cause = if t.tid.is_some() { "pthread_create" } else { "map" };
                    } else {
                        a.category = by_map(r, s, &trace_path, &shim_libs, sym);
                        match a.category {
                            Category::MainStack => a.tid = Some(pid),
                            // The heap as it stood before any growth the hooks saw: the first
                            // main-arena allocation found it there.
                            Category::BrkHeap => {
                                if let Some(c) = brk_baseline {
                                    a.tid = Some(c.tid);
                                    a.stack = c.stack.clone();
                                    a.cause = cause_of(c);
                                }
                            }
                            // Anonymous memory the loader made before the shim could watch
                            // (static TLS, its own allocations) is part of loading libraries.
                            Category::Unattributed if matches!(origin, Some(Origin::Initial(_))) => {
                                a.category = Category::Library;
                                a.cause = "loader";
                            }
                            // Without a start-up map (the image recorded nothing, so the shim
                            // never read one), only a region that holds what the loader
                            // allocated is known to be its.
                            Category::Unattributed if origin.is_none() => {
                                if let Some(what) = loader_at.iter().find(|(at, _)| (s..e).contains(at)) {
                                    a.category = Category::Library;
                                    a.cause = "loader";
                                    a.evidence = Some(what.1.to_string());
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
            out.push(a);
        }
        let pieces = &out[first_piece..];
        if !pieces.is_empty() && pieces.iter().all(|a: &Attributed| a.category == Category::Vmshim) {
            vmshim_rss += r.rss.unwrap_or(0);
        }
    }
    let out = merge_adjacent(out);
    let final_bytes: u64 = final_regions.iter().map(Region::size).sum();
    // A map read as `maps` carries no Rss by region: statm's total stands, and vmshim's own
    // share of it is not known.
    let by_region = rec.final_maps.as_ref().filter(|_| rec.final_statm_rss.is_none());
    let rss_bytes = by_region.map(|m| m.iter().filter_map(|r| r.rss).sum()).or(rec.final_statm_rss);
    let arenas = arena_rows(rec, &out);
    let threads = thread_rows(rec, &out, &arenas);
    // The replay sees only what the hooks saw; mappings made inside glibc exist on top of it.
    let unseen = final_bytes.saturating_sub(replay.space.total());
    Attribution {
        threads,
        arenas,
        final_bytes,
        kernel_final_bytes: rec.final_maps.as_ref().map(|m| crate::load::maps::vsz(m)),
        peak_bytes: (replay.peak + unseen).max(final_bytes),
        rss_bytes,
        vmshim_rss_bytes: by_region.map(|_| vmshim_rss),
        regions: out,
    }
}

/// The function the program called: the hooked call itself, or for an event inferred from
/// malloc's chunks, the malloc-family function it was seen in.
pub fn cause_of(c: &vmshim_trace::decode::Call) -> &'static str {
    if c.call == CallKind::ModuleLoad {
        return vmshim_trace::LOADING_FUNCTIONS.get(c.args[3] as usize).copied().unwrap_or("dlopen");
    }
    if malloc_category(c.call).is_none() && c.call != CallKind::FreeLarge {
        return c.call.name();
    }
    let via = c.args[c.call.params().len() - 1] as usize;
    vmshim_trace::MALLOC_FUNCTIONS.get(via).copied().unwrap_or("malloc")
}

/// The category of an event inferred from malloc's chunks.
fn malloc_category(call: CallKind) -> Option<Category> {
    match call {
        CallKind::ArenaAttach => Some(Category::MallocArena),
        CallKind::MallocLarge => Some(Category::MallocLarge),
        CallKind::BrkGrow => Some(Category::BrkHeap),
        CallKind::ModuleLoad => Some(Category::Library),
        _ => None,
    }
}

/// The DT_NEEDED names of an ELF file (empty if it cannot be read). A run's processes share
/// their libraries: each file is read once per `vmshim` command.
fn needed_libraries(path: &str) -> Vec<String> {
    type Cache = std::sync::Mutex<HashMap<String, Vec<String>>>;
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(v) = cache.lock().ok().and_then(|c| c.get(path).cloned()) {
        return v;
    }
    let v = read_needed_libraries(path);
    if let Ok(mut c) = cache.lock() {
        c.insert(path.to_string(), v.clone());
    }
    v
}

/// Reads the headers, `.dynamic` and its string table only: the whole of every library a run
/// maps (the shim's own, with its line tables, is 5 MiB) was read for a few names (issue 12).
fn read_needed_libraries(path: &str) -> Vec<String> {
    use object::read::elf::ElfFile64;
    let Ok(file) = std::fs::File::open(path) else { return vec![] };
    let data = object::ReadCache::new(file);
    let Ok(elf) = ElfFile64::<object::Endianness, _>::parse(&data) else { return vec![] };
    let Ok(table) = elf.elf_section_table().dynamic_table(elf.endian(), &data) else { return vec![] };
    table
        .iter()
        .filter(|d| d.tag == object::elf::DT_NEEDED)
        .filter_map(|d| table.string(d).ok())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Paths of libraries that only the shim needed (libgcc_s for its unwinder, when the program
/// does not use it itself): loaded because of vmshim, so they are its cost.
fn shim_only_libraries(modules: &[LoadedModule]) -> Vec<String> {
    let is_shim = |p: &str| p.ends_with("/libvmshim.so");
    let file_name = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
    let Some(shim) = modules.iter().find(|m| is_shim(&m.path)) else { return vec![] };
    let others: Vec<String> =
        modules.iter().filter(|m| !is_shim(&m.path)).flat_map(|m| needed_libraries(&m.path)).collect();
    let only: Vec<String> =
        needed_libraries(&shim.path).into_iter().filter(|n| !others.contains(n)).collect();
    modules.iter().filter(|m| only.contains(&file_name(&m.path))).map(|m| canonical(&m.path)).collect()
}

/// Splits the start-up map's pieces where the parent's attribution of them changes.
fn cut_at_parent_regions(
    pieces: Vec<(u64, u64, Option<Origin>)>,
    parent: &[Attributed],
) -> Vec<(u64, u64, Option<Origin>)> {
    let mut out = Vec::with_capacity(pieces.len());
    for (s, e, o) in pieces {
        if !matches!(o, Some(Origin::Initial(_))) {
            out.push((s, e, o));
            continue;
        }
        let mut at = s;
        let first = parent.partition_point(|p| p.end <= s);
        for p in parent[first..].iter().take_while(|p| p.start < e) {
            for cut in [p.start, p.end] {
                if cut > at && cut < e {
                    out.push((at, cut, o));
                    at = cut;
                }
            }
        }
        out.push((at, e, o));
    }
    out
}

/// The parent's attributed piece that holds `addr` (the parent's regions are in address order).
fn parent_piece(parent: &[Attributed], addr: u64) -> Option<&Attributed> {
    let i = parent.partition_point(|p| p.end <= addr);
    parent.get(i).filter(|p| p.start <= addr)
}

/// Splits pieces at module span ends, so that an image's .bss and whatever the kernel merged
/// after it are classified apart.
fn cut_at_module_ends(
    pieces: Vec<(u64, u64, Option<Origin>)>,
    ends: &[u64],
) -> Vec<(u64, u64, Option<Origin>)> {
    let mut out = Vec::with_capacity(pieces.len());
    for (s, e, o) in pieces {
        let mut at = s;
        let mut cuts: Vec<u64> = ends.iter().copied().filter(|&x| x > s && x < e).collect();
        cuts.sort_unstable();
        for c in cuts {
            out.push((at, c, o));
            at = c;
        }
        out.push((at, e, o));
    }
    out
}

/// The thread whose stack a region mapped by a call `c` is, in a trace of the syscall recorder
/// (where libc's own stack mappings are recorded calls): a thread started on it, and the call
/// is an anonymous mmap made outside the Go runtime (a Go thread's stack lies in the Go heap).
fn recorded_stack<'s>(
    rec: &Recording,
    c: &vmshim_trace::decode::Call,
    owner: Option<&'s StackOwner>,
    sym: &mut Symbolizer,
) -> Option<&'s StackOwner> {
    let anon = c.call == CallKind::Mmap && c.args[3] & libc::MAP_ANONYMOUS as u64 != 0;
    (crate::launch::recorder::recorded(rec) && anon && owner.is_some_and(|o| o.tid.is_some()))
        .then_some(owner)
        .flatten()
        .filter(|_| go_purpose(sym, &c.stack).is_none())
}

/// The address space the replay arrived at, for traces without the kernel's final map.
fn replayed_regions(rec: &Recording, replay: &Replay) -> Vec<Region> {
    replay
        .space
        .iter()
        .map(|(s, e, o)| match o {
            Origin::Initial(i) => {
                Region { start: s, end: e, ..rec.initial_maps.get(i).cloned().unwrap_or_default() }
            }
            Origin::Call(i) => {
                let args = rec.call(i).map_or([0; 6], |c| c.args);
                Region { start: s, end: e, perms: Perms::of_prot(args[2], args[3]), ..Region::default() }
            }
        })
        .collect()
}

/// Joins neighbours with the same cause and kernel permissions (one mmap that the map shows
/// as one region, cut only by replay bookkeeping).
fn merge_adjacent(v: Vec<Attributed>) -> Vec<Attributed> {
    let mut out: Vec<Attributed> = Vec::with_capacity(v.len());
    for a in v {
        if let Some(last) = out.last_mut()
            && last.end == a.start
            && last.category == a.category
            && last.tid == a.tid
            && last.perms == a.perms
            && last.path == a.path
            && last.stack == a.stack
            && last.inherited == a.inherited
        {
            last.end = a.end;
            continue;
        }
        out.push(a);
    }
    out
}
