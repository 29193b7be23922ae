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
//! single-threaded target has one segment mapped, two while a record crosses into the next
//! (none while all it wrote fits in the first page: see below).
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
//! # The first page
//! The header's mapping covers the file's whole first page, and until the process begins to
//! record, the records that fit in that page go there through it: segment 0 is mapped only by
//! the first record past the page, or by the first once recording has begun ([`end_first_page`]).
//! Under `vmshim run`'s exit watcher most processes of a shell loop record nothing (their
//! start-up records wait for a first recorded call that never comes), and their Start record is
//! all they write: they spare a segment's mmap, its page fault and its unmapping at exit or
//! exec, and the watcher can tell them by their map alone (their trace file is mapped one page
//! at offset 0 and nothing more: issue 12).
//!
//! # Disk
//! The file's blocks are allocated as records arrive, never ahead of need by more than one
//! growth step ([`grow`]: 16 KiB at first, a quarter of what the file holds later, at most
//! 1 MiB), so a process that records little leaves a small file: `/bin/true` leaves 16 KiB,
//! and 4 KiB under the exit watcher, where it writes its Start record alone (the first page).
//! A segment is mapped whole, beyond the file's end; a store into a page past the end (or
//! into a hole on a full disk) would raise SIGBUS in the target, so a writer stores only below
//! [`ALLOC`], the end of what `fallocate` has allocated, and a record that cannot be allocated
//! is counted as dropped.
//!
//! # The descriptor
//! The shim keeps one descriptor of its file, close-on-exec and moved up out of the program's
//! way (a program that expects `open` to return 3 still gets 3): a fork child that drops its
//! privileges can no longer reopen a 0600 file by its path, but it can still grow and map
//! the file it has open. The program may close it (daemons close every descriptor) or dup2
//! over it: before each use the shim checks that the descriptor still names its file
//! (`fstat`: device and inode), else reopens the file by path (which the same check guards),
//! else drops the record, counted.
//!
//! This module must never block, allocate or touch `errno`: it runs inside hooks.

use crate::os::fmt::fmt_u64;
use crate::os::syscall as sys;
use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, Ordering::*};
use vmshim_trace::record::call::{self, CallRecord, CallStack};
use vmshim_trace::{CALL_FLAG_OWN, CallKind, FILE_MAGIC, HEADER_SIZE, VERSION, header};

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
/// The number the kept descriptor moves up to: the last of the 64 slots of the table a process
/// begins with (the kernel's `NR_OPEN_DEFAULT`). A higher one makes the kernel grow the table
/// to the next power of two above it, and every fork copies the whole table (`dup_fd`) and every
/// exit frees it through RCU: with 1023, every process of the tree carried 1,024 slots
/// (`FDSize` in /proc/PID/status) and each fork of a shell loop copied them (issue 12).
const KEPT_FD: i32 = 63;

