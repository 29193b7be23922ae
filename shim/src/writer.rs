//! The trace writer: lock-free appends into a file-backed shared mapping, through a window of
//! bounded size.
//!
//! Every record goes straight into `MAP_SHARED` pages of the trace file, so it is in the page
//! cache the moment it is committed: a raw `exit_group` (Go) or a SIGKILL loses nothing that was
//! committed, and no flush, helper thread or exit handler is needed. Threads reserve space with
//! one `fetch_add` on the cursor kept in the file header and publish each record's first word
//! last (see the `vmshim-trace` crate). A record never straddles two segments (the rest of a
//! segment is filled with a pad record).
//!
//! # The window
//! The file is mapped a segment (`VMSHIM_SEGMENT_BYTES`) at a time, on demand, and a segment is
//! unmapped as soon as its last writer is done with it, so the shim's footprint does not grow
//! with the trace: at most [`WINDOW`] segments are mapped at once, plus the header page, which
//! stays mapped for the writer's life (the cursor and counters live there). With the default
//! 4 MiB segments that is 16 MiB + one page of address space and at most as much RSS; a
//! single-threaded target has one segment mapped, two while a record crosses into the next.
//! A segment stays mapped past its end only while a writer that reserved space in it (a thread
//! preempted between reserve and commit, say) has not finished; a writer that needs a segment
//! while the window is full drops its record (counted in the header).
//!
//! Lock-free retirement: every byte of a segment is reserved by exactly one writer (a record,
//! or a pad), and each writer, once done with its bytes (committed, padded or given up), adds
//! their number to the segment's [`DONE`] count. The writer whose addition makes the count reach
//! the segment's capacity is the last one in it, and no other can come (every byte is taken):
//! it unmaps the segment. A writer holds its bytes unaccounted while it uses the mapping, so a
//! segment is never unmapped under a writer. The unmap is recorded (`CALL_FLAG_OWN`, before the
//! call: once it is gone another thread's mmap may reuse the range), so the report's replay
//! removes it.
//!
//! This module must never block, allocate or touch `errno`: it runs inside hooks.

use crate::syscall as sys;
use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicU32, AtomicU64, Ordering::*};
use vmshim_trace::{CallKind, FILE_MAGIC, HEADER_SIZE, Kind, VERSION, header, pad_check, record_word0};

const UNINIT: u8 = 0;
const INITING: u8 = 1;
const READY: u8 = 2;
const OFF: u8 = 3;

/// The trace holds at most this many segments (with 4 MiB segments: 16 GiB of trace).
const MAX_SEGS: usize = 4096;
/// At most this many segments are mapped at once (see the module doc): the segment being
/// filled, the next one while a record crosses into it, and two more for writers that are slow
/// to finish an older one.
pub const WINDOW: u32 = 4;
const PATH_MAX: usize = 4096;

static STATE: AtomicU8 = AtomicU8::new(UNINIT);
/// The trace file's identity (st_dev, st_ino): the shim keeps no descriptor open, since a
/// target may close every descriptor or dup2 over one (and then a kept descriptor would point
/// at the program's own file); each new segment reopens the file by its absolute path and
/// checks it is still the same file.
static FILE_DEV: AtomicU64 = AtomicU64::new(0);
static FILE_INO: AtomicU64 = AtomicU64::new(0);
static PID: AtomicU32 = AtomicU32::new(0);
static SEG_SIZE: AtomicU64 = AtomicU64::new(0);
static LIMIT: AtomicU64 = AtomicU64::new(0);
static FILE_SIZE: AtomicU64 = AtomicU64::new(0);
/// The file's first page (the header), mapped while the writer is READY.
static HDR: AtomicPtr<u8> = AtomicPtr::new(ptr::null_mut());
/// Each segment's mapping, null while it is not mapped (not yet, or retired).
static SEGS: [AtomicPtr<u8>; MAX_SEGS] = [const { AtomicPtr::new(ptr::null_mut()) }; MAX_SEGS];
/// Bytes of each segment whose writers are done with them; at the segment's capacity it is
/// retired (unmapped) by the writer that got it there.
static DONE: [AtomicU64; MAX_SEGS] = [const { AtomicU64::new(0) }; MAX_SEGS];
/// Segment mappings that exist now (including one that lost a race to map, until it is gone).
static MAPPED: AtomicU32 = AtomicU32::new(0);

