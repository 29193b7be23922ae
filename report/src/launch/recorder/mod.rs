//! The syscall recorder: `vmshim run` on a target `LD_PRELOAD` cannot reach (a static or
//! static-pie ELF), or on any target with `--syscalls`. It writes the same traces as the shim,
//! from outside the target.
//!
//! The target starts under ptrace with a seccomp-bpf filter ([`filter`]) installed between fork
//! and exec. Only the calls that shape the address space or make threads stop (mmap, munmap,
//! mremap, mprotect, brk, clone, clone3); everything else runs at full speed, and the ends of
//! threads and images stop by ptrace's own exit and exec events. At each stop the recorder
//! reads the registers (the arguments), unwinds the calling thread's stack by `.eh_frame` rules
//! and frame pointers ([`unwind`], reading with `process_vm_readv`: the target is never
//! faulted), lets the call run to its syscall-exit stop for the result, resumes the thread and
//! writes a call record ([`out`]). Every process of the tree is followed
//! (`PTRACE_O_TRACEFORK|VFORK|CLONE`) and each program image gets its own trace, named as the
//! shim names its own; the main thread's exit stop gives the kernel's map at exit, as in
//! [`crate::launch`].
//!
//! What it must never do: change what the target does. Its stdio is inherited untouched, every
//! signal it receives is delivered as sent, its memory is only read, every call runs with its
//! own arguments and result. The filter stops calls with `SECCOMP_RET_TRACE`, which fails a
//! call with ENOSYS when no tracer is there: vmshim traces every process of the tree until the
//! last is gone, and `PTRACE_O_EXITKILL` kills the tree if vmshim itself dies, rather than leave
//! it stopped forever or failing its memory calls.
//!
//! The target's own seccomp filters stack on the recorder's: a stop its filter asked for
//! (`SECCOMP_RET_TRACE` with data other than [`filter::TRACE_DATA`]) is answered as the kernel
//! answers when no tracer is there, ENOSYS without the call. A process of the tree that asks
//! for a tracer of its own (`PTRACE_TRACEME`, or to trace another process of the tree) cannot
//! have one, and a debugger inside may then wait forever: the recorder ends the run with the
//! reason instead ([`Tracer::ptrace_call`]).
//!
//! This module needs `unsafe` for fork, ptrace, waitpid, seccomp and execve; each block says why
//! it holds.

#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod filter;
pub mod heaps;
pub mod image;
pub mod out;
pub mod remote;
pub mod unwind;

use crate::launch::{BlockedSignals, LaunchError, Outcome};
use std::collections::{HashMap, HashSet};
use std::ffi::{CString, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;
use vmshim_trace::CallKind;

/// The words the report and `Config` record use for this recorder.
pub const NAME: &str = "syscalls (ptrace + seccomp-bpf, .eh_frame and frame-pointer stacks)";

/// What to run and where its traces go.
pub struct Request<'a> {
    pub program: &'a Path,
    /// The arguments after `argv[0]`; `argv[0]` is `program` itself, as `vmshim run` gives it.
    pub args: &'a [OsString],
    /// The trace path template (`%p`: the pid).
    pub template: &'a Path,
    pub run_id: u64,
    /// Variables set in the target's environment over the inherited ones (`LD_PRELOAD`,
    /// `VMSHIM_OUT`, `VMSHIM_RUN` when the shim records alongside: see [`COMPANION`]).
    pub env: &'a [(OsString, OsString)],
}

/// Under `vmshim run --syscalls` of a dynamic target both recorders run, the shim inside and this
/// one outside, and each writes its own traces: this recorder's are named after the shim's with
/// this suffix (`t.trace.syscalls`, `vmshim.PID.trace.syscalls`), a run of their own that the
/// shim's run never lists ([`crate::load::tree`]), so no report counts a call twice; each
/// report's `recorder` field says who saw its calls.
pub const COMPANION: &str = ".syscalls";

/// The template of this recorder's traces when the shim records the same run into `shim`'s.
pub fn companion_template(shim: &Path) -> std::path::PathBuf {
    let mut s = shim.as_os_str().to_owned();
    s.push(COMPANION);
    s.into()
}

/// The stages of the child between fork and exec, as it reports a failure through the pipe.
const STAGE_TRACEME: u32 = 1;
const STAGE_SECCOMP: u32 = 2;
const STAGE_EXEC: u32 = 3;

const OPTIONS: libc::c_int = libc::PTRACE_O_EXITKILL
    | libc::PTRACE_O_TRACESECCOMP
    | libc::PTRACE_O_TRACESYSGOOD
    | libc::PTRACE_O_TRACECLONE
    | libc::PTRACE_O_TRACEFORK
    | libc::PTRACE_O_TRACEVFORK
    | libc::PTRACE_O_TRACEEXEC
    | libc::PTRACE_O_TRACEEXIT;

/// Runs the target to completion under the recorder and reports how it ended (the same
/// [`Outcome`] as [`crate::launch::launch`]: the top process's map at exit, and every other
/// process's in `exits`).
pub fn run(r: &Request) -> Result<Outcome, LaunchError> {
    let blocked = BlockedSignals::enter()?;
    let pid = spawn(r, &blocked.original)?;
    let mut t = Tracer::new(pid, r);
    let status = t.run(&blocked);
    drop(blocked);
    let status = status?;
    if let Some(why) = child_failure(r.program) {
        return Err(LaunchError::Io(why));
    }
    if let Some(why) = t.refused.take() {
        return Err(LaunchError::Io(why));
    }
    let (how, exit_code) = crate::launch::describe_status(status);
    let top = t.procs.remove(&pid);
    let (final_smaps, thread_names) = top.map(|p| (p.final_smaps, p.names)).unwrap_or_default();
    Ok(Outcome {
        pid: pid as u32,
        raw_status: status,
        how,
        exit_code,
        final_smaps,
        final_statm: None,
        thread_names,
        watched: None,
        exits: t.exits,
        left_running: false,
    })
}

