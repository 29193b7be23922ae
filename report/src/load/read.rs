//! Reading a trace file into the pieces the later stages use, and appending what `vmshim run`
//! learns after the target is gone (the kernel's final map, the exit status).

use crate::load::maps::{self, Region};
use crate::replay::{Replay, Replayer};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use vmshim_trace::decode::{Call, Exit, Module, Resolve, Start, ThreadStart};
use vmshim_trace::record::maps::MapsRecord;
use vmshim_trace::record::{exit, thread_name};
use vmshim_trace::{CallKind, Stream};
use vmshim_trace::{Event, HEADER_SIZE, MapsSource, header};

/// A trace, sorted into what each stage needs, with its calls already replayed. Only the
/// calls that can still matter are kept: those that explain a range still mapped at the end,
/// and the few kinds later stages read in full (arena attachments, library loads, thread
/// creations, the first look at the brk heap). Memory is bounded by live regions and distinct
/// stacks, not by the number of events.
#[derive(Default)]
pub struct Recording {
    pub start: Option<Start>,
    pub initial_maps: Vec<Region>,
    /// The kernel's own map at exit (smaps), when `vmshim run` captured it.
    pub final_maps: Option<Vec<Region>>,
    /// The kernel's resident bytes at exit, from `/proc/PID/statm`, when the map at exit was
    /// read as `maps` (no `Rss:` by region): a process of the shim that recorded nothing.
    pub final_statm_rss: Option<u64>,
    pub modules: Vec<Module>,
    /// Kept calls by their number among all calls.
    pub calls: BTreeMap<usize, Call>,
    /// The position of each kept call among all events (to order them against `resolves`).
    pub call_seq: BTreeMap<usize, usize>,
    /// Every thread that made a recorded call.
    pub call_tids: BTreeSet<u32>,
    /// All calls replayed over the initial map.
    pub replay: Replay,
    /// Resolver calls with their position among all events.
    pub resolves: Vec<(usize, Resolve)>,
    /// What steered name resolution at start (`key`, `value`).
    pub config: Vec<(String, String)>,
    pub threads: Vec<ThreadStart>,
    pub exit: Option<Exit>,
    /// Thread names the kernel had at exit, by tid.
    pub thread_names: std::collections::HashMap<u32, String>,
    pub recorded: u64,
    pub dropped: u64,
    pub torn: u64,
    /// Calls whose stack record was lost (torn or damaged).
    pub unresolved_stacks: u64,
    /// The file is shorter than the header says was written: (file length, bytes written).
    /// The records before the cut are read.
    pub truncated: Option<(u64, u64)>,
    /// The shim's own cost: nanoseconds spent recording `timed` events.
    pub recording_ns: u64,
    pub timed: u64,
}

impl Recording {
    /// The page size its Start record gives (4096 before it is read).
    pub fn page_size(&self) -> u64 {
        self.start.as_ref().map_or(4096, |s| s.page_size.max(1) as u64)
    }

    pub fn call(&self, i: usize) -> Option<&Call> {
        self.calls.get(&i)
    }

    /// The hooked functions another library took ahead of the shim (its start-up found them in
    /// the loader's order), grouped by that library: (library, functions).
    pub fn shadowed(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for (k, lib) in &self.config {
            let Some(f) = k.strip_prefix("shadowed.") else { continue };
            match out.iter_mut().find(|(l, _)| l == lib) {
                Some((_, fs)) => fs.push(f.to_string()),
                None => out.push((lib.clone(), vec![f.to_string()])),
            }
        }
        out
    }
}

/// Why a trace could not be used; `main` turns it into exit code 2.
#[derive(Debug)]
pub struct ReadError(pub String);

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Opens a trace for reading event by event.
pub fn open(path: &Path) -> Result<Stream<Source>, ReadError> {
    let cannot = |e: std::io::Error| ReadError(format!("cannot read trace {}: {e}", path.display()));
    let (src, len) = match written(path) {
        Some(bytes) => {
            let len = bytes.len() as u64;
            (Source::Written(std::io::Cursor::new(bytes)), len)
        }
        None => {
            let f = fs::File::open(path).map_err(cannot)?;
            let len = f.metadata().map_err(cannot)?.len();
            (Source::File(f), len)
        }
    };
    Stream::new(src, len).map_err(|e| ReadError(format!("{}: corrupt trace: {e}", path.display())))
}

