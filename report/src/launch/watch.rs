//! Seeing every process of the target's tree leave, with its address space still whole.
//!
//! ptrace gives vmshim the map of the one process it traces (the exit stop), and only while it
//! traces it, which keeps debuggers and the target's own `PTRACE_TRACEME` out. The tree's other
//! processes (fork children, daemons, exec'd programs) need another way, and so does a target
//! vmshim must not trace. This one is a seccomp filter with a user-space listener
//! (`SECCOMP_RET_USER_NOTIF`, Linux >= 5.5 for `SECCOMP_USER_NOTIF_FLAG_CONTINUE`), installed in
//! the target between fork and exec and inherited by everything it starts. It stops exactly one
//! system call, `exit_group` (every exit(3), `_exit` and Go's raw exit), at its entry, where the
//! whole address space still exists; the watcher reads `/proc/TID/smaps` (or maps and statm, for a
//! process of the shim that recorded nothing: [`exit_map`]) and the thread names, then lets the
//! call go on unchanged. Nothing else is filtered, and the target's memory is never written;
//! it is read once, for an image of the shim that waited for its first record with no trace
//! (shim/src/record/waiting.rs): one `process_vm_readv` of the shim's note and the argument
//! area, from which `vmshim run` writes that image's trace. The listener also reports when the
//! last task that uses the filter is gone (POLLHUP): that is how `vmshim run` knows the tree is
//! done, daemons included.
//!
//! The listener lives in a process of its own (`vmshim __watch`, in its own process group, deaf
//! to the terminal's signals), not in `vmshim run`: a filtered call whose listener has gone fails
//! with ENOSYS, so the listener must outlive every process of the tree even if `vmshim run` stops
//! waiting or is killed. It sends the captures to `vmshim run` over a pipe, in batches (one
//! write per 256 KiB, about seventy exits, or after 50 ms without an exit, and at the end), and
//! keeps serving, without capturing, once nobody reads. `vmshim run` reads them as they come,
//! and writes the trace of each waiting image then, on its own core, while the tree runs
//! ([`Watcher::start`]'s `on_capture`).
//!
//! What the filter can change, and when it is not installed:
//! - Installing a filter needs CAP_SYS_ADMIN (or no_new_privs, which would stop setuid programs
//!   in the tree from gaining privileges: vmshim never sets it). Without the capability the
//!   filter is not installed and only the traced process's exit is captured, as before.
//! - A process in the tree that installs a seccomp listener of its own gets EBUSY (one listener
//!   per filter chain), and one that asks for seccomp strict mode gets EINVAL; `--no-watch`
//!   leaves the filter out for such programs.
//! - The last thread leaving through a plain `exit` (a main thread that called pthread_exit
//!   first) is not seen; a process killed by a signal is not seen either (it never calls
//!   exit_group). The process vmshim traces is still captured at its ptrace exit stop then.

#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{
    AtomicBool,
    Ordering::{Acquire, Release},
};
use std::thread::JoinHandle;

/// One process caught at its `exit_group`.
#[derive(Clone, Debug)]
pub struct Capture {
    /// Thread group id: the process.
    pub pid: u32,
    /// exit_group's argument: the exit status the process asks for.
    pub code: i32,
    /// CLOCK_MONOTONIC at the capture, in ns: the clock of the trace's start records.
    pub mono_ns: u64,
    /// The map at the exit: smaps, or maps when `statm` is not empty.
    pub smaps: Vec<u8>,
    /// `/proc/PID/statm` read with a maps text, for a process of the shim that recorded nothing
    /// (see [`exit_map`]); empty with smaps.
    pub statm: Vec<u8>,
    pub thread_names: Vec<(u32, String)>,
    /// A process of the shim that waited for its first record with no trace of its own
    /// (shim/src/record/waiting.rs): what `vmshim run` writes its trace from.
    pub waiting: Option<Waiting>,
}

/// What the watcher read of a waiting image while it waited in `exit_group`: the note it kept
/// in its memory, and its command line.
#[derive(Clone, Debug)]
pub struct Waiting {
    pub note: vmshim_trace::waiting::Note,
    pub cmdline: Vec<u8>,
}

/// What `vmshim run` does with each capture as it arrives ([`Watcher::start`]).
pub type OnCapture = std::sync::Arc<dyn Fn(&Capture) -> bool + Send + Sync>;

/// Whether the tree's exits are watched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// The filter is in place in the target.
    Watching,
    /// It could not be installed; the reason, for the report.
    Unavailable(String),
}

/// The x86-64 system call numbers the filter stops, with the x32 ABI's twin.
const NR_EXIT_GROUP: u32 = libc::SYS_exit_group as u32;
const X32_BIT: u32 = 0x4000_0000;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

