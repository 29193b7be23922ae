//! The reading half: turns any byte sequence into events or an error with a byte offset.
//!
//! Record bodies, field by field (all little-endian; `str` is a u32 length then bytes; `frames`
//! is a u32 count then that many u64 return addresses):
//!
//! | kind | body |
//! |---|---|
//! | Start | pid u32, ppid u32, page_size u32, 0 u32, mono_ns u64, real_ns u64, exe str, trace_path str, argc u32, argv str..., run_id u64, origin u32 (0 exec, 1 fork), and for origin 1: parent_tid u32, fork_mono_ns u64, frames (the forking call's stack). A trace written before run_id existed ends after argv (at most 7 bytes of padding follow) and reads as run_id 0, no fork. |
//! | Maps | source u8, 0 u8 x3, chunk u32, text str |
//! | Module | base u64, lo u64, hi u64, build_id str, path str |
//! | Call | call u16, flags u16, tid u32, time_ns u64, args u64 x6, result u64, errno i32, 0 u32, frames (or, with CALL_FLAG_STACK_REF, the u64 file offset of a Stack record) |
//! | ThreadStart | tid u32, creator_tid u32, time_ns u64, sp u64, stack_size u64, guard_size u64, start_routine u64, creator frames |
//! | Exit | raw_status i32, 0 u32, how str |
//! | ThreadName | tid u32, 0 u32, name str |
//! | Resolve | api u16, 0 u16, tid u32, start_ns u64, end_ns u64, family i32, socktype i32, protocol i32, flags i32, ret i32, error i32, handle u64, name str, service str, naddrs u32, (family u16, 0 u16 x3, addr 16 bytes) x naddrs, frames |
//! | Config | text str |
//! | Stack | frames (its identity is the record's own file offset) |

use crate::{
    CallKind, Error, FILE_MAGIC, HEADER_SIZE, Kind, MAX_FRAMES, MAX_RECORD, MapsSource, RECORD_HEADER,
    RECORD_MAGIC, checksum, header, pad_check,
};

/// Process identity, from the shim's constructor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Start {
    pub pid: u32,
    pub ppid: u32,
    pub page_size: u32,
    pub mono_ns: u64,
    pub real_ns: u64,
    pub exe: String,
    /// Where the shim wrote this trace; its mappings of the file are the shim's own.
    pub trace_path: String,
    pub argv: Vec<String>,
    /// The run this process belongs to: `VMSHIM_RUN` parsed as hex, set by `vmshim run` for
    /// every process of the tree; 0 when it was unset or malformed (or the trace predates it).
    pub run_id: u64,
    /// Set when the trace was created inside fork, in the child (origin 1); `None` for an image
    /// that started from exec (origin 0), or a trace written before the field existed.
    pub fork: Option<Fork>,
}

/// How a fork child came to be, noted in the parent as fork was called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fork {
    /// The parent's thread that called fork.
    pub parent_tid: u32,
    /// CLOCK_MONOTONIC when fork was called: the clock of `Start::mono_ns` and call records.
    pub mono_ns: u64,
    /// The forking call's stack: absolute return addresses in the parent (and child, which
    /// shares its image), innermost first, as in call records.
    pub stack: Vec<u64>,
}

/// `Start::fork`'s origin word: the image started from exec.
pub const ORIGIN_EXEC: u32 = 0;
/// `Start::fork`'s origin word: the trace was created in a fork child.
pub const ORIGIN_FORK: u32 = 1;

/// One chunk of a maps text; chunks of one source concatenate in `chunk` order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapsChunk {
    pub source: MapsSource,
    pub chunk: u32,
    pub text: Vec<u8>,
}

/// One loaded ELF module. `base` is the load bias (absolute = file vaddr + base); `lo..hi` the
/// absolute address span of its PT_LOAD segments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub base: u64,
    pub lo: u64,
    pub hi: u64,
    pub build_id: Vec<u8>,
    pub path: String,
}