#[unsafe(link_section = ".data.vmshim_hot")]
static STATE: AtomicU8 = AtomicU8::new(UNINIT);
/// The trace file's identity (st_dev, st_ino): a target may close every descriptor or dup2 over
/// one, so the kept descriptor ([`FD`]) is checked against it before each use, and a file
/// reopened by its path is checked too (see the module doc, "The descriptor").
#[unsafe(link_section = ".data.vmshim_hot")]
static FILE_DEV: AtomicU64 = AtomicU64::new(0);
#[unsafe(link_section = ".data.vmshim_hot")]
static FILE_INO: AtomicU64 = AtomicU64::new(0);
#[unsafe(link_section = ".data.vmshim_hot")]
static SEG_SIZE: AtomicU64 = AtomicU64::new(0);
#[unsafe(link_section = ".data.vmshim_hot")]
static LIMIT: AtomicU64 = AtomicU64::new(0);
/// The file's length known allocated by `fallocate` (or set by `ftruncate` where the file
/// system has no fallocate): every byte below it may be stored to.
#[unsafe(link_section = ".data.vmshim_hot")]
static ALLOC: AtomicU64 = AtomicU64::new(0);
/// The kept descriptor of the trace file (-1: none); see the module doc.
#[unsafe(link_section = ".data.vmshim_hot")]
static FD: AtomicI32 = AtomicI32::new(-1);
/// Set in a fork child: a failure to create its trace prints nothing on the target's stderr.
#[unsafe(link_section = ".data.vmshim_hot")]
static QUIET: AtomicBool = AtomicBool::new(false);
/// Taken (never waited for) by the one thread that grows a file without fallocate.
#[unsafe(link_section = ".data.vmshim_hot")]
static TRUNCATING: AtomicBool = AtomicBool::new(false);
/// The file's first page (the header), mapped while the writer is READY.
#[unsafe(link_section = ".data.vmshim_hot")]
static HDR: AtomicPtr<u8> = AtomicPtr::new(ptr::null_mut());
/// Each segment's mapping, null while it is not mapped (not yet, or retired).
static SEGS: [AtomicPtr<u8>; MAX_SEGS] = [const { AtomicPtr::new(ptr::null_mut()) }; MAX_SEGS];
/// Bytes of each segment whose writers are done with them; at the segment's capacity it is
/// retired (unmapped) by the writer that got it there.
#[unsafe(link_section = ".sbss.vmshim")]
static DONE: Done = Done([const { AtomicU64::new(0) }; MAX_SEGS]);
/// Page-aligned, so that it can be wipe-on-fork ([`wipe_on_fork`]).
#[repr(C, align(4096))]
struct Done([AtomicU64; MAX_SEGS]);
impl core::ops::Deref for Done {
    type Target = [AtomicU64; MAX_SEGS];
    fn deref(&self) -> &[AtomicU64; MAX_SEGS] {
        &self.0
    }
}
/// Set once DONE is `MADV_WIPEONFORK`: a fork child finds it zero, as it would reset it.
#[unsafe(link_section = ".data.vmshim_hot")]
static DONE_WIPED: AtomicBool = AtomicBool::new(false);

/// Marks the segments' done counts wipe-on-fork (the image's first fork): every record adds to
/// one, which after each fork cost the parent a copy-on-write fault of its page and the child
/// another to reset it (issue 12).
pub fn wipe_on_fork() {
    let (addr, len) = (DONE.0.as_ptr() as usize, core::mem::size_of::<Done>());
    if sys::madvise(addr, len, libc::MADV_WIPEONFORK) == 0 {
        DONE_WIPED.store(true, Release);
    }
}
/// One past the highest segment index ever mapped: how much of SEGS and DONE a fork child must
/// look at (reading an untouched page of them faults in the zero page).
#[unsafe(link_section = ".data.vmshim_hot")]
static SEG_HIGH: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(1);
/// Segment mappings that exist now (including one that lost a race to map, until it is gone).
#[unsafe(link_section = ".data.vmshim_hot")]
static MAPPED: AtomicU32 = AtomicU32::new(0);
/// Set while a record that fits in the file's first page goes there through the header's
/// mapping, with no segment mapped: from [`open`] until [`end_first_page`], which the start-up
/// calls when the process begins to record (see "The first page" in the module doc).
#[unsafe(link_section = ".data.vmshim_hot")]
static FIRST_PAGE: AtomicBool = AtomicBool::new(false);
/// How much of the file the header's mapping covers: the first page (the smallest page size).
const HEADER_MAP: usize = 4096;

/// The trace path, written once by the thread that wins `UNINIT -> INITING`, read after `READY`.
struct PathBuf(UnsafeCell<[u8; PATH_MAX]>);
// SAFETY: written only by the single initialising thread before STATE becomes READY (Release);
// read only after observing READY (Acquire).
unsafe impl Sync for PathBuf {}
static PATH: PathBuf = PathBuf(UnsafeCell::new([0; PATH_MAX]));
#[unsafe(link_section = ".data.vmshim_hot")]
static PATH_LEN: AtomicU32 = AtomicU32::new(0);

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

#[unsafe(link_section = ".text.hot.vmshim")]
pub fn is_ready() -> bool {
    STATE.load(Acquire) == READY
}