/// The trace path, written once by the thread that wins `UNINIT -> INITING`, read after `READY`.
struct PathBuf(UnsafeCell<[u8; PATH_MAX]>);
// SAFETY: written only by the single initialising thread before STATE becomes READY (Release);
// read only after observing READY (Acquire).
unsafe impl Sync for PathBuf {}
static PATH: PathBuf = PathBuf(UnsafeCell::new([0; PATH_MAX]));
static PATH_LEN: AtomicU32 = AtomicU32::new(0);

/// This process's pid, as of the last (re)initialisation: the child of a fork gets its own.
pub fn own_pid() -> u32 {
    match PID.load(Relaxed) {
        0 => sys::getpid(),
        p => p,
    }
}

/// The trace file's path (empty before initialisation).
pub fn path() -> &'static [u8] {
    if STATE.load(Acquire) != READY {
        return &[];
    }
    // SAFETY: READY was published after PATH was written; nobody writes it again until a fork
    // child resets the state, and that child is single-threaded.
    let all: &[u8; PATH_MAX] = unsafe { &*PATH.0.get() };
    &all[..PATH_LEN.load(Relaxed) as usize]
}

pub fn is_ready() -> bool {
    STATE.load(Acquire) == READY
}

/// Claims the right to initialise: true for exactly one caller while the writer is unopened.
pub fn begin_init() -> bool {
    STATE.compare_exchange(UNINIT, INITING, Acquire, Relaxed).is_ok()
}

/// Opens the trace file and maps its header and first segment. On failure, prints one line
/// on stderr and leaves the writer off: the target runs on untraced.
pub fn open(cfg: &crate::config::Config) -> bool {
    let pid = sys::getpid();
    PID.store(pid, Relaxed);
    SEG_SIZE.store(cfg.segment_bytes, Relaxed);
    LIMIT.store(cfg.max_bytes.min(cfg.segment_bytes * MAX_SEGS as u64), Relaxed);
    FILE_SIZE.store(0, Relaxed);
    // SAFETY: only the initialising thread gets here (begin_init), before READY.
    let buf = unsafe { &mut *PATH.0.get() };
    let template = crate::config::getenv("VMSHIM_OUT").unwrap_or(b"vmshim.%p.trace");
    // Absolute, so that reopening works after the program changes directory.
    let mut start = 0;
    if template.first() != Some(&b'/') {
        let r = sys::getcwd(&mut buf[..PATH_MAX / 2]);
        if r <= 1 {
            return fail(b"(no working directory)", (-r) as i32);
        }
        start = r as usize - 1; // getcwd's length counts the NUL
        buf[start] = b'/';
        start += 1;
    }
    let Some(len) = expand(template, pid, &mut buf[start..]).map(|l| l + start) else {
        return fail(b"VMSHIM_OUT is too long", 0);
    };
    let Some((fd, len)) = create(buf, len) else {
        return false;
    };
    PATH_LEN.store(len as u32, Relaxed);
    let id = sys::file_id(fd).unwrap_or((0, 0));
    FILE_DEV.store(id.0, Relaxed);
    FILE_INO.store(id.1, Relaxed);
    let size = cfg.segment_bytes;
    let seg0 = match map_segment(fd, 0, size, size) {
        Ok(m) => m,
        Err(e) => return discard(fd, id, &buf[..=len], e),
    };
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let h = sys::mmap(0, HEADER_SIZE, prot, libc::MAP_SHARED, fd, 0);
    let (_, e) = sys::split(h);
    if e != 0 {
        sys::munmap(seg0 as usize, size as usize);
        return discard(fd, id, &buf[..=len], e);
    }
    sys::close(fd);
    let hdr_ptr = h as *mut u8;
    // SAFETY: a fresh, writable mapping of the file's first page, which holds the header.
    let hdr = unsafe { core::slice::from_raw_parts_mut(hdr_ptr, HEADER_SIZE) };
    hdr[header::VERSION..header::VERSION + 4].copy_from_slice(&VERSION.to_le_bytes());
    hdr[header::HEADER_SIZE..header::HEADER_SIZE + 4].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
    hdr[header::SEGMENT_SIZE..header::SEGMENT_SIZE + 8].copy_from_slice(&cfg.segment_bytes.to_le_bytes());
    hdr[header::LIMIT..header::LIMIT + 8].copy_from_slice(&LIMIT.load(Relaxed).to_le_bytes());
    hdr[header::MAGIC..header::MAGIC + 8].copy_from_slice(&FILE_MAGIC);
    HDR.store(hdr_ptr, Release);
    cursor().store(HEADER_SIZE as u64, Relaxed);
    SEGS[0].store(seg0, Release);
    MAPPED.store(1, Release);
    STATE.store(READY, Release);
    let header_args = [h as u64, HEADER_SIZE as u64, prot as u64, libc::MAP_SHARED as u64, u64::MAX, 0];
    crate::record::own_mapping(CallKind::Mmap, header_args, h as u64);
    record_own_segment(CallKind::Mmap, 0, seg0);
    true
}

