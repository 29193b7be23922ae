//! The trace writer: lock-free appends into a file-backed shared mapping.
//!
//! Every record goes straight into `MAP_SHARED` pages of the trace file, so it is in the page
//! cache the moment it is committed: a raw `exit_group` (Go) or a SIGKILL loses nothing that was
//! committed, and no flush, helper thread or exit handler is needed. Threads reserve space with
//! one `fetch_add` on the cursor kept in the file header and publish each record's first word
//! last (see the `vmshim-trace` crate). The file is mapped a segment at a time, on demand; a
//! record never straddles two segments (the rest of a segment is filled with a pad record).
//!
//! This module must never block, allocate or touch `errno`: it runs inside hooks.

use crate::syscall as sys;
use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicU32, AtomicU64, Ordering::*};
use vmshim_trace::{FILE_MAGIC, HEADER_SIZE, Kind, VERSION, header, pad_check, record_word0};

const UNINIT: u8 = 0;
const INITING: u8 = 1;
const READY: u8 = 2;
const OFF: u8 = 3;

/// At most this many segments are ever mapped (with 4 MiB segments: 16 GiB of trace).
const MAX_SEGS: usize = 4096;
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
static SEGS: [AtomicPtr<u8>; MAX_SEGS] = [const { AtomicPtr::new(ptr::null_mut()) }; MAX_SEGS];

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

/// Opens the trace file and maps its first segment. On failure, prints one line on stderr and
/// leaves the writer off: the target runs on untraced.
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
    let Some(mut len) = expand(template, pid, &mut buf[start..]).map(|l| l + start) else {
        return fail(b"VMSHIM_OUT is too long", 0);
    };
    let mut fd = -1;
    // Never overwrite a file we did not create: a taken name (an exec'd image of the same pid,
    // a fork child with a fixed VMSHIM_OUT) gets a numeric suffix instead.
    for n in 0..100u32 {
        let l = if n == 0 { len } else { with_suffix(buf, len, n) };
        if l + 1 > PATH_MAX {
            break;
        }
        buf[l] = 0;
        let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let r = sys::open(&buf[..=l], flags, 0o600);
        if r >= 0 {
            fd = r as i32;
            len = l;
            break;
        }
        if r != -(libc::EEXIST as isize) {
            return fail(&buf[..l], (-r) as i32);
        }
    }
    if fd < 0 {
        return fail(&buf[..len], libc::EEXIST);
    }
    PATH_LEN.store(len as u32, Relaxed);
    let (dev, ino) = sys::file_id(fd).unwrap_or((0, 0));
    FILE_DEV.store(dev, Relaxed);
    FILE_INO.store(ino, Relaxed);
    sys::close(fd);
    let Some(seg0) = segment(0) else {
        return fail(&buf[..len], libc::ENOSPC);
    };
    // SAFETY: seg0 is a fresh, writable, page-aligned mapping of at least one segment (>= 64 KiB).
    let hdr = unsafe { core::slice::from_raw_parts_mut(seg0, HEADER_SIZE) };
    hdr[header::VERSION..header::VERSION + 4].copy_from_slice(&VERSION.to_le_bytes());
    hdr[header::HEADER_SIZE..header::HEADER_SIZE + 4].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
    hdr[header::SEGMENT_SIZE..header::SEGMENT_SIZE + 8].copy_from_slice(&cfg.segment_bytes.to_le_bytes());
    hdr[header::LIMIT..header::LIMIT + 8].copy_from_slice(&LIMIT.load(Relaxed).to_le_bytes());
    cursor().store(HEADER_SIZE as u64, Relaxed);
    hdr[header::MAGIC..header::MAGIC + 8].copy_from_slice(&FILE_MAGIC);
    STATE.store(READY, Release);
    record_own_segment(0, seg0);
    true
}

fn fail(what: &[u8], errno: i32) -> bool {
    STATE.store(OFF, Release);
    let mut line = [0u8; 512];
    let mut n = 0;
    for part in
        [b"vmshim: cannot create the trace file ".as_slice(), &what[..what.len().min(300)], b" (errno "]
    {
        line[n..n + part.len()].copy_from_slice(part);
        n += part.len();
    }
    n += fmt_u64(errno as u64, &mut line[n..]);
    let tail = b"); the program runs on untraced\n";
    line[n..n + tail.len()].copy_from_slice(tail);
    sys::write(2, &line[..n + tail.len()]);
    false
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
    let seg0 = SEGS[0].load(Acquire);
    // SAFETY: segment 0 stays mapped while the writer is READY; the cursor field is 8-aligned
    // inside its first page.
    unsafe { &*(seg0.add(header::CURSOR) as *const AtomicU64) }
}

