//! Remote frame-pointer unwinding of a thread stopped at a system call.
//!
//! At a syscall stop `rip` is the instruction after `syscall`, in the wrapper (Go's
//! `runtime.sysMmap`, libc's `mmap`): the first frame. Such wrappers are leaves that keep no
//! frame of their own, so the word at `rsp` is their return address, into their caller; from
//! there the `rbp` chain gives each caller's return address at `rbp + 8` and the next frame at
//! `rbp`. Go keeps frame pointers on amd64; C code built without them ends the chain early.
//!
//! Every step is checked, so garbage in `rbp` ends the walk instead of inventing frames: a frame
//! must lie above the previous one on the same stack (within [`STACK_SPAN`] of `rsp`), 8-byte
//! aligned, and every return address must fall in an executable mapping. Memory is read with
//! `process_vm_readv` ([`super::remote`]): the target is never faulted. Depth is bounded.

use super::remote;

/// The deepest stack recorded.
pub const MAX_DEPTH: usize = 64;
/// How far above the stack pointer a frame may be (a Go system stack is 8 MiB at most here; a
/// thread's C stack as large as its mapping, which this bounds too).
const STACK_SPAN: u64 = 256 << 20;

/// Return addresses, innermost first (`[0]` is the syscall wrapper's own pc).
pub fn frames(pid: i32, regs: &remote::Regs, exec: &[(u64, u64)]) -> Vec<u64> {
    let is_code = |a: u64| {
        let i = exec.partition_point(|r| r.1 <= a);
        exec.get(i).is_some_and(|r| r.0 <= a)
    };
    let mut out = Vec::with_capacity(16);
    out.push(regs.rip);
    let sp = regs.rsp;
    // The leaf's return address, when the leaf pushed nothing.
    let leaf_ret = remote::word(pid, sp).filter(|&a| is_code(a));
    let mut fp = regs.rbp;
    let mut chain = Vec::with_capacity(16);
    let mut prev = sp;
    while chain.len() < MAX_DEPTH {
        if fp < prev || fp - sp > STACK_SPAN || !fp.is_multiple_of(8) {
            break;
        }
        let (Some(next), Some(ret)) = (remote::word(pid, fp), remote::word(pid, fp + 8)) else { break };
        if !is_code(ret) {
            break;
        }
        chain.push(ret);
        prev = fp + 16;
        if next == 0 {
            break;
        }
        fp = next;
    }
    match leaf_ret {
        // A leaf that did push rbp: its return address is the chain's first.
        Some(r) if chain.first() != Some(&r) => out.push(r),
        _ => {}
    }
    out.extend(chain);
    out.truncate(MAX_DEPTH);
    out
}
