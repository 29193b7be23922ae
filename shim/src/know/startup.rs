//! What the shim records once, when it starts: who the process is, the address space it finds
//! (`/proc/self/maps`: the executable, libraries, brk heap, main stack, vdso — everything mapped
//! before the shim could watch), and the loaded modules with their build ids so the report can
//! symbolize offline. Runs in the constructor (or the first hook, if another library's
//! constructor maps memory first, and in a fork child's first hook); reads with raw system
//! calls into one static scratch area, no malloc, and nothing large on the stack: the first hook
//! of a fork child may come on a small stack (issue 11).

use super::modules;
use crate::{os::syscall as sys, out::writer};
use core::cell::UnsafeCell;
use vmshim_trace::MapsSource;
use vmshim_trace::record::start::{self, Argv, ForkRecord, StartRecord};
use vmshim_trace::record::{config, maps};

const START_BUF: usize = 24 << 10;
const MAPS_CHUNK: usize = 16 << 10;
/// The most any step below needs at once (record_start: the executable's path, the command
/// line, the record).
const SCRATCH_BYTES: usize = 4096 + (16 << 10) + START_BUF;

/// Page-aligned (and SCRATCH_BYTES whole pages), so that it can be wipe-on-fork.
#[repr(C, align(4096))]
struct Scratch(UnsafeCell<[u8; SCRATCH_BYTES]>);
const _: () = assert!(SCRATCH_BYTES.is_multiple_of(4096));
// SAFETY: only the thread that won `writer::begin_init` runs start-up, one step at a time, and
// only the one thread that took the deferred records writes those, after start-up published the
// writer (`record::start`); nothing else touches the area.
unsafe impl Sync for Scratch {}
#[unsafe(link_section = ".sbss.vmshim")]
static SCRATCH: Scratch = Scratch(UnsafeCell::new([0; SCRATCH_BYTES]));

/// Marks the scratch area wipe-on-fork (the image's first fork): a fork child writes its own
/// records in it and needs none of the parent's bytes, and a page the parent touched is one
/// entry less for every fork to copy, and no copy-on-write fault in the child (issue 12).
pub fn wipe_on_fork() {
    sys::madvise(SCRATCH.0.get() as usize, SCRATCH_BYTES, libc::MADV_WIPEONFORK);
}

/// How a fork child came to be, as its Start record says it.
pub struct Origin<'a> {
    /// The forking process (the child's parent at the fork).
    pub parent_pid: u32,
    pub parent_tid: u32,
    /// The fork's clocks (0: not known, the prepare handler did not run).
    pub mono_ns: u64,
    pub real_ns: u64,
    /// The forking call's stack, innermost first, beginning at the program's call (the frames
    /// inside libc's fork are left out).
    pub stack: &'a [u64],
}

/// Writes the Start record. Call only as the writer's single initialiser (after
/// `writer::begin_init` returned true, before the writer is ready for anyone else). `fork`:
/// this is a fork child's trace, created in the fork.
/// `began`: the start's parent and clocks when they were taken before, (ppid, mono_ns,
/// real_ns): an image that waited for its first record with no trace (`record::waiting`), as
/// they were at its start; a fork child, the fork's (a fork child's parent is `fork`'s anyway).
pub fn record_start(fork: Option<&Origin<'_>>, run_id: u64, began: Option<(u32, u64, u64)>) {
    // SAFETY: the caller is the single initialiser (see Scratch).
    record_start_in(unsafe { &mut *SCRATCH.0.get() }, fork, run_id, began);
}

/// Writes the rest of the start-up state: the resolver configuration, the map, the modules.
/// Called once per trace, by the initialiser or by the one hook that took the deferred work
/// (`record::start`), never by two threads at once. `fork`: a fork child's trace, whose
/// modules are the parent's, written from what the parent kept (the loader is not asked in a
/// fork child), as is its configuration.
pub fn record_deferred(fork: bool) {
    // SAFETY: one caller at a time (see above), and each step's borrow ends before the next
    // step starts.
    let scratch = unsafe { &mut *SCRATCH.0.get() };
    if !fork || !record_config_of_parent(scratch) {
        record_config(scratch);
    }
    record_maps(scratch);
    modules::record_known();
}

/// Sends a fork child's Start record to `vmshim run` on the run's socket (`sink`, connected)
/// instead of writing it into a trace of its own ([`vmshim_trace::sent`]); false when it did not
/// go (the caller then creates the trace). Call only as [`record_start`] may be called.
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn send_start(fork: &Origin<'_>, run_id: u64, sink: i32) -> bool {
    let clocks = (fork.parent_pid, fork.mono_ns, fork.real_ns);
    // SAFETY: the caller is the single initialiser (see Scratch).
    let scratch = unsafe { &mut *SCRATCH.0.get() };
    encode_start(scratch, Some(fork), run_id, Some(clocks), b"").is_some_and(|r| sys::send_datagram(sink, r))
}

fn record_start_in(
    scratch: &mut [u8],
    fork: Option<&Origin<'_>>,
    run_id: u64,
    began: Option<(u32, u64, u64)>,
) {
    if let Some(record) = encode_start(scratch, fork, run_id, began, writer::path()) {
        writer::append(record);
    }
}