/// Forks the target: in the child, `PTRACE_TRACEME`, a stop for vmshim to set its options (the
/// filter's stops need `PTRACE_O_TRACESECCOMP` before the first filtered call, the execve), the
/// filter, then exec. Returns once the child is stopped and its options are set, running on.
fn spawn(r: &Request, mask: &libc::sigset_t) -> Result<libc::pid_t, LaunchError> {
    let cstr = |s: &[u8]| CString::new(s).map_err(|_| LaunchError::Io("an argument holds a NUL byte".into()));
    let path = cstr(r.program.as_os_str().as_bytes())?;
    let mut argv = vec![path.clone()];
    for a in r.args {
        argv.push(cstr(a.as_bytes())?);
    }
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    // The inherited environment with `r.env` set over it, as `Command::envs` would give it.
    let mut envp = Vec::new();
    for (k, v) in std::env::vars_os().filter(|(k, _)| !r.env.iter().any(|(o, _)| o == k)) {
        envp.push(cstr(&[k.as_bytes(), b"=", v.as_bytes()].concat())?);
    }
    for (k, v) in r.env {
        envp.push(cstr(&[k.as_bytes(), b"=", v.as_bytes()].concat())?);
    }
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    let prog = filter::program();
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr() as *mut libc::sock_filter };
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(LaunchError::Io(format!("pipe: {}", io::Error::last_os_error())));
    }
    let mask = *mask;
    // SAFETY: fork; the child below makes only async-signal-safe system calls on data prepared
    // before the fork (no allocation, no lock), and ends in execve or _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: in the child: plain system calls on stack data and on the CStrings, the filter
        // and the pointer arrays made before the fork, which the child's copy of memory holds.
        unsafe {
            let fail = |stage: u32| -> ! {
                let errno = *libc::__errno_location();
                let mut word = [0u8; 8];
                word[..4].copy_from_slice(&stage.to_le_bytes());
                word[4..].copy_from_slice(&(errno as u32).to_le_bytes());
                libc::write(fds[1], word.as_ptr().cast(), 8);
                libc::_exit(127)
            };
            libc::close(fds[0]);
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0usize, 0usize) == -1 {
                fail(STAGE_TRACEME);
            }
            libc::kill(libc::getpid(), libc::SIGSTOP);
            libc::pthread_sigmask(libc::SIG_SETMASK, &mask, std::ptr::null_mut());
            let install = || {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &fprog as *const libc::sock_fprog,
                )
            };
            // Without CAP_SYS_ADMIN a filter needs no_new_privs. A traced process gains no
            // privileges at exec anyway (ptrace(2): setuid bits are ignored under a tracer that
            // lacks the capability), so that flag changes nothing the target could see.
            if install() != 0
                && (*libc::__errno_location() != libc::EACCES
                    || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                    || install() != 0)
            {
                fail(STAGE_SECCOMP);
            }
            libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr());
            fail(STAGE_EXEC);
        }
    }
    // SAFETY: closes the parent's copy of the write end.
    unsafe { libc::close(fds[1]) };
    let read_failure = || {
        let mut word = [0u8; 8];
        // SAFETY: reads at most 8 bytes into `word`; the write end is closed in this process, so
        // the read ends at the child's exec (close-on-exec) or exit.
        let n = unsafe { libc::read(fds[0], word.as_mut_ptr().cast(), 8) };
        // SAFETY: closes our end, used no more.
        unsafe { libc::close(fds[0]) };
        (n == 8).then(|| {
            let stage = u32::from_le_bytes(word[..4].try_into().unwrap_or_default());
            let errno = i32::from_le_bytes(word[4..].try_into().unwrap_or_default());
            (stage, io::Error::from_raw_os_error(errno))
        })
    };
    if pid < 0 {
        return Err(LaunchError::Io(format!("fork: {}", io::Error::last_os_error())));
    }
    let mut status = 0;
    // SAFETY: status is a live int; pid is our child.
    let w = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
    if w != pid || !libc::WIFSTOPPED(status) {
        let why = match read_failure() {
            Some((STAGE_TRACEME, e)) => not_permitted(&e),
            Some((_, e)) => format!("cannot start {}: {e}", r.program.display()),
            None => format!("cannot start {}: it ended before it ran", r.program.display()),
        };
        return Err(LaunchError::Io(why));
    }
    remote::request(libc::PTRACE_SETOPTIONS, pid, OPTIONS as usize)
        .map_err(|e| LaunchError::Io(format!("ptrace(SETOPTIONS) on {pid}: {e}")))?;
    remote::request(libc::PTRACE_CONT, pid, 0)
        .map_err(|e| LaunchError::Io(format!("ptrace(CONT) on {pid}: {e}")))?;
    // A failure after this stop (the filter, the exec) comes through the pipe, which the exec
    // closes: read once the child exec'd or exited ([`child_failure`]).
    PIPE.with(|p| p.set(fds[0]));
    Ok(pid)
}