/// The filter: `exit_group` (native or x32) goes to the listener; everything else, and every
/// other architecture's calls, are allowed untouched.
fn filter() -> [libc::sock_filter; 7] {
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    // seccomp_data: nr at 0, arch at 4.
    [
        op(LD_W_ABS, 0, 0, 4),
        op(JEQ_K, 0, 4, AUDIT_ARCH_X86_64),
        op(LD_W_ABS, 0, 0, 0),
        op(JEQ_K, 1, 0, NR_EXIT_GROUP),
        op(JEQ_K, 0, 1, NR_EXIT_GROUP | X32_BIT),
        op(RET_K, 0, 0, libc::SECCOMP_RET_USER_NOTIF),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

/// In the target, between fork and exec (async-signal-safe: plain system calls on stack data):
/// installs the filter and hands the listener to the watcher through `sock`, or sends the errno
/// that refused it. Never fails the launch: the target runs either way.
pub fn install_in_child(sock: RawFd) {
    let prog = filter();
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr() as *mut libc::sock_filter };
    // SAFETY: seccomp(SET_MODE_FILTER) reads the program through `fprog`, which points at `prog`,
    // alive for the call; it returns a new descriptor (close-on-exec) or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &fprog as *const libc::sock_fprog,
        )
    } as i32;
    let errno = if fd < 0 { io::Error::last_os_error().raw_os_error().unwrap_or(0) } else { 0 };
    let mut byte = errno.to_le_bytes();
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: byte.len() };
    // Room for one descriptor, aligned as a cmsghdr.
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain data; all-zero is "no name, no control".
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if fd >= 0 {
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE computes a size.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as usize;
        // SAFETY: msg_control points at `control`, large enough for one cmsghdr with 4 bytes of
        // data (CMSG_SPACE(4) = 24 <= 32); CMSG_FIRSTHDR/CMSG_DATA stay inside it.
        unsafe {
            let h = libc::CMSG_FIRSTHDR(&msg);
            (*h).cmsg_level = libc::SOL_SOCKET;
            (*h).cmsg_type = libc::SCM_RIGHTS;
            (*h).cmsg_len = libc::CMSG_LEN(4) as usize;
            std::ptr::copy_nonoverlapping(fd.to_le_bytes().as_ptr(), libc::CMSG_DATA(h), 4);
        }
    }
    // SAFETY: msg and everything it points at are alive for the call; sock is our end of the
    // socket pair. The listener is then closed here (the watcher has its own copy).
    unsafe {
        libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL);
        if fd >= 0 {
            libc::close(fd);
        }
    }
}

/// Whether this process may install the filter (CAP_SYS_ADMIN in its effective set): then
/// every process of the tree that leaves through exit_group has its map read at the exit, and
/// the shim may let a process's start-up records wait for its first recorded call
/// (`VMSHIM_WATCHED`).
pub fn can_install() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps >> CAP_SYS_ADMIN & 1 == 1)
}

/// The watcher as `vmshim run` sees it.
pub struct Watcher {
    child: Child,
    reader: Option<JoinHandle<(Option<State>, Vec<Capture>)>>,
    /// Set by the reader once it has read the watcher's last frame, just before it says so with
    /// a SIGCHLD: the thread is not finished yet when the waiting thread wakes to look.
    read_all: Arc<AtomicBool>,
    /// The target's end of the socket pair, until the target has been spawned.
    target_end: Option<OwnedFd>,
}

impl Watcher {
    /// Starts `vmshim __watch` (the binary at `vmshim`), telling it the run's trace template;
    /// the target's end of the socket it listens on is [`Watcher::target_fd`]. `on_capture`
    /// sees each capture as it arrives, on the thread that reads them, while the tree runs; a
    /// capture it took care of (it answers true) is not kept for [`Watcher::finish`].
    pub fn start(vmshim: &Path, traces: Option<&Path>, on_capture: Option<OnCapture>) -> io::Result<Watcher> {
        let mut fds = [0; 2];
        // SAFETY: socketpair writes two descriptors into `fds`.
        if unsafe {
            libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr())
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors are new and owned by nobody else.
        let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let listen_fd = ours.as_raw_fd();
        let mut cmd = Command::new(vmshim);
        cmd.arg("__watch").args(traces).stdin(Stdio::null()).stdout(Stdio::piped()).env_remove("LD_PRELOAD");
        let in_child = move || {
            // SAFETY: between fork and exec: the socket goes to fd 3 without close-on-exec;
            // setpgid moves the watcher out of the terminal's foreground group, so Ctrl-C and
            // Ctrl-Z never reach it.
            unsafe {
                // dup2 onto itself keeps close-on-exec: clear it then.
                let placed = if listen_fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0) == 0
                } else {
                    libc::dup2(listen_fd, 3) == 3
                };
                if !placed {
                    return Err(io::Error::last_os_error());
                }
                libc::setpgid(0, 0);
            }
            Ok(())
        };
        // SAFETY: the hook only makes async-signal-safe system calls on copied values.
        unsafe { std::os::unix::process::CommandExt::pre_exec(&mut cmd, in_child) };
        let mut child = cmd.spawn()?;
        drop(ours);
        let out = child.stdout.take().expect("stdout was piped");
        // Its end (the tree is gone) is news to `vmshim run`'s wait for the tree, which looks at
        // `done` whenever a signal comes, and otherwise every 20 ms: a SIGCHLD says it at once
        // (issue 12: 10 ms of the end of a run on average). The flag goes first: the thread is
        // still running when the signal wakes the wait, which found it unfinished half the time
        // and slept 20 ms more.
        let read_all = Arc::new(AtomicBool::new(false));
        let said = read_all.clone();
        let reader = std::thread::Builder::new().name("vmshim-watch".into()).spawn(move || {
            let got = read_frames(out, on_capture);
            said.store(true, Release);
            // SAFETY: kill takes no pointers; SIGCHLD to this process, which waits for it.
            unsafe { libc::kill(libc::getpid(), libc::SIGCHLD) };
            got
        })?;
        Ok(Watcher { child, reader: Some(reader), read_all, target_end: Some(theirs) })
    }

    /// The descriptor to pass to [`install_in_child`] in the target.
    pub fn target_fd(&self) -> RawFd {
        self.target_end.as_ref().map_or(-1, |f| f.as_raw_fd())
    }

    /// After the target was spawned: drop vmshim's copy of its end, so that a target that never
    /// reached its exec leaves the watcher with nothing to wait for.
    pub fn spawned(&mut self) {
        self.target_end = None;
    }

    /// Whether the watcher has said its last (the tree is gone, or it never started).
    pub fn done(&self) -> bool {
        self.read_all.load(Acquire) || self.reader.as_ref().is_none_or(|r| r.is_finished())
    }

    /// Everything captured so far if the tree is done; what was captured until now if not
    /// (the watcher then keeps serving the rest of the tree on its own).
    pub fn finish(mut self) -> (State, Vec<Capture>) {
        let done = self.done();
        let (state, captures) = match self.reader.take() {
            Some(r) if done => r.join().unwrap_or((None, Vec::new())),
            _ => (Some(State::Watching), Vec::new()),
        };
        if done {
            let _ = self.child.wait();
        }
        (state.unwrap_or_else(|| State::Unavailable("the watcher stopped early".into())), captures)
    }
}

