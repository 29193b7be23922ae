//! The analysis of one process of a run, computed once for every renderer: its image read and
//! replayed, what it inherited in a fork, attributed; where the image stands in its process
//! (exec'd images, a final image without the shim); and the figures of the run's process
//! table. Renderers take these values and compute nothing.
//!
//! A fork child's start-up map is the parent's address space at the fork: the parent's trace
//! (the image that was running then) is replayed up to the fork's time and attributed against
//! that map, so what the child inherited keeps the parent's category, thread and stack. The
//! parent may itself be a fork child: its own inheritance is worked out the same way first.

pub mod advice;
pub mod arenas;
pub mod attribute;
pub mod categories;
pub mod dns;
pub mod gopurpose;
pub mod processes;
pub mod stacks;
pub mod threads;

use crate::load::maps::Region;
use crate::load::read::{self, ReadError, Recording};
use crate::load::tree::{self, EXEC_STATUS, Run};
use crate::symbolize::{Frame, Symbolizer};
use attribute::{Attributed, Attribution, Category, Inheritance};
use processes::Row;
use std::cell::RefCell;
use std::path::{Path, PathBuf};

/// One image read, replayed and attributed, with its place in its process: what every process
/// of a run gets (its row of the process table comes from it). [`Analysis::new`] completes the
/// one a report shows.
pub struct Image {
    pub rec: Recording,
    pub attr: Attribution,
    pub sym: Symbolizer,
    /// VSZ over time as the hooks saw it.
    pub series: Vec<(u64, u64)>,
    pub context: Context,
}

/// What a report shows, computed once: one image's attribution, and every figure and verdict the
/// renderers print (categories, Go purposes, call stacks, advice, DNS, the process table). A
/// renderer takes this and options and computes nothing.
///
/// Names for addresses are looked up on demand ([`Analysis::frames`]) and remembered by the
/// symbolizer: the text report prints a few stacks, and naming every region's stack up front
/// would read the DWARF of libraries it never names.
pub struct Analysis {
    pub rec: Recording,
    pub attr: Attribution,
    sym: RefCell<Symbolizer>,
    /// VSZ over time as the hooks saw it.
    pub series: Vec<(u64, u64)>,
    pub context: Context,
    /// Every category with its bytes and regions, in [`Category::ALL`]'s order (zeros included).
    pub categories: Vec<(Category, u64, usize)>,
    pub go_runtime: Vec<attribute::GoPurpose>,
    /// Every call stack group, largest first.
    pub top_stacks: Vec<stacks::StackGroup>,
    pub advice: Vec<advice::Advice>,
    pub dns: dns::Dns,
    /// Hooked functions another library took ahead of the shim: (library, functions).
    pub shadowed: Vec<(String, Vec<String>)>,
    /// Bytes a fork child still has from its parent.
    pub inherited_bytes: u64,
    /// `unattributed` and what came from an untraced parent.
    pub unexplained_bytes: u64,
    pub attributed_fraction: f64,
    /// Every process of the run, in tree order (empty for a section of `--tree`).
    pub processes: Vec<Row>,
    /// The trace that `vmshim report` gives every section from (the text's process table says
    /// how to ask for one); empty when no table is shown.
    pub run_trace: String,
}

impl Analysis {
    /// Completes `image`'s analysis for a report that lists `processes`.
    pub fn new(image: Image, processes: Vec<Row>) -> Analysis {
        let Image { rec, attr, mut sym, series, context } = image;
        let categories = Category::ALL
            .iter()
            .map(|&c| {
                let (b, n) = attr.bytes_of(c);
                (c, b, n)
            })
            .collect();
        let dns = dns::analyse(&rec, &mut sym);
        Analysis {
            categories,
            go_runtime: attr.go_purposes(),
            top_stacks: stacks::top_stacks(&attr),
            advice: advice::advise(&attr),
            dns,
            shadowed: rec.shadowed(),
            inherited_bytes: attr.inherited_bytes(),
            unexplained_bytes: attr.unexplained_bytes(),
            attributed_fraction: attr.attributed_fraction(),
            processes,
            run_trace: String::new(),
            rec,
            attr,
            sym: RefCell::new(sym),
            series,
            context,
        }
    }