/// One interposed call. `stack` holds absolute return addresses in the target, innermost first;
/// `stack[0]` is the hook's caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub call: CallKind,
    pub flags: u16,
    pub tid: u32,
    pub time_ns: u64,
    pub args: [u64; 6],
    pub result: u64,
    pub errno: i32,
    /// Innermost first. [`parse`] fills it in from the Stack record a reference names.
    pub stack: Vec<u64>,
    /// The file offset of the [`Kind::Stack`] record holding the stack, or 0 when the frames
    /// are inline.
    pub stack_ref: u64,
}

/// A thread made by `pthread_create` started. `sp` is an address on its stack; the creator's
/// stack is the one `pthread_create` was called from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadStart {
    pub tid: u32,
    pub creator_tid: u32,
    pub time_ns: u64,
    pub sp: u64,
    /// From the attribute passed to `pthread_create`; 0 when none was given.
    pub stack_size: u64,
    /// From the attribute passed to `pthread_create`; `u64::MAX` when none was given.
    pub guard_size: u64,
    pub start_routine: u64,
    pub creator_stack: Vec<u64>,
}

/// How the process ended, as `vmshim run` saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    pub raw_status: i32,
    pub how: String,
}

/// A thread's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadName {
    pub tid: u32,
    pub name: String,
}

/// One resolver call. For getaddrinfo `family`, `socktype`, `protocol` and `flags` are the
/// hints, `ret` its EAI_* code, `handle` the result list (freeaddrinfo's argument); for the
/// gethostby* family `error` is h_errno; for res_* `family` is the class and `socktype` the type,
/// `ret` the answer length; for getnameinfo `name` and `service` are what it returned and
/// `addrs` the address it was asked about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolve {
    pub api: u16,
    pub tid: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub family: i32,
    pub socktype: i32,
    pub protocol: i32,
    pub flags: i32,
    pub ret: i32,
    pub error: i32,
    pub handle: u64,
    pub name: String,
    pub service: String,
    /// (address family, up to 16 address bytes: 4 for AF_INET, 16 for AF_INET6)
    pub addrs: Vec<(u16, [u8; 16])>,
    pub stack: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Start(Start),
    Maps(MapsChunk),
    Module(Module),
    Call(Call),
    ThreadStart(ThreadStart),
    Exit(Exit),
    ThreadName(ThreadName),
    Resolve(Resolve),
    Config(String),
}

/// A whole trace read into memory.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    pub segment_size: u64,
    /// End of the records, from the header.
    pub cursor: u64,
    /// Records the writer counted as dropped.
    pub dropped: u64,
    /// Nanoseconds the hooks spent recording `timed` records (the shim's own cost).
    pub recording_ns: u64,
    pub timed: u64,
    /// Stretches of bytes that held no committed record (a writer killed mid-record).
    pub torn: u64,
    /// Calls whose stack reference names no Stack record (it was torn, or damaged).
    pub unresolved_stacks: u64,
    /// The file ends before its header's cursor: (file length, cursor).
    pub truncated: Option<(u64, u64)>,
    /// Events in the order their slots were reserved.
    pub events: Vec<Event>,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// File offset of `buf[0]`, for error messages.
    base: u64,
}

impl<'a> Reader<'a> {
    fn err(&self, message: impl Into<String>) -> Error {
        Error { offset: self.base + self.pos as u64, message: message.into() }
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.err(format!("record field of {n} bytes runs past the record"))),
        }
    }
    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.bytes(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_le_bytes(self.bytes(2)?.try_into().unwrap_or_default()))
    }
    fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().unwrap_or_default()))
    }
    fn i32(&mut self) -> Result<i32, Error> {
        Ok(self.u32()? as i32)
    }
    fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().unwrap_or_default()))
    }
    fn blob(&mut self) -> Result<&'a [u8], Error> {
        let n = self.u32()? as usize;
        self.bytes(n)
    }
    fn string(&mut self) -> Result<String, Error> {
        Ok(String::from_utf8_lossy(self.blob()?).into_owned())
    }
    fn frames(&mut self) -> Result<Vec<u64>, Error> {
        let n = self.u32()? as usize;
        if n > MAX_FRAMES {
            return Err(self.err(format!("stack of {n} frames exceeds the limit of {MAX_FRAMES}")));
        }
        (0..n).map(|_| self.u64()).collect()
    }
}