const FRAME_STATE: u32 = 1;
const FRAME_CAPTURE: u32 = 2;

fn read_frames(out: ChildStdout, on_capture: Option<OnCapture>) -> (Option<State>, Vec<Capture>) {
    let mut out = io::BufReader::with_capacity(1 << 16, out);
    let mut state = None;
    let mut captures = Vec::new();
    let mut word = [0u8; 4];
    while out.read_exact(&mut word).is_ok() {
        match u32::from_le_bytes(word) {
            FRAME_STATE => {
                let Ok(errno) = read_u32(&mut out) else { break };
                state = Some(match errno {
                    0 => State::Watching,
                    e if e == libc::EACCES as u32 => {
                        State::Unavailable("the exit watcher needs CAP_SYS_ADMIN: run vmshim as root".into())
                    }
                    e => State::Unavailable(format!(
                        "seccomp refused the exit watcher: {}",
                        io::Error::from_raw_os_error(e as i32)
                    )),
                });
            }
            FRAME_CAPTURE => match read_capture(&mut out) {
                Ok(c) if on_capture.as_ref().is_some_and(|f| f(&c)) => {}
                Ok(c) => captures.push(c),
                Err(_) => break,
            },
            _ => break,
        }
    }
    (state, captures)
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_blob(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let len = read_u32(r)? as usize;
    let mut v = vec![0u8; len];
    r.read_exact(&mut v)?;
    Ok(v)
}

fn read_capture(r: &mut impl Read) -> io::Result<Capture> {
    let pid = read_u32(r)?;
    let _tid = read_u32(r)?;
    let code = read_u32(r)? as i32;
    let mono_ns = read_u64(r)?;
    let smaps = read_blob(r)?;
    let statm = read_blob(r)?;
    let names = String::from_utf8_lossy(&read_blob(r)?).into_owned();
    let note = read_blob(r)?;
    let cmdline = read_blob(r)?;
    let waiting = vmshim_trace::waiting::parse(&note).map(|note| Waiting { note, cmdline });
    let thread_names = names
        .lines()
        .filter_map(|l| {
            let (tid, name) = l.split_once('\t')?;
            Some((tid.parse().ok()?, name.to_owned()))
        })
        .collect();
    Ok(Capture { pid, code, mono_ns, smaps, statm, thread_names, waiting })
}

fn put_blob(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// CLOCK_MONOTONIC in ns.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `vmshim __watch [TEMPLATE]`: the listener process. Takes the listener from the socket at fd
/// 3, answers every notification until the last process of the tree is gone, and writes what it
/// captured to stdout. TEMPLATE is the run's trace template (`VMSHIM_OUT`), by which it knows
/// the run's trace files in a map. Exits 0.
pub fn serve() -> u8 {
    let traces = std::env::args_os().nth(2).and_then(|t| RunTraces::new(Path::new(&t)));
    // SAFETY: signal() sets dispositions: this process must survive its reader going away and
    // the terminal's signals, since the tree's exits depend on it.
    unsafe {
        for sig in [libc::SIGPIPE, libc::SIGINT, libc::SIGQUIT, libc::SIGHUP, libc::SIGTERM, libc::SIGTSTP] {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
    let mut out = io::stdout().lock();
    let (listener, errno) = receive_listener(3);
    let mut frame = Vec::new();
    frame.extend_from_slice(&FRAME_STATE.to_le_bytes());
    frame.extend_from_slice(&(errno as u32).to_le_bytes());
    let mut reading = out.write_all(&frame).and_then(|()| out.flush()).is_ok();
    let Some(listener) = listener else { return 0 };
    sync_wake_up(listener.as_raw_fd());
    // Captures are sent in batches: a write per exit would wake `vmshim run`'s reader a thousand
    // times in a 1,000-process loop (issue 12). A batch goes out when it holds BATCH_BYTES, or
    // when no exit came for FLUSH_MS. The pipe is made to hold several batches, so that a
    // write does not wait for the reader while an exiting process may be waiting for us.
    // SAFETY: F_SETPIPE_SZ takes an int; refused (an older kernel, a lower pipe-max-size), the
    // pipe keeps its size.
    unsafe { libc::fcntl(1, libc::F_SETPIPE_SZ, PIPE_BYTES) };
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let mut pfd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let wait = if pending.is_empty() { -1 } else { FLUSH_MS };
        // SAFETY: one live pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, wait) };
        if r < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        if pfd.revents & libc::POLLIN != 0 {
            // The exiting process waits for the answer; the batch is written after it.
            if let Some(frame) = answer(listener.as_raw_fd(), reading, traces.as_ref()) {
                pending.extend_from_slice(&frame);
            }
        } else if pfd.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            break;
        }
        if r == 0 || pending.len() >= BATCH_BYTES {
            reading = reading && send(&mut out, &mut pending);
        }
    }
    if reading {
        send(&mut out, &mut pending);
    }
    0
}

/// Asks the kernel (>= 6.6) to hand the CPU straight from the exiting task to this listener
/// when it notifies, and back when it is answered (`SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`, made
/// for supervisors that answer every notification at once, as this one does): the exiting
/// process waits for the round trip, and a wake-up on another CPU costs it a scheduling delay
/// each time (issue 12: a thousand exits in the 1,000-process loop). Older kernels refuse the
/// request with EINVAL or ENOTTY, and notifications work as before.
fn sync_wake_up(listener: RawFd) {
    // _IOW('!', 4, __u64) from <linux/seccomp.h>; the flag is bit 0.
    const SECCOMP_IOCTL_NOTIF_SET_FLAGS: libc::c_ulong = 0x4008_2104;
    const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;
    // SAFETY: the ioctl takes the flags by value and touches no memory of ours.
    unsafe { libc::ioctl(listener, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP) };
}

/// A batch of captures no larger than this is kept before it is written.
const BATCH_BYTES: usize = 256 << 10;
/// What the pipe to `vmshim run` is asked to hold (the default pipe-max-size).
const PIPE_BYTES: libc::c_int = 1 << 20;
/// How long a batch waits for more captures before it is written.
const FLUSH_MS: i32 = 50;

/// Writes the batch out and empties it; false once the reader is gone.
fn send(out: &mut impl Write, pending: &mut Vec<u8>) -> bool {
    let ok = out.write_all(pending).and_then(|()| out.flush()).is_ok();
    pending.clear();
    ok
}

/// The listener sent by [`install_in_child`], or the errno that refused it.
fn receive_listener(sock: RawFd) -> (Option<OwnedFd>, i32) {
    let mut word = [0u8; 4];
    let mut iov = libc::iovec { iov_base: word.as_mut_ptr().cast(), iov_len: word.len() };
    let mut control = [0u64; 4];
    // SAFETY: plain data.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: msg and its buffers are alive for the call.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    // SAFETY: closes our socket, which is not used again.
    unsafe { libc::close(sock) };
    if n != 4 {
        // The target never got to its exec.
        return (None, libc::ECHILD);
    }
    let errno = i32::from_le_bytes(word);
    // SAFETY: CMSG_FIRSTHDR reads msg_control/msg_controllen set by recvmsg; the data of an
    // SCM_RIGHTS header of CMSG_LEN(4) is one descriptor, now ours.
    unsafe {
        let h = libc::CMSG_FIRSTHDR(&msg);
        if errno == 0
            && !h.is_null()
            && (*h).cmsg_level == libc::SOL_SOCKET
            && (*h).cmsg_type == libc::SCM_RIGHTS
            && (*h).cmsg_len == libc::CMSG_LEN(4) as usize
        {
            let mut fd = [0u8; 4];
            std::ptr::copy_nonoverlapping(libc::CMSG_DATA(h), fd.as_mut_ptr(), 4);
            return (Some(OwnedFd::from_raw_fd(i32::from_le_bytes(fd))), 0);
        }
    }
    (None, if errno == 0 { libc::EPROTO } else { errno })
}

/// Takes one notification, captures the process when its reader still reads (`capture`), and
/// lets the call continue. The frame to send, if any.
fn answer(listener: RawFd, capture: bool, traces: Option<&RunTraces>) -> Option<Vec<u8>> {
    // SAFETY: seccomp_notif is plain data; RECV wants it zeroed.
    let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: RECV fills `req`.
    if unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) } != 0 {
        // The caller was killed before we took it (ENOENT), or interrupted: nothing to answer.
        return None;
    }
    let frame = capture.then(|| capture_frame(req.pid, req.data.args[0] as i32, traces));
    let resp = libc::seccomp_notif_resp {
        id: req.id,
        val: 0,
        error: 0,
        flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
    };
    // SAFETY: SEND reads `resp`. It fails only if the caller is gone (killed meanwhile).
    let sent = unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) } == 0;
    // A capture of a task that was killed while we read it may be of a reused pid: dropped.
    frame.filter(|_| sent)
}