/// Where a trace is read from: its file, or the bytes this process wrote to it
/// ([`remember_written`]).
pub enum Source {
    File(fs::File),
    Written(std::io::Cursor<Arc<[u8]>>),
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Source::File(f) => f.read(buf),
            Source::Written(c) => c.read(buf),
        }
    }
}

/// Traces this process wrote whole and has not changed since, by path, with their bytes.
/// `vmshim run` writes the trace of every image that recorded nothing (a thousand in the
/// 1,000-process loop), and its listing and report read each back at once, five system calls
/// each (issue 12); they read these bytes instead. At most [`WRITTEN_BYTES`] are kept: past
/// that, traces are read from their files as any other.
#[derive(Default)]
struct Written {
    bytes: usize,
    files: HashMap<std::path::PathBuf, Arc<[u8]>>,
}

const WRITTEN_BYTES: usize = 64 << 20;

fn written_traces() -> &'static Mutex<Written> {
    static WRITTEN: OnceLock<Mutex<Written>> = OnceLock::new();
    WRITTEN.get_or_init(Mutex::default)
}

/// `bytes` are now the whole of the trace at `path`, as this process just wrote it (nobody
/// else writes it: its process is gone).
pub fn remember_written(path: &Path, bytes: Vec<u8>) {
    let Ok(mut w) = written_traces().lock() else { return };
    if w.bytes + bytes.len() > WRITTEN_BYTES {
        return;
    }
    w.bytes += bytes.len();
    if let Some(old) = w.files.insert(path.to_path_buf(), bytes.into()) {
        w.bytes -= old.len();
    }
}

/// The trace at `path` is about to change: it is read from its file from now on.
fn forget_written(path: &Path) {
    if let Ok(mut w) = written_traces().lock()
        && let Some(old) = w.files.remove(path)
    {
        w.bytes -= old.len();
    }
}

fn written(path: &Path) -> Option<Arc<[u8]>> {
    written_traces().lock().ok()?.files.get(path).cloned()
}

/// The next event of `stream`, with errors worded for `path`.
pub fn next(stream: &mut Stream<Source>, path: &Path) -> Result<Option<Event>, ReadError> {
    stream.next_event().map_err(|e| ReadError(format!("{}: corrupt trace: {e}", path.display())))
}

/// The start record of a trace, reading no further than it (it follows at most the record of
/// the trace's own first mapping).
pub fn start_of(path: &Path) -> Option<Start> {
    start_and_exit_of(path).map(|(start, _)| start)
}

/// [`start_of`], and what [`exit_of`] would say when every record of the trace lies in what was
/// read for the start record (`None` when the trace goes on past it): a short process's trace,
/// which a listing of a run of them (the 1,000-process loop: 2,001 traces, a thousand of them
/// asked how they ended) reads once instead of twice.
pub fn start_and_exit_of(path: &Path) -> Option<(Start, Option<Option<Exit>>)> {
    if let Some(bytes) = written(path) {
        // All of it is here: its start, and how it ended.
        return start_in_page(&bytes);
    }
    let mut f = fs::File::open(path).ok()?;
    // The file's first page first, read as if the file ended there (a record the end cuts is
    // where reading stops): it holds the start record unless the command line is long. A run's
    // listing reads thousands of start records, and the whole file was read for each (issue 12).
    let mut page = Vec::with_capacity(START_PREFIX as usize);
    (&mut f).take(START_PREFIX).read_to_end(&mut page).ok()?;
    match start_in_page(&page) {
        Some(found) => Some(found),
        None if page.len() as u64 == START_PREFIX => {
            let len = f.metadata().ok()?.len();
            f.seek(SeekFrom::Start(0)).ok()?;
            start_in(&f, len).map(|start| (start, None))
        }
        None => None,
    }
}