/// Creates the trace file at `buf[..len]` (not yet NUL-terminated), never destroying or
/// following what is already there. A name taken by a regular file or a symlink (an exec'd
/// image of the same pid, a fork child with a fixed VMSHIM_OUT) gets the first free `.N`
/// suffix; a name taken by anything else (a device, FIFO, socket or directory) is a mistake in
/// VMSHIM_OUT, and the shim refuses it rather than write a trace beside it. Returns the open
/// descriptor and the final path's length, or None after one line on stderr.
fn create(buf: &mut [u8; PATH_MAX], len: usize) -> Option<(i32, usize)> {
    let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    for n in 0..100u32 {
        let l = if n == 0 { len } else { with_suffix(buf, len, n) };
        if l + 1 > PATH_MAX {
            break;
        }
        buf[l] = 0;
        let r = sys::open(&buf[..=l], flags, 0o600);
        if r >= 0 {
            return Some((r as i32, l));
        }
        if r != -(libc::EEXIST as isize) {
            fail(&buf[..l], (-r) as i32);
            return None;
        }
        if n == 0
            && let Ok((mode, _, _)) = sys::lstat_id(&buf[..=l])
            && let Some(kind) = not_a_trace_file(mode)
        {
            say(&[b"vmshim: VMSHIM_OUT=", &buf[..l.min(300)], b" is ", kind, NOT_TRACED]);
            STATE.store(OFF, Release);
            return None;
        }
    }
    fail(&buf[..len], libc::EEXIST);
    None
}

const NOT_TRACED: &[u8] = b", not a trace file; the program runs on untraced\n";

/// What a name taken by a file of `mode` is, when it is not something a trace may sit beside.
fn not_a_trace_file(mode: u32) -> Option<&'static [u8]> {
    match mode & libc::S_IFMT {
        libc::S_IFREG | libc::S_IFLNK => None,
        libc::S_IFDIR => Some(b"a directory"),
        libc::S_IFCHR => Some(b"a character device"),
        libc::S_IFBLK => Some(b"a block device"),
        libc::S_IFIFO => Some(b"a FIFO"),
        libc::S_IFSOCK => Some(b"a socket"),
        _ => Some(b"not a regular file"),
    }
}

/// Gives up on a trace file the shim created (`fd`, of identity `id`) but could not set up: it
/// removes the name `path` (NUL-terminated) only if it still names that very file, so that no
/// empty trace is left behind and nothing else is ever removed. Then reports `errno`.
fn discard(fd: i32, id: (u64, u64), path: &[u8], errno: i32) -> bool {
    if let Ok((mode, dev, ino)) = sys::lstat_id(path)
        && mode & libc::S_IFMT == libc::S_IFREG
        && (dev, ino) == id
        && id != (0, 0)
    {
        sys::unlink(path);
    }
    sys::close(fd);
    fail(&path[..path.len().saturating_sub(1)], errno)
}

fn fail(what: &[u8], errno: i32) -> bool {
    STATE.store(OFF, Release);
    let mut num = [0u8; 20];
    let n = fmt_u64(errno as u64, &mut num);
    say(&[
        b"vmshim: cannot create the trace file ",
        &what[..what.len().min(300)],
        b" (errno ",
        &num[..n],
        b"); the program runs on untraced\n",
    ]);
    false
}

/// Writes the concatenated `parts` to stderr as one write (cut at 512 bytes).
fn say(parts: &[&[u8]]) {
    let mut line = [0u8; 512];
    let mut n = 0;
    for part in parts {
        for &b in part.iter() {
            if let Some(dst) = line.get_mut(n) {
                *dst = b;
                n += 1;
            }
        }
    }
    sys::write(2, &line[..n]);
}