fn capture_frame(tid: u32, code: i32, traces: Option<&RunTraces>) -> Vec<u8> {
    let mono_ns = monotonic_ns();
    // Most exits are of a process of one thread: /proc/TID/stat (one line) says so with its
    // thread count, and names it, where listing the tasks and reading each one's comm took
    // three more files per exit (issue 12). A group of one is the calling thread itself.
    let (pid, names, map) = match single_thread_name(tid) {
        Some((comm, args)) => (tid, format!("{tid}\t{comm}\n"), exit_map(tid, traces, args)),
        None => {
            let (pid, names) = group_names(tid);
            let text = super::read_proc(&format!("/proc/{tid}/smaps"));
            (pid, names, ExitMap { text, statm: Vec::new(), waiting: None })
        }
    };
    let (smaps, statm) = (map.text, map.statm);
    let (note, cmdline) = map.waiting.unwrap_or_default();
    let mut f = Vec::with_capacity(smaps.len() + statm.len() + names.len() + note.len() + cmdline.len() + 64);
    f.extend_from_slice(&FRAME_CAPTURE.to_le_bytes());
    f.extend_from_slice(&pid.to_le_bytes());
    f.extend_from_slice(&tid.to_le_bytes());
    f.extend_from_slice(&(code as u32).to_le_bytes());
    f.extend_from_slice(&mono_ns.to_le_bytes());
    put_blob(&mut f, &smaps);
    put_blob(&mut f, &statm);
    put_blob(&mut f, names.as_bytes());
    put_blob(&mut f, &note);
    put_blob(&mut f, &cmdline);
    f
}