thread_local! {
    /// The read end of the child's failure pipe until its exec (see [`spawn`]).
    static PIPE: std::cell::Cell<i32> = const { std::cell::Cell::new(-1) };
}

/// The pipe's word, once the child exec'd or exited: Some(why) when it failed before its exec.
fn child_failure(program: &Path) -> Option<String> {
    let fd = PIPE.with(|p| p.replace(-1));
    if fd < 0 {
        return None;
    }
    let mut word = [0u8; 8];
    // SAFETY: reads at most 8 bytes into `word`; the child has exec'd or exited, so the read
    // does not block (the write end is closed).
    let n = unsafe { libc::read(fd, word.as_mut_ptr().cast(), 8) };
    // SAFETY: closes our end, used no more.
    unsafe { libc::close(fd) };
    if n != 8 {
        return None;
    }
    let stage = u32::from_le_bytes(word[..4].try_into().unwrap_or_default());
    let e = io::Error::from_raw_os_error(i32::from_le_bytes(word[4..].try_into().unwrap_or_default()));
    Some(match stage {
        STAGE_TRACEME => not_permitted(&e),
        STAGE_SECCOMP => format!(
            "cannot install the syscall recorder's seccomp filter in {}: {e} (the kernel needs \
             CONFIG_SECCOMP_FILTER; a target already under a strict seccomp mode refuses it)",
            program.display()
        ),
        _ => format!("cannot start {}: {e}", program.display()),
    })
}

/// The words for a refused `PTRACE_TRACEME`.
fn not_permitted(e: &io::Error) -> String {
    let yama = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").ok();
    let cause = match yama.as_deref().map(str::trim) {
        Some("3") => "kernel.yama.ptrace_scope is 3, which forbids all ptrace".to_string(),
        _ => "ptrace is not permitted here (a container without CAP_SYS_PTRACE, a seccomp policy \
              that denies ptrace, or vmshim itself already traced)"
            .to_string(),
    };
    format!("the syscall recorder cannot trace its target: ptrace(PTRACE_TRACEME) failed ({e}): {cause}")
}

/// A call stopped at its entry, waiting for its syscall-exit stop.
struct Pending {
    nr: i64,
    args: [u64; 6],
    stack: Vec<u64>,
    time_ns: u64,
    /// CLOCK_MONOTONIC when the entry stop was taken, for the recorder's cost.
    began: u64,
    /// For clone/clone3: the new task once its event stop told it.
    child: Option<i32>,
    /// clone3's struct clone_args: (flags, stack, stack_size).
    clone3: Option<(u64, u64, u64)>,
    /// A munmap already written, before its exit stop came ([`unmapped_first`]).
    written: bool,
}

#[derive(Default)]
struct Thread {
    tgid: i32,
    pending: Option<Pending>,
    /// Resume with PTRACE_SYSCALL (a pending call waits for its exit stop).
    to_exit: bool,
}

/// One process (thread group) and its current image's trace.
struct Proc {
    out: Option<out::TraceOut>,
    exec: Vec<(u64, u64)>,
    modules: Vec<image::Module>,
    known_paths: HashSet<String>,
    /// The program break as last seen.
    brk: u64,
    final_smaps: Option<Vec<u8>>,
    names: Vec<(u32, String)>,
    final_at: u64,
    /// Fork origin, until the child's first stop writes its start record.
    fork: Option<(u32, u64, Vec<u64>)>,
    /// glibc's arena heaps in the making ([`heaps`]).
    heaps: heaps::Heaps,
}

struct Tracer<'a> {
    top: libc::pid_t,
    req: &'a Request<'a>,
    threads: HashMap<i32, Thread>,
    procs: HashMap<i32, Proc>,
    /// New tasks announced by their parent's event stop whose first stop has not come:
    /// new tid -> (creator tid, is a thread).
    announced: HashMap<i32, (i32, bool)>,
    /// New tasks that stopped before their parent's event said who they are.
    early: HashSet<i32>,
    exits: Vec<crate::launch::watch::Capture>,
    top_status: Option<i32>,
    /// Why the recorder ended the run (it killed the tree), if it did.
    refused: Option<String>,
    page_size: u32,
    /// The modules' unwind tables, read once for the whole recording.
    unwinder: unwind::Unwinder,
}