/// The Start record in `scratch` (see [`record_start`] on the arguments), naming `trace_path`.
#[unsafe(link_section = ".text.hot.vmshim")]
fn encode_start<'s>(
    scratch: &'s mut [u8],
    fork: Option<&Origin<'_>>,
    run_id: u64,
    began: Option<(u32, u64, u64)>,
    trace_path: &[u8],
) -> Option<&'s [u8]> {
    // The command line, the executable's path and the record, each right after the one before:
    // a small process's start touches one scratch page, not three (each a page fault, and in a
    // fork child a page copy). SCRATCH_BYTES leaves START_BUF for the record however long the
    // first two are.
    let cmd = &mut scratch[..16 << 10];
    let cmd_len = crate::os::args::cmdline(cmd).unwrap_or_else(|| read_file(b"/proc/self/cmdline\0", cmd));
    let path = &mut scratch[cmd_len..cmd_len + 4096];
    // A fork child runs the parent's executable: the path the parent read at its start stands
    // (one readlink less in every fork; issue 12, cheap start).
    let known = if fork.is_some() { modules::kept_exe_path(path) } else { 0 };
    let n = if known > 0 {
        known
    } else {
        let n = sys::readlink(b"/proc/self/exe\0", path).max(0) as usize;
        modules::keep_exe_path(&path[..n]);
        n
    };
    let (head, buf) = scratch.split_at_mut(cmd_len + n);
    let (cmd, exe) = head.split_at(cmd_len);
    let s = StartRecord {
        pid: sys::own_pid(),
        // A fork child's parent is the process that forked, as it was at the fork: by now a
        // daemon's intermediate child may have exited and the kernel names another parent.
        ppid: match (fork, &began) {
            (Some(f), _) => f.parent_pid,
            (None, Some(b)) => b.0,
            (None, None) => sys::getppid(),
        },
        page_size: sys::page_size() as u32,
        mono_ns: began.map_or_else(sys::monotonic_ns, |b| b.1),
        real_ns: began.map_or_else(sys::realtime_ns, |b| b.2),
        exe,
        trace_path,
        argv: Argv::Cmdline(cmd),
        run_id,
        fork: fork.map(|f| ForkRecord { parent_tid: f.parent_tid, mono_ns: f.mono_ns, stack: f.stack }),
    };
    let len = start::encode(buf, &s)?;
    Some(&buf[..len])
}

/// What steers name resolution, as `key=value` lines: the first line of a file that starts
/// with a keyword, and environment variables that glibc's or Go's resolver reads.
fn record_config(scratch: &mut [u8]) {
    let (text, rest) = scratch.split_at_mut(4096);
    let (file, rest) = rest.split_at_mut(8192);
    let buf = &mut rest[..4096 + 64];
    let mut n = 0;
    let mut put = |parts: &[&[u8]]| {
        for p in parts {
            let p = &p[..p.len().min(text.len() - n)];
            text[n..n + p.len()].copy_from_slice(p);
            n += p.len();
        }
    };
    for (key, path, word) in [
        (b"nsswitch.hosts=".as_slice(), b"/etc/nsswitch.conf\0".as_slice(), b"hosts:".as_slice()),
        (b"resolv.options=", b"/etc/resolv.conf\0", b"options"),
    ] {
        let len = read_file(path, file);
        let line = file[..len].split(|&b| b == b'\n').find(|l| l.starts_with(word));
        if let Some(l) = line {
            let value = l[word.len()..].trim_ascii();
            put(&[key, value, b"\n"]);
        }
    }
    for var in ["GODEBUG", "LOCALDOMAIN", "RES_OPTIONS", "HOSTALIASES"] {
        if let Some(v) = crate::config::getenv(var) {
            put(&[b"env.", var.as_bytes(), b"=", v, b"\n"]);
        }
    }
    // SAFETY: the single initialiser (see ConfigText).
    unsafe { (&mut *CONFIG.0.get())[..n].copy_from_slice(&text[..n]) };
    CONFIG_LEN.store(n + 1, core::sync::atomic::Ordering::Release);
    write_config(&text[..n], buf);
}

/// A fork child's Config record: the text its parent recorded at its own start, without
/// reading the files again (two opens less in every fork; issue 12, cheap start). The child
/// resolves names with the state its parent's libc read, so that is its configuration too; an
/// exec'd image reads the files afresh. False when the parent recorded none.
fn record_config_of_parent(scratch: &mut [u8]) -> bool {
    let Some(n) = CONFIG_LEN.load(core::sync::atomic::Ordering::Acquire).checked_sub(1) else {
        return false;
    };
    // SAFETY: CONFIG[..n] was written before CONFIG_LEN was published (see ConfigText); nothing
    // writes it in a fork child, which is single-threaded here.
    let text = unsafe { &(&*CONFIG.0.get())[..n.min(4096)] };
    write_config(text, &mut scratch[..4096 + 64]);
    true
}