/// What is kept of an exiting process's address space: the map, and statm with a maps text;
/// for a waiting image, its note and command line ([`waiting_note`]).
struct ExitMap {
    text: Vec<u8>,
    statm: Vec<u8>,
    waiting: Option<(Vec<u8>, Vec<u8>)>,
}

/// The map of a single-threaded process at its exit. smaps costs four times what maps does
/// (about 110 µs against 27 µs for a `/bin/true` under the shim, most of it walking the page
/// tables of every region), and what a report takes from smaps beyond maps is the resident
/// bytes and the VmFlags that tell thread stacks and arenas apart, which only recorded calls
/// need. So a process of the shim that recorded nothing (its map shows its trace mapped as the
/// shim maps it until a first record: [`TraceMapping::FirstPage`]; a shell's `/bin/true`, issue 12)
/// keeps maps and `/proc/PID/statm`, whose resident count is the sum smaps' `Rss:` lines give.
/// (Not the rss field of the stat line read before, which would spare the file: on this
/// machine's kernel, 6.18, it is not statm's count, 411 pages against 438 for an idle `sleep`,
/// as if read from the kernel's per-CPU counters without their sum.) Every other process keeps
/// smaps, read after maps (the process has one thread, stopped here, so the texts agree).
///
/// An image of the shim that waited for its first record recorded nothing either, and has no
/// trace mapped at all: the watcher reads its note too, with its command line (`args`: the
/// argument area, from stat), for `vmshim run` to write its trace (shim/src/record/waiting.rs).
fn exit_map(tid: u32, traces: Option<&RunTraces>, args: Option<(u64, u64)>) -> ExitMap {
    let maps = super::read_proc(&format!("/proc/{tid}/maps"));
    let (nothing, waiting) = match traces.map(|t| trace_mapping(&maps, t)) {
        Some(TraceMapping::FirstPage) => (true, None),
        Some(TraceMapping::None { shim_base: Some(base), shim_path }) => {
            let w = waiting_note(tid, base, shim_path, args);
            (w.is_some(), w)
        }
        _ => (false, None),
    };
    if nothing {
        let statm = super::read_proc_line(&format!("/proc/{tid}/statm"));
        if !statm.is_empty() {
            return ExitMap { text: maps, statm, waiting };
        }
    }
    ExitMap { text: super::read_proc(&format!("/proc/{tid}/smaps")), statm: Vec::new(), waiting }
}

/// The `/proc/PID` files the capture of a single-threaded process that recorded nothing opens
/// ([`single_thread_name`], [`exit_map`]).
const CAPTURE_FILES: [&str; 3] = ["stat", "maps", "statm"];

/// Looks up now the `/proc` entries the exit capture of process `pid` will open. The kernel
/// makes a pid's `/proc` directory and each file's entry at their first lookup, and the
/// capture's opens, made while the process waits in `exit_group`, were the first: in a shell
/// loop under `vmshim run` the three opens took 12, 6 and 5 us, and 5-7, 4-5 and 3-4 us once
/// looked up ahead (the whole capture 87-91 us, then 81-87 us; perf's raw_syscalls, 300 exits).
/// A fork child announces itself at its fork (its Start record on the run's socket,
/// `super::sent`), and its pid lives on through its exec to the exit this watcher captures (the
/// entries stay valid across the exec): looked up then, on vmshim's own thread, they are in the
/// dentry cache at the exit. A pid already gone is no matter.
pub fn look_up_ahead(pid: u32) {
    for file in CAPTURE_FILES {
        let _ = std::fs::symlink_metadata(format!("/proc/{pid}/{file}"));
    }
}