    /// Bytes and regions of category `c`.
    pub fn bytes_of(&self, c: Category) -> (u64, usize) {
        self.categories.iter().find(|x| x.0 == c).map_or((0, 0), |&(_, b, n)| (b, n))
    }

    /// The symbolized frames of a stack of return addresses, innermost first (inlined frames
    /// included).
    pub fn frames(&self, stack: &[u64]) -> Vec<Frame> {
        let mut sym = self.sym.borrow_mut();
        stack.iter().flat_map(|&a| sym.symbolize(a, true)).collect()
    }

    /// The load bias of the module that holds `addr`.
    pub fn module_base(&self, addr: u64) -> Option<u64> {
        self.sym.borrow().module_of(addr).map(|m| m.base)
    }
}

/// What the report says about where the analysed image stands.
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// Every image of the process, in order (a final image without the shim included).
    pub images: Vec<ImageLine>,
    /// Which of them this analysis is.
    pub image: usize,
    /// For the first image of a fork child: its parent, and whether the parent's trace was found.
    pub fork_of: Option<ForkOf>,
    /// The process's last image has no shim in it (a static program, or LD_PRELOAD ignored).
    pub untraced_final: Option<Untraced>,
    /// A process still running, explained from outside (`vmshim explain`): the kernel's map was
    /// read now, not at an exit, and no call was recorded.
    pub live: bool,
    /// `vmshim explain` of a Go program: its goroutines, as read from `runtime.allgs`.
    pub goroutines: Option<Goroutines>,
}

/// A live Go program's goroutines (`vmshim explain`), grouped by what they are doing now.
#[derive(Clone, Debug, Default)]
pub struct Goroutines {
    /// How `runtime.allgs` and `runtime.g`'s layout were found, or why the goroutines were not
    /// read (then every figure below is zero).
    pub how: String,
    pub read: bool,
    /// Goroutines that are not dead, and of them those the runtime starts for itself (their
    /// start function is in package runtime; what `runtime.NumGoroutine` leaves out).
    pub live: usize,
    pub system: usize,
    /// Dead g's (kept on free lists for reuse, or an extra M's g).
    pub dead: usize,
    /// Bytes of the stacks of live goroutines, and of dead g's that keep theirs.
    pub stack_bytes: u64,
    pub dead_stack_bytes: u64,
    /// Of the stacks' bytes, those inside the Go heap's mappings.
    pub in_go_heap_bytes: u64,
    /// Live goroutines with the same status and top frames, most first.
    pub groups: Vec<GoroutineGroup>,
}

#[derive(Clone, Debug, Default)]
pub struct GoroutineGroup {
    pub count: usize,
    pub status: &'static str,
    pub system: bool,
    /// The function each was started with.
    pub start: String,
    /// Innermost first: the pc, then return addresses.
    pub stack: Vec<u64>,
    /// Their goids, lowest first (at most 100).
    pub goids: Vec<u64>,
}

#[derive(Clone, Debug)]
pub struct ImageLine {
    pub exe: String,
    /// Its trace; `None` for an image the shim was not in.
    pub trace: Option<PathBuf>,
    /// How the image ended: `exited 0`, `killed by SIGKILL`, `exec'd PATH`, `not observed`.
    pub ended: String,
}

#[derive(Clone, Copy, Debug)]
pub struct ForkOf {
    pub ppid: u32,
    /// The parent's thread that called fork.
    pub tid: u32,
    pub parent_traced: bool,
}

#[derive(Clone, Debug)]
pub struct Untraced {
    pub exe: String,
    /// Whether the file has no PT_INTERP (unknown when it cannot be read now).
    pub statically_linked: Option<bool>,
    /// Whether the kernel's map at exit is this image's (else only the exec was seen).
    pub map_known: bool,
}

/// How many generations of fork parents are replayed for one child's inheritance.
const MAX_GENERATIONS: usize = 32;

