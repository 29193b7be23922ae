//! The seccomp-bpf program the syscall recorder installs in the target between fork and exec:
//! `SECCOMP_RET_TRACE` (a ptrace stop in vmshim) for the calls that shape the address space or
//! make threads and processes, `SECCOMP_RET_ALLOW` for everything else, which then runs at full
//! speed without ever waking vmshim. Calls of another architecture (an i386 `int 0x80`, x32) are
//! allowed untouched: the recorder reads x86-64 registers only.
//!
//! Only calls the recorder writes a record for are stopped, and ptrace (a process of the tree
//! that asks for a tracer of its own is refused: it would hang under this one): a stop costs the target two context
//! switches and vmshim's ptrace round trip (tens of microseconds on a loaded 2-core machine). The
//! ends of threads, processes and images need no stop of the filter's: `PTRACE_O_TRACEEXIT` and
//! `PTRACE_O_TRACEEXEC` stop them anyway. madvise is not stopped either: the trace format has no
//! record for it and it never changes the address space's size (a Go server's scavenger calls
//! `madvise(MADV_DONTNEED)` every few hundred requests).
//!
//! The program decides on the architecture and the call number alone, never on an argument, so
//! the kernel (>= 5.11, `seccomp_cache_prepare`) finds its action constant for every x86-64 call
//! and caches it: an allowed call does not run the program at all.
//!
//! A filter stays for the life of every process that inherits it, and `SECCOMP_RET_TRACE` with no
//! tracer fails the call with ENOSYS: the recorder must therefore trace every process of the tree
//! until it is gone (`PTRACE_O_EXITKILL` covers vmshim's own death).

/// System calls stopped and recorded at every call: the ones that shape the address space.
pub const RECORDED: [libc::c_long; 7] = [
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_brk,
    libc::SYS_clone,
    libc::SYS_clone3,
];

/// System calls stopped at every call: the recorded ones, and ptrace.
pub const TRACED: [libc::c_long; 8] = [
    RECORDED[0],
    RECORDED[1],
    RECORDED[2],
    RECORDED[3],
    RECORDED[4],
    RECORDED[5],
    RECORDED[6],
    libc::SYS_ptrace,
];

/// The data of this filter's `SECCOMP_RET_TRACE` (the ptrace event's message): a stop with other
/// data came from a filter the target installed itself, which vmshim must answer as if no tracer
/// were there.
pub const TRACE_DATA: u32 = 0x766d;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

/// The program. `seccomp_data`: nr at 0, arch at 4 (the only words it loads).
pub fn program() -> Vec<libc::sock_filter> {
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    // Instruction indices, for the jumps (a jump's offset counts from the next instruction).
    let allow_at = 3 + TRACED.len();
    let trace_at = allow_at + 1;
    let to = |from: usize, target: usize| (target - from - 1) as u8;
    let mut p =
        vec![op(LD_W_ABS, 0, 0, 4), op(JEQ_K, 0, to(1, allow_at), AUDIT_ARCH_X86_64), op(LD_W_ABS, 0, 0, 0)];
    for (i, nr) in TRACED.iter().enumerate() {
        p.push(op(JEQ_K, to(3 + i, trace_at), 0, *nr as u32));
    }
    p.push(op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW));
    p.push(op(RET_K, 0, 0, libc::SECCOMP_RET_TRACE | TRACE_DATA));
    debug_assert_eq!(p.len(), trace_at + 1);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny interpreter of the instructions `program` uses, to check every jump lands.
    fn run(p: &[libc::sock_filter], nr: u32, arch: u32, advice: u32) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        data[32..36].copy_from_slice(&advice.to_le_bytes());
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = p[pc];
            match i.code as u32 {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => {
                    let k = i.k as usize;
                    acc = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
                    pc += 1;
                }
                c if c == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K => {
                    pc += 1 + if acc == i.k { i.jt } else { i.jf } as usize;
                }
                c if c == libc::BPF_RET | libc::BPF_K => return i.k,
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn traces_exactly_the_memory_and_thread_calls() {
        let p = program();
        for nr in TRACED {
            assert_eq!(
                run(&p, nr as u32, AUDIT_ARCH_X86_64, 0),
                libc::SECCOMP_RET_TRACE | TRACE_DATA,
                "nr {nr}"
            );
            assert_eq!(run(&p, nr as u32, 0x4000_0003, 0), libc::SECCOMP_RET_ALLOW, "i386 nr {nr}");
        }
        // Stopped by ptrace's own exit and exec events, or recorded by nothing: never by the filter.
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_futex,
            libc::SYS_openat,
            libc::SYS_exit,
            libc::SYS_exit_group,
            libc::SYS_execve,
        ] {
            assert_eq!(run(&p, nr as u32, AUDIT_ARCH_X86_64, 0), libc::SECCOMP_RET_ALLOW, "nr {nr}");
        }
        let madvise = libc::SYS_madvise as u32;
        for a in [libc::MADV_DONTNEED, libc::MADV_FREE, libc::MADV_WILLNEED, libc::MADV_HUGEPAGE] {
            assert_eq!(run(&p, madvise, AUDIT_ARCH_X86_64, a as u32), libc::SECCOMP_RET_ALLOW);
        }
    }

    /// The kernel caches a filter's action for a call number when the program, run with that
    /// number and the native architecture, reaches a return without reading any other field of
    /// `seccomp_data` (kernel/seccomp.c, `seccomp_is_const_allow`): every load is of nr or arch.
    #[test]
    fn decides_on_nr_and_arch_alone() {
        let p = program();
        for i in &p {
            if i.code as u32 == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS {
                assert!(i.k == 0 || i.k == 4, "loads seccomp_data offset {}", i.k);
            }
        }
        // The architecture first: nothing else is read before the arch check.
        assert_eq!((p[0].code as u32, p[0].k), (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 4));
    }
}