/// The note a waiting image keeps (`vmshim_trace::waiting`) and its command line, read from
/// process `pid` with one `process_vm_readv`: the note at the shim's load address `base` plus
/// the note's symbol value in the library at `shim_path`, and the argument area `args`. The
/// command line is the area when it ends in a NUL, as `/proc/PID/cmdline` gives it then (else,
/// a program that rewrote its arguments, /proc is asked). None when there is no note or it is
/// not this process's (a fork child's copy of its parent's).
fn waiting_note(
    pid: u32,
    base: u64,
    shim_path: &[u8],
    args: Option<(u64, u64)>,
) -> Option<(Vec<u8>, Vec<u8>)> {
    thread_local! {
        static SYMBOL_AT: std::cell::RefCell<Option<(Vec<u8>, Option<u64>)>> = const { std::cell::RefCell::new(None) };
    }
    let value = SYMBOL_AT.with_borrow_mut(|known| {
        if known.as_ref().is_none_or(|(p, _)| p != shim_path) {
            use std::os::unix::ffi::OsStrExt;
            *known =
                Some((shim_path.to_vec(), note_symbol(Path::new(std::ffi::OsStr::from_bytes(shim_path)))));
        }
        known.as_ref().and_then(|k| k.1)
    })?;
    const ARGS_MAX: u64 = 64 << 10;
    let (lo, hi) = args.filter(|&(lo, hi)| lo < hi).unwrap_or((0, 0));
    let args_len = (hi - lo).min(ARGS_MAX) as usize;
    let mut note = vec![0u8; vmshim_trace::waiting::SIZE];
    let mut cmdline = vec![0u8; args_len];
    let local = [
        libc::iovec { iov_base: note.as_mut_ptr().cast(), iov_len: note.len() },
        libc::iovec { iov_base: cmdline.as_mut_ptr().cast(), iov_len: cmdline.len() },
    ];
    let remote = [
        libc::iovec { iov_base: (base + value) as usize as *mut libc::c_void, iov_len: note.len() },
        libc::iovec { iov_base: lo as usize as *mut libc::c_void, iov_len: args_len },
    ];
    let parts = if args_len > 0 { 2 } else { 1 };
    // SAFETY: process_vm_readv writes at most each local iovec's length into `note` and
    // `cmdline`, both alive for the call, and only reads the other process's memory.
    let n = unsafe {
        libc::process_vm_readv(pid as libc::pid_t, local.as_ptr(), parts, remote.as_ptr(), parts, 0)
    };
    if n < note.len() as isize {
        return None;
    }
    vmshim_trace::waiting::parse(&note).filter(|w| w.pid == pid)?;
    if n as usize != note.len() + args_len || cmdline.last() != Some(&0) {
        cmdline = super::read_proc(&format!("/proc/{pid}/cmdline"));
    }
    Some((note, cmdline))
}

/// The value of the note's symbol in the shim library at `path`.
fn note_symbol(path: &Path) -> Option<u64> {
    use object::{Object, ObjectSymbol};
    let data = std::fs::read(path).ok()?;
    let file = object::File::parse(&*data).ok()?;
    file.dynamic_symbols().find(|s| s.name() == Ok(vmshim_trace::waiting::SYMBOL)).map(|s| s.address())
}

/// The run's trace files as the kernel names them in a map: in the template's directory (its
/// real path), named as the template is with each `%p` a pid, and perhaps the `.N` suffixes
/// of a taken name after.
pub struct RunTraces {
    dir: Vec<u8>,
    /// The template's file name, cut at each `%p`.
    parts: Vec<Vec<u8>>,
}

impl RunTraces {
    /// From the trace template `vmshim run` gives the shim (`VMSHIM_OUT`); None when its
    /// directory cannot be resolved.
    pub fn new(template: &Path) -> Option<RunTraces> {
        use std::os::unix::ffi::OsStrExt;
        let dir = std::fs::canonicalize(template.parent()?).ok()?;
        let name = template.file_name()?.as_bytes();
        let mut parts = Vec::new();
        let mut rest = name;
        while let Some(at) = rest.windows(2).position(|w| w == b"%p") {
            parts.push(rest[..at].to_vec());
            rest = &rest[at + 2..];
        }
        parts.push(rest.to_vec());
        Some(RunTraces { dir: dir.as_os_str().as_bytes().to_vec(), parts })
    }