/// How much of a trace [`start_of`] reads first.
const START_PREFIX: u64 = 4096;

/// The start record among the first records of `page` (a trace's first bytes, the whole file
/// when shorter than [`START_PREFIX`]), and the trace's last exit record when `page` holds all
/// of its records.
fn start_in_page(page: &[u8]) -> Option<(Start, Option<Option<Exit>>)> {
    let mut s = Stream::new(page, page.len() as u64).ok()?;
    let mut exit = None;
    let mut start = None;
    for _ in 0..16 {
        match s.next_event().ok()?? {
            Event::Start(st) => {
                start = Some(st);
                break;
            }
            Event::Exit(e) => exit = Some(e),
            _ => {}
        }
    }
    let start = start?;
    // All of it: the file ended within the page, or its cursor does.
    if (page.len() as u64) < START_PREFIX || s.header.cursor <= page.len() as u64 {
        // As exit_of reads the same records: the last exit before the end or a damaged record.
        while let Ok(Some(ev)) = s.next_event() {
            if let Event::Exit(e) = ev {
                exit = Some(e);
            }
        }
        return Some((start, Some(exit)));
    }
    Some((start, None))
}

/// The start record among the first records of the first `len` bytes of `f` (read from its
/// current offset, the file's start).
fn start_in(f: &fs::File, len: u64) -> Option<Start> {
    let mut s = Stream::new(f, len).ok()?;
    for _ in 0..16 {
        if let Event::Start(st) = s.next_event().ok()?? {
            return Some(st);
        }
    }
    None
}

/// What [`exit_of`] has read from each trace during this command.
#[derive(Default)]
struct Memo {
    /// By (device, inode, file length, header cursor): an appended record moves the cursor.
    exits: HashMap<(u64, u64, u64, u64), Option<Exit>>,
}

fn memo() -> &'static Mutex<Memo> {
    static MEMO: OnceLock<Mutex<Memo>> = OnceLock::new();
    MEMO.get_or_init(Mutex::default)
}

/// Whether a call can matter after the replay whatever the map says at the end.
fn always_kept(c: &Call) -> bool {
    matches!(c.call, CallKind::ArenaAttach | CallKind::ModuleLoad | CallKind::PthreadCreate)
}

/// Whether a call can be the origin of a range in the replayed space.
fn may_explain_a_range(c: &Call) -> bool {
    matches!(c.call, CallKind::Mmap | CallKind::Mremap | CallKind::MallocLarge | CallKind::BrkGrow)
}

/// How the image of a trace ended, if `vmshim run` appended it (the trace is read through, once
/// per state of the file in a command: see [`Memo`]).
pub fn exit_of(path: &Path) -> Option<Exit> {
    // A trace this process wrote is read from its bytes, and needs no memo.
    let (src, len, file) = match written(path) {
        Some(bytes) => {
            let len = bytes.len() as u64;
            (Source::Written(std::io::Cursor::new(bytes)), len, None)
        }
        None => {
            let f = fs::File::open(path).ok()?;
            let meta = f.metadata().ok()?;
            (Source::File(f), meta.len(), Some((meta.dev(), meta.ino(), meta.len())))
        }
    };
    let mut s = Stream::new(src, len).ok()?;
    let id = file.map(|(dev, ino, len)| (dev, ino, len, s.header.cursor));
    if let Some(id) = id
        && let Some(e) = memo().lock().ok().and_then(|m| m.exits.get(&id).cloned())
    {
        return e;
    }
    let mut exit = None;
    while let Ok(Some(ev)) = next(&mut s, path) {
        if let Event::Exit(e) = ev {
            exit = Some(e);
        }
    }
    if let Some(id) = id
        && let Ok(mut m) = memo().lock()
    {
        m.exits.insert(id, exit.clone());
    }
    exit
}

pub fn load(path: &Path) -> Result<Recording, ReadError> {
    load_until(path, None)
}

