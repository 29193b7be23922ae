//! One process image's trace file, written by vmshim itself in the format the shim writes
//! (`vmshim-trace`), so that every reader of traces works unchanged.
//!
//! Each record goes to the file with one positioned write and then the header's cursor moves
//! past it (a second write): a trace is readable up to its last record whenever vmshim or the
//! target is killed, with nothing to flush. The file is created the way the shim creates its
//! own: never replacing, truncating or following what is there (`O_EXCL|O_NOFOLLOW`, then the
//! same `NAME.<pid>`, `NAME.N` numbering), mode 0600.
//!
//! Each record kind is encoded by one function here, through its encoder in `vmshim_trace::record`.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
pub use vmshim_trace::record::call::{CallRecord, CallStack};
pub use vmshim_trace::record::thread_start::ThreadStartRecord;
use vmshim_trace::{FILE_MAGIC, HEADER_SIZE, MapsSource, VERSION, header};

/// A maps text is cut into records of at most this many bytes, as the shim cuts its own.
const MAPS_CHUNK: usize = 16 << 10;

pub struct TraceOut {
    file: File,
    pub path: PathBuf,
    /// The next free byte: the header's cursor.
    at: u64,
    recording_ns: u64,
    timed: u64,
    /// A write failed (full disk): nothing more is written, the trace ends at the last record.
    failed: bool,
    /// A trace written whole at its end ([`TraceOut::create_held`]): the records so far.
    held: Option<Vec<u8>>,
}

impl TraceOut {
    /// Creates the trace of process `pid` from the template (`%p` is the pid).
    pub fn create(template: &Path, pid: u32) -> io::Result<TraceOut> {
        let (file, path) = create_file(template, pid)?;
        TraceOut::start_file(file, path)
    }

    /// Creates the trace of process `pid` as [`TraceOut::create`] does, for a trace of a few
    /// records written at once by [`TraceOut::write_held`] (the trace of a process that
    /// recorded nothing, one of a thousand `vmshim run` writes at the end of a shell loop: one
    /// write each, not two per record).
    pub fn create_held(template: &Path, pid: u32) -> io::Result<TraceOut> {
        let (file, path) = create_file(template, pid)?;
        Ok(TraceOut::new(file, path, Some(Vec::new())))
    }

    /// As [`TraceOut::create_held`], unless one of the names taken before the first free one
    /// holds the trace already (`holds`: the trace of a sent fork child that created its own):
    /// then None.
    pub fn create_held_unless(
        template: &Path,
        pid: u32,
        holds: &dyn Fn(&Path) -> bool,
    ) -> io::Result<Option<TraceOut>> {
        Ok(create_file_unless(template, pid, holds)?
            .map(|(file, path)| TraceOut::new(file, path, Some(Vec::new()))))
    }

    /// A trace whose next record goes right after the header; `held`: kept for [`TraceOut::write_held`].
    fn new(file: File, path: PathBuf, held: Option<Vec<u8>>) -> TraceOut {
        TraceOut { file, path, at: HEADER_SIZE as u64, recording_ns: 0, timed: 0, failed: false, held }
    }

    fn start_file(file: File, path: PathBuf) -> io::Result<TraceOut> {
        file.write_all_at(&header(HEADER_SIZE as u64), 0)?;
        Ok(TraceOut::new(file, path, None))
    }

    /// Writes a held trace: the header, the records appended, then `tail` (encoded records).
    /// The file's bytes, all of them.
    pub fn write_held(self, tail: &[u8]) -> io::Result<Vec<u8>> {
        let held = self.held.unwrap_or_default();
        let mut all = header(HEADER_SIZE as u64 + (held.len() + tail.len()) as u64).to_vec();
        all.extend_from_slice(&held);
        all.extend_from_slice(tail);
        self.file.write_all_at(&all, 0)?;
        Ok(all)
    }
}

/// Creates a trace file for `pid` from the template, by the shim's naming rules.
fn create_file(template: &Path, pid: u32) -> io::Result<(File, PathBuf)> {
    create_file_unless(template, pid, &|_| false)?.ok_or_else(|| io::Error::other("no free name"))
}

/// [`create_file`], or None when `holds` says a taken name before the first free one is the
/// trace already.
fn create_file_unless(
    template: &Path,
    pid: u32,
    holds: &dyn Fn(&Path) -> bool,
) -> io::Result<Option<(File, PathBuf)>> {
    let t = template.to_string_lossy();
    let has_pid = t.contains("%p");
    let first = PathBuf::from(t.replace("%p", &pid.to_string()));
    let mut n = 0u64;
    loop {
        let path = match (n, has_pid) {
            (0, _) => first.clone(),
            (1, false) => suffixed(&first, &pid.to_string()),
            (n, false) => suffixed(&first, &format!("{pid}.{}", n - 1)),
            (n, true) => suffixed(&first, &n.to_string()),
        };
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path);
        match opened {
            Ok(file) => return Ok(Some((file, path))),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if holds(&path) {
                    return Ok(None);
                }
                n += 1
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        }
    }
}