/// Where the loader keeps what it allocated before the shim ran, as a Config line
/// `loader.at=ADDR,ADDR,...` (hex): the thread pointer and DTV of the main thread (inside the
/// static TLS block) and every link map (in the loader's own allocations). Written when the
/// start-up map waits for a first recorded call that may never come: the report then knows the
/// anonymous regions of the map at exit that hold one of these as the loader's, and no other.
/// Plain loads from the thread pointer and the loader's list; no system call.
pub fn record_loader_evidence() {
    let mut at = [0u64; 2 + 256];
    let k = loader_addresses(&mut at);
    write_loader_evidence(&at[..k]);
}

/// The addresses [`record_loader_evidence`] writes, into `at`: how many (at most its length).
/// Read on the thread whose thread pointer they are to hold: the main thread, at start-up.
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn loader_addresses(at: &mut [u64]) -> usize {
    unsafe extern "C" {
        static _r_debug: libc::c_void;
    }
    if at.len() < 2 {
        return 0;
    }
    // The thread pointer and the DTV first (0 where unknown), then the link maps.
    #[cfg(target_arch = "x86_64")]
    // SAFETY: %fs:0 is the TCB's self pointer and %fs:8 its DTV pointer in glibc's x86-64 TLS
    // layout; both loads read the calling thread's own TCB.
    unsafe {
        core::arch::asm!("mov {}, fs:0", out(reg) at[0], options(nostack, readonly, preserves_flags));
        core::arch::asm!("mov {}, fs:8", out(reg) at[1], options(nostack, readonly, preserves_flags));
    }
    let mut k = 2;
    // SAFETY: _r_debug is the loader's debugger interface (r_version, then r_map, the first
    // link map); each link map's l_next is at offset 24 (l_addr, l_name, l_ld, l_next, l_prev).
    // The list is complete and stable while the constructors run, and only this thread reads it.
    unsafe {
        let mut l = *((core::ptr::addr_of!(_r_debug) as *const u8).add(8) as *const *const u8);
        while !l.is_null() && k < at.len() {
            at[k] = l as u64;
            k += 1;
            l = *(l.add(24) as *const *const u8);
        }
    }
    k
}

/// The `loader.at` Config record of these addresses.
pub fn write_loader_evidence(at: &[u64]) {
    let mut text = [0u8; 20 * 258 + 16];
    let mut n = 0;
    text[..10].copy_from_slice(b"loader.at=");
    n += 10;
    for (i, &v) in at.iter().take(258).enumerate() {
        if i > 0 {
            text[n] = b',';
            n += 1;
        }
        n += crate::os::fmt::fmt_hex(v, &mut text[n..]);
    }
    text[n] = b'\n';
    n += 1;
    // SAFETY: the caller is start-up's single initialiser (see Scratch).
    let scratch = unsafe { &mut *SCRATCH.0.get() };
    write_config(&text[..n], &mut scratch[..4096 + 64]);
}

fn write_config(text: &[u8], buf: &mut [u8]) {
    if let Some(len) = config::encode(buf, text) {
        writer::append(&buf[..len]);
    }
}

/// Reads a whole small file into `buf`; returns the length read.
fn read_file(path: &[u8], buf: &mut [u8]) -> usize {
    let fd = sys::open(path, libc::O_RDONLY | libc::O_CLOEXEC, 0);
    if fd < 0 {
        return 0;
    }
    let mut n = 0;
    while n < buf.len() {
        let r = sys::read(fd as i32, &mut buf[n..]);
        if r <= 0 {
            break;
        }
        n += r as usize;
        // A short read of a regular file (or of /proc/self/cmdline, which copies all it has
        // up to the count) is its end: no second read to hear it (issue 12, cheap start).
        if n < buf.len() {
            break;
        }
    }
    sys::close(fd as i32);
    n
}

/// The Config text as start-up wrote it, for a fork child's Config record.
struct ConfigText(UnsafeCell<[u8; 4096]>);
// SAFETY: written by the single initialiser in record_config before CONFIG_LEN is published
// (Release), read after an Acquire load; a fork child reads its copy single-threaded.
unsafe impl Sync for ConfigText {}
static CONFIG: ConfigText = ConfigText(UnsafeCell::new([0; 4096]));
/// The text's length plus one; 0 while none was recorded.
#[unsafe(link_section = ".data.vmshim_hot")]
static CONFIG_LEN: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

fn record_maps(scratch: &mut [u8]) {
    let fd = sys::open(b"/proc/self/maps\0", libc::O_RDONLY | libc::O_CLOEXEC, 0);
    if fd < 0 {
        return;
    }
    let (text, rest) = scratch.split_at_mut(MAPS_CHUNK);
    let buf = &mut rest[..MAPS_CHUNK + 64];
    let mut chunk = 0u32;
    loop {
        let r = sys::read(fd as i32, text);
        if r <= 0 {
            break;
        }
        let m = maps::MapsRecord { source: MapsSource::Initial, chunk, text: &text[..r as usize] };
        if let Some(len) = maps::encode(buf, &m) {
            writer::append(&buf[..len]);
        }
        chunk += 1;
    }
    sys::close(fd as i32);
}