/// Writes `template` with each `%p` replaced by `pid` into `out`; returns the length.
fn expand(template: &[u8], pid: u32, out: &mut [u8]) -> Option<usize> {
    let mut n = 0;
    let mut i = 0;
    while i < template.len() {
        if template[i] == b'%' && template.get(i + 1) == Some(&b'p') {
            n += fmt_u64(pid as u64, out.get_mut(n..)?);
            i += 2;
        } else {
            *out.get_mut(n)? = template[i];
            n += 1;
            i += 1;
        }
    }
    (n + 12 < out.len()).then_some(n)
}

fn with_suffix(buf: &mut [u8], base_len: usize, n: u32) -> usize {
    buf[base_len] = b'.';
    base_len + 1 + fmt_u64(n as u64, &mut buf[base_len + 1..])
}

/// Decimal digits of `v` into `out`; returns how many were written (0 if they do not fit).
pub fn fmt_u64(mut v: u64, out: &mut [u8]) -> usize {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let digits = &tmp[i..];
    match out.get_mut(..digits.len()) {
        Some(dst) => {
            dst.copy_from_slice(digits);
            digits.len()
        }
        None => 0,
    }
}

fn cursor() -> &'static AtomicU64 {
    let hdr = HDR.load(Acquire);
    // SAFETY: the header page stays mapped while the writer is READY (callers check); the
    // cursor field is 8-aligned inside it.
    unsafe { &*(hdr.add(header::CURSOR) as *const AtomicU64) }
}

/// Adds `n` to the header's counter at `field`, if the header is mapped.
fn bump(field: usize, n: u64) {
    let hdr = HDR.load(Acquire);
    if !hdr.is_null() {
        // SAFETY: a non-null HDR is the mapped header page (unmapped only in a fork child,
        // which is single-threaded then); every counter field is 8-aligned inside it.
        unsafe { &*(hdr.add(field) as *const AtomicU64) }.fetch_add(n, Relaxed);
    }
}

/// Adds one record's recording time to the header's cost counters.
pub fn account(ns: u64) {
    bump(header::RECORDING_NS, ns);
    bump(header::TIMED, 1);
}

pub fn count_dropped() {
    bump(header::DROPPED, 1);
}

/// The base address of segment `i`, mapping it (and growing the file) on first use. Only a
/// writer holding bytes of segment `i` it has not yet given back ([`leave`]) may call this:
/// that keeps the segment from being retired meanwhile. `None` when it cannot be mapped, or
/// the window is full.
fn segment(i: usize) -> Option<*mut u8> {
    let slot = SEGS.get(i)?;
    let p = slot.load(Acquire);
    if !p.is_null() {
        return Some(p);
    }
    let size = SEG_SIZE.load(Relaxed);
    let want = (i as u64 + 1) * size;
    // Growing a file past RLIMIT_FSIZE raises SIGXFSZ, which would kill the target: stop
    // recording instead.
    if want > sys::file_size_limit() {
        return None;
    }
    MAPPED.fetch_update(AcqRel, Acquire, |m| (m < WINDOW).then_some(m + 1)).ok()?;
    let m = reopen().and_then(|fd| {
        let m = map_segment(fd, i, size, want).ok();
        sys::close(fd);
        m
    });
    let Some(m) = m else {
        MAPPED.fetch_sub(1, AcqRel);
        return None;
    };
    match slot.compare_exchange(ptr::null_mut(), m, AcqRel, Acquire) {
        Ok(_) => {
            record_own_segment(CallKind::Mmap, i, m);
            Some(m)
        }
        Err(winner) => {
            sys::munmap(m as usize, size as usize);
            MAPPED.fetch_sub(1, AcqRel);
            Some(winner)
        }
    }
}

/// How many bytes of segment `i` writers reserve: all of it but the header in segment 0.
fn capacity(i: usize, size: u64) -> u64 {
    if i == 0 { size - HEADER_SIZE as u64 } else { size }
}

/// A writer is done with `bytes` of segment `i` (committed, padded or given up). The one that
/// completes the segment retires it: no writer is in it, none can come.
fn leave(i: usize, bytes: u64) {
    let Some(done) = DONE.get(i) else { return };
    let size = SEG_SIZE.load(Relaxed);
    // AcqRel: each writer's stores into the segment happen before its addition; the last
    // addition sees them all before the unmap.
    if done.fetch_add(bytes, AcqRel) + bytes != capacity(i, size) {
        return;
    }
    let p = SEGS[i].swap(ptr::null_mut(), AcqRel);
    if !p.is_null() {
        // Recorded before the unmap: once the range is free, another thread's mmap may get it
        // and record that, and the replay must see this unmap first.
        record_own_segment(CallKind::Munmap, i, p);
        sys::munmap(p as usize, size as usize);
        MAPPED.fetch_sub(1, AcqRel);
    }
}