/// [`load`], or with `until` (CLOCK_MONOTONIC ns) the process as it stood then: calls and
/// threads from later are left out, and so is what `vmshim run` appended at its exit. For the
/// parent of a fork child, replayed up to the fork.
pub fn load_until(path: &Path, until: Option<u64>) -> Result<Recording, ReadError> {
    let later = |t: u64| until.is_some_and(|u| t > u);
    let mut stream = open(path)?;
    let h = stream.header;
    let mut rec = Recording {
        truncated: stream.truncated,
        dropped: h.dropped,
        recording_ns: h.recording_ns,
        timed: h.timed,
        ..Recording::default()
    };
    let mut progress = Progress::new(stream.end());
    let mut initial: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut kernel: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut statm: Option<Vec<u8>> = None;
    let mut replayer: Option<Replayer> = None;
    let mut brk_baseline_kept = false;
    let mut calls = 0usize;
    // The kept calls are pruned to the live ones whenever they double.
    let mut prune_at = 1 << 16;
    let mut seq = 0usize;
    while let Some(ev) = next(&mut stream, path)? {
        let after = match &ev {
            Event::Call(c) => later(c.time_ns),
            Event::ThreadStart(t) => later(t.time_ns),
            Event::Maps(m) => until.is_some() && m.source != MapsSource::Initial,
            Event::Exit(_) | Event::ThreadName(_) => until.is_some(),
            Event::Resolve(r) => later(r.start_ns),
            _ => false,
        };
        if after {
            continue;
        }
        rec.recorded += 1;
        match ev {
            Event::Start(s) => rec.start = rec.start.take().or(Some(s)),
            Event::Maps(m) => match m.source {
                MapsSource::Initial => initial.push((m.chunk, m.text)),
                MapsSource::KernelFinal => kernel.push((m.chunk, m.text)),
                MapsSource::KernelStatm => statm = Some(m.text),
            },
            Event::Module(m) => {
                rec.modules.push(m);
                // The start-up map is complete once the modules follow it: the replay starts
                // from it, with the calls recorded meanwhile (the shim's own trace segments).
                if replayer.is_none() {
                    replayer = Some(start_replay(&mut rec, std::mem::take(&mut initial)));
                }
            }
            Event::Call(c) => {
                if let Some(r) = &mut replayer {
                    r.apply(calls, &c);
                }
                rec.call_tids.insert(c.tid);
                let baseline = c.call == CallKind::BrkGrow && c.args[0] == 0 && !brk_baseline_kept;
                brk_baseline_kept |= baseline;
                // Before the replay starts every call waits in `calls`, kept or not.
                if replayer.is_none() || always_kept(&c) || baseline || may_explain_a_range(&c) {
                    rec.calls.insert(calls, c);
                    rec.call_seq.insert(calls, seq);
                }
                calls += 1;
                if let Some(r) = &replayer
                    && rec.calls.len() >= prune_at
                {
                    prune(&mut rec, r);
                    prune_at = (2 * rec.calls.len()).max(1 << 16);
                }
            }
            Event::Resolve(r) => rec.resolves.push((seq, r)),
            Event::Config(text) => {
                for line in text.lines() {
                    if let Some((k, v)) = line.split_once('=') {
                        rec.config.push((k.to_string(), v.to_string()));
                    }
                }
            }
            Event::ThreadStart(t) => rec.threads.push(t),
            Event::Exit(e) => rec.exit = Some(e),
            Event::ThreadName(t) => {
                rec.thread_names.insert(t.tid, t.name);
            }
        }
        seq += 1;
        if seq.is_multiple_of(4096) {
            progress.show(stream.position());
        }
    }
    progress.done();
    (rec.torn, rec.unresolved_stacks) = (stream.torn, stream.unresolved_stacks);
    if rec.start.is_none() {
        return Err(ReadError(format!(
            "{}: the trace holds no start record (the shim could not initialise, or the file is not a complete trace)",
            path.display()
        )));
    }
    let r = match replayer {
        Some(r) => r,
        None => start_replay(&mut rec, initial),
    };
    prune(&mut rec, &r);
    rec.replay = r.out;
    if !kernel.is_empty() {
        rec.final_maps = Some(join(kernel));
        rec.final_statm_rss = statm.as_deref().and_then(|t| statm_resident(t, rec.page_size()));
    }
    Ok(rec)
}

