//! Configuration, read once from the environment without allocating. Every variable the shim
//! understands is declared in [`VARS`] with its meaning; nothing else reads the environment.

/// `(name, meaning)` of every environment variable the shim reads.
pub const VARS: &[(&str, &str)] = &[
    ("VMSHIM_OUT", "trace file path; %p becomes the pid (default: vmshim.%p.trace in the working directory)"),
    (
        "VMSHIM_MAX_BYTES",
        "largest trace file in bytes; past it records are counted as dropped (default 1 GiB)",
    ),
    (
        "VMSHIM_SEGMENT_BYTES",
        "how much of the trace file is mapped at a time (default 4 MiB, a power of two >= 64 KiB): one segment, two while a record crosses into the next, never more than 4 (writer::WINDOW) plus the header page, however long the target runs",
    ),
    (
        "VMSHIM_TRACER",
        "set by `vmshim run`: the launcher's pid, which traces the main thread; a PTRACE_TRACEME asks it to let go first",
    ),
    (
        "VMSHIM_RUN",
        "set by `vmshim run`: the run's id, 16 hex digits, written into every trace of the tree (Start.run_id; 0 when unset or malformed)",
    ),
    ("VMSHIM_DEPTH", "most frames recorded per stack (default 64, at most 128)"),
    (
        "VMSHIM_NAME_MAPPINGS",
        "1: name each anonymous mapping the shim attributes in the kernel's own view (PR_SET_VMA_ANON_NAME), so pmap and /proc/PID/maps show [anon:vmshim ...]",
    ),
    (
        "VMSHIM_WATCHED",
        "set by `vmshim run` when its exit watcher reads every process's map at exit: 1 lets a process's start-up map, Module records and resolver configuration wait for its first recorded call (a process that records nothing is explained by its map at exit)",
    ),
    (
        "VMSHIM_SINK",
        "set by `vmshim run` with VMSHIM_WATCHED when it listens on the run's socket (vmshim_trace::sent): 1 lets a fork child send its Start record there and create its trace file at its first recorded call or change of credentials",
    ),
];

#[derive(Clone, Copy)]
pub struct Config {
    pub max_bytes: u64,
    pub segment_bytes: u64,
    pub depth: usize,
    pub name_mappings: bool,
    /// `VMSHIM_WATCHED=1`: the start-up records may wait for the first recorded call.
    pub watched: bool,
    /// `VMSHIM_RUN` as hex (1 to 16 digits, else 0): the run's id, written into the Start record.
    pub run_id: u64,
    /// `VMSHIM_SINK=1` (with `watched`): `vmshim run` takes fork children's Start records on the
    /// run's socket (record/fork.rs).
    pub sink: bool,
}

unsafe extern "C" {
    static environ: *const *const u8;
}

/// The value of environment variable `name`, borrowed from the process environment. Before libc
/// has set `environ` (a sanitizer runtime that comes first maps memory from its own early
/// initialiser, and the shim starts from that call), the environment the kernel gave the
/// process is read from `/proc/self/environ` instead.
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn getenv(name: &str) -> Option<&'static [u8]> {
    // SAFETY: `environ` is libc's NULL-terminated array of NUL-terminated strings; it is read
    // here without modification. A program that edits its environment concurrently with a
    // hook's first call could race, as it would with getenv(3).
    unsafe {
        let mut p = environ;
        if p.is_null() {
            return initial_env()
                .split(|&b| b == 0)
                .find(|s| s.len() > name.len() && s.starts_with(name.as_bytes()) && s[name.len()] == b'=')
                .map(|s| &s[name.len() + 1..]);
        }
        // Each entry is compared byte by byte up to the first difference (at the latest its
        // NUL), and only a match is measured: a strlen of every entry for each of the ten or so
        // names was most of the configuration's cost at every start (issue 12).
        while !(*p).is_null() {
            let s: *const u8 = (*p).cast();
            if name.bytes().enumerate().all(|(i, b)| *s.add(i) == b) && *s.add(name.len()) == b'=' {
                let value = s.add(name.len() + 1);
                return Some(core::slice::from_raw_parts(value, libc::strlen(value.cast())));
            }
            p = p.add(1);
        }
    }
    None
}

/// Whether libc has set `environ` (it has not while a sanitizer's early initialiser runs).
pub fn environ_ready() -> bool {
    // SAFETY: reads the pointer's value only.
    !unsafe { environ }.is_null()
}

/// `/proc/self/environ`, read once into static storage: the environment at exec, which is
/// what `environ` holds before anything edits it. Read only before libc set `environ`, by the
/// one thread that initialises the shim (nothing else runs that early); empty if unreadable.
#[unsafe(link_section = ".text.hot.vmshim")]
fn initial_env() -> &'static [u8] {
    use core::sync::atomic::{AtomicUsize, Ordering::*};
    struct Buf(core::cell::UnsafeCell<[u8; ENV_MAX]>);
    // SAFETY: written once, before LEN is published with Release; read after an Acquire load.
    unsafe impl Sync for Buf {}
    const ENV_MAX: usize = 64 << 10;
    static BUF: Buf = Buf(core::cell::UnsafeCell::new([0; ENV_MAX]));
    #[unsafe(link_section = ".data.vmshim_hot")]
    static LEN: AtomicUsize = AtomicUsize::new(usize::MAX);
    let mut len = LEN.load(Acquire);
    if len == usize::MAX {
        // SAFETY: only the initialising thread reaches this before LEN is set (see above).
        let buf = unsafe { &mut *BUF.0.get() };
        let fd = crate::os::syscall::open(b"/proc/self/environ\0", libc::O_RDONLY | libc::O_CLOEXEC, 0);
        len = 0;
        if fd >= 0 {
            while len < ENV_MAX {
                let n = crate::os::syscall::read(fd as i32, &mut buf[len..]);
                if n <= 0 {
                    break;
                }
                len += n as usize;
            }
            crate::os::syscall::close(fd as i32);
        }
        LEN.store(len, Release);
    }
    // SAFETY: BUF[..len] was written before LEN was published and is never written again.
    unsafe { &(&*BUF.0.get())[..len] }
}