/// Opens the trace file again by path, if it is still the file the shim created.
fn reopen() -> Option<i32> {
    let path = path_for_reopen();
    let fd = sys::open(path, libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC, 0);
    if fd < 0 {
        return None;
    }
    let fd = fd as i32;
    if sys::file_id(fd) != Some((FILE_DEV.load(Relaxed), FILE_INO.load(Relaxed))) {
        sys::close(fd);
        return None;
    }
    Some(fd)
}

/// The NUL-terminated trace path (valid once open() stored it, READY or not).
fn path_for_reopen() -> &'static [u8] {
    // SAFETY: PATH is written once, by the initialising thread, before any segment is mapped.
    let all: &[u8; PATH_MAX] = unsafe { &*PATH.0.get() };
    &all[..=(PATH_LEN.load(Relaxed) as usize).min(PATH_MAX - 1)]
}

const MADV_POPULATE_WRITE: i32 = 23;
/// How much of a segment is faulted in at a time.
const POPULATE_CHUNK: u64 = 256 << 10;

/// Faults in writable the chunk of the segment at `base` (`size` bytes) that starts at
/// `offset`. Otherwise the first store to each page of a shared file mapping takes a write
/// fault (the file system tracks dirty pages), one per 40 records or so, each waiting on the
/// mmap lock the target's own mmap calls hold. A chunk at a time, as records reach it: a
/// short-lived process dirties no more of its file than it fills. An older kernel without
/// MADV_POPULATE_WRITE (5.14) says EINVAL and the pages fault in as before.
fn populate(base: usize, offset: u64, size: u64) {
    if offset < size {
        sys::madvise(base + offset as usize, POPULATE_CHUNK.min(size - offset) as usize, MADV_POPULATE_WRITE);
    }
}

/// Grows the file to hold segment `i` and maps it; Err(errno) when either fails.
fn map_segment(fd: i32, i: usize, size: u64, want: u64) -> Result<*mut u8, i32> {
    if FILE_SIZE.load(Relaxed) < want {
        // fallocate only ever grows a file, so racing threads cannot shrink it under a mapping
        // (a shrink would turn a later store into SIGBUS in the target).
        let r = sys::fallocate(fd, i as u64 * size, size);
        if r == -(libc::EOPNOTSUPP as isize) {
            if FILE_SIZE.fetch_max(want, AcqRel) < want {
                let r = sys::ftruncate(fd, want);
                if r < 0 {
                    return Err((-r) as i32);
                }
            }
        } else if r < 0 {
            return Err((-r) as i32);
        }
        FILE_SIZE.fetch_max(want, AcqRel);
    }
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let m = sys::mmap(0, size as usize, prot, libc::MAP_SHARED, fd, (i as u64 * size) as i64);
    let (_, e) = sys::split(m);
    if e != 0 {
        return Err(e);
    }
    populate(m as usize, 0, size);
    Ok(m as *mut u8)
}

/// Records the shim's own mapping (`Mmap`) or unmapping (`Munmap`) of segment `i` at `base`,
/// so the report files it under `vmshim` while it is mapped and drops it once it is not.
fn record_own_segment(call: CallKind, i: usize, base: *mut u8) {
    let size = SEG_SIZE.load(Relaxed);
    let (args, result) = if call == CallKind::Mmap {
        let args = [
            base as u64,
            size,
            (libc::PROT_READ | libc::PROT_WRITE) as u64,
            libc::MAP_SHARED as u64,
            u64::MAX, // the descriptor is closed again at once
            i as u64 * size,
        ];
        (args, base as u64)
    } else {
        ([base as u64, size, 0, 0, 0, 0], 0)
    };
    crate::record::own_mapping(call, args, result);
}

/// Space for one record, reserved in cursor order; published by [`Slot::commit`]. Dropped
/// uncommitted, it becomes a pad; either way its bytes are then given back to the segment.
pub struct Slot {
    at: *mut u8,
    len: usize,
    /// The record's offset in the trace file.
    pub offset: u64,
    committed: bool,
}