/// The resident bytes a `/proc/PID/statm` line gives (`size resident shared ...`, in pages).
pub fn statm_resident(text: &[u8], page: u64) -> Option<u64> {
    let pages: u64 = std::str::from_utf8(text).ok()?.split_ascii_whitespace().nth(1)?.parse().ok()?;
    pages.checked_mul(page)
}

/// Starts the replay from the start-up map in `initial`, with the calls read so far.
fn start_replay(rec: &mut Recording, initial: Vec<(u32, Vec<u8>)>) -> Replayer {
    rec.initial_maps = join(initial);
    let page = rec.page_size();
    let mut r = Replayer::new(page, rec.start.as_ref().map_or(0, |s| s.mono_ns), &rec.initial_maps);
    for (i, c) in &rec.calls {
        r.apply(*i, c);
    }
    r
}

/// Drops the kept calls that no longer explain any range.
fn prune(rec: &mut Recording, r: &Replayer) {
    let live = r.live_calls();
    let first_baseline =
        rec.calls.iter().find(|(_, c)| c.call == CallKind::BrkGrow && c.args[0] == 0).map(|(i, _)| *i);
    rec.calls.retain(|i, c| always_kept(c) || live.contains(i) || Some(*i) == first_baseline);
    let calls = &rec.calls;
    rec.call_seq.retain(|i, _| calls.contains_key(i));
}

/// Joins maps text chunks in order and parses them.
fn join(mut chunks: Vec<(u32, Vec<u8>)>) -> Vec<Region> {
    chunks.sort_by_key(|c| c.0);
    let mut text = Vec::with_capacity(chunks.iter().map(|c| c.1.len()).sum());
    for (_, c) in &chunks {
        text.extend_from_slice(c);
    }
    // The kernel's text is UTF-8 but for odd file names: the whole-text check is several times
    // faster than the lossy conversion's chunk walk, which was 8% of reporting a 1,001-process
    // tree (issue 12).
    let mut regions = match std::str::from_utf8(&text) {
        Ok(t) => maps::parse(t),
        Err(_) => maps::parse(&String::from_utf8_lossy(&text)),
    };
    // [vsyscall] is the kernel's fixed gate page, listed in every maps file but not part of
    // the process's address space: VmSize, and so ps's VSZ, leaves it out.
    regions.retain(|r| r.path != "[vsyscall]");
    regions
}

/// A progress line on stderr while a large trace is read, when stderr is a terminal: the
/// share of bytes read, redrawn at most ten times a second, erased when done.
struct Progress {
    total: u64,
    shown: bool,
    last: Option<std::time::Instant>,
    started: std::time::Instant,
}

impl Progress {
    fn new(total: u64) -> Progress {
        use std::io::IsTerminal;
        let on = total >= 64 << 20 && std::io::stderr().is_terminal();
        Progress {
            total: if on { total } else { 0 },
            shown: false,
            last: None,
            started: std::time::Instant::now(),
        }
    }

    fn show(&mut self, at: u64) {
        if self.total == 0 {
            return;
        }
        let now = std::time::Instant::now();
        // Quick reads draw nothing; then at most ten redraws a second.
        if now.duration_since(self.started).as_millis() < 300
            || self.last.is_some_and(|l| now.duration_since(l).as_millis() < 100)
        {
            return;
        }
        self.last = Some(now);
        self.shown = true;
        let pct = at.saturating_mul(100) / self.total.max(1);
        let width = 30usize;
        let filled = (pct as usize * width / 100).min(width);
        eprint!(
            "\rreading trace [{}{}] {pct:>3}% {} / {} MiB",
            "#".repeat(filled),
            " ".repeat(width - filled),
            at >> 20,
            self.total >> 20
        );
    }

    fn done(&mut self) {
        if self.shown {
            eprint!("\r\x1b[K");
        }
    }
}