fn le_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// Checks the header and returns `(segment_size, cursor, dropped)`.
fn read_header(bytes: &[u8]) -> Result<(u64, u64, u64), Error> {
    let bad = |offset: u64, message: &str| Error { offset, message: message.to_string() };
    if bytes.len() < HEADER_SIZE {
        return Err(bad(
            bytes.len() as u64,
            &format!("not a vmshim trace: {} bytes, shorter than the {HEADER_SIZE}-byte header", bytes.len()),
        ));
    }
    if bytes[..8] != FILE_MAGIC {
        return Err(bad(0, "not a vmshim trace: wrong magic"));
    }
    let version =
        u32::from_le_bytes(bytes[header::VERSION..header::VERSION + 4].try_into().unwrap_or_default());
    if version != crate::VERSION {
        return Err(bad(header::VERSION as u64, &format!("unsupported trace version {version}")));
    }
    let field = |at| le_u64(bytes, at).unwrap_or(0);
    Ok((field(header::SEGMENT_SIZE), field(header::CURSOR), field(header::DROPPED)))
}

/// The record starting at `at`, if its magic, length and checksum agree: `(kind, total_len)`.
/// `remaining` is how many bytes of records the file holds from `at` on; `bytes` must hold at
/// least the smaller of that and [`MAX_RECORD`] from `at` (a pad may be longer: its body is
/// never read).
fn valid_record(bytes: &[u8], at: usize, remaining: u64) -> Option<(Kind, usize)> {
    let w0 = le_u64(bytes, at)?;
    if w0 as u16 != RECORD_MAGIC {
        return None;
    }
    let kind = Kind::from_u16((w0 >> 16) as u16)?;
    let len = (w0 >> 32) as usize;
    // An 8-byte gap at a segment end holds a header-only pad.
    if kind == Kind::Pad && len == 8 {
        return Some((kind, len));
    }
    if len < RECORD_HEADER || !len.is_multiple_of(8) || len as u64 > remaining {
        return None;
    }
    let w1 = le_u64(bytes, at + 8)?;
    let ok = match kind {
        Kind::Pad => w1 == pad_check(len as u32),
        _ => {
            len <= MAX_RECORD
                && bytes.len() >= at + len
                && w1 == checksum(&bytes[at + RECORD_HEADER..at + len], len as u32)
        }
    };
    ok.then_some((kind, len))
}

/// Whether a record header at `at` announces more bytes than the `remaining` ones.
fn cut_record(bytes: &[u8], at: usize, remaining: u64) -> bool {
    le_u64(bytes, at).is_some_and(|w0| {
        w0 as u16 == RECORD_MAGIC && Kind::from_u16((w0 >> 16) as u16).is_some() && (w0 >> 32) > remaining
    })
}