/// Reserves `len` bytes (a multiple of 8, at most one segment). `None` when the writer is off,
/// the trace is full, or the segment cannot be mapped now; the latter two are counted in the
/// header's dropped field.
pub fn reserve(len: usize) -> Option<Slot> {
    if !is_ready() {
        return None;
    }
    let size = SEG_SIZE.load(Relaxed);
    if len as u64 > size || !len.is_multiple_of(8) || len < 16 {
        count_dropped();
        return None;
    }
    loop {
        let off = cursor().fetch_add(len as u64, AcqRel);
        if off + len as u64 > LIMIT.load(Relaxed) {
            count_dropped();
            return None;
        }
        let seg = (off / size) as usize;
        let within = (off % size) as usize;
        if within + len <= size as usize {
            let Some(base) = segment(seg) else {
                // Given up unwritten (the reader skips it as torn), but given back, so that
                // the segment can still be retired.
                leave(seg, len as u64);
                count_dropped();
                return None;
            };
            // The record enters the next chunk: fault it in before anything is stored there.
            let (from, to) = (within as u64 / POPULATE_CHUNK, (within + len) as u64 / POPULATE_CHUNK);
            if to != from {
                populate(base as usize, to * POPULATE_CHUNK, size);
            }
            // SAFETY: `within < size`, so the pointer stays inside the mapped segment.
            let at = unsafe { base.add(within) };
            return Some(Slot { at, len, offset: off, committed: false });
        }
        // The record would straddle two segments: pad out what it took of both, give both
        // pieces back, then reserve again. (Unpadded, the spill into the next segment would
        // read as a torn record.)
        let (pad, spill) = (size as usize - within, within + len - size as usize);
        if let Some(base) = segment(seg) {
            // SAFETY: `within < size`, inside the mapped segment.
            write_pad(unsafe { base.add(within) }, pad);
        }
        if let Some(next) = segment(seg + 1) {
            write_pad(next, spill);
        }
        leave(seg + 1, spill as u64);
        leave(seg, pad as u64);
    }
}

/// Publishes a pad record of `len` bytes (a multiple of 8, at least 8) at `at`.
fn write_pad(at: *mut u8, len: usize) {
    // SAFETY: the caller reserved `at..at+len` in a mapped segment for this pad alone.
    unsafe {
        if len >= 16 {
            ptr::write_unaligned(at.add(8) as *mut u64, pad_check(len as u32));
        }
        (*(at as *const AtomicU64)).store(record_word0(Kind::Pad, len as u32), Release);
    }
}

impl Slot {
    /// Copies a finished record (from `vmshim_trace::Encoder`) and publishes it: the body
    /// first, the first word last with Release, so a reader never sees a half-written record
    /// behind a valid header.
    pub fn commit(mut self, record: &[u8]) {
        if record.len() != self.len {
            return;
        }
        // SAFETY: `self.at..self.at+len` was reserved for this slot alone and is mapped; the
        // first word is 8-aligned because every offset and length is a multiple of 8.
        unsafe {
            ptr::copy_nonoverlapping(record.as_ptr().add(8), self.at.add(8), self.len - 8);
            let w0 = u64::from_le_bytes(record[..8].try_into().unwrap_or_default());
            (*(self.at as *const AtomicU64)).store(w0, Release);
        }
        self.committed = true;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.committed {
            write_pad(self.at, self.len);
        }
        let size = SEG_SIZE.load(Relaxed).max(1);
        leave((self.offset / size) as usize, self.len as u64);
    }
}

/// Reserves and commits in one step; returns the record's file offset if it was stored.
pub fn append(record: &[u8]) -> Option<u64> {
    let slot = reserve(record.len())?;
    let offset = slot.offset;
    slot.commit(record);
    Some(offset)
}

/// In the child of a fork: forget the parent's trace (its mappings and descriptor are the
/// child's copies) so that the next initialisation opens the child's own file.
pub fn reset_after_fork() {
    let size = SEG_SIZE.load(Relaxed) as usize;
    for (s, d) in SEGS.iter().zip(DONE.iter()) {
        let p = s.swap(ptr::null_mut(), AcqRel);
        if !p.is_null() {
            sys::munmap(p as usize, size);
        }
        d.store(0, Relaxed);
    }
    let h = HDR.swap(ptr::null_mut(), AcqRel);
    if !h.is_null() {
        sys::munmap(h as usize, HEADER_SIZE);
    }
    MAPPED.store(0, Relaxed);
    PID.store(0, Relaxed);
    STATE.store(UNINIT, Release);
}