/// What `vmshim run` learns once the target is gone: the kernel's map at its exit stop, the
/// threads' names then, and how it ended.
pub struct Final {
    /// smaps text, or maps text when `statm` is there too.
    pub smaps: Option<Vec<u8>>,
    /// `/proc/PID/statm`, read with a map that was `maps` (see [`MapsSource::KernelStatm`]).
    pub statm: Option<Vec<u8>>,
    pub thread_names: Vec<(u32, String)>,
    pub raw_status: i32,
    pub how: String,
}

impl Final {
    /// Puts what the file could not take into a loaded recording, as if it had been appended.
    pub fn apply(self, rec: &mut Recording) {
        let exit = self.exit();
        if let Some(smaps) = self.smaps.filter(|s| !s.is_empty()) {
            rec.final_maps = Some(join(vec![(0, smaps)]));
            rec.final_statm_rss = self.statm.as_deref().and_then(|t| statm_resident(t, rec.page_size()));
        }
        rec.thread_names.extend(self.thread_names);
        rec.exit = Some(exit);
    }

    /// The exit record [`append_final`] writes.
    pub fn exit(&self) -> Exit {
        Exit { raw_status: self.raw_status, how: self.how.clone() }
    }
}

/// Appends the kernel's final smaps text, the thread names and the exit status to a finished
/// trace (the target is gone, so nothing else writes it), then trims the file to its last
/// record. On failure (a full disk) the file is left as the shim wrote it. Nothing is synced to
/// the disk: `vmshim run` appends to every trace of a tree (a shell loop makes thousands), and a
/// reader meeting records that a crash lost past the cursor counts them as torn.
pub fn append_final(path: &Path, fin: &Final) -> std::io::Result<()> {
    forget_written(path);
    let mut f = OpenOptions::new().read(true).write(true).open(path)?;
    let mut hdr = [0u8; HEADER_SIZE];
    f.read_exact(&mut hdr)?;
    let cursor = u64::from_le_bytes(hdr[header::CURSOR..header::CURSOR + 8].try_into().unwrap_or_default());
    let file_len = f.metadata()?.len();
    // A cursor past the end (reservations that found no room) ends at the file's end.
    let at = cursor.min(file_len).max(HEADER_SIZE as u64);
    let records = final_records(fin);
    // The records go past the cursor, where nothing counts until the cursor moves: on a full
    // disk the file is put back to its length and the cursor stays where the shim left it.
    if let Err(e) = f.write_all_at(&records, at) {
        let _ = f.set_len(file_len);
        return Err(e);
    }
    let end = at + records.len() as u64;
    f.set_len(end)?;
    f.write_all_at(&end.to_le_bytes(), header::CURSOR as u64)
}