impl<'a> Tracer<'a> {
    fn new(top: libc::pid_t, req: &'a Request<'a>) -> Tracer<'a> {
        let mut threads = HashMap::new();
        threads.insert(top, Thread { tgid: top, ..Thread::default() });
        // SAFETY: sysconf only reads a configuration value.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u32;
        Tracer {
            top,
            req,
            threads,
            procs: HashMap::new(),
            announced: HashMap::new(),
            early: HashSet::new(),
            exits: Vec::new(),
            top_status: None,
            refused: None,
            page_size,
            unwinder: unwind::Unwinder::default(),
        }
    }

    /// Serves every stop until no tracee is left; the top process's wait status.
    fn run(&mut self, signals: &BlockedSignals) -> Result<i32, LaunchError> {
        loop {
            loop {
                let mut status = 0;
                // SAFETY: status is a live int; -1 waits for any of our children and tracees.
                let tid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL | libc::WNOHANG) };
                if tid == 0 {
                    break;
                }
                if tid == -1 {
                    let err = io::Error::last_os_error();
                    match err.raw_os_error() {
                        Some(libc::EINTR) => continue,
                        Some(libc::ECHILD) => {
                            return self.top_status.ok_or_else(|| {
                                LaunchError::Io(format!("process {} vanished unseen", self.top))
                            });
                        }
                        _ => return Err(LaunchError::Io(format!("waiting for the target: {err}"))),
                    }
                }
                self.status(tid, status);
            }
            if self.threads.is_empty() && self.top_status.is_some() {
                return Ok(self.top_status.unwrap_or(0));
            }
            if let Some(info) = signals.wait(Duration::from_millis(100)) {
                self.signalled(&info);
            }
        }
    }

    /// A signal sent to vmshim while the target runs: passed on to the top process, as
    /// [`crate::launch`] does (not the terminal's, which reached the group already).
    fn signalled(&self, info: &libc::siginfo_t) {
        let sig = info.si_signo;
        if sig == libc::SIGCHLD || sig == libc::SIGCONT {
            return;
        }
        // SAFETY: getpgid takes a pid and returns a number.
        let same_group = unsafe { libc::getpgid(self.top) == libc::getpgid(0) };
        if info.si_code == libc::SI_KERNEL && same_group {
            return;
        }
        if self.top_status.is_none() {
            // SAFETY: kill takes no pointers; top is our child, not yet reaped.
            unsafe { libc::kill(self.top, sig) };
        }
    }

    fn status(&mut self, tid: i32, status: i32) {
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            self.gone(tid, status);
            return;
        }
        if !libc::WIFSTOPPED(status) {
            return;
        }
        let sig = libc::WSTOPSIG(status);
        let event = (status >> 16) & 0xff;
        if !self.threads.contains_key(&tid) {
            self.new_task(tid, sig);
            return;
        }
        let resume = match event {
            0 if sig == libc::SIGTRAP | 0x80 => {
                if self.syscall_exit(tid) {
                    return;
                }
                0
            }
            libc::PTRACE_EVENT_SECCOMP => {
                if remote::event_msg(tid) == Some(filter::TRACE_DATA as u64) {
                    self.syscall_entry(tid);
                } else {
                    no_tracer(tid);
                }
                0
            }
            libc::PTRACE_EVENT_CLONE | libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK => {
                if let Some(child) = remote::event_msg(tid) {
                    self.announce(tid, child as i32, event == libc::PTRACE_EVENT_CLONE);
                }
                0
            }
            libc::PTRACE_EVENT_EXEC => {
                self.exec(tid);
                0
            }
            libc::PTRACE_EVENT_EXIT => {
                self.exiting(tid);
                0
            }
            0 => self.signal_stop(tid, sig),
            _ => 0,
        };
        self.resume(tid, resume);
    }

    fn resume(&mut self, tid: i32, sig: i32) {
        let to_exit = self.threads.get(&tid).is_some_and(|t| t.to_exit);
        let req = if to_exit { libc::PTRACE_SYSCALL } else { libc::PTRACE_CONT };
        // ESRCH: killed meanwhile (SIGKILL does not wait for us); waitpid will say so.
        let _ = remote::request(req, tid, sig as usize);
    }

    /// A signal-delivery stop or a group-stop: deliver the signal as sent; a group-stop of the
    /// top process stops vmshim the same way, for the shell to see.
    fn signal_stop(&mut self, tid: i32, sig: i32) -> i32 {
        // Only a stopping signal can be a group-stop (this tracer attaches with TRACEME, not
        // SEIZE): any other is a signal-delivery stop, passed on without asking the kernel which
        // (a Go program's preemption signal, SIGURG, comes dozens of times a second under load).
        if ![libc::SIGSTOP, libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU].contains(&sig) {
            return sig;
        }
        let mut info = std::mem::MaybeUninit::<libc::siginfo_t>::uninit();
        // SAFETY: GETSIGINFO writes one siginfo_t to `data`, which points at one.
        let r = unsafe { libc::ptrace(libc::PTRACE_GETSIGINFO, tid, 0usize, info.as_mut_ptr()) };
        if r == -1 {
            // A group-stop (EINVAL): the stop already took effect.
            if tid == self.top {
                crate::launch::stop_self(sig);
            }
            return 0;
        }
        sig
    }

    /// The first stop of a task the recorder did not know: a new thread or fork child (it starts
    /// with SIGSTOP, which is the kernel's, not the program's, and is suppressed).
    fn new_task(&mut self, tid: i32, sig: i32) {
        if self.refused.is_some() {
            // Born while the tree was being ended: it goes too.
            // SAFETY: kill takes no pointers; tid is a new tracee of this recorder.
            unsafe { libc::kill(tid, libc::SIGKILL) };
        }
        let announced = self.announced.remove(&tid);
        // A thread its creator's clone flags announced belongs to the creator's group; any other
        // task (a fork child, or one that stopped before its announcement) says in /proc.
        let tgid = match announced {
            Some((creator, true)) => self.threads.get(&creator).map(|t| t.tgid),
            _ => None,
        };
        let tgid = tgid.or_else(|| tgid_of(tid)).unwrap_or(tid);
        if announced.is_none() {
            self.early.insert(tid);
        }
        self.threads.insert(tid, Thread { tgid, ..Thread::default() });
        if tgid == tid && !self.procs.contains_key(&tgid) {
            // A fork child: its parent's image, its own trace.
            let creator = announced.map(|a| a.0);
            let parent = creator.and_then(|c| self.threads.get(&c)).map(|t| t.tgid);
            let fork = creator.map(|c| {
                let stack = self.threads.get(&c).and_then(|t| t.pending.as_ref()).map(|p| p.stack.clone());
                (c as u32, monotonic_ns(), stack.unwrap_or_default())
            });
            let (modules, brk) = parent
                .and_then(|p| self.procs.get(&p))
                .map(|p| (p.modules.clone(), p.brk))
                .unwrap_or_default();
            let mut p = Proc::new();
            p.modules = modules;
            p.brk = brk;
            p.fork = fork;
            self.procs.insert(tgid, p);
            self.begin_image(tgid, parent.map(|p| p as u32));
        }
        let inject = if sig == libc::SIGSTOP { 0 } else { sig };
        self.resume(tid, inject);
    }

    /// The parent's event stop for a new task.
    fn announce(&mut self, parent: i32, child: i32, clone_event: bool) {
        let flags = self.threads.get(&parent).and_then(|t| t.pending.as_ref()).map(|p| match p.clone3 {
            Some((flags, _, _)) => flags,
            None => p.args[0],
        });
        let is_thread = clone_event && flags.is_some_and(|f| f & libc::CLONE_THREAD as u64 != 0);
        if let Some(p) = self.threads.get_mut(&parent).and_then(|t| t.pending.as_mut()) {
            p.child = Some(child);
        }
        if self.early.remove(&child) {
            // Already running: a fork child that stopped first has its start record with no
            // fork origin; say nothing more.
            return;
        }
        self.announced.insert(child, (parent, is_thread));
    }

    fn syscall_entry(&mut self, tid: i32) {
        let began = monotonic_ns();
        let Ok(regs) = remote::regs(tid) else { return };
        let nr = regs.orig_rax as i64;
        let Some(tgid) = self.threads.get(&tid).map(|t| t.tgid) else { return };
        // The process is stopped in one of its threads: what glibc wrote after its last heap.
        self.name_heaps(tgid, tid, false);
        if nr == libc::SYS_ptrace {
            self.ptrace_call(tgid, &regs);
            return;
        }
        if nr == libc::SYS_prctl || nr == libc::SYS_seccomp {
            self.seccomp_call(tgid, nr, &regs);
            return;
        }
        if !filter::RECORDED.contains(&nr) {
            return;
        }
        let args = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9];
        let (exec, modules) =
            self.procs.get(&tgid).map(|p| (p.exec.as_slice(), p.modules.as_slice())).unwrap_or_default();
        let stack = unwind::frames(tid, &regs, exec, modules, &mut self.unwinder);
        let clone3 = (nr == libc::SYS_clone3).then(|| {
            let mut a = [0u8; 56];
            let ok = remote::read(tid, args[0], &mut a);
            let w = |i: usize| u64::from_le_bytes(a[i * 8..i * 8 + 8].try_into().unwrap_or_default());
            if ok { (w(0), w(5), w(6)) } else { (0, 0, 0) }
        });
        let t = self.threads.get_mut(&tid).expect("known thread");
        t.pending =
            Some(Pending { nr, args, stack, time_ns: began, began, child: None, clone3, written: false });
        t.to_exit = true;
    }

    /// A process of the tree calls ptrace. Asking for a tracer of its own (PTRACE_TRACEME) or
    /// to trace a process of the tree cannot work: each already has its tracer, this recorder,
    /// and a process has one (the call fails with EPERM, and a debugger in the target may then
    /// wait forever for a stop it never gets). Rather than let the target hang or run otherwise
    /// than bare, the recorder ends the run: it kills the tree and says why.
    fn ptrace_call(&mut self, tgid: i32, regs: &remote::Regs) {
        let (request, pid) = (regs.rdi as i64, regs.rsi as i32);
        let why = match request {
            r if r == libc::PTRACE_TRACEME as i64 => {
                format!("process {tgid} asked to be traced by its parent (ptrace(PTRACE_TRACEME))")
            }
            r if (r == libc::PTRACE_ATTACH as i64 || r == libc::PTRACE_SEIZE as i64)
                && self.threads.contains_key(&pid) =>
            {
                format!(
                    "process {tgid} asked to trace process {pid} of the tree (ptrace(PTRACE_ATTACH/SEIZE))"
                )
            }
            _ => return,
        };
        self.refused = Some(format!(
            "{why}, but the syscall recorder traces every process of the tree and a process has \
             one tracer: the request would fail (EPERM) and a debugger inside the target could \
             wait forever, so vmshim ended the run (the tree was killed). A dynamic target runs \
             under the shim alone without --syscalls; a static one cannot be recorded while it \
             uses ptrace itself"
        ));
        self.kill_tree();
    }

    /// A process of the tree asks for seccomp (the filter stops `prctl(PR_SET_SECCOMP)` and
    /// `seccomp(SECCOMP_SET_MODE_STRICT)` only). A filter of its own works over the recorder's
    /// and runs on; strict mode cannot be entered over any filter (the kernel fails it with
    /// EINVAL, where bare it succeeds), so the recorder ends the run and says why rather than
    /// let the target run otherwise than bare.
    fn seccomp_call(&mut self, tgid: i32, nr: i64, regs: &remote::Regs) {
        let strict = if nr == libc::SYS_prctl {
            regs.rdi as u32 == filter::PR_SET_SECCOMP && regs.rsi as u32 == libc::SECCOMP_MODE_STRICT
        } else {
            regs.rdi as u32 == filter::SECCOMP_SET_MODE_STRICT
        };
        if !strict {
            return;
        }
        self.refused = Some(format!(
            "process {tgid} asked for seccomp strict mode, which no process can enter over the syscall \
             recorder's seccomp filter (the kernel fails it with EINVAL; bare it would succeed), so \
             vmshim ended the run (the tree was killed). A dynamic target runs under the shim with \
             --no-watch (no filter at all); a static one cannot be recorded in strict mode"
        ));
        self.kill_tree();
    }

    /// SIGKILL to every process of the tree (the refusals above).
    fn kill_tree(&self) {
        let groups: HashSet<i32> = self.threads.values().map(|t| t.tgid).collect();
        for g in groups {
            // SAFETY: kill takes no pointers; g is a process this recorder traces.
            unsafe { libc::kill(g, libc::SIGKILL) };
        }
    }

    /// A call's syscall-exit stop: its result, then its record. True when the thread was resumed
    /// here already: as soon as its result is read, so that it runs on while the record is
    /// written, unless new code must first be seen in its map.
    fn syscall_exit(&mut self, tid: i32) -> bool {
        let Some(t) = self.threads.get_mut(&tid) else { return false };
        t.to_exit = false;
        let Some(p) = t.pending.take() else { return false };
        let tgid = t.tgid;
        let Ok(regs) = remote::regs(tid) else { return false };
        let raw = regs.rax as i64;
        let (result, errno) =
            if (-4095..0).contains(&raw) { (u64::MAX, (-raw) as i32) } else { (raw as u64, 0) };
        let a = p.args;
        let kind = match p.nr {
            n if n == libc::SYS_mmap => Some(CallKind::Mmap),
            n if n == libc::SYS_munmap => Some(CallKind::Munmap),
            n if n == libc::SYS_mremap => Some(CallKind::Mremap),
            n if n == libc::SYS_mprotect => Some(CallKind::Mprotect),
            _ => None,
        };
        // New code to accept return addresses in (ranges that went stay listed: harmless, as
        // nothing can return into them).
        let exec_change = (p.nr == libc::SYS_mmap || p.nr == libc::SYS_mprotect)
            && a[2] & libc::PROT_EXEC as u64 != 0
            && errno == 0;
        let resumed = !exec_change;
        if resumed {
            self.resume(tid, 0);
        }
        let pid = tid;
        let Some(proc_) = self.procs.get_mut(&tgid) else { return resumed };
        if errno == 0 && matches!(kind, Some(CallKind::Mmap | CallKind::Mremap)) {
            let len = if kind == Some(CallKind::Mremap) { a[2] } else { a[1] };
            let range = (result, result.saturating_add(len));
            unmapped_first(&mut self.threads, proc_, (tgid, tid), range, self.page_size as u64);
        }
        if let Some(kind) = kind.filter(|_| !p.written) {
            let call = out::CallRecord {
                call: kind,
                flags: 0,
                tid: tid as u32,
                time_ns: p.time_ns,
                args: a,
                result,
                errno,
                stack: out::CallStack::Inline(&p.stack),
            };
            if let Some(o) = proc_.out.as_mut() {
                o.call(&call);
            }
            if errno == 0 {
                let heaps = &mut proc_.heaps;
                match kind {
                    CallKind::Mmap => heaps.mmap(tid as u32, &a, result, p.time_ns, &p.stack),
                    CallKind::Munmap => heaps.munmap(tid as u32, a[0], a[1]),
                    CallKind::Mprotect => heaps.mprotect(tid as u32, a[0], a[1], a[2]),
                    // A moved range is gone from where it was.
                    _ => heaps.munmap(tid as u32, a[0], a[1]),
                }
            }
        } else if p.nr == libc::SYS_brk {
            let new = result;
            let old = proc_.brk;
            // The first look at the break, then each growth (shrinking has no record kind: the
            // kernel's map at exit shows what is left).
            let args = if old == 0 {
                Some([0, new, 0, 0, 0, 0])
            } else {
                (new > old).then_some([old, new, 0, 0, 0, 0])
            };
            if let (Some(args), Some(o)) = (args, proc_.out.as_mut()) {
                let call = out::CallRecord {
                    call: CallKind::BrkGrow,
                    flags: 0,
                    tid: tid as u32,
                    time_ns: p.time_ns,
                    args,
                    result: new,
                    errno: 0,
                    stack: out::CallStack::Inline(&p.stack),
                };
                o.call(&call);
            }
            if errno == 0 {
                proc_.brk = new;
            }
        } else if errno == 0 && result != 0 {
            // clone or clone3 in the parent: a thread's start, from the call's arguments.
            let child = result as i32;
            let (flags, sp, size) = match p.clone3 {
                Some((flags, stack, size)) => (flags, if stack != 0 { stack + size } else { 0 }, size),
                None => (a[0], a[1], 0),
            };
            if flags & libc::CLONE_THREAD as u64 != 0 {
                let sp = if sp != 0 { sp } else { remote::regs(child).map_or(0, |r| r.rsp) };
                let ts = out::ThreadStartRecord {
                    tid: child as u32,
                    creator_tid: tid as u32,
                    time_ns: p.time_ns,
                    sp,
                    stack_size: size,
                    guard_size: u64::MAX,
                    start_routine: 0,
                    creator_stack: &p.stack,
                };
                if let Some(o) = proc_.out.as_mut() {
                    o.thread_start(&ts);
                }
            }
        }
        if exec_change {
            let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
            proc_.exec = image::executable_ranges(&maps);
            if p.nr == libc::SYS_mmap && a[3] & libc::MAP_ANONYMOUS as u64 == 0 {
                for m in image::new_modules(&maps, &mut proc_.known_paths) {
                    if let Some(o) = proc_.out.as_mut() {
                        o.module(&m);
                    }
                    proc_.modules.push(m);
                }
            }
        }
        if let Some(o) = proc_.out.as_mut() {
            o.account(monotonic_ns().saturating_sub(p.began));
        }
        resumed
    }

    /// A new program image in process `tid`'s group: a trace of its own.
    fn exec(&mut self, tid: i32) {
        let tgid = self.threads.get(&tid).map_or(tid, |t| t.tgid);
        // The exec'ing thread becomes the leader; the group's other threads are gone.
        self.threads.retain(|&t, th| th.tgid != tgid || t == tid || t == tgid);
        if tid != tgid {
            self.threads.remove(&tid);
        }
        self.threads.insert(tgid, Thread { tgid, ..Thread::default() });
        if tgid == self.top {
            // The exec succeeded: the pipe is closed, with nothing in it.
            let _ = child_failure(self.req.program);
        }
        let p = Proc::new();
        if let Some(mut old) = self.procs.remove(&tgid) {
            // The old image's memory is gone: its unnamed heaps are named by their own address.
            let heaps = old.heaps.take_named(|_| None, true);
            if let Some(o) = old.out.as_mut() {
                write_heaps(o, heaps);
            }
        }
        self.procs.insert(tgid, p);
        self.begin_image(tgid, None);
    }

    /// Creates the current image's trace of process `tgid` and writes what it starts with: the
    /// start record, the recorder's word, the map and the modules.
    fn begin_image(&mut self, tgid: i32, parent: Option<u32>) {
        let maps = std::fs::read_to_string(format!("/proc/{tgid}/maps")).unwrap_or_default();
        let exe = std::fs::read_link(format!("/proc/{tgid}/exe"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{tgid}/cmdline")).unwrap_or_default();
        let argv: Vec<Vec<u8>> = cmdline.split(|&b| b == 0).map(<[u8]>::to_vec).collect();
        let argv = &argv[..argv.len().saturating_sub(1)];
        let ppid = parent.unwrap_or_else(|| ppid_of(tgid).unwrap_or(0));
        let page_size = self.page_size;
        let run_id = self.req.run_id;
        let Some(p) = self.procs.get_mut(&tgid) else { return };
        p.exec = image::executable_ranges(&maps);
        let mut out = match out::TraceOut::create(self.req.template, tgid as u32) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("vmshim: cannot create the trace of process {tgid} ({e}); it runs on, unrecorded");
                return;
            }
        };
        let path = out.path.to_string_lossy().into_owned();
        let fork = p.fork.take();
        out.start(&out::StartInfo {
            pid: tgid as u32,
            ppid,
            page_size,
            mono_ns: monotonic_ns(),
            real_ns: realtime_ns(),
            exe: &exe,
            trace_path: &path,
            argv,
            run_id,
            fork: fork.as_ref().map(|(t, ns, s)| (*t, *ns, s.as_slice())),
        });
        out.config(&format!("recorder={NAME}\n"));
        out.initial_maps(maps.as_bytes());
        if fork.is_some() && !p.modules.is_empty() {
            for m in &p.modules {
                p.known_paths.insert(m.path.clone());
                out.module(m);
            }
        } else {
            p.known_paths.clear();
            p.modules = image::new_modules(&maps, &mut p.known_paths);
            for m in &p.modules {
                out.module(m);
            }
        }
        p.out = Some(out);
    }

    /// Writes an arena record for each heap of process `tgid` whose arena glibc has named (read
    /// through its stopped thread `tid`); `last`: every heap, named or not.
    fn name_heaps(&mut self, tgid: i32, tid: i32, last: bool) {
        let Some(p) = self.procs.get_mut(&tgid) else { return };
        if !p.heaps.waiting() {
            return;
        }
        let named = p.heaps.take_named(|heap| remote::word(tid, heap), last);
        if let Some(o) = p.out.as_mut() {
            write_heaps(o, named);
        }
    }

    /// A thread's exit stop: the group leader's is where the address space is still whole.
    fn exiting(&mut self, tid: i32) {
        let Some(tgid) = self.threads.get(&tid).map(|t| t.tgid) else { return };
        if tid != tgid {
            return;
        }
        self.name_heaps(tgid, tid, true);
        if let Some(p) = self.procs.get_mut(&tgid) {
            p.final_smaps = crate::launch::read_smaps(tgid);
            p.names = crate::launch::thread_names(tgid);
            p.final_at = monotonic_ns();
        }
    }

    /// A task is gone (its wait status).
    fn gone(&mut self, tid: i32, status: i32) {
        let tgid = self.threads.remove(&tid).map_or(tid, |t| t.tgid);
        if tid == self.top {
            self.top_status = Some(status);
        }
        if tid == tgid
            && tid != self.top
            && let Some(p) = self.procs.remove(&tgid)
        {
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            };
            if let Some(smaps) = p.final_smaps {
                self.exits.push(crate::launch::watch::Capture {
                    pid: tgid as u32,
                    code,
                    mono_ns: p.final_at,
                    smaps,
                    statm: Vec::new(),
                    thread_names: p.names,
                    waiting: None,
                });
            }
        }
    }
}