/// Claims the right to initialise: true for exactly one caller while the writer is unopened.
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn begin_init() -> bool {
    STATE.compare_exchange(UNINIT, INITING, Acquire, Relaxed).is_ok()
}

/// Gives the right to initialise back, unused (a later hook may try again).
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn abandon_init() {
    let _ = STATE.compare_exchange(INITING, UNINIT, Release, Relaxed);
}

/// Opens the trace file and maps its header and first segment. On failure, prints one line
/// on stderr (nothing when `quiet`: a fork child's stderr is the program's) and leaves the
/// writer off: the target runs on untraced. `at_ns`: the time of the header's mapping record
/// when the caller has it (a fork child's start, the fork), else it is read.
pub fn open(cfg: &crate::config::Config, template: &[u8], quiet: bool, at_ns: Option<u64>) -> bool {
    // A fork child's handler noted its pid already.
    let pid = sys::own_pid();
    sys::set_own_pid(pid);
    QUIET.store(quiet, Relaxed);
    SEG_SIZE.store(cfg.segment_bytes, Relaxed);
    LIMIT.store(cfg.max_bytes.min(cfg.segment_bytes * MAX_SEGS as u64), Relaxed);
    ALLOC.store(0, Relaxed);
    // SAFETY: only the initialising thread gets here (begin_init), before READY.
    let buf = unsafe { &mut *PATH.0.get() };
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
    let has_pid = template.windows(2).any(|w| w == b"%p");
    // A fixed name is the run's first process's (`vmshim run` finds the target's trace by it):
    // a fork child, whose parent tried it already, and under `vmshim run` an image whose
    // parent is not vmshim begin at `T.<pid>` (in a 1,000-process loop, two path lookups less
    // per process, each into a directory of two thousand traces).
    let skip_bare = !has_pid && (quiet || (cfg.run_id != 0 && !crate::config::launched_by_tracer()));
    let Some((fd, len)) = create(buf, len, if has_pid { None } else { Some(pid) }, skip_bare) else {
        return false;
    };
    PATH_LEN.store(len as u32, Relaxed);
    let id = sys::file_id(fd).unwrap_or((0, 0));
    FILE_DEV.store(id.0, Relaxed);
    FILE_INO.store(id.1, Relaxed);
    let fd = keep_high(fd);
    // Not past RLIMIT_FSIZE (SIGXFSZ would kill the target), and at least the header's page.
    // Under the exit watcher most processes write their Start record alone, which the first
    // page holds: the rest of the first step waits for a first recorded call.
    let step = if cfg.watched { HEADER_MAP as u64 } else { FIRST_STEP };
    let first = step.min(LIMIT.load(Relaxed)).min(sys::file_size_limit() & !4095);
    if first < 4096 {
        return discard(fd, id, &buf[..=len], libc::EFBIG);
    }
    if let Err(e) = allocate(fd, 0, first) {
        return discard(fd, id, &buf[..=len], e);
    }
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let h = sys::mmap(0, HEADER_MAP, prot, libc::MAP_SHARED, fd, 0);
    let (_, e) = sys::split(h);
    if e != 0 {
        return discard(fd, id, &buf[..=len], e);
    }
    FD.store(fd, Release);
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
    MAPPED.store(0, Release);
    FIRST_PAGE.store(true, Release);
    STATE.store(READY, Release);
    let header_args = [h as u64, HEADER_MAP as u64, prot as u64, libc::MAP_SHARED as u64, u64::MAX, 0];
    record_own_mapping(CallKind::Mmap, header_args, h as u64, at_ns.unwrap_or_else(sys::monotonic_ns));
    true
}

/// The process begins to record: from now on every record goes through a segment's mapping,
/// which the next one maps if none is (see "The first page" in the module doc).
pub fn end_first_page() {
    FIRST_PAGE.store(false, Release);
}