/// How an image ended, in words.
fn ended(exit: Option<&vmshim_trace::decode::Exit>) -> String {
    exit.map_or("not observed".to_string(), |e| e.how.clone())
}

/// Whether the image whose map this is was recorded: the shim is in it, or (issue 15) the
/// syscall recorder wrote `rec` from outside.
fn has_shim(map: &[Region], rec: &Recording) -> bool {
    crate::launch::recorder::recorded(rec) || map.iter().any(|r| r.file_path().ends_with("/libvmshim.so"))
}

/// Whether the ELF file at `path` has no PT_INTERP (64-bit little-endian files only).
fn statically_linked(path: &str) -> Option<bool> {
    use std::io::Read;
    const PT_INTERP: u32 = 3;
    let mut head = vec![0u8; 64 << 10];
    let n = std::fs::File::open(path).and_then(|mut f| f.read(&mut head)).ok()?;
    let head = &head[..n];
    if head.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let word = |at: usize, len: usize| {
        head.get(at..at + len).map(|b| b.iter().rev().fold(0u64, |v, &x| v << 8 | x as u64))
    };
    let (phoff, phentsize, phnum) =
        (word(0x20, 8)? as usize, word(0x36, 2)? as usize, word(0x38, 2)? as usize);
    if phentsize < 4 {
        return None;
    }
    let mut interp = false;
    for i in 0..phnum {
        interp |= word(phoff.checked_add(i.checked_mul(phentsize)?)?, 4)? as u32 == PT_INTERP;
    }
    Some(!interp)
}

/// The executable of a map: its first file-backed region from offset 0 (the lowest image).
fn exe_of_map(map: &[Region]) -> String {
    map.iter().find(|r| r.is_file() && r.offset == 0).map_or("?".to_string(), |r| r.file_path().to_string())
}

/// How far into a trace [`name_ahead`] looks for recorded stacks.
const AHEAD_BYTES: u64 = 1 << 20;

/// Reads, on this thread, the debug information that naming `trace`'s stacks will take: that of
/// the modules its recorded stacks (in its first MiB) return into. The symbolizer keeps it for
/// the rest of the command on this thread, so a report that calls this while the run is being
/// listed has it when the analysis asks (issue 12: libc's DWARF, the longest single piece of
/// reporting a 1,000-process loop, began only after the listing). Nothing is named and nothing
/// is reported here: a trace that cannot be read leaves nothing read ahead. Whether the trace
/// held stacks to read ahead for (a trace still being written may not yet).
pub fn name_ahead(trace: &Path) -> bool {
    let Ok(mut stream) = read::open(trace) else { return false };
    let mut modules = Vec::new();
    let mut stacks = Vec::new();
    while stream.position() < AHEAD_BYTES
        && let Ok(Some(event)) = read::next(&mut stream, trace)
    {
        match event {
            vmshim_trace::Event::Module(m) => modules.push(crate::symbolize::LoadedModule {
                path: m.path,
                base: m.base,
                lo: m.lo,
                hi: m.hi,
                build_id: m.build_id,
            }),
            vmshim_trace::Event::Call(c) => stacks.extend(c.stack),
            _ => {}
        }
    }
    stacks.sort_unstable();
    stacks.dedup();
    if modules.is_empty() || stacks.is_empty() {
        return false;
    }
    Symbolizer::new(modules).read_ahead(&stacks);
    true
}

/// The analysis of the given trace's own image, with what it inherited when it began in a fork.
pub fn of_trace(trace: &Path) -> Result<Image, ReadError> {
    match tree::find(trace) {
        Some(run) => Ok(of_image(&run, run.chosen, run.chosen_image, None)?),
        None => of_image_alone(trace, None),
    }
}

/// The analysis of a trace outside any run listing (no start record: `load` says why).
pub fn of_image_alone(trace: &Path, fin: Option<read::Final>) -> Result<Image, ReadError> {
    let mut rec = read::load(trace)?;
    if let Some(fin) = fin {
        fin.apply(&mut rec);
    }
    warn_cut(&rec, trace);
    let replay = std::mem::take(&mut rec.replay);
    let mut sym = Symbolizer::new(attribute::modules(&rec));
    let attr = attribute::attribute(&rec, &replay, &mut sym, None);
    Ok(Image { rec, attr, sym, series: replay.series, context: Context::default() })
}