fn decode_body(kind: Kind, r: &mut Reader<'_>) -> Result<Option<Event>, Error> {
    Ok(Some(match kind {
        Kind::Pad => return Ok(None),
        Kind::Start => {
            let pid = r.u32()?;
            let ppid = r.u32()?;
            let page_size = r.u32()?;
            r.u32()?;
            let mono_ns = r.u64()?;
            let real_ns = r.u64()?;
            let exe = r.string()?;
            let trace_path = r.string()?;
            let argc = r.u32()? as usize;
            // Each argument takes at least 4 bytes, which bounds argc by the record's size.
            if argc > r.buf.len() / 4 {
                return Err(r.err(format!("argc {argc} exceeds what the record can hold")));
            }
            let argv = (0..argc).map(|_| r.string()).collect::<Result<_, _>>()?;
            // Older traces end here; their record padding is under 8 bytes, shorter than
            // run_id and origin together.
            let (run_id, fork) = if r.buf.len() - r.pos < 12 {
                (0, None)
            } else {
                let run_id = r.u64()?;
                let fork = match r.u32()? {
                    ORIGIN_EXEC => None,
                    ORIGIN_FORK => Some(Fork { parent_tid: r.u32()?, mono_ns: r.u64()?, stack: r.frames()? }),
                    o => return Err(r.err(format!("unknown process origin {o}"))),
                };
                (run_id, fork)
            };
            Event::Start(Start {
                pid,
                ppid,
                page_size,
                mono_ns,
                real_ns,
                exe,
                trace_path,
                argv,
                run_id,
                fork,
            })
        }
        Kind::Maps => {
            let source = match r.u8()? {
                0 => MapsSource::Initial,
                1 => MapsSource::KernelFinal,
                s => return Err(r.err(format!("unknown maps source {s}"))),
            };
            r.bytes(3)?;
            let chunk = r.u32()?;
            let text = r.blob()?.to_vec();
            Event::Maps(MapsChunk { source, chunk, text })
        }
        Kind::Module => Event::Module(Module {
            base: r.u64()?,
            lo: r.u64()?,
            hi: r.u64()?,
            build_id: r.blob()?.to_vec(),
            path: r.string()?,
        }),
        Kind::Call => {
            let raw = r.u16()?;
            let call = CallKind::from_u16(raw).ok_or_else(|| r.err(format!("unknown call {raw}")))?;
            let flags = r.u16()?;
            let tid = r.u32()?;
            let time_ns = r.u64()?;
            let mut args = [0u64; 6];
            for a in &mut args {
                *a = r.u64()?;
            }
            let result = r.u64()?;
            let errno = r.i32()?;
            r.u32()?;
            let (stack, stack_ref) = if flags & crate::CALL_FLAG_STACK_REF != 0 {
                (Vec::new(), r.u64()?)
            } else {
                (r.frames()?, 0)
            };
            Event::Call(Call { call, flags, tid, time_ns, args, result, errno, stack, stack_ref })
        }
        Kind::ThreadStart => Event::ThreadStart(ThreadStart {
            tid: r.u32()?,
            creator_tid: r.u32()?,
            time_ns: r.u64()?,
            sp: r.u64()?,
            stack_size: r.u64()?,
            guard_size: r.u64()?,
            start_routine: r.u64()?,
            creator_stack: r.frames()?,
        }),
        Kind::Exit => {
            let raw_status = r.i32()?;
            r.u32()?;
            Event::Exit(Exit { raw_status, how: r.string()? })
        }
        Kind::Resolve => {
            let api = r.u16()?;
            r.u16()?;
            let tid = r.u32()?;
            let (start_ns, end_ns) = (r.u64()?, r.u64()?);
            let (family, socktype, protocol, flags, ret, error) =
                (r.i32()?, r.i32()?, r.i32()?, r.i32()?, r.i32()?, r.i32()?);
            let handle = r.u64()?;
            let name = r.string()?;
            let service = r.string()?;
            let n = r.u32()? as usize;
            if n > crate::MAX_ADDRS {
                return Err(r.err(format!("{n} addresses exceed the limit of {}", crate::MAX_ADDRS)));
            }
            let mut addrs = Vec::with_capacity(n);
            for _ in 0..n {
                let fam = r.u16()?;
                r.bytes(6)?;
                let mut a = [0u8; 16];
                a.copy_from_slice(r.bytes(16)?);
                addrs.push((fam, a));
            }
            let stack = r.frames()?;
            Event::Resolve(Resolve {
                api,
                tid,
                start_ns,
                end_ns,
                family,
                socktype,
                protocol,
                flags,
                ret,
                error,
                handle,
                name,
                service,
                addrs,
                stack,
            })
        }
        Kind::Config => Event::Config(r.string()?),
        // Not an event of its own: parse() files its frames under its offset.
        Kind::Stack => return Ok(None),
        Kind::ThreadName => {
            let tid = r.u32()?;
            r.u32()?;
            Event::ThreadName(ThreadName { tid, name: r.string()? })
        }
    }))
}

/// Reads a whole trace. A file shorter than its header claims (a copy cut short) reads up to the
/// cut and says so in [`Trace::truncated`]; records that were reserved but never committed are skipped and counted in [`Trace::torn`].
pub fn parse(bytes: &[u8]) -> Result<Trace, Error> {
    let mut stream = Stream::new(bytes, bytes.len() as u64)?;
    let mut events = Vec::new();
    while let Some(ev) = stream.next_event()? {
        events.push(ev);
    }
    let h = stream.header;
    Ok(Trace {
        segment_size: h.segment_size,
        cursor: h.cursor,
        dropped: h.dropped,
        recording_ns: h.recording_ns,
        timed: h.timed,
        torn: stream.torn,
        unresolved_stacks: stream.unresolved_stacks,
        truncated: stream.truncated,
        events,
    })
}