    /// Whether `path` (a map line's) is one of the run's trace files.
    fn holds(&self, path: &[u8]) -> bool {
        let Some(slash) = path.iter().rposition(|&b| b == b'/') else { return false };
        if path[..slash] != self.dir[..] && !(slash == 0 && self.dir == b"/") {
            return false;
        }
        let digits = |s: &[u8]| s.iter().take_while(|b| b.is_ascii_digit()).count();
        let mut name = &path[slash + 1..];
        for (i, part) in self.parts.iter().enumerate() {
            let Some(after) = name.strip_prefix(&part[..]) else { return false };
            name = after;
            if i + 1 < self.parts.len() {
                let n = digits(name);
                if n == 0 {
                    return false;
                }
                name = &name[n..];
            }
        }
        // `.N` suffixes, each a number.
        while let Some(after) = name.strip_prefix(b".") {
            let n = digits(after);
            if n == 0 {
                return false;
            }
            name = &after[n..];
        }
        name.is_empty()
    }
}

/// How a process's map shows its trace (one of the run's files).
#[derive(Debug, PartialEq, Eq)]
enum TraceMapping<'a> {
    /// As the shim maps it before the process begins to record, and only so: the file's first
    /// page, shared, at offset 0, and no segment (shim/src/out/writer.rs, "The first page").
    FirstPage,
    /// Otherwise mapped: the process records.
    Recording,
    /// Not mapped at all; where the shim's library (`libvmshim.so`, offset 0) is loaded, if it is.
    None { shim_base: Option<u64>, shim_path: &'a [u8] },
}

/// Whether the map shows the process's trace mapped as the shim maps it before the process
/// begins to record ([`TraceMapping::FirstPage`]). A process with no trace mapped (no shim, a
/// waiting image, or one that could not create its file) does not count.
#[cfg(test)]
fn records_nothing(maps: &[u8], traces: &RunTraces) -> bool {
    trace_mapping(maps, traces) == TraceMapping::FirstPage
}

fn trace_mapping<'a>(maps: &'a [u8], traces: &RunTraces) -> TraceMapping<'a> {
    // SAFETY: sysconf reads a constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    let mut found = false;
    let mut shim: (Option<u64>, &[u8]) = (None, &[]);
    for line in maps.split(|&b| b == b'\n') {
        // `start-end perms offset dev inode   path`
        let mut fields = line.splitn(6, |&b| b == b' ');
        let (Some(range), Some(perms), Some(offset), Some(_dev), Some(_inode), Some(path)) =
            (fields.next(), fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let path = path.trim_ascii_start();
        let bounds = || {
            std::str::from_utf8(range)
                .ok()
                .and_then(|r| r.split_once('-'))
                .and_then(|(a, b)| Some((u64::from_str_radix(a, 16).ok()?, u64::from_str_radix(b, 16).ok()?)))
        };
        let at_zero = offset.iter().all(|&b| b == b'0');
        if shim.0.is_none() && at_zero && path.ends_with(b"/libvmshim.so") {
            shim = (bounds().map(|(a, _)| a), path);
        }
        if !path.starts_with(b"/") || !traces.holds(path) {
            continue;
        }
        let size = bounds().map(|(a, b)| b - a);
        if perms != b"rw-s" || !at_zero || size != Some(page) {
            return TraceMapping::Recording;
        }
        found = true;
    }
    if found { TraceMapping::FirstPage } else { TraceMapping::None { shim_base: shim.0, shim_path: shim.1 } }
}

/// The name (`comm`) of thread `tid` when its process has no other thread, from
/// `/proc/TID/stat`, with its argument area.
fn single_thread_name(tid: u32) -> Option<(String, Option<(u64, u64)>)> {
    let stat = super::read_proc_line(&format!("/proc/{tid}/stat"));
    let (comm, threads) = name_and_threads(&stat)?;
    (threads == 1).then(|| (comm, arg_area(&stat)))
}

/// A `/proc/TID/stat` line's name and thread count: `pid (comm) state ... num_threads` (field
/// 20). The name may hold spaces and parentheses; it ends at the last `)`.
fn name_and_threads(stat: &[u8]) -> Option<(String, u64)> {
    let open = stat.iter().position(|&b| b == b'(')?;
    let (threads, _) = after_name(stat)?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    Some((String::from_utf8_lossy(stat.get(open + 1..close)?).into_owned(), threads))
}

/// The argument area, `arg_start` and `arg_end` (fields 48 and 49 of a stat line).
fn arg_area(stat: &[u8]) -> Option<(u64, u64)> {
    after_name(stat)?.1
}

/// After a stat line's name: its thread count (field 20) and argument area (48, 49).
fn after_name(stat: &[u8]) -> Option<(u64, Option<(u64, u64)>)> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    // After the name: state (field 3), ppid (4), ..., num_threads (20), ..., arg_start (48).
    let mut fields = rest.split_ascii_whitespace();
    let threads = fields.nth(17)?.parse().ok()?;
    let mut args = fields.skip(27);
    let area = (|| Some((args.next()?.parse().ok()?, args.next()?.parse().ok()?)))();
    Some((threads, area))
}

