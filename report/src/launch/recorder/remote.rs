//! Reading a stopped tracee: its registers (`PTRACE_GETREGS`) and its memory
//! (`process_vm_readv`, which copies from the target's address space in the kernel and reports
//! an unmapped or unreadable page as a short read: the target is never faulted, and its memory
//! is never written). Registers are written for one thing only: to fail a call as the kernel
//! would with no tracer there ([`set_regs`]).
//!
//! This module needs `unsafe` for the two system calls; each block says why it holds.

#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::io;

pub type Regs = libc::user_regs_struct;

/// The registers of stopped tracee `tid`.
pub fn regs(tid: i32) -> io::Result<Regs> {
    let mut r = std::mem::MaybeUninit::<Regs>::uninit();
    // SAFETY: GETREGS writes one user_regs_struct to `data`, which points at one; `addr` is
    // unused.
    let rc = unsafe { libc::ptrace(libc::PTRACE_GETREGS, tid, 0usize, r.as_mut_ptr()) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the call succeeded, so the kernel filled the struct.
    Ok(unsafe { r.assume_init() })
}

/// Sets the registers of stopped tracee `tid` (at a seccomp stop: a call skipped, its result).
pub fn set_regs(tid: i32, regs: &Regs) -> io::Result<()> {
    // SAFETY: SETREGS reads one user_regs_struct from `data`, which points at one; `addr` is
    // unused.
    let rc = unsafe { libc::ptrace(libc::PTRACE_SETREGS, tid, 0usize, regs as *const Regs) };
    if rc == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Reads `buf.len()` bytes at `addr` in process `pid`; false on any short read.
pub fn read(pid: i32, addr: u64, buf: &mut [u8]) -> bool {
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: `local` describes `buf`, writable and alive for the call; the remote iovec is only
    // an address in the other process, which the kernel checks and never dereferences here.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    n == buf.len() as isize
}

/// One 8-byte word of the target's memory.
pub fn word(pid: i32, addr: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    read(pid, addr, &mut b).then(|| u64::from_le_bytes(b))
}

/// The message of the last ptrace event stop (a new tid, an exit status).
pub fn event_msg(tid: i32) -> Option<u64> {
    let mut msg: libc::c_ulong = 0;
    // SAFETY: GETEVENTMSG writes one unsigned long to `data`, which points at one.
    let rc = unsafe { libc::ptrace(libc::PTRACE_GETEVENTMSG, tid, 0usize, &mut msg as *mut libc::c_ulong) };
    (rc != -1).then_some(msg as u64)
}

/// A ptrace request whose data is a number (options, a signal) and whose addr is unused.
pub fn request(req: libc::c_uint, tid: i32, data: usize) -> io::Result<()> {
    // SAFETY: SETOPTIONS, CONT, SYSCALL and DETACH read `data` as a number; no memory is passed.
    let r = unsafe { libc::ptrace(req, tid, 0usize, data) };
    if r == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}