fn warn_cut(rec: &Recording, trace: &Path) {
    if let Some((len, cursor)) = rec.truncated {
        eprintln!(
            "vmshim: warning: {} is cut short ({len} of the {cursor} bytes written): reporting what comes before the cut",
            trace.display()
        );
    }
}

/// Reads image `image` of process `p`, with `fin` (what `vmshim run` could not add to the
/// file) when it is the last image.
fn load_image(run: &Run, p: usize, image: usize, fin: Option<read::Final>) -> Result<Recording, ReadError> {
    let proc_ = &run.processes[p];
    let trace = &proc_.images[image].trace;
    let mut rec = read::load(trace)?;
    if let Some(fin) = fin.filter(|_| image + 1 == proc_.images.len()) {
        fin.apply(&mut rec);
    }
    warn_cut(&rec, trace);
    Ok(rec)
}

/// The analysis that answers for process `p`: its last image, or the final image after it that
/// the shim was not in, when the kernel's map at exit is that image's.
pub fn answer(run: &Run, p: usize, fin: Option<read::Final>) -> Result<Image, ReadError> {
    let last = run.processes[p].images.len() - 1;
    let rec = load_image(run, p, last, fin)?;
    if rec.final_maps.as_deref().is_some_and(|m| !has_shim(m, &rec)) {
        return Ok(untraced_final(run, p, rec));
    }
    Ok(analyse(run, p, last, rec, None))
}

/// The analysis of image `image` of process `p`.
pub fn of_image(run: &Run, p: usize, image: usize, fin: Option<read::Final>) -> Result<Image, ReadError> {
    let last = run.processes[p].images.len() - 1;
    let rec = load_image(run, p, image, fin)?;
    let last_rec = if image == last { None } else { read::load(&run.processes[p].images[last].trace).ok() };
    Ok(analyse(run, p, image, rec, last_rec.as_ref()))
}

/// Attributes a loaded image; `last_rec` is the process's last image when that is another one.
fn analyse(run: &Run, p: usize, image: usize, mut rec: Recording, last_rec: Option<&Recording>) -> Image {
    let proc_ = &run.processes[p];
    let mut context = context_of(run, p, last_rec.unwrap_or(&rec));
    context.image = image;
    // A map at exit without the shim in it is a later image's (the shim is in every image it
    // traced): this image is replayed from its own calls.
    if rec.final_maps.as_deref().is_some_and(|m| !has_shim(m, &rec)) {
        rec.final_maps = None;
    }
    let replay = std::mem::take(&mut rec.replay);
    let mut sym = Symbolizer::new(attribute::modules(&rec));
    // A fork child that recorded nothing read no start-up map (the shim leaves it for the first
    // recorded call under the exit watcher): its map at exit is what it could have inherited.
    let start_map = match (&rec.final_maps, rec.initial_maps.is_empty()) {
        (Some(at_exit), true) => at_exit,
        _ => &rec.initial_maps,
    };
    let inheritance = if image == 0 { inheritance(run, p, start_map, &mut sym, 0) } else { None };
    if let Some(inh) = &inheritance {
        context.fork_of = proc_.fork().map(|f| ForkOf {
            ppid: proc_.ppid,
            tid: f.parent_tid,
            parent_traced: matches!(inh, Inheritance::Parent { .. }),
        });
    }
    let attr = attribute::attribute(&rec, &replay, &mut sym, inheritance.as_ref());
    Image { rec, attr, sym, series: replay.series, context }
}

