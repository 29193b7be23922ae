//! The bounded stop: every thread of a running process is seized and interrupted with ptrace,
//! its registers are read and its current stack walked, and every thread is detached again, so
//! that the process goes on exactly as it was.
//!
//! This module needs `unsafe` for `ptrace`, `waitpid` and `process_vm_readv`; every block says
//! why it holds. It never writes into the target: no PTRACE_POKE*, no register set, no
//! process_vm_writev. What it must never do is change what the program sees:
//! - A thread blocked in a system call that the kernel does not restart after a stop
//!   ([`EINTR_AFTER_STOP`]: `epoll_wait` returns EINTR after any ptrace stop, signal(7)) is not
//!   interrupted: its stack pointer and program counter come from `/proc/PID/task/TID/syscall`,
//!   which the kernel reads without waking it.
//! - A signal that arrives while a thread is stopped is reported to the tracer
//!   (signal-delivery-stop) and handed back at PTRACE_DETACH, so none is lost.
//! - Blocking calls that the kernel restarts (read, nanosleep, futex, poll) resume transparently:
//!   the ptrace stop returns ERESTARTSYS / ERESTART_RESTARTBLOCK, which the kernel turns into a
//!   restart when no handler ran.
//!
//! Reading memory (`process_vm_readv`) does not need the stop; it needs the same permission.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use crate::load::maps::Region;
use std::time::{Duration, Instant};

/// System calls that fail with EINTR instead of restarting when their thread is stopped and
/// resumed (signal(7), "Interruption of system calls and library functions by stop signals"):
/// epoll_wait, epoll_pwait, epoll_pwait2, semop, semtimedop, rt_sigtimedwait. Numbers for x86_64.
const EINTR_AFTER_STOP: [(i64, &str); 6] = [
    (232, "epoll_wait"),
    (281, "epoll_pwait"),
    (441, "epoll_pwait2"),
    (65, "semop"),
    (220, "semtimedop"),
    (128, "rt_sigtimedwait"),
];

/// Names for the system calls a blocked thread is most often in (x86_64 numbers).
const SYSCALL_NAMES: [(i64, &str); 30] = [
    (0, "read"),
    (1, "write"),
    (7, "poll"),
    (17, "pread64"),
    (23, "select"),
    (34, "pause"),
    (35, "nanosleep"),
    (43, "accept"),
    (44, "sendto"),
    (45, "recvfrom"),
    (46, "sendmsg"),
    (47, "recvmsg"),
    (61, "wait4"),
    (65, "semop"),
    (72, "fcntl"),
    (128, "rt_sigtimedwait"),
    (130, "rt_sigsuspend"),
    (202, "futex"),
    (220, "semtimedop"),
    (230, "clock_nanosleep"),
    (232, "epoll_wait"),
    (247, "waitid"),
    (270, "pselect6"),
    (271, "ppoll"),
    (281, "epoll_pwait"),
    (288, "accept4"),
    (299, "recvmmsg"),
    (42, "connect"),
    (24, "sched_yield"),
    (441, "epoll_pwait2"),
];

/// The name of system call `nr`, or `syscall` when it is not in the short table.
pub fn syscall_name(nr: i64) -> &'static str {
    SYSCALL_NAMES.iter().find(|(n, _)| *n == nr).map_or("syscall", |(_, s)| s)
}

/// What was read of one thread.
#[derive(Clone, Debug)]
pub struct ThreadState {
    pub tid: u32,
    pub sp: u64,
    pub pc: u64,
    /// The thread's TLS base (x86_64 `fs`), when its registers were read.
    pub fs_base: Option<u64>,
    /// The system call it is blocked in, if any.
    pub syscall: Option<i64>,
    /// Absolute addresses, innermost first: the program counter, then return addresses.
    pub stack: Vec<u64>,
    /// Read through `/proc/PID/task/TID/syscall` without stopping it (see [`EINTR_AFTER_STOP`]).
    pub not_stopped: bool,
}

/// The outcome of a stop.
pub struct Stopped {
    pub threads: Vec<ThreadState>,
    /// From the first PTRACE_INTERRUPT to the last PTRACE_DETACH.
    pub stop: Duration,
}