pub fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &c| {
        if c.is_ascii_digit() { acc.checked_mul(10)?.checked_add((c - b'0') as u64) } else { None }
    })
}

/// Whether this image is the process `vmshim run` launched (its parent is `VMSHIM_TRACER`), or
/// nothing says otherwise (no `VMSHIM_TRACER`): `vmshim run` finds that one's trace by its name.
pub fn launched_by_tracer() -> bool {
    launched_by_tracer_of(crate::os::syscall::getppid)
}

/// [`launched_by_tracer`], with the parent's pid from `ppid` (asked only when the tracer is set).
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn launched_by_tracer_of(ppid: impl FnOnce() -> u32) -> bool {
    getenv("VMSHIM_TRACER").and_then(parse_u64).is_none_or(|tracer| tracer == ppid() as u64)
}

/// 1 to 16 hex digits as a number; 0 for anything else.
pub fn parse_hex(s: &[u8]) -> u64 {
    if s.is_empty() || s.len() > 16 {
        return 0;
    }
    let digits: Option<u64> =
        s.iter().try_fold(0u64, |acc, &c| Some(acc << 4 | (c as char).to_digit(16)? as u64));
    digits.unwrap_or(0)
}

/// The configuration and the trace path template (`VMSHIM_OUT`) from the environment, kept for
/// the fork children of this process image ([`kept`]). Only start-up's single initialiser calls
/// this.
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn load() -> (Config, &'static [u8]) {
    let num = |name| getenv(name).and_then(parse_u64);
    let segment_bytes =
        num("VMSHIM_SEGMENT_BYTES").filter(|s| s.is_power_of_two() && *s >= 1 << 16).unwrap_or(4 << 20);
    let cfg = Config {
        max_bytes: num("VMSHIM_MAX_BYTES").unwrap_or(1 << 30).max(segment_bytes),
        segment_bytes,
        depth: num("VMSHIM_DEPTH").map_or(64, |d| d.clamp(1, vmshim_trace::MAX_FRAMES as u64) as usize),
        name_mappings: getenv("VMSHIM_NAME_MAPPINGS") == Some(b"1"),
        watched: getenv("VMSHIM_WATCHED") == Some(b"1"),
        run_id: parse_hex(getenv("VMSHIM_RUN").unwrap_or(b"")),
        sink: getenv("VMSHIM_SINK") == Some(b"1"),
    };
    let out = getenv("VMSHIM_OUT").unwrap_or(b"vmshim.%p.trace");
    // SAFETY: the single initialiser (see Kept); a fork child, which reads KEPT, never gets here
    // for its parent's copy (it keeps what it has).
    let kept = unsafe { &mut *KEPT.0.get() };
    let n = out.len().min(kept.out.len());
    kept.out[..n].copy_from_slice(&out[..n]);
    (kept.cfg, kept.out_len) = (cfg, if n == out.len() { n } else { 0 });
    KEPT_READY.store(true, core::sync::atomic::Ordering::Release);
    (cfg, out)
}

/// The configuration and the trace path template as this process image's start-up read them,
/// for a fork child: the child belongs to its parent's run, so its trace goes where the
/// parent's went and carries the run's id, even if the program changed its environment since
/// (a daemon that clears it before forking), and it reads no variable again (issue 12: every
/// fork paid for the scans). None before the image's start-up read them.
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn kept() -> Option<(Config, &'static [u8])> {
    if !KEPT_READY.load(core::sync::atomic::Ordering::Acquire) {
        return None;
    }
    // SAFETY: written before KEPT_READY was published, never again in this image (see Kept).
    let kept = unsafe { &*KEPT.0.get() };
    (kept.out_len > 0).then(|| (kept.cfg, &kept.out[..kept.out_len]))
}

/// The figures first: a short template shares their page (one page fault at start, not two).
#[repr(C)]
struct KeptConfig {
    cfg: Config,
    /// 0 when the template did not fit (the child then reads the environment).
    out_len: usize,
    out: [u8; 4096],
}
struct Kept(core::cell::UnsafeCell<KeptConfig>);
// SAFETY: written by start-up's single initialiser before KEPT_READY is published (Release),
// read after an Acquire load; a fork child reads its copy single-threaded.
unsafe impl Sync for Kept {}
static KEPT: Kept = Kept(core::cell::UnsafeCell::new(KeptConfig {
    cfg: Config {
        max_bytes: 0,
        segment_bytes: 0,
        depth: 0,
        name_mappings: false,
        watched: false,
        run_id: 0,
        sink: false,
    },
    out_len: 0,
    out: [0; 4096],
}));
#[unsafe(link_section = ".data.vmshim_hot")]
static KEPT_READY: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

#[cfg(test)]
mod tests {
    #[test]
    fn run_ids_are_hex_or_zero() {
        assert_eq!(super::parse_hex(b"0123456789abcdef"), 0x0123_4567_89ab_cdef);
        assert_eq!(super::parse_hex(b"FF"), 255);
        for bad in [&b""[..], b"12345678901234567", b"xyz", b"12 3"] {
            assert_eq!(super::parse_hex(bad), 0);
        }
    }
}