/// The header's figures.
#[derive(Clone, Copy, Debug, Default)]
pub struct Header {
    pub segment_size: u64,
    pub cursor: u64,
    pub dropped: u64,
    pub recording_ns: u64,
    pub timed: u64,
}

/// Bytes of the file a [`Stream`] holds at a time: room for the largest record and then some.
const WINDOW: usize = 4 * MAX_RECORD;

/// Reads a trace record by record from any reader, holding a window of a few MiB of it and the
/// distinct stacks seen so far, whatever the file's size. Applies the same rules as [`parse`]
/// (which is built on it): a torn record is skipped and counted, a damaged one is an error.
pub struct Stream<R: std::io::Read> {
    src: R,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_start: u64,
    /// Position of the next record in `buf`.
    pos: usize,
    /// File offset where the records end (the cursor, or the file's end if shorter).
    end: u64,
    /// Whether the source has nothing more to give.
    eof: bool,
    in_torn: bool,
    stacks: std::collections::HashMap<u64, Vec<u64>>,
    pub header: Header,
    /// Stretches of bytes that held no committed record (a writer killed mid-record).
    pub torn: u64,
    /// Calls whose stack reference names no Stack record.
    pub unresolved_stacks: u64,
    /// The file ends before the header's cursor (a copy cut short): (file length, cursor). The
    /// records before the cut are read.
    pub truncated: Option<(u64, u64)>,
}

impl<R: std::io::Read> Stream<R> {
    /// Checks the header of a trace of `file_len` bytes that `src` reads from its start.
    pub fn new(mut src: R, file_len: u64) -> Result<Stream<R>, Error> {
        let mut head = vec![0u8; HEADER_SIZE.min(file_len as usize)];
        read_full(&mut src, &mut head)
            .map_err(|e| Error { offset: 0, message: format!("cannot read: {e}") })?;
        let (segment_size, cursor, dropped) = read_header(&head)?;
        if cursor < HEADER_SIZE as u64 {
            return Err(Error {
                offset: header::CURSOR as u64,
                message: format!("corrupt header: cursor {cursor}"),
            });
        }
        // The cursor runs past the file only when the writer ran out of room, and then it
        // counted the records it dropped; otherwise a short file was cut after it was written,
        // and what precedes the cut is still read (a torn last record is skipped as usual).
        let truncated = (file_len < cursor && dropped == 0).then_some((file_len, cursor));
        let header = Header {
            segment_size,
            cursor,
            dropped,
            recording_ns: le_u64(&head, header::RECORDING_NS).unwrap_or(0),
            timed: le_u64(&head, header::TIMED).unwrap_or(0),
        };
        Ok(Stream {
            src,
            buf: Vec::new(),
            buf_start: HEADER_SIZE as u64,
            pos: 0,
            end: cursor.min(file_len),
            eof: false,
            in_torn: false,
            stacks: std::collections::HashMap::new(),
            header,
            torn: 0,
            unresolved_stacks: 0,
            truncated,
        })
    }

    /// File offset of the next record: how far the reading has come.
    pub fn position(&self) -> u64 {
        self.buf_start + self.pos as u64
    }

    /// Where the records end.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Makes `buf[pos..]` hold at least `want` bytes, or all that is left of the records.
    fn fill(&mut self, want: usize) -> Result<(), Error> {
        if self.buf.len() - self.pos >= want || self.eof {
            return Ok(());
        }
        self.buf.drain(..self.pos);
        self.buf_start += self.pos as u64;
        self.pos = 0;
        let left = self.end.saturating_sub(self.buf_start + self.buf.len() as u64);
        let room = (WINDOW - self.buf.len().min(WINDOW)).max(want - self.buf.len().min(want));
        let take = (left.min(room as u64)) as usize;
        let old = self.buf.len();
        self.buf.resize(old + take, 0);
        let n = read_full(&mut self.src, &mut self.buf[old..]).map_err(|e| Error {
            offset: self.buf_start + old as u64,
            message: format!("cannot read: {e}"),
        })?;
        self.buf.truncate(old + n);
        if n < take || left == take as u64 {
            self.eof = true;
        }
        Ok(())
    }