/// Creates the trace file at `buf[..len]` (not yet NUL-terminated), never destroying or
/// following what is already there. A name `T` taken by a regular file or a symlink (an exec'd
/// image of the same pid, a fork child with a fixed VMSHIM_OUT, a stale trace) gives way to
/// `T.<pid>`, then `T.<pid>.1`, `T.<pid>.2`, ... with no cap (issue 12: a tree of a thousand
/// processes under one fixed name loses none); `pid` is None when the template named the pid
/// already (`%p`), and then the suffixes are `T.1`, `T.2`, .... A name taken by anything else
/// (a device, FIFO, socket or directory) is a mistake in VMSHIM_OUT, and the shim refuses it
/// rather than write a trace beside it. Returns the open descriptor and the final path's
/// length, or None after one line on stderr. `skip_bare`: begin at `T.<pid>` (see [`open`]).
fn create(buf: &mut [u8; PATH_MAX], len: usize, pid: Option<u32>, skip_bare: bool) -> Option<(i32, usize)> {
    let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let mut base = len;
    for n in (skip_bare && pid.is_some()) as u64..u64::MAX {
        let l = match (n, pid) {
            (0, _) => len,
            (1, Some(pid)) => {
                base = with_suffix(buf, len, pid as u64);
                base
            }
            (n, Some(_)) => with_suffix(buf, base, n - 1),
            (n, None) => with_suffix(buf, len, n),
        };
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
    if QUIET.load(Relaxed) {
        return false;
    }
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

/// Writes the concatenated `parts` to stderr as one write (cut at 512 bytes); nothing in a
/// fork child.
fn say(parts: &[&[u8]]) {
    if QUIET.load(Relaxed) {
        return;
    }
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

/// Writes `.n` after `buf[..base_len]`; returns the new length (PATH_MAX when it cannot fit).
fn with_suffix(buf: &mut [u8], base_len: usize, n: u64) -> usize {
    if base_len + 22 > buf.len() {
        return PATH_MAX;
    }
    buf[base_len] = b'.';
    base_len + 1 + fmt_u64(n, &mut buf[base_len + 1..])
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
    sys::calibrate_when_ready();
}

/// Counts one record as dropped: the window or the file was full, or a hook whose caller's
/// stack could not be left ([`crate::os::ownstack`]) ran its call unrecorded.
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
    MAPPED.fetch_update(AcqRel, Acquire, |m| (m < WINDOW).then_some(m + 1)).ok()?;
    SEG_HIGH.fetch_max(i + 1, AcqRel);
    let m = trace_fd().and_then(|fd| map_segment(fd, i, size).ok());
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

/// The first growth step: room for the start-up records of a small program (its maps, its
/// modules), so that `/bin/true` allocates 16 KiB once.
const FIRST_STEP: u64 = 16 << 10;
/// The largest growth step.
const MAX_STEP: u64 = 1 << 20;

/// Makes the file's blocks cover `..end`, allocating one growth step past it (a quarter of the
/// file, between [`FIRST_STEP`] and [`MAX_STEP`]), and faults in the new part of segment
/// `seg` (mapped at `base`) writable. False when that cannot be done now (no descriptor, a
/// full disk, RLIMIT_FSIZE, VMSHIM_MAX_BYTES): the caller drops its record.
fn ensure(end: u64, seg: usize, base: *mut u8) -> bool {
    let have = ALLOC.load(Acquire);
    if end <= have {
        return true;
    }
    let step = (have / 4).clamp(FIRST_STEP, MAX_STEP);
    let limit = LIMIT.load(Relaxed).next_multiple_of(FIRST_STEP);
    // Growing a file past RLIMIT_FSIZE raises SIGXFSZ, which would kill the target.
    let target = (end + step).next_multiple_of(FIRST_STEP).min(limit).min(sys::file_size_limit());
    if target < end {
        return false;
    }
    let Some(fd) = trace_fd() else { return false };
    if allocate(fd, have, target).is_err() {
        return false;
    }
    let size = SEG_SIZE.load(Relaxed);
    let (lo, hi) = (seg as u64 * size, (seg as u64 + 1) * size);
    let (from, to) = (have.max(lo), target.min(hi));
    if from < to {
        sys::madvise(base as usize + (from - lo) as usize, (to - from) as usize, MADV_POPULATE_WRITE);
    }
    true
}

/// Allocates the file's blocks over `from..to` and raises [`ALLOC`] to `to`; Err(errno) when
/// neither fallocate nor (where the file system has no fallocate) ftruncate could.
/// fallocate only ever grows a file, so racing threads cannot shrink it under a mapping (a
/// shrink would turn a later store into SIGBUS in the target); ftruncate could, so only one
/// thread at a time uses it, and never to shrink.
fn allocate(fd: i32, from: u64, to: u64) -> Result<(), i32> {
    let r = sys::fallocate(fd, from, to - from);
    if r == -(libc::EOPNOTSUPP as isize) {
        if TRUNCATING.swap(true, Acquire) {
            return Err(libc::EAGAIN);
        }
        let r = if ALLOC.load(Acquire) < to { sys::ftruncate(fd, to) } else { 0 };
        if r == 0 {
            ALLOC.fetch_max(to, AcqRel);
        }
        TRUNCATING.store(false, Release);
        return if r < 0 { Err((-r) as i32) } else { Ok(()) };
    }
    if r < 0 {
        return Err((-r) as i32);
    }
    ALLOC.fetch_max(to, AcqRel);
    Ok(())
}

/// Moves a fresh descriptor of the trace file up, out of the numbers a program expects to get
/// from its own `open` (the lowest free one): to [`KEPT_FD`], or just under a soft
/// RLIMIT_NOFILE that is lower. Returns the descriptor to keep (`fd` itself when no higher one
/// is free).
fn keep_high(fd: i32) -> i32 {
    // Below the usual limit, without asking it (EINVAL when it is lower).
    let r = sys::dup_cloexec_at_least(fd, KEPT_FD);
    if r >= 0 {
        sys::close(fd);
        return r as i32;
    }
    let top = sys::open_files_limit().min(KEPT_FD as u64 + 1) as i32;
    for min in [top - 1, top - 16, top / 2] {
        if min <= fd {
            continue;
        }
        let r = sys::dup_cloexec_at_least(fd, min);
        if r >= 0 {
            sys::close(fd);
            return r as i32;
        }
    }
    fd
}

/// The kept descriptor, if it still names the trace file; else the file reopened by path (and
/// kept from then on); None when neither works (the program closed it and the file is no
/// longer reachable for this process: moved, or its privileges dropped).
fn trace_fd() -> Option<i32> {
    let id = (FILE_DEV.load(Relaxed), FILE_INO.load(Relaxed));
    let fd = FD.load(Acquire);
    if fd >= 0 && sys::file_id(fd) == Some(id) {
        return Some(fd);
    }
    let new = keep_high(reopen()?);
    match FD.compare_exchange(fd, new, AcqRel, Acquire) {
        Ok(_) => Some(new),
        Err(other) => {
            // Another thread reopened it first: keep theirs. The old number is never closed:
            // it is no longer the shim's.
            sys::close(new);
            (sys::file_id(other) == Some(id)).then_some(other)
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

/// Faults in writable what a growth step allocated ([`ensure`]). Otherwise the first store to
/// each page of a shared file mapping takes a write fault (the file system tracks dirty
/// pages), one per 40 records or so, each waiting on the mmap lock the target's own mmap calls
/// hold. A step at a time, as records reach it: a short-lived process dirties no more of its
/// file than it fills. An older kernel without MADV_POPULATE_WRITE (5.14) says EINVAL and the
/// pages fault in as before.
const MADV_POPULATE_WRITE: i32 = 23;

/// Maps segment `i` of the file (`size` bytes; it may reach past the file's end: nothing is
/// stored there before [`ensure`] allocated it); Err(errno) when it cannot be mapped.
fn map_segment(fd: i32, i: usize, size: u64) -> Result<*mut u8, i32> {
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let m = sys::mmap(0, size as usize, prot, libc::MAP_SHARED, fd, (i as u64 * size) as i64);
    let (_, e) = sys::split(m);
    if e != 0 {
        return Err(e);
    }
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
    record_own_mapping(call, args, result, sys::monotonic_ns());
}

/// Records a mapping the writer made (`Mmap`) or removed (`Munmap`) for itself, the header page
/// or a segment: `CALL_FLAG_OWN`, no stack. Here and not in the recording layer, which is built
/// on this one: the writer must not ask it to record the writer's own work.
fn record_own_mapping(call: CallKind, args: [u64; 6], result: u64, time_ns: u64) {
    let mut buf = [0u8; call::MAX_LEN];
    let c = CallRecord {
        call,
        flags: CALL_FLAG_OWN,
        tid: sys::gettid(),
        time_ns,
        args,
        result,
        errno: 0,
        stack: CallStack::Inline(&[]),
    };
    if let Some(len) = call::encode(&mut buf, &c) {
        append(&buf[..len]);
    }
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
        let end = off + len as u64;
        if FIRST_PAGE.load(Acquire) && end <= (HEADER_MAP as u64).min(ALLOC.load(Acquire)) {
            // SAFETY: `off < end <= HEADER_MAP`: inside the header's mapping of the first page,
            // which stays mapped while the writer is READY; the file holds these bytes (ALLOC).
            let at = unsafe { HDR.load(Acquire).add(off as usize) };
            return Some(Slot { at, len, offset: off, committed: false });
        }
        if within + len <= size as usize {
            // Given up unwritten when the segment cannot be mapped or the file cannot hold the
            // record (the reader skips it as torn, or it lies past the file's end), but given
            // back, so that the segment can still be retired.
            let Some(base) = segment(seg).filter(|&b| ensure(off + len as u64, seg, b)) else {
                leave(seg, len as u64);
                count_dropped();
                return None;
            };
            // SAFETY: `within < size`, so the pointer stays inside the mapped segment.
            let at = unsafe { base.add(within) };
            return Some(Slot { at, len, offset: off, committed: false });
        }
        // The record would straddle two segments: pad out what it took of both, give both
        // pieces back, then reserve again. (Unpadded, the spill into the next segment would
        // read as a torn record.)
        // The pads are stored only where the file holds them (else left unwritten: the
        // reader skips zeros, and never reads past the file's end).
        let (pad, spill) = (size as usize - within, within + len - size as usize);
        if let Some(base) = segment(seg).filter(|&b| ensure(off + pad as u64, seg, b)) {
            // SAFETY: `within < size`, inside the mapped segment.
            write_pad(unsafe { base.add(within) }, pad);
        }
        if let Some(next) = segment(seg + 1).filter(|&b| ensure(off + len as u64, seg + 1, b)) {
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
        let (word0, word1) = vmshim_trace::record::pad::words(len as u32);
        if let Some(word1) = word1 {
            ptr::write_unaligned(at.add(8) as *mut u64, word1);
        }
        (*(at as *const AtomicU64)).store(word0, Release);
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
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn reset_after_fork() {
    let fd = FD.swap(-1, AcqRel);
    if fd >= 0 && sys::file_id(fd) == Some((FILE_DEV.load(Relaxed), FILE_INO.load(Relaxed))) {
        sys::close(fd);
    }
    ALLOC.store(0, Relaxed);
    let size = SEG_SIZE.load(Relaxed) as usize;
    // Only what was used is written: a store to each of these pages would copy it (the child
    // shares them with the parent copy-on-write), 32 page copies for two 4096-entry tables.
    let high = SEG_HIGH.swap(1, AcqRel).min(MAX_SEGS);
    for (s, d) in SEGS[..high].iter().zip(DONE[..high].iter()) {
        if !s.load(Relaxed).is_null() {
            let p = s.swap(ptr::null_mut(), AcqRel);
            sys::munmap(p as usize, size);
        }
        if !DONE_WIPED.load(Relaxed) && d.load(Relaxed) != 0 {
            d.store(0, Relaxed);
        }
    }
    let h = HDR.swap(ptr::null_mut(), AcqRel);
    if !h.is_null() {
        sys::munmap(h as usize, HEADER_MAP);
    }
    MAPPED.store(0, Relaxed);
    sys::set_own_pid(0);
    STATE.store(UNINIT, Release);
}