impl Proc {
    fn new() -> Proc {
        Proc {
            out: None,
            exec: Vec::new(),
            modules: Vec::new(),
            known_paths: HashSet::new(),
            brk: 0,
            final_smaps: None,
            names: Vec::new(),
            final_at: 0,
            fork: None,
            heaps: heaps::Heaps::default(),
        }
    }
}

/// The munmaps of other threads of process `tgid` that are still waiting for their exit stop and
/// overlap `[lo, hi)`, which thread `tid`'s call just got: in the kernel they came first (the
/// range was free for it), though their stops reached the recorder later. Each is written now,
/// as done, so that a replay of the trace unmaps before it maps; its exit stop writes nothing.
fn unmapped_first(
    threads: &mut HashMap<i32, Thread>,
    p: &mut Proc,
    (tgid, tid): (i32, i32),
    (lo, hi): (u64, u64),
    page: u64,
) {
    for (&other, th) in threads.iter_mut().filter(|(o, th)| **o != tid && th.tgid == tgid) {
        let Some(q) = th.pending.as_mut() else { continue };
        // The kernel unmaps whole pages.
        let page = page.max(1);
        let end = q.args[0].saturating_add(q.args[1]).div_ceil(page).saturating_mul(page);
        if q.nr != libc::SYS_munmap || q.written || end <= lo || hi <= q.args[0] {
            continue;
        }
        q.written = true;
        if let Some(o) = p.out.as_mut() {
            o.call(&out::CallRecord {
                call: CallKind::Munmap,
                flags: 0,
                tid: other as u32,
                time_ns: q.time_ns,
                args: q.args,
                result: 0,
                errno: 0,
                stack: out::CallStack::Inline(&q.stack),
            });
        }
        p.heaps.munmap(other as u32, q.args[0], q.args[1]);
    }
}