    /// Skips `n` bytes from `pos` (a pad longer than the window).
    fn skip(&mut self, n: u64) -> Result<(), Error> {
        let in_buf = (self.buf.len() - self.pos) as u64;
        if n <= in_buf {
            self.pos += n as usize;
            return Ok(());
        }
        let mut rest = n - in_buf;
        self.buf_start += self.buf.len() as u64;
        self.buf.clear();
        self.pos = 0;
        let mut sink = [0u8; 8192];
        while rest > 0 {
            let k = rest.min(sink.len() as u64) as usize;
            let got = read_full(&mut self.src, &mut sink[..k])
                .map_err(|e| Error { offset: self.buf_start, message: format!("cannot read: {e}") })?;
            self.buf_start += got as u64;
            rest -= got as u64;
            if got < k {
                self.eof = true;
                break;
            }
        }
        Ok(())
    }

    /// The next event, or None after the last record.
    pub fn next_event(&mut self) -> Result<Option<Event>, Error> {
        loop {
            self.fill(MAX_RECORD)?;
            let at_abs = self.position();
            if at_abs + 8 > self.end || self.buf.len() - self.pos < 8 {
                return Ok(None);
            }
            let remaining = self.end - at_abs;
            match valid_record(&self.buf, self.pos, remaining) {
                // A pad may be a bare 8-byte header, shorter than any body: skip it whole.
                Some((Kind::Pad, len)) => {
                    self.in_torn = false;
                    self.skip(len as u64)?;
                }
                Some((kind, len)) => {
                    self.in_torn = false;
                    let mut r = Reader {
                        buf: &self.buf[self.pos + RECORD_HEADER..self.pos + len],
                        pos: 0,
                        base: at_abs + RECORD_HEADER as u64,
                    };
                    self.pos += len;
                    if kind == Kind::Stack {
                        let frames = r.frames()?;
                        self.stacks.insert(at_abs, frames);
                        continue;
                    }
                    let Some(mut ev) = decode_body(kind, &mut r)? else { continue };
                    if let Event::Call(c) = &mut ev
                        && c.stack_ref != 0
                    {
                        match self.stacks.get(&c.stack_ref) {
                            Some(frames) => c.stack = frames.clone(),
                            None => self.unresolved_stacks += 1,
                        }
                    }
                    return Ok(Some(ev));
                }
                // In a copy cut short, the record the cut went through is where reading ends.
                None if self.truncated.is_some() && cut_record(&self.buf, self.pos, remaining) => {
                    return Ok(None);
                }
                // A writer publishes a record's first word last, so a record it never finished
                // (killed in between) starts with zero: skip to the next valid record. Anything
                // else where a record should start was damaged after it was written.
                None if !self.in_torn && le_u64(&self.buf, self.pos) != Some(0) => {
                    return Err(Error {
                        offset: at_abs,
                        message: "corrupt record: its header or checksum does not match".to_string(),
                    });
                }
                None => {
                    if !self.in_torn {
                        self.torn += 1;
                        self.in_torn = true;
                    }
                    self.pos += 8;
                }
            }
        }
    }
}