/// A trace header whose cursor is `cursor`.
pub(crate) fn header(cursor: u64) -> [u8; HEADER_SIZE] {
    let mut h = [0u8; HEADER_SIZE];
    h[header::MAGIC..header::MAGIC + 8].copy_from_slice(&FILE_MAGIC);
    h[header::VERSION..header::VERSION + 4].copy_from_slice(&VERSION.to_le_bytes());
    h[header::HEADER_SIZE..header::HEADER_SIZE + 4].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
    // No segments: records follow each other to the end of the file.
    h[header::SEGMENT_SIZE..header::SEGMENT_SIZE + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    h[header::CURSOR..header::CURSOR + 8].copy_from_slice(&cursor.to_le_bytes());
    h[header::LIMIT..header::LIMIT + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    h
}

impl TraceOut {
    /// Appends one encoded record and moves the cursor (and the cost counters) past it.
    fn append(&mut self, record: &[u8]) {
        if self.failed {
            return;
        }
        if let Some(held) = &mut self.held {
            held.extend_from_slice(record);
            self.at += record.len() as u64;
            return;
        }
        let mut tail = [0u8; HEADER_SIZE - header::CURSOR];
        let end = self.at + record.len() as u64;
        tail[0..8].copy_from_slice(&end.to_le_bytes());
        let ns_at = header::RECORDING_NS - header::CURSOR;
        tail[ns_at..ns_at + 8].copy_from_slice(&self.recording_ns.to_le_bytes());
        let timed_at = header::TIMED - header::CURSOR;
        tail[timed_at..timed_at + 8].copy_from_slice(&self.timed.to_le_bytes());
        let ok = self.file.write_all_at(record, self.at).is_ok()
            && self.file.write_all_at(&tail, header::CURSOR as u64).is_ok();
        if ok {
            self.at = end;
        } else {
            self.failed = true;
        }
    }

    /// The recorder's own cost for one recorded call, shown like the shim's.
    pub fn account(&mut self, ns: u64) {
        self.recording_ns += ns;
        self.timed += 1;
    }

    pub fn start(&mut self, s: &StartInfo<'_>) {
        use vmshim_trace::record::start::{self, Argv, ForkRecord, StartRecord};
        // As /proc/PID/cmdline holds it: each argument NUL-terminated.
        let cmdline: Vec<u8> = s.argv.iter().flat_map(|a| a.iter().copied().chain([0])).collect();
        let mut buf = vec![
            0u8;
            64 + s.exe.len()
                + s.trace_path.len()
                + 8 * s.argv.len()
                + cmdline.len()
                + 8 * vmshim_trace::MAX_FRAMES
                + 64
        ];
        let r = StartRecord {
            pid: s.pid,
            ppid: s.ppid,
            page_size: s.page_size,
            mono_ns: s.mono_ns,
            real_ns: s.real_ns,
            exe: s.exe.as_bytes(),
            trace_path: s.trace_path.as_bytes(),
            argv: Argv::Cmdline(&cmdline),
            run_id: s.run_id,
            fork: s.fork.map(|(parent_tid, mono_ns, stack)| ForkRecord { parent_tid, mono_ns, stack }),
        };
        self.finish(start::encode(&mut buf, &r), &buf);
    }

    pub fn config(&mut self, text: &str) {
        let mut buf = vec![0u8; text.len() + 64];
        self.finish(vmshim_trace::record::config::encode(&mut buf, text.as_bytes()), &buf);
    }

    /// The map at the image's start (`/proc/PID/maps`), in chunks.
    pub fn initial_maps(&mut self, text: &[u8]) {
        use vmshim_trace::record::maps::{self, MapsRecord};
        for (i, chunk) in text.chunks(MAPS_CHUNK).enumerate() {
            let mut buf = vec![0u8; chunk.len() + 64];
            let r = MapsRecord { source: MapsSource::Initial, chunk: i as u32, text: chunk };
            self.finish(maps::encode(&mut buf, &r), &buf);
        }
    }

    pub fn module(&mut self, m: &super::image::Module) {
        use vmshim_trace::record::module::{self, ModuleRecord};
        let mut buf = vec![0u8; m.path.len() + m.build_id.len() + 64];
        let r =
            ModuleRecord { base: m.base, lo: m.lo, hi: m.hi, build_id: &m.build_id, path: m.path.as_bytes() };
        self.finish(module::encode(&mut buf, &r), &buf);
    }

    pub fn call(&mut self, c: &CallRecord<'_>) {
        let frames = match c.stack {
            CallStack::Inline(f) => f.len(),
            CallStack::Ref(_) => 0,
        };
        let mut buf = vec![0u8; 128 + 8 * frames];
        self.finish(vmshim_trace::record::call::encode(&mut buf, c), &buf);
    }

    pub fn thread_start(&mut self, t: &ThreadStartRecord<'_>) {
        let mut buf = vec![0u8; 128 + 8 * t.creator_stack.len()];
        self.finish(vmshim_trace::record::thread_start::encode(&mut buf, t), &buf);
    }

    fn finish(&mut self, len: Option<usize>, buf: &[u8]) {
        if let Some(n) = len {
            self.append(&buf[..n]);
        }
    }
}

/// `NAME.suffix` beside NAME.
fn suffixed(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

pub struct StartInfo<'a> {
    pub pid: u32,
    pub ppid: u32,
    pub page_size: u32,
    pub mono_ns: u64,
    pub real_ns: u64,
    pub exe: &'a str,
    pub trace_path: &'a str,
    pub argv: &'a [Vec<u8>],
    pub run_id: u64,
    /// A fork child: (the forking thread, when, its stack).
    pub fork: Option<(u32, u64, &'a [u64])>,
}
