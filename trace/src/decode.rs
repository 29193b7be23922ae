//! The reading half: turns any byte sequence into events or an error with a byte offset.
//!
//! Each record kind's body layout is documented, with its encoder and decoder, in its module
//! under [`crate::record`]; this module owns the file as a whole: the header, finding records
//! (and skipping torn ones), and resolving stack references.

use crate::reader::Reader;
use crate::record::{
    call, config, exit, maps, module, pad, resolve, stack, start, thread_name, thread_start,
};
use crate::{
    Error, FILE_MAGIC, HEADER_SIZE, Kind, MAX_RECORD, RECORD_HEADER, RECORD_MAGIC, checksum, header,
};

pub use crate::record::call::Call;
pub use crate::record::exit::Exit;
pub use crate::record::maps::MapsChunk;
pub use crate::record::module::Module;
pub use crate::record::resolve::Resolve;
pub use crate::record::start::{Fork, ORIGIN_EXEC, ORIGIN_FORK, Start};
pub use crate::record::thread_name::ThreadName;
pub use crate::record::thread_start::ThreadStart;

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
        Kind::Pad => w1 == pad::check(len as u32),
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
        Kind::Start => Event::Start(start::decode(r)?),
        Kind::Maps => Event::Maps(maps::decode(r)?),
        Kind::Module => Event::Module(module::decode(r)?),
        Kind::Call => Event::Call(call::decode(r)?),
        Kind::ThreadStart => Event::ThreadStart(thread_start::decode(r)?),
        Kind::Exit => Event::Exit(exit::decode(r)?),
        Kind::ThreadName => Event::ThreadName(thread_name::decode(r)?),
        Kind::Resolve => Event::Resolve(resolve::decode(r)?),
        Kind::Config => Event::Config(config::decode(r)?),
        // Not an event of its own: the stream files its frames under its offset.
        Kind::Stack => return Ok(None),
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

    /// Moves to the next record whose header and checksum hold and returns its file offset,
    /// kind and length, without consuming it; skips and counts torn stretches. None after the
    /// last record.
    fn seek_record(&mut self) -> Result<Option<(u64, Kind, usize)>, Error> {
        loop {
            self.fill(MAX_RECORD)?;
            let at_abs = self.position();
            if at_abs + 8 > self.end || self.buf.len() - self.pos < 8 {
                return Ok(None);
            }
            let remaining = self.end - at_abs;
            match valid_record(&self.buf, self.pos, remaining) {
                Some((kind, len)) => {
                    self.in_torn = false;
                    return Ok(Some((at_abs, kind, len)));
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

    /// The next event, or None after the last record.
    pub fn next_event(&mut self) -> Result<Option<Event>, Error> {
        while let Some((at_abs, kind, len)) = self.seek_record()? {
            // A pad may be a bare 8-byte header, shorter than any body: skip it whole.
            if kind == Kind::Pad {
                self.skip(len as u64)?;
                continue;
            }
            let mut r = Reader::new(
                &self.buf[self.pos + RECORD_HEADER..self.pos + len],
                at_abs + RECORD_HEADER as u64,
            );
            self.pos += len;
            if kind == Kind::Stack {
                let frames = stack::decode(&mut r)?;
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
        Ok(None)
    }

    /// The next record as it lies in the file, Stack and Pad records included: its file offset,
    /// kind and bytes (a Pad's header words only: its body was never written). Torn stretches
    /// are skipped and counted as by [`Stream::next_event`]; stack references are not resolved
    /// (and records read this way are not filed for [`Stream::next_event`]'s references).
    pub fn next_record(&mut self) -> Result<Option<(u64, Kind, Vec<u8>)>, Error> {
        let Some((at_abs, kind, len)) = self.seek_record()? else { return Ok(None) };
        if kind == Kind::Pad {
            let bytes = self.buf[self.pos..self.pos + len.min(RECORD_HEADER)].to_vec();
            self.skip(len as u64)?;
            return Ok(Some((at_abs, kind, bytes)));
        }
        let bytes = self.buf[self.pos..self.pos + len].to_vec();
        self.pos += len;
        Ok(Some((at_abs, kind, bytes)))
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
    use crate::CallKind;
    use crate::record::call::{CallRecord, CallStack};
    use crate::record::tests::{file_with, record_bytes};

    fn call(tid: u32, stack: CallStack<'_>) -> Vec<u8> {
        record_bytes(|b| {
            call::encode(
                b,
                &CallRecord {
                    call: CallKind::Mmap,
                    flags: 0,
                    tid,
                    time_ns: 7,
                    args: [0, 4096, 3, 0x22, u64::MAX, 0],
                    result: 0x7f00_0000_0000,
                    errno: 0,
                    stack,
                },
            )
        })
    }

    fn call_record(tid: u32, stack: &[u64]) -> Vec<u8> {
        call(tid, CallStack::Inline(stack))
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

    #[test]
    fn resolves_stack_references_and_counts_the_ones_that_name_nothing() {
        let stack = record_bytes(|b| stack::encode(b, &[10, 20, 30]));
        let at = HEADER_SIZE as u64;
        let f = file_with(&[
            stack.clone(),
            call(1, CallStack::Ref(at)),
            call(2, CallStack::Ref(at + 8)),
            call(3, CallStack::Ref(at)),
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
    fn next_record_yields_every_record_as_it_lies_in_the_file() {
        let stack = record_bytes(|b| stack::encode(b, &[10, 20, 30]));
        let pad = crate::record_word0(Kind::Pad, 8).to_le_bytes().to_vec();
        let at = HEADER_SIZE as u64;
        let records = [stack.clone(), pad, call(1, CallStack::Ref(at)), vec![0; 24], call_record(2, &[5])];
        let f = file_with(&records);
        let mut s = Stream::new(&f[..], f.len() as u64).unwrap();
        let mut seen = Vec::new();
        while let Some((offset, kind, bytes)) = s.next_record().unwrap() {
            seen.push((offset, kind, bytes));
        }
        let kinds: Vec<Kind> = seen.iter().map(|r| r.1).collect();
        assert_eq!(kinds, [Kind::Stack, Kind::Pad, Kind::Call, Kind::Call]);
        assert_eq!((seen[0].0, &seen[0].2), (at, &stack));
        assert_eq!(seen[3].2, records[4]);
        assert_eq!(s.torn, 1);
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
        let start = record_bytes(|b| {
            start::encode(
                b,
                &start::StartRecord {
                    pid: 1,
                    ppid: 1,
                    page_size: 4096,
                    mono_ns: 1,
                    real_ns: 2,
                    exe: b"/bin/x",
                    trace_path: b"/t",
                    argv: start::Argv::Cmdline(b"x\0"),
                    run_id: 5,
                    fork: Some(start::ForkRecord { parent_tid: 1, mono_ns: 2, stack: &[3; 20] }),
                },
            )
        });
        let f = file_with(&[start, call_record(1, &[5; 10]), call_record(2, &[6; 3])]);
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

    #[test]
    fn rejects_a_short_or_foreign_file_with_an_offset() {
        assert_eq!(parse(b"hello").unwrap_err().offset, 5);
        let mut f = file_with(&[]);
        f[0] = b'X';
        assert!(parse(&f).unwrap_err().message.contains("wrong magic"));
    }
}