/// The thread group of `tid` (its tgid) and its threads' names, one `tid\tcomm` line each.
fn group_names(tid: u32) -> (u32, String) {
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{tid}/task"))
        .map(|dir| dir.flatten().filter_map(|e| e.file_name().to_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let pid = if threads.len() == 1 && threads[0] == tid.to_string() {
        tid
    } else {
        let status = std::fs::read_to_string(format!("/proc/{tid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Tgid:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(tid)
    };
    let mut names = String::new();
    for t in &threads {
        if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/task/{t}/comm")) {
            names.push_str(&format!("{t}\t{}\n", comm.trim_end()));
        }
    }
    (pid, names)
}

#[cfg(test)]
mod tests {
    use super::{RunTraces, name_and_threads, records_nothing};

    #[test]
    fn the_runs_trace_files_are_told_by_directory_and_template() {
        let dir = std::env::temp_dir().join(format!("vmshim-runtraces-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let real = std::fs::canonicalize(&dir).unwrap().to_string_lossy().into_owned();
        let fixed = RunTraces::new(&dir.join("t.trace")).unwrap();
        let per_pid = RunTraces::new(&dir.join("vmshim.%p.trace")).unwrap();
        for (traces, name, holds) in [
            (&fixed, "t.trace", true),
            (&fixed, "t.trace.4242", true),
            (&fixed, "t.trace.4242.1", true),
            (&fixed, "t.trace.", false),
            (&fixed, "t.trace.x", false),
            (&fixed, "t.trace2", false),
            (&per_pid, "vmshim.4242.trace", true),
            (&per_pid, "vmshim.4242.trace.3", true),
            (&per_pid, "vmshim..trace", false),
            (&per_pid, "vmshim.42x.trace", false),
        ] {
            assert_eq!(traces.holds(format!("{real}/{name}").as_bytes()), holds, "{name}");
        }
        assert!(!fixed.holds(b"/elsewhere/t.trace"));
        // A map in which the trace is the first page alone records nothing; with a segment, or
        // with none mapped at all, it does not count.
        // SAFETY: sysconf reads a constant.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
        let line = |start: u64, len: u64, perms: &str, name: &str| {
            format!(
                "{start:x}-{:x} {perms} 00000000 00:1b 77                         {real}/{name}\n",
                start + len
            )
        };
        let header = line(0x7f00_0000_0000, page, "rw-s", "t.trace.4242.1");
        let segment = line(0x7f00_1000_0000, 4 << 20, "rw-s", "t.trace.4242.1");
        let other = line(0x7f00_2000_0000, page, "rw-s", "u.trace");
        assert!(records_nothing(format!("{other}{header}").as_bytes(), &fixed));
        assert!(!records_nothing(format!("{header}{segment}").as_bytes(), &fixed));
        assert!(!records_nothing(other.as_bytes(), &fixed));
        // No trace mapped: a waiting image when the shim's library is there, found by its
        // mapping at offset 0.
        let lib =
            "7f00_3000_0000-7f00_3001_6000 r--p 00000000 00:1b 78 /opt/x/libvmshim.so\n".replace('_', "");
        let lib_text =
            "7f00_3001_6000-7f00_3006_0000 r-xp 00016000 00:1b 78 /opt/x/libvmshim.so\n".replace('_', "");
        let (waiting, bare, recording) =
            (format!("{other}{lib}{lib_text}"), other.clone(), format!("{header}{segment}{lib}"));
        let mapping = |text: &str| format!("{:?}", super::trace_mapping(text.as_bytes(), &fixed));
        let none = |base, path: &'static [u8]| {
            format!("{:?}", super::TraceMapping::None { shim_base: base, shim_path: path })
        };
        assert_eq!(mapping(&waiting), none(Some(0x7f00_3000_0000), b"/opt/x/libvmshim.so"));
        assert_eq!(mapping(&bare), none(None, b""));
        assert_eq!(mapping(&recording), format!("{:?}", super::TraceMapping::Recording));
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn a_stat_line_gives_the_name_and_the_thread_count_of_this_process() {
        let stat = std::fs::read("/proc/self/stat").unwrap();
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let threads: u64 =
            status.lines().find_map(|l| l.strip_prefix("Threads:")).unwrap().trim().parse().unwrap();
        assert_eq!(name_and_threads(&stat), Some((comm.trim_end().to_string(), threads)));
        // A name with spaces and parentheses ends at the last `)`.
        let odd = b"42 (a) (b c) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 7 0 1234 5 6";
        assert_eq!(name_and_threads(odd), Some(("a) (b c".to_string(), 7)));
        assert_eq!(name_and_threads(b"42 (x"), None);
    }

    /// The argument area stat gives is where this process's command line lies: read with
    /// process_vm_readv, it is /proc/self/cmdline.
    #[test]
    fn the_argument_area_from_stat_holds_the_command_line() {
        let stat = std::fs::read("/proc/self/stat").unwrap();
        let (lo, hi) = super::arg_area(&stat).unwrap();
        let mut got = vec![0u8; (hi - lo) as usize];
        let local = libc::iovec { iov_base: got.as_mut_ptr().cast(), iov_len: got.len() };
        let remote = libc::iovec { iov_base: lo as usize as *mut libc::c_void, iov_len: got.len() };
        // SAFETY: reads this process's own argument area into `got`.
        let n = unsafe { libc::process_vm_readv(std::process::id() as i32, &local, 1, &remote, 1, 0) };
        assert_eq!(n, got.len() as isize);
        assert_eq!(got, std::fs::read("/proc/self/cmdline").unwrap());
    }
}