/// The final image the shim was not in, explained by the kernel's map at exit alone (`full`,
/// the last traced image's recording, holds that map).
fn untraced_final(run: &Run, p: usize, mut full: Recording) -> Image {
    let mut context = context_of(run, p, &full);
    context.image = context.images.len() - 1;
    let map = full.final_maps.take().unwrap_or_default();
    let mut start = full.start.take();
    if let Some(s) = &mut start {
        s.exe = exe_of_map(&map);
        s.argv = vec![];
    }
    // Nothing recorded: only what the map proves (images, heap, stacks) is explained.
    let rec = Recording {
        start,
        final_maps: Some(map),
        exit: full.exit.take(),
        thread_names: std::mem::take(&mut full.thread_names),
        ..Recording::default()
    };
    let replay = crate::replay::Replay::default();
    let mut sym = Symbolizer::new(attribute::modules(&rec));
    let attr = attribute::attribute(&rec, &replay, &mut sym, None);
    Image { rec, attr, sym, series: vec![], context }
}

/// The images of process `p` for the report, with the final untraced one when `last` (the
/// last traced image's recording) shows it.
fn context_of(run: &Run, p: usize, last_seen: &Recording) -> Context {
    let proc_ = &run.processes[p];
    let mut images: Vec<ImageLine> = proc_
        .images
        .iter()
        .enumerate()
        .map(|(i, img)| {
            let exit =
                if i + 1 == proc_.images.len() { last_seen.exit.clone() } else { run.exit_of(&img.trace) };
            ImageLine {
                exe: img.start.exe.clone(),
                trace: Some(img.trace.clone()),
                ended: match exit.as_ref() {
                    None if i + 1 < proc_.images.len() => format!("exec'd {}", proc_.images[i + 1].start.exe),
                    e => ended(e),
                },
            }
        })
        .collect();
    let mut untraced = None;
    if let Some(map) = last_seen.final_maps.as_deref().filter(|m| !has_shim(m, last_seen)) {
        let exe = exe_of_map(map);
        untraced =
            Some(Untraced { statically_linked: statically_linked(&exe), exe: exe.clone(), map_known: true });
        if let Some(l) = images.last_mut() {
            l.ended = format!("exec'd {exe}");
        }
        images.push(ImageLine { exe, trace: None, ended: ended(last_seen.exit.as_ref()) });
    } else if let Some(e) = last_seen.exit.as_ref().filter(|e| e.raw_status == EXEC_STATUS) {
        let exe = e.how.strip_prefix("exec'd ").unwrap_or(&e.how).to_string();
        untraced =
            Some(Untraced { statically_linked: statically_linked(&exe), exe: exe.clone(), map_known: false });
        images.push(ImageLine { exe, trace: None, ended: "not observed".to_string() });
    }
    Context { images, image: 0, fork_of: None, untraced_final: untraced, live: false, goroutines: None }
}

/// What the first image of process `p` got in its fork, by address over `map` (its start-up
/// map, the parent's address space at the fork). `None` for a process that did not begin in a
/// fork.
fn inheritance(
    run: &Run,
    p: usize,
    map: &[Region],
    sym: &mut Symbolizer,
    generation: usize,
) -> Option<Inheritance> {
    let proc_ = &run.processes[p];
    let fork = proc_.fork()?;
    let not_traced = Inheritance::NotTraced { ppid: proc_.ppid };
    let (Some((parent, img)), true) = (run.forking_image(p), generation < MAX_GENERATIONS) else {
        return Some(not_traced);
    };
    let Ok(mut prec) = read::load_until(&img.trace, Some(fork.mono_ns)) else { return Some(not_traced) };
    let parent_index = proc_.parent?;
    let first_image = std::ptr::eq(img, parent.first());
    // The parent's own inheritance, over the same map (what it still had from its own parent).
    // A parent that recorded nothing before this fork read no start-up map: the child's map
    // stands for what it had then.
    let parent_map = if prec.initial_maps.is_empty() { map } else { &prec.initial_maps };
    let grand =
        if first_image { inheritance(run, parent_index, parent_map, sym, generation + 1) } else { None };
    prec.final_maps = Some(map.to_vec());
    let replay = std::mem::take(&mut prec.replay);
    let attr = attribute::attribute(&prec, &replay, sym, grand.as_ref());
    let mut regions: Vec<Attributed> = attr.regions;
    regions.sort_by_key(|r| r.start);
    Some(Inheritance::Parent { pid: parent.pid, regions })
}