/// A stop that a filter of the target's own asked for (`SECCOMP_RET_TRACE` with other data than
/// [`filter::TRACE_DATA`]): without vmshim no tracer would be there, and the kernel would fail
/// the call with ENOSYS without running it (seccomp(2)); so does the recorder, by skipping it
/// (syscall number -1) with that result.
fn no_tracer(tid: i32) {
    if let Ok(mut regs) = remote::regs(tid) {
        regs.orig_rax = u64::MAX;
        regs.rax = -(libc::ENOSYS as i64) as u64;
        let _ = remote::set_regs(tid, &regs);
    }
}

/// glibc's heaps as the shim records them: an ArenaAttach of the thread that made the heap, with
/// its stack at the reservation, `via` none of the malloc functions (the recorder cannot tell which).
fn write_heaps(o: &mut out::TraceOut, heaps: Vec<(heaps::Heap, u64)>) {
    for (h, arena) in heaps {
        let via = vmshim_trace::MALLOC_FUNCTIONS.len() as u64;
        o.call(&out::CallRecord {
            call: CallKind::ArenaAttach,
            flags: 0,
            tid: h.tid,
            time_ns: h.time_ns,
            args: [h.heap, h.size, arena, via, 0, 0],
            result: 0,
            errno: 0,
            stack: out::CallStack::Inline(&h.stack),
        });
    }
}