/// Reads until `buf` is full or the source ends; returns how many bytes were read.
fn read_full(src: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Encoder, HEADER_SIZE, VERSION};

    fn file_with(records: &[Vec<u8>]) -> Vec<u8> {
        let mut f = vec![0u8; HEADER_SIZE];
        f[..8].copy_from_slice(&FILE_MAGIC);
        f[8..12].copy_from_slice(&VERSION.to_le_bytes());
        for r in records {
            f.extend_from_slice(r);
        }
        let cursor = f.len() as u64;
        f[header::CURSOR..header::CURSOR + 8].copy_from_slice(&cursor.to_le_bytes());
        f
    }

    fn call_record(tid: u32, stack: &[u64]) -> Vec<u8> {
        let mut buf = [0u8; 2048];
        let mut e = Encoder::new(&mut buf, Kind::Call);
        e.put_u16(CallKind::Mmap as u16);
        e.put_u16(0);
        e.put_u32(tid);
        e.put_u64(7);
        for a in [0, 4096, 3, 0x22, u64::MAX, 0] {
            e.put_u64(a);
        }
        e.put_u64(0x7f00_0000_0000);
        e.put_i32(0);
        e.put_u32(0);
        e.put_frames(stack);
        let n = e.finish().unwrap();
        buf[..n].to_vec()
    }

    #[test]
    fn round_trips_a_call() {
        let f = file_with(&[call_record(42, &[1, 2, 3])]);
        let t = parse(&f).unwrap();
        assert_eq!(t.events.len(), 1);
        let Event::Call(c) = &t.events[0] else { panic!("not a call") };
        assert_eq!(
            (c.tid, c.args[1], c.result, c.stack.as_slice()),
            (42, 4096, 0x7f00_0000_0000, &[1, 2, 3][..])
        );
    }

    fn stack_record(stack: &[u64]) -> Vec<u8> {
        let mut buf = [0u8; 2048];
        let mut e = Encoder::new(&mut buf, Kind::Stack);
        e.put_frames(stack);
        let n = e.finish().unwrap();
        buf[..n].to_vec()
    }

    /// A call record whose stack is a reference to the record at file offset `to`.
    fn call_ref_record(tid: u32, to: u64) -> Vec<u8> {
        let mut r = call_record(tid, &[]);
        // Swap the empty frames (a u32 count, padded) for the flag and the offset.
        let body_end = r.len() - 8; // the u32 count and 4 bytes of padding
        r.truncate(body_end);
        r.extend_from_slice(&to.to_le_bytes());
        r[RECORD_HEADER + 2..RECORD_HEADER + 4].copy_from_slice(&crate::CALL_FLAG_STACK_REF.to_le_bytes());
        let len = r.len() as u32;
        let check = checksum(&r[RECORD_HEADER..], len);
        r[0..8].copy_from_slice(&crate::record_word0(Kind::Call, len).to_le_bytes());
        r[8..16].copy_from_slice(&check.to_le_bytes());
        r
    }

    #[test]
    fn resolves_stack_references_and_counts_the_ones_that_name_nothing() {
        let stack = stack_record(&[10, 20, 30]);
        let at = HEADER_SIZE as u64;
        let f = file_with(&[
            stack.clone(),
            call_ref_record(1, at),
            call_ref_record(2, at + 8),
            call_ref_record(3, at),
        ]);
        let t = parse(&f).unwrap();
        let calls: Vec<_> =
            t.events.iter().filter_map(|e| if let Event::Call(c) = e { Some(c) } else { None }).collect();
        assert_eq!(calls.len(), 3, "the Stack record is not an event of its own");
        assert_eq!(calls[0].stack, [10, 20, 30]);
        assert!(calls[1].stack.is_empty(), "an offset inside a record names no stack");
        assert_eq!(calls[2].stack, [10, 20, 30]);
        assert_eq!((calls[0].stack_ref, t.unresolved_stacks), (at, 1));
    }

    #[test]
    fn skips_a_torn_record_and_keeps_the_ones_after_it() {
        let torn = vec![0u8; 96];
        let f = file_with(&[call_record(1, &[]), torn, call_record(2, &[9])]);
        let t = parse(&f).unwrap();
        let tids: Vec<u32> =
            t.events.iter().filter_map(|e| if let Event::Call(c) = e { Some(c.tid) } else { None }).collect();
        assert_eq!((tids, t.torn), (vec![1, 2], 1));
    }

    #[test]
    fn a_damaged_record_is_an_error_with_its_offset_and_a_cut_file_reads_up_to_the_cut() {
        let f = file_with(&[call_record(1, &[5; 4]), call_record(2, &[6; 3])]);
        let mut g = f.clone();
        g[HEADER_SIZE + 20] ^= 0x10;
        let e = parse(&g).unwrap_err();
        assert_eq!(e.offset, HEADER_SIZE as u64);
        // Issue 11: a copy cut short is read up to the cut, and says it was cut.
        let cut = f.len() - 8;
        let t = parse(&f[..cut]).unwrap();
        let tids: Vec<u32> =
            t.events.iter().filter_map(|e| if let Event::Call(c) = e { Some(c.tid) } else { None }).collect();
        assert_eq!(tids, vec![1]);
        assert_eq!(t.truncated, Some((cut as u64, f.len() as u64)));
        assert_eq!(parse(&f).unwrap().truncated, None);
    }

    #[test]
    fn an_eight_byte_pad_at_a_segment_end_is_skipped() {
        // Regression (issue 6, hostile targets): a bare pad header made the reader slice
        // past its own end and panic.
        let pad = crate::record_word0(Kind::Pad, 8).to_le_bytes().to_vec();
        let f = file_with(&[call_record(1, &[]), pad, call_record(2, &[])]);
        assert_eq!(parse(&f).unwrap().events.len(), 2);
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_reads_or_errors() {
        let f = file_with(&[call_record(1, &[5; 10]), call_record(2, &[6; 3])]);
        for cut in 0..f.len() {
            let _ = parse(&f[..cut]);
        }
        for i in 0..f.len() {
            for bit in [0x01u8, 0x80] {
                let mut g = f.clone();
                g[i] ^= bit;
                let _ = parse(&g);
            }
        }
    }

    /// A Start record as the shim writes it, with the tail `tail` puts after argv.
    fn start_record(argv: &[&str], tail: impl FnOnce(&mut Encoder<'_>)) -> Vec<u8> {
        let mut buf = [0u8; 4096];
        let mut e = Encoder::new(&mut buf, Kind::Start);
        e.put_u32(1234);
        e.put_u32(1);
        e.put_u32(4096);
        e.put_u32(0);
        e.put_u64(111);
        e.put_u64(222);
        e.put_str(b"/bin/true", 4096);
        e.put_str(b"/tmp/t.trace", 4096);
        e.put_u32(argv.len() as u32);
        for a in argv {
            e.put_str(a.as_bytes(), 4096);
        }
        tail(&mut e);
        let n = e.finish().unwrap();
        buf[..n].to_vec()
    }

    fn only_start(f: &[u8]) -> Start {
        match parse(f).unwrap().events.as_slice() {
            [Event::Start(s)] => s.clone(),
            other => panic!("not one Start: {other:?}"),
        }
    }

    /// Issue 12: Start carries the run id and, for a trace created in a fork child, the
    /// parent's forking thread, the fork's time and its stack; a Start written before these
    /// fields existed still reads, as run 0 from exec.
    #[test]
    fn start_round_trips_run_id_and_fork_origin_and_old_starts_still_read() {
        // Every argv length, so that the old record's padding takes each value 0..8.
        for n in 0..9 {
            let args: Vec<String> = (0..n).map(|i| "a".repeat(i + 1)).collect();
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let old = only_start(&file_with(&[start_record(&argv, |_| {})]));
            assert_eq!((old.run_id, old.fork.clone(), old.argv.len()), (0, None, n), "{n} args");
            let exec = only_start(&file_with(&[start_record(&argv, |e| {
                e.put_start_origin(0x0123_4567_89ab_cdef, None)
            })]));
            assert_eq!((exec.run_id, exec.fork, exec.argv), (0x0123_4567_89ab_cdef, None, args.clone()));
            let fork = only_start(&file_with(&[start_record(&argv, |e| {
                e.put_start_origin(u64::MAX, Some((4321, 99, &[7, 8, 9])))
            })]));
            assert_eq!(fork.run_id, u64::MAX);
            assert_eq!(fork.fork, Some(Fork { parent_tid: 4321, mono_ns: 99, stack: vec![7, 8, 9] }));
            assert_eq!((fork.pid, fork.ppid, fork.mono_ns, fork.argv), (1234, 1, 111, args));
        }
        let bad = start_record(&[], |e| {
            e.put_u64(1);
            e.put_u32(7);
        });
        let err = parse(&file_with(&[bad])).unwrap_err();
        assert!(err.message.contains("unknown process origin 7"), "{err}");
        let f = file_with(&[start_record(&["x"], |e| e.put_start_origin(5, Some((1, 2, &[3; 20]))))]);
        for cut in 0..f.len() {
            let _ = parse(&f[..cut]);
        }
    }

    #[test]
    fn rejects_a_short_or_foreign_file_with_an_offset() {
        assert_eq!(parse(b"hello").unwrap_err().offset, 5);
        let mut f = file_with(&[]);
        f[0] = b'X';
        assert!(parse(&f).unwrap_err().message.contains("wrong magic"));
    }
}