/// Why the stop could not be made.
#[derive(Debug)]
pub enum StopError {
    /// The process (or all its threads) went away.
    Exited,
    /// ptrace was refused (EPERM).
    NotPermitted,
    /// Another tracer holds a thread.
    AlreadyTraced(u32),
    Other(String),
}

/// The target's memory, read with process_vm_readv.
#[derive(Clone, Copy)]
pub struct Memory {
    pub pid: u32,
}

impl Memory {
    /// Fills `buf` from `addr`; false when any byte could not be read.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        if buf.is_empty() {
            return true;
        }
        let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: buf.len() };
        // SAFETY: `local` describes `buf`, which is valid for writes of its length for the
        // whole call; `remote` is only an address in the other process, which the kernel checks
        // and never dereferences in ours.
        let n = unsafe { libc::process_vm_readv(self.pid as libc::pid_t, &local, 1, &remote, 1, 0) };
        n == buf.len() as isize
    }

    /// Reads the two words at each of `addrs` (at most 1024, IOV_MAX) in one call: `None` for
    /// an address whose 16 bytes could not all be read (the kernel stops at the first failure,
    /// so those after it are `None` too).
    pub fn pairs(&self, addrs: &[u64]) -> Vec<Option<(u64, u64)>> {
        let ranges: Vec<(u64, usize)> = addrs.iter().take(1024).map(|&a| (a, 16)).collect();
        let mut failed = false;
        self.gather(&ranges)
            .into_iter()
            .map(|b| {
                failed |= b.is_none();
                let b = b.filter(|_| !failed)?;
                let w = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
                Some((w(0), w(8)))
            })
            .collect()
    }

    /// Reads each of `ranges` (address, length), up to 1024 (IOV_MAX) per system call: `None`
    /// for a range whose bytes could not all be read. The kernel stops a vectored read at the
    /// first range that fails, so the call is made again from the one after it.
    pub fn gather(&self, ranges: &[(u64, usize)]) -> Vec<Option<Vec<u8>>> {
        let mut out: Vec<Option<Vec<u8>>> = Vec::with_capacity(ranges.len());
        let mut at = 0;
        while at < ranges.len() {
            let batch = &ranges[at..ranges.len().min(at + 1024)];
            let mut bufs: Vec<Vec<u8>> = batch.iter().map(|&(_, len)| vec![0u8; len]).collect();
            let local: Vec<libc::iovec> = bufs
                .iter_mut()
                .map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() })
                .collect();
            let remote: Vec<libc::iovec> = batch
                .iter()
                .map(|&(a, len)| libc::iovec { iov_base: a as *mut libc::c_void, iov_len: len })
                .collect();
            // SAFETY: each `local` iovec describes one buffer of `bufs`, valid for writes of its
            // length and alive for the whole call; the `remote` ones are only addresses in the
            // other process, which the kernel checks and never dereferences in ours. Both counts
            // are the batch's length, at most 1024 (IOV_MAX).
            let n = unsafe {
                libc::process_vm_readv(
                    self.pid as libc::pid_t,
                    local.as_ptr(),
                    local.len() as libc::c_ulong,
                    remote.as_ptr(),
                    remote.len() as libc::c_ulong,
                    0,
                )
            };
            // How many whole ranges the bytes read cover.
            let mut left = if n < 0 { 0 } else { n as usize };
            let mut whole = 0;
            while whole < batch.len() && left >= batch[whole].1 {
                left -= batch[whole].1;
                whole += 1;
            }
            out.extend(bufs.into_iter().take(whole).map(Some));
            if whole < batch.len() {
                // The range at `whole` failed (or was cut short): it is unreadable.
                out.push(None);
            }
            at += (whole + 1).min(batch.len());
        }
        out
    }

    /// [`Memory::gather`] for many small ranges that lie close together (a runtime's objects
    /// in its heap spans): ranges less than a page apart are read as one, up to 1 MiB, since the
    /// kernel's cost is per range and per page, not per byte. The same answer as `gather`, but
    /// that a range in a merged read that fails is `None` with its neighbours.
    pub fn gather_near(&self, ranges: &[(u64, usize)]) -> Vec<Option<Vec<u8>>> {
        const GAP: u64 = 4096;
        const MERGED: u64 = 1 << 20;
        let mut order: Vec<usize> = (0..ranges.len()).collect();
        order.sort_unstable_by_key(|&i| ranges[i].0);
        // (start, end, the ranges it holds)
        let mut merged: Vec<(u64, u64, Vec<usize>)> = vec![];
        for i in order {
            let (a, len) = ranges[i];
            let end = a.saturating_add(len as u64);
            match merged.last_mut() {
                Some(m) if a <= m.1.saturating_add(GAP) && end.max(m.1) - m.0 <= MERGED => {
                    m.1 = m.1.max(end);
                    m.2.push(i);
                }
                _ => merged.push((a, end, vec![i])),
            }
        }
        let read = self.gather(&merged.iter().map(|m| (m.0, (m.1 - m.0) as usize)).collect::<Vec<_>>());
        let mut out: Vec<Option<Vec<u8>>> = vec![None; ranges.len()];
        for (m, bytes) in merged.iter().zip(read) {
            let Some(bytes) = bytes else { continue };
            for &i in &m.2 {
                let o = (ranges[i].0 - m.0) as usize;
                out[i] = bytes.get(o..o + ranges[i].1).map(<[u8]>::to_vec);
            }
        }
        out
    }

    pub fn u64(&self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b).then(|| u64::from_le_bytes(b))
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn ptrace(req: libc::c_uint, tid: u32, data: usize) -> Result<(), i32> {
    // SAFETY: SEIZE, INTERRUPT and DETACH take no address and an integer `data` (options or
    // the signal to deliver); the kernel checks the tid and our right to trace it.
    let r = unsafe { libc::ptrace(req, tid as libc::pid_t, std::ptr::null_mut::<libc::c_void>(), data) };
    if r == -1 { Err(errno()) } else { Ok(()) }
}