/// A number among the first lines of `/proc/TID/status` (Tgid, PPid: within its first 300 bytes,
/// the name being at most 64 escaped), with one read: `read_to_string` of a /proc file, whose
/// size says 0, grows its buffer from 32 bytes, 9 reads for the whole file.
fn status_field(tid: i32, field: &str) -> Option<i32> {
    use std::io::Read;
    let mut buf = [0u8; 1024];
    let n = std::fs::File::open(format!("/proc/{tid}/status")).ok()?.read(&mut buf).ok()?;
    // Lossy: a program may name a thread in any bytes, and the cut may split a character.
    let s = String::from_utf8_lossy(&buf[..n]);
    s.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.trim().parse().ok())
}

fn tgid_of(tid: i32) -> Option<i32> {
    status_field(tid, "Tgid:")
}

fn ppid_of(pid: i32) -> Option<u32> {
    status_field(pid, "PPid:").map(|p| p as u32)
}

fn monotonic_ns() -> u64 {
    crate::launch::watch::monotonic_ns()
}

fn realtime_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// The file CMD names, found as `execvp` finds it (a name without '/' in `PATH`), for a target
/// [`crate::launch::resolve_target`] found static; the kernel's exec gives any other error.
pub fn program_path(cmd: &std::ffi::OsStr) -> std::path::PathBuf {
    if cmd.as_bytes().contains(&b'/') {
        return cmd.into();
    }
    let path_var = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/bin:/usr/bin"));
    std::env::split_paths(&path_var)
        .map(|d| if d.as_os_str().is_empty() { std::path::PathBuf::from(".") } else { d })
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
        .unwrap_or_else(|| cmd.into())
}

/// The recorder a trace names in its `Config` record (`recorder=...`), when it is this one.
pub fn name_of(rec: &crate::load::read::Recording) -> Option<&str> {
    rec.config.iter().find(|(k, _)| k == "recorder").map(|(_, v)| v.as_str())
}

/// Whether the syscall recorder wrote the trace.
pub fn recorded(rec: &crate::load::read::Recording) -> bool {
    name_of(rec).is_some()
}
