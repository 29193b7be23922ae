//! `ptrace`. Under `vmshim run` the launcher traces the target's main thread, to read the
//! kernel's map at its exit stop; a thread has at most one tracer, so a target that asks to be
//! traced itself (`PTRACE_TRACEME`: self-tracing programs, anti-debugging checks) would get
//! EPERM where it gets 0 without vmshim. Before the real call, this hook asks the launcher to let
//! go: it queues itself a SIGWINCH carrying [`RELEASE_MAGIC`], which the launcher sees first (a
//! signal-delivery stop: ptrace(2)) and answers with `PTRACE_DETACH`, suppressing the signal, so
//! the target never receives it. The request is made only when this is the main thread and its
//! tracer is the launcher named in `VMSHIM_TRACER`: otherwise there is nobody to ask, and a
//! queued SIGWINCH would reach the program.
//!
//! Every other request passes through untouched: it is the caller's tracee, not vmshim's.

use crate::{config, os::syscall as sys};
use core::ffi::{c_int, c_long, c_void};

/// Must equal the launcher's `launch::RELEASE_MAGIC`: "let go of me".
pub const RELEASE_MAGIC: u64 = u64::from_le_bytes(*b"vmshimRL");
/// Must equal the launcher's `launch::RETAKEN_MAGIC`: "you trace me again".
pub const RETAKEN_MAGIC: u64 = u64::from_le_bytes(*b"vmshimRT");
const RELEASE_SIGNAL: i32 = libc::SIGWINCH;

type RealPtrace = unsafe extern "C" fn(c_int, libc::pid_t, *mut c_void, *mut c_void) -> c_long;

/// Looks up libc's `ptrace` once; called from the constructor.
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn resolve() -> usize {
    #[unsafe(link_section = ".data.vmshim_hot")]
    static REAL: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
    crate::os::real::next(c"ptrace", &REAL)
}

/// glibc declares `long ptrace(enum __ptrace_request, ...)`; on x86_64 and aarch64 its variadic
/// arguments travel in the same registers as these four, which are forwarded as they came.
///
/// # Safety
/// As for ptrace(2).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn ptrace(
    request: c_int,
    pid: libc::pid_t,
    addr: *mut c_void,
    data: *mut c_void,
) -> c_long {
    let real = resolve();
    if real == 0 {
        sys::set_errno(libc::ENOSYS);
        return -1;
    }
    // SAFETY: libc's ptrace, found by dlsym, has this prototype.
    let real = unsafe { core::mem::transmute::<usize, RealPtrace>(real) };
    let launcher = if request == libc::PTRACE_TRACEME as c_int { held_by_launcher() } else { None };
    if launcher.is_some() {
        let saved = sys::errno();
        tell_launcher(RELEASE_MAGIC);
        sys::set_errno(saved);
    }
    // SAFETY: forwarding the caller's own arguments.
    let r = unsafe { real(request, pid, addr, data) };
    // The request made the parent, vmshim, this thread's tracer again: say so, so that it sets
    // its options again (the kernel tells a tracer nothing of a PTRACE_TRACEME).
    if r == 0 && launcher.is_some() && tracer_pid() == launcher {
        let saved = sys::errno();
        tell_launcher(RETAKEN_MAGIC);
        sys::set_errno(saved);
    }
    r
}

/// The launcher's pid, if `vmshim run` traces this thread (the main thread, whose tracer is
/// the pid in `VMSHIM_TRACER`).
fn held_by_launcher() -> Option<u64> {
    let launcher = config::getenv("VMSHIM_TRACER").and_then(config::parse_u64)?;
    (sys::getpid() == sys::gettid() && tracer_pid() == Some(launcher)).then_some(launcher)
}

/// Sends the launcher `magic` through a signal-delivery stop of this thread (the launcher
/// suppresses the signal); returns once the launcher has let the thread go on.
fn tell_launcher(magic: u64) {
    let (pid, tid) = (sys::getpid(), sys::gettid());
    // The signal must be deliverable now, whatever the program blocks: unblock it for the one
    // system call that queues it (delivery happens on that call's way back to user space).
    let set: u64 = 1 << (RELEASE_SIGNAL - 1);
    let mut old: u64 = 0;
    // siginfo_t for SI_QUEUE: si_signo, si_errno, si_code, then si_pid, si_uid, si_value.
    let mut info = [0u8; 128];
    info[0..4].copy_from_slice(&RELEASE_SIGNAL.to_ne_bytes());
    info[8..12].copy_from_slice(&libc::SI_QUEUE.to_ne_bytes());
    info[16..20].copy_from_slice(&pid.to_ne_bytes());
    // SAFETY: getuid has no arguments and cannot fail.
    info[20..24].copy_from_slice(&unsafe { libc::getuid() }.to_ne_bytes());
    info[24..32].copy_from_slice(&magic.to_ne_bytes());
    // SAFETY: rt_sigprocmask reads `set` and writes `old` (8-byte kernel sigsets);
    // rt_tgsigqueueinfo reads the 128-byte siginfo; the mask is restored as it was.
    unsafe {
        sys::syscall6(
            libc::SYS_rt_sigprocmask,
            libc::SIG_UNBLOCK as usize,
            &set as *const u64 as usize,
            &mut old as *mut u64 as usize,
            8,
            0,
            0,
        );
        sys::syscall6(
            libc::SYS_rt_tgsigqueueinfo,
            pid as usize,
            tid as usize,
            RELEASE_SIGNAL as usize,
            info.as_ptr() as usize,
            0,
            0,
        );
        sys::syscall6(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK as usize,
            &old as *const u64 as usize,
            0,
            8,
            0,
            0,
        );
    }
}

/// `TracerPid:` of /proc/self/status.
fn tracer_pid() -> Option<u64> {
    let fd = sys::open(b"/proc/self/status\0", libc::O_RDONLY | libc::O_CLOEXEC, 0);
    if fd < 0 {
        return None;
    }
    // The line follows Name, Umask, State, Tgid, Ngid, Pid and PPid: well inside 512 bytes
    // (a Name is at most 64 escaped bytes).
    let mut buf = [0u8; 512];
    let n = sys::read(fd as i32, &mut buf).max(0) as usize;
    sys::close(fd as i32);
    let text = &buf[..n];
    let key = b"TracerPid:";
    let at = text.windows(key.len()).position(|w| w == key)? + key.len();
    let digits: &[u8] = {
        let rest = &text[at..];
        let start = rest.iter().position(|b| b.is_ascii_digit())?;
        let len = rest[start..].iter().take_while(|b| b.is_ascii_digit()).count();
        &rest[start..start + len]
    };
    config::parse_u64(digits)
}