fn get_regs(tid: u32) -> Option<libc::user_regs_struct> {
    // SAFETY: user_regs_struct is plain integers, for which all-zero is a valid value.
    let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: PTRACE_GETREGS writes one user_regs_struct to the address given, which points to
    // `regs`, valid and exclusively ours for the call.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGS,
            tid as libc::pid_t,
            std::ptr::null_mut::<libc::c_void>(),
            &mut regs as *mut libc::user_regs_struct,
        )
    };
    (r == 0).then_some(regs)
}

/// `/proc/PID/task/TID/syscall`: (number, sp, pc) of a thread blocked in a system call,
/// `None` when it is running (or the file cannot be read).
fn blocked_in(pid: u32, tid: u32) -> Option<(i64, u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
    let w: Vec<&str> = s.split_whitespace().collect();
    let nr: i64 = w.first()?.parse().ok()?;
    if nr < 0 || w.len() < 9 {
        return None;
    }
    let hex = |t: &str| u64::from_str_radix(t.trim_start_matches("0x"), 16).ok();
    Some((nr, hex(w[7])?, hex(w[8])?))
}

/// The threads of `pid`, by /proc.
pub fn task_ids(pid: u32) -> Option<Vec<u32>> {
    let mut v: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    v.sort_unstable();
    Some(v)
}

/// The state letter of /proc/PID/task/TID/stat.
fn state(pid: u32, tid: u32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    s.rsplit_once(") ")?.1.chars().next()
}

fn zombie(pid: u32, tid: u32) -> bool {
    matches!(state(pid, tid), Some('Z' | 'X'))
}

/// The process is there and not a zombie.
fn alive(pid: u32) -> bool {
    !matches!(state(pid, pid), None | Some('Z' | 'X'))
        || task_ids(pid).is_some_and(|t| t.iter().any(|&t| !zombie(pid, t)))
}

/// `TracerPid:` of /proc/PID/status (0 when not traced).
pub fn tracer_of(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix("TracerPid:")).and_then(|v| v.trim().parse().ok())
}