/// The records [`append_final`] appends, encoded one after the other, to be written at once:
/// `vmshim run` appends to a thousand traces at the end of a loop of short processes, a write
/// per record each (issue 12).
pub fn final_records(fin: &Final) -> Vec<u8> {
    let (final_smaps, thread_names, raw_status, how) =
        (fin.smaps.as_deref(), &fin.thread_names, fin.raw_status, fin.how.as_str());
    let statm = fin.statm.as_deref().filter(|_| final_smaps.is_some_and(|s| !s.is_empty()));
    let mut records: Vec<u8> = Vec::new();
    let mut put = |encode: &dyn Fn(&mut [u8]) -> Option<usize>, len: usize| {
        let from = records.len();
        records.resize(from + len + 64, 0);
        let n = encode(&mut records[from..]).unwrap_or(0);
        records.truncate(from + n);
    };
    for (i, chunk) in final_smaps.unwrap_or_default().chunks(256 << 10).enumerate() {
        let m = MapsRecord { source: MapsSource::KernelFinal, chunk: i as u32, text: chunk };
        put(&|buf| vmshim_trace::record::maps::encode(buf, &m), chunk.len());
    }
    if let Some(text) = statm {
        let m = MapsRecord { source: MapsSource::KernelStatm, chunk: 0, text };
        put(&|buf| vmshim_trace::record::maps::encode(buf, &m), text.len());
    }
    for (tid, name) in thread_names {
        put(&|buf| thread_name::encode(buf, *tid, name.as_bytes()), name.len());
    }
    put(&|buf| exit::encode(buf, raw_status, how.as_bytes()), how.len());
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmshim_trace::record::start::{self, Argv, StartRecord};

    fn record(encode: impl FnOnce(&mut [u8]) -> Option<usize>) -> Vec<u8> {
        let mut buf = vec![0u8; 64 << 10];
        let n = encode(&mut buf).expect("the record fits");
        buf.truncate(n);
        buf
    }

    /// A trace of `records`, its file grown to `file_len` past its cursor as the shim grows it.
    fn trace_file(records: &[Vec<u8>], file_len: usize) -> Vec<u8> {
        let mut f = vec![0u8; HEADER_SIZE];
        f[..8].copy_from_slice(&vmshim_trace::FILE_MAGIC);
        f[header::VERSION..header::VERSION + 4].copy_from_slice(&vmshim_trace::VERSION.to_le_bytes());
        for r in records {
            f.extend_from_slice(r);
        }
        let cursor = f.len() as u64;
        f[header::CURSOR..header::CURSOR + 8].copy_from_slice(&cursor.to_le_bytes());
        f.resize(f.len().max(file_len), 0);
        f
    }

    #[test]
    fn a_short_trace_tells_how_it_ended_with_its_start_record_as_exit_of_does() {
        let dir = std::env::temp_dir().join(format!("vmshim-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let start = record(|b| {
            start::encode(
                b,
                &StartRecord {
                    pid: 7,
                    ppid: 1,
                    page_size: 4096,
                    mono_ns: 1,
                    real_ns: 2,
                    exe: b"/bin/x",
                    trace_path: b"/t",
                    argv: Argv::Cmdline(b"x\0"),
                    run_id: 5,
                    fork: None,
                },
            )
        });
        let exit = record(|b| exit::encode(b, 3 << 8, b"exited 3"));
        let big_map = record(|b| {
            let m = MapsRecord { source: MapsSource::KernelFinal, chunk: 0, text: &[b'm'; 5000] };
            vmshim_trace::record::maps::encode(b, &m)
        });
        for (name, records, file_len, whole) in [
            ("no-exit", vec![start.clone()], 16384, true),
            ("exit", vec![start.clone(), exit.clone()], 0, true),
            ("exit-in-a-grown-file", vec![start.clone(), exit.clone()], 16384, true),
            ("exit-past-the-page", vec![start.clone(), big_map.clone(), exit.clone()], 0, false),
            // The start record itself past the page: the whole file is read for it.
            ("start-past-the-page", vec![big_map, start, exit.clone()], 0, false),
        ] {
            let p = dir.join(name);
            let has_exit = records.contains(&exit);
            std::fs::write(&p, trace_file(&records, file_len)).unwrap();
            assert_eq!(exit_of(&p).is_some(), has_exit, "{name}");
            let (s, ended) = start_and_exit_of(&p).unwrap_or_else(|| panic!("{name}: no start record"));
            assert_eq!((s.pid, s.run_id), (7, 5), "{name}");
            assert_eq!(start_of(&p).map(|s| s.pid), Some(7), "{name}");
            assert_eq!(ended.is_some(), whole, "{name}: whether its records all lie in the first page");
            if let Some(e) = ended {
                assert_eq!(e, exit_of(&p), "{name}");
            }
            // Remembered as written, it reads as its file does, and once changed, as the file.
            let bytes = trace_file(&records, file_len);
            let from_file = (exit_of(&p), load(&p).ok().map(|r| r.exit));
            remember_written(&p, bytes);
            let (s, ended) = start_and_exit_of(&p).unwrap_or_else(|| panic!("{name}: no start record"));
            assert_eq!((s.pid, ended), (7, Some(from_file.0.clone())), "{name}: remembered");
            assert_eq!((exit_of(&p), load(&p).ok().map(|r| r.exit)), from_file, "{name}");
            let fin = Final {
                smaps: None,
                statm: None,
                thread_names: Vec::new(),
                raw_status: 4 << 8,
                how: "exited 4".into(),
            };
            append_final(&p, &fin).unwrap();
            assert_eq!(exit_of(&p).map(|e| e.how), Some("exited 4".to_string()), "{name}: appended");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