/// Adds one record's recording time to the header's cost counters.
pub fn account(ns: u64) {
    let seg0 = SEGS[0].load(Acquire);
    if !seg0.is_null() {
        // SAFETY: as in cursor(); both fields are 8-aligned inside the header.
        unsafe {
            (*(seg0.add(header::RECORDING_NS) as *const AtomicU64)).fetch_add(ns, Relaxed);
            (*(seg0.add(header::TIMED) as *const AtomicU64)).fetch_add(1, Relaxed);
        }
    }
}

pub fn count_dropped() {
    let seg0 = SEGS[0].load(Acquire);
    if !seg0.is_null() {
        // SAFETY: as in cursor().
        unsafe { &*(seg0.add(header::DROPPED) as *const AtomicU64) }.fetch_add(1, Relaxed);
    }
}

/// The base address of segment `i`, mapping it (and growing the file) on first use.
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
    let fd = reopen()?;
    let m = map_segment(fd, i, size, want);
    sys::close(fd);
    let m = m?;

    match slot.compare_exchange(ptr::null_mut(), m, AcqRel, Acquire) {
        Ok(_) => {
            if i > 0 {
                record_own_segment(i, m);
            }
            Some(m)
        }
        Err(winner) => {
            sys::munmap(m as usize, size as usize);
            Some(winner)
        }
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

/// Grows the file to hold segment `i` and maps it.
fn map_segment(fd: i32, i: usize, size: u64, want: u64) -> Option<*mut u8> {
    if FILE_SIZE.load(Relaxed) < want {
        // fallocate only ever grows a file, so racing threads cannot shrink it under a mapping
        // (a shrink would turn a later store into SIGBUS in the target).
        let r = sys::fallocate(fd, i as u64 * size, size);
        if r == -(libc::EOPNOTSUPP as isize) {
            if FILE_SIZE.fetch_max(want, AcqRel) < want && sys::ftruncate(fd, want) < 0 {
                return None;
            }
        } else if r < 0 {
            return None;
        }
        FILE_SIZE.fetch_max(want, AcqRel);
    }
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let m = sys::mmap(0, size as usize, prot, libc::MAP_SHARED, fd, (i as u64 * size) as i64);
    if m < 0 && m > -4096 {
        return None;
    }
    populate(m as usize, 0, size);
    Some(m as *mut u8)
}

/// Records the shim's own mapping of segment `i`, so the report files it under `vmshim`.
fn record_own_segment(i: usize, base: *mut u8) {
    let size = SEG_SIZE.load(Relaxed);
    let args = [
        base as u64,
        size,
        (libc::PROT_READ | libc::PROT_WRITE) as u64,
        libc::MAP_SHARED as u64,
        u64::MAX, // the descriptor is closed again at once
        i as u64 * size,
    ];
    crate::record::own_mapping(args, base as u64);
}

/// Space for one record, reserved in cursor order; published by [`Slot::commit`].
pub struct Slot {
    at: *mut u8,
    len: usize,
    /// The record's offset in the trace file.
    pub offset: u64,
}

/// Reserves `len` bytes (a multiple of 8, at most one segment). `None` when the writer is off or
/// the trace is full; the latter is counted in the header's dropped field.
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
        let Some(base) = segment(seg) else {
            count_dropped();
            return None;
        };
        // SAFETY: `within < size`, so the pointer stays inside the mapped segment.
        let at = unsafe { base.add(within) };
        if within + len <= size as usize {
            // The record enters the next chunk: fault it in before anything is stored there.
            let (from, to) = (within as u64 / POPULATE_CHUNK, (within + len) as u64 / POPULATE_CHUNK);
            if to != from {
                populate(base as usize, to * POPULATE_CHUNK, size);
            }
            return Some(Slot { at, len, offset: off });
        }
        // The record would straddle two segments: pad out what it took of both, then reserve
        // again. (Unpadded, the spill into the next segment would read as a torn record.)
        let pad = size as usize - within;
        write_pad(at, pad);
        if let Some(next) = segment(seg + 1) {
            write_pad(next, within + len - size as usize);
        }
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
    pub fn commit(self, record: &[u8]) {
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
    for s in SEGS.iter() {
        let p = s.swap(ptr::null_mut(), AcqRel);
        if !p.is_null() {
            sys::munmap(p as usize, size);
        }
    }
    PID.store(0, Relaxed);
    STATE.store(UNINIT, Release);
}