/// Waits for `tid`'s stop after PTRACE_INTERRUPT: Ok(Some(signal to hand back at detach)), or
/// Ok(None) when the thread ended meanwhile.
fn wait_stop(pid: u32, tid: u32, deadline: Instant) -> Result<Option<i32>, StopError> {
    let mut pending = 0;
    let mut polls = 0u32;
    loop {
        polls = polls.wrapping_add(1);
        let mut status = 0;
        // SAFETY: waitpid writes the status into `status`, a live local.
        let r = unsafe { libc::waitpid(tid as libc::pid_t, &mut status, libc::__WALL | libc::WNOHANG) };
        if r == -1 {
            return Ok(None);
        }
        if r == 0 {
            if Instant::now() > deadline {
                return Err(StopError::Other(format!("thread {tid} did not stop within 5 s")));
            }
            // A thread killed before its stop was collected (SIGKILL to the process) never
            // reports one, and a killed main thread reports its exit only once the other threads
            // are reaped, which waits on this loop: one that is a zombie now has ended. Seen as
            // a 5 s wait and "did not stop" when the test killed the process in that window.
            if polls.is_multiple_of(20) && matches!(state(pid, tid), None | Some('Z' | 'X')) {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            return Ok(None);
        }
        if libc::WIFSTOPPED(status) {
            let event = status >> 16;
            let sig = libc::WSTOPSIG(status);
            if event == 0 && sig != libc::SIGTRAP {
                // A signal-delivery-stop: the signal is the program's, handed back at detach.
                // The thread is stopped now, which is all the registers need.
                pending = sig;
            }
            return Ok(Some(pending));
        }
    }
}

/// Stops every thread of `pid`, reads it, lets it go. `regions` is the map read just before
/// (for the stacks' bounds); `hold` keeps the threads stopped that long before reading (for the
/// test that kills a process mid-snapshot); `during` runs while every seized thread is still
/// stopped, with their states (what must be read of the process's memory at one moment, such as
/// a Go program's goroutines).
pub fn stop_and_read(
    pid: u32,
    regions: &[Region],
    hold: Option<Duration>,
    during: &mut dyn FnMut(&[ThreadState]),
) -> Result<Stopped, StopError> {
    let mem = Memory { pid };
    let mut seized: Vec<(u32, i32)> = Vec::new();
    let mut unstopped: Vec<ThreadState> = Vec::new();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(5);
    let result = (|| {
        // Threads born while the first ones are seized appear in the next listing.
        for _round in 0..8 {
            let tids = task_ids(pid).ok_or(StopError::Exited)?;
            let new: Vec<u32> = tids
                .into_iter()
                .filter(|t| !seized.iter().any(|s| s.0 == *t) && !unstopped.iter().any(|u| u.tid == *t))
                .collect();
            if new.is_empty() {
                break;
            }
            for tid in new {
                // A thread that has exited but not yet been reaped (a main thread that called
                // pthread_exit) never stops: it has no registers to read.
                if zombie(pid, tid) {
                    unstopped.push(ThreadState {
                        tid,
                        sp: 0,
                        pc: 0,
                        fs_base: None,
                        syscall: None,
                        stack: vec![],
                        not_stopped: true,
                    });
                    continue;
                }
                if let Some((nr, sp, pc)) = blocked_in(pid, tid)
                    && EINTR_AFTER_STOP.iter().any(|(n, _)| *n == nr)
                {
                    unstopped.push(ThreadState {
                        tid,
                        sp,
                        pc,
                        fs_base: None,
                        syscall: Some(nr),
                        stack: vec![],
                        not_stopped: true,
                    });
                    continue;
                }
                match ptrace(libc::PTRACE_SEIZE, tid, 0) {
                    Ok(()) => {}
                    // The thread ended between the listing and now.
                    Err(libc::ESRCH) => continue,
                    Err(libc::EPERM) => {
                        return Err(match tracer_of(pid).filter(|&t| t != 0) {
                            Some(t) => StopError::AlreadyTraced(t),
                            None => StopError::NotPermitted,
                        });
                    }
                    Err(e) => {
                        return Err(StopError::Other(format!(
                            "ptrace(PTRACE_SEIZE, {tid}): {}",
                            std::io::Error::from_raw_os_error(e)
                        )));
                    }
                }
                seized.push((tid, 0));
                if let Err(e) = ptrace(libc::PTRACE_INTERRUPT, tid, 0) {
                    if e == libc::ESRCH {
                        continue;
                    }
                    return Err(StopError::Other(format!("ptrace(PTRACE_INTERRUPT, {tid}): errno {e}")));
                }
            }
        }
        for s in seized.iter_mut() {
            match wait_stop(pid, s.0, deadline)? {
                Some(sig) => s.1 = sig,
                // A thread that ended is left out; the process must still be there.
                None => s.1 = -1,
            }
        }
        seized.retain(|s| s.1 >= 0);
        if !alive(pid) {
            return Err(StopError::Exited);
        }
        if let Some(h) = hold {
            std::thread::sleep(h);
        }
        let mut out = Vec::new();
        for &(tid, _) in &seized {
            let Some(regs) = get_regs(tid) else {
                if alive(pid) {
                    continue;
                }
                return Err(StopError::Exited);
            };
            let syscall = blocked_syscall(&mem, &regs);
            let stack = unwind(&mem, regs.rip, regs.rsp, Some(regs.rbp), syscall.is_some(), regions);
            out.push(ThreadState {
                tid,
                sp: regs.rsp,
                pc: regs.rip,
                fs_base: Some(regs.fs_base),
                syscall,
                stack,
                not_stopped: false,
            });
        }
        during(&out);
        Ok(out)
    })();
    // Every seized thread is let go, whatever happened above; its pending signal goes with it.
    for &(tid, sig) in &seized {
        let _ = ptrace(libc::PTRACE_DETACH, tid, sig as usize);
    }
    let stop = started.elapsed();
    let mut threads = result?;
    for mut u in unstopped {
        if u.sp != 0 {
            u.stack = unwind(&mem, u.pc, u.sp, None, true, regions);
        }
        threads.push(u);
    }
    if threads.is_empty() {
        return Err(StopError::Exited);
    }
    threads.sort_by_key(|t| t.tid);
    Ok(Stopped { threads, stop })
}

/// The system call a stopped thread is in: `orig_rax` is its number when the stop interrupted
/// one (the instruction before rip is `syscall`, 0f 05).
fn blocked_syscall(mem: &Memory, regs: &libc::user_regs_struct) -> Option<i64> {
    let mut b = [0u8; 2];
    let nr = regs.orig_rax as i64;
    (nr >= 0 && mem.read(regs.rip.wrapping_sub(2), &mut b) && b == [0x0f, 0x05]).then_some(nr)
}

/// Whether the bytes before `ret` end in a call instruction (`e8 rel32`, or `ff /2` with a
/// one-to-seven byte operand): what a return address must follow.
fn follows_call(mem: &Memory, ret: u64) -> bool {
    let mut b = [0u8; 7];
    if !mem.read(ret.wrapping_sub(7), &mut b) {
        return false;
    }
    let ff2 = |at: usize| b[at] == 0xff && (b[at + 1] >> 3) & 7 == 2;
    b[2] == 0xe8 || ff2(5) || ff2(4) || ff2(1) || ff2(0)
}

/// The thread's current stack, innermost first: `pc`, then frame-pointer (rbp chain) return
/// addresses, bounded by the mapping that holds `sp`. A thread in a system call sits in a libc
/// wrapper that keeps no frame of its own (Debian's glibc is built without frame pointers): its
/// caller's return address is the first word above `sp` that follows a call instruction. Without
/// `rbp` (a thread read without stopping it) that first step is all there is.
pub fn unwind(
    mem: &Memory,
    pc: u64,
    sp: u64,
    rbp: Option<u64>,
    in_syscall: bool,
    regions: &[Region],
) -> Vec<u64> {
    let mut out = vec![pc];
    let Some(stack) = regions.iter().find(|r| r.start <= sp && sp < r.end) else { return out };
    let (lo, hi) = (stack.start, stack.end);
    let executable = |a: u64| {
        regions.iter().any(|r| r.start <= a && a < r.end && r.perms.as_bytes().get(2) == Some(&b'x'))
    };
    let in_stack = |a: u64| lo <= a && a.saturating_add(16) <= hi;
    if in_syscall {
        let limit = match rbp {
            Some(fp) if fp > sp && in_stack(fp) => fp.min(sp + 512),
            _ => sp + 512,
        };
        let mut at = sp;
        while at < limit && at + 8 <= hi {
            if let Some(w) = mem.u64(at)
                && executable(w)
                && follows_call(mem, w)
            {
                out.push(w);
                break;
            }
            at += 8;
        }
    }
    let Some(mut fp) = rbp else { return out };
    while out.len() < 128 && in_stack(fp) && fp >= sp {
        let (Some(next), Some(ret)) = (mem.u64(fp), mem.u64(fp + 8)) else { break };
        if !executable(ret) {
            break;
        }
        out.push(ret);
        if next <= fp {
            break;
        }
        fp = next;
    }
    out
}
