//! Reading a trace file into the pieces the later stages use, and appending what `vmshim run`
//! learns after the target is gone (the kernel's final map, the exit status).

use crate::maps::{self, Region};
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use vmshim_trace::decode::{Call, Exit, Module, Resolve, Start, ThreadStart};
use vmshim_trace::{Encoder, Event, HEADER_SIZE, Kind, MapsSource, header};

/// A trace, sorted into what each stage needs. `calls` and `threads` keep recording order.
#[derive(Debug, Default)]
pub struct Recording {
    pub start: Option<Start>,
    pub initial_maps: Vec<Region>,
    /// The kernel's own map at exit (smaps), when `vmshim run` captured it.
    pub final_maps: Option<Vec<Region>>,
    pub modules: Vec<Module>,
    pub calls: Vec<Call>,
    /// The position of each of `calls` among all events (to order them against `resolves`).
    pub call_seq: Vec<usize>,
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
    /// The shim's own cost: nanoseconds spent recording `timed` events.
    pub recording_ns: u64,
    pub timed: u64,
}

/// Why a trace could not be used; `main` turns it into exit code 2.
#[derive(Debug)]
pub struct ReadError(pub String);

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn load(path: &Path) -> Result<Recording, ReadError> {
    let bytes =
        fs::read(path).map_err(|e| ReadError(format!("cannot read trace {}: {e}", path.display())))?;
    let trace = vmshim_trace::parse(&bytes)
        .map_err(|e| ReadError(format!("{}: corrupt trace: {e}", path.display())))?;
    let mut rec = Recording {
        dropped: trace.dropped,
        torn: trace.torn,
        recording_ns: trace.recording_ns,
        timed: trace.timed,
        ..Recording::default()
    };
    let mut initial: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut kernel: Vec<(u32, Vec<u8>)> = Vec::new();
    for (seq, ev) in trace.events.into_iter().enumerate() {
        rec.recorded += 1;
        match ev {
            Event::Start(s) => rec.start = rec.start.take().or(Some(s)),
            Event::Maps(m) => match m.source {
                MapsSource::Initial => initial.push((m.chunk, m.text)),
                MapsSource::KernelFinal => kernel.push((m.chunk, m.text)),
            },
            Event::Module(m) => rec.modules.push(m),
            Event::Call(c) => {
                rec.calls.push(c);
                rec.call_seq.push(seq);
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
    }
    if rec.start.is_none() {
        return Err(ReadError(format!(
            "{}: the trace holds no start record (the shim could not initialise, or the file is not a complete trace)",
            path.display()
        )));
    }
    let join = |mut chunks: Vec<(u32, Vec<u8>)>| {
        chunks.sort_by_key(|c| c.0);
        let text: Vec<u8> = chunks.into_iter().flat_map(|c| c.1).collect();
        let mut regions = maps::parse(&String::from_utf8_lossy(&text));
        // [vsyscall] is the kernel's fixed gate page, listed in every maps file but not part of
        // the process's address space: VmSize, and so ps's VSZ, leaves it out.
        regions.retain(|r| r.path != "[vsyscall]");
        regions
    };
    rec.initial_maps = join(initial);
    if !kernel.is_empty() {
        rec.final_maps = Some(join(kernel));
    }
    Ok(rec)
}

/// Appends the kernel's final smaps text, the thread names and the exit status to a finished trace (the target
/// is gone, so nothing else writes it), then trims the file to its last record.
pub fn append_final(
    path: &Path,
    final_smaps: Option<&[u8]>,
    thread_names: &[(u32, String)],
    raw_status: i32,
    how: &str,
) -> std::io::Result<()> {
    let mut f = OpenOptions::new().read(true).write(true).open(path)?;
    let mut hdr = [0u8; HEADER_SIZE];
    f.read_exact(&mut hdr)?;
    let cursor = u64::from_le_bytes(hdr[header::CURSOR..header::CURSOR + 8].try_into().unwrap_or_default());
    let file_len = f.metadata()?.len();
    // A cursor past the end (reservations that found no room) ends at the file's end.
    let mut at = cursor.min(file_len).max(HEADER_SIZE as u64);
    let mut records: Vec<Vec<u8>> = Vec::new();
    for (i, chunk) in final_smaps.unwrap_or_default().chunks(256 << 10).enumerate() {
        let mut buf = vec![0u8; chunk.len() + 64];
        let mut e = Encoder::new(&mut buf, Kind::Maps);
        e.put_u8(MapsSource::KernelFinal as u8);
        e.put_bytes(&[0; 3]);
        e.put_u32(i as u32);
        e.put_str(chunk, chunk.len());
        if let Some(n) = e.finish() {
            buf.truncate(n);
            records.push(buf);
        }
    }
    for (tid, name) in thread_names {
        let mut buf = vec![0u8; name.len() + 64];
        let mut e = Encoder::new(&mut buf, Kind::ThreadName);
        e.put_u32(*tid);
        e.put_u32(0);
        e.put_str(name.as_bytes(), name.len());
        if let Some(n) = e.finish() {
            buf.truncate(n);
            records.push(buf);
        }
    }
    let mut buf = vec![0u8; how.len() + 64];
    let mut e = Encoder::new(&mut buf, Kind::Exit);
    e.put_i32(raw_status);
    e.put_u32(0);
    e.put_str(how.as_bytes(), how.len());
    if let Some(n) = e.finish() {
        buf.truncate(n);
        records.push(buf);
    }
    f.seek(SeekFrom::Start(at))?;
    for r in &records {
        f.write_all(r)?;
        at += r.len() as u64;
    }
    f.set_len(at)?;
    f.seek(SeekFrom::Start(header::CURSOR as u64))?;
    f.write_all(&at.to_le_bytes())?;
    f.sync_data()
}
