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
//! The program decides on the architecture and the call number alone, never on an argument,
//! but for two rare calls, so the kernel (>= 5.11, `seccomp_cache_prepare`) finds its action
//! constant for every other x86-64 call and caches it: an allowed call does not run the program
//! at all. The two: `prctl(PR_SET_SECCOMP, ...)` and `seccomp(SECCOMP_SET_MODE_STRICT, ...)`
//! are stopped, because strict mode cannot be entered over this filter (the kernel refuses it
//! with EINVAL): the recorder refuses the run with the reason instead of letting the target go
//! on otherwise than bare. Every other prctl and seccomp call is allowed, a filter of the
//! target's own included.
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

/// `prctl`'s option and `seccomp`'s operation that ask for seccomp (`PR_SET_SECCOMP`, then
/// strict or filter mode in its second argument) and for strict mode (`SECCOMP_SET_MODE_STRICT`).
pub const PR_SET_SECCOMP: u32 = 22;
pub const SECCOMP_SET_MODE_STRICT: u32 = 0;

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
    // [arch check, nr load] [a JEQ per traced call] [prctl? seccomp?] [load args[0]'s low word,
    // its test] x 2, allow, trace.
    let n = TRACED.len();
    let prctl_at = 3 + n + 2;
    let seccomp_at = prctl_at + 2;
    let allow_at = seccomp_at + 2;
    let trace_at = allow_at + 1;
    let to = |from: usize, target: usize| (target - from - 1) as u8;
    let mut p =
        vec![op(LD_W_ABS, 0, 0, 4), op(JEQ_K, 0, to(1, allow_at), AUDIT_ARCH_X86_64), op(LD_W_ABS, 0, 0, 0)];
    for (i, nr) in TRACED.iter().enumerate() {
        p.push(op(JEQ_K, to(3 + i, trace_at), 0, *nr as u32));
    }
    p.push(op(JEQ_K, to(3 + n, prctl_at), 0, libc::SYS_prctl as u32));
    p.push(op(JEQ_K, to(4 + n, seccomp_at), to(4 + n, allow_at), libc::SYS_seccomp as u32));
    // args[0]'s low word (seccomp_data.args at 16).
    p.push(op(LD_W_ABS, 0, 0, 16));
    p.push(op(JEQ_K, to(prctl_at + 1, trace_at), to(prctl_at + 1, allow_at), PR_SET_SECCOMP));
    p.push(op(LD_W_ABS, 0, 0, 16));
    p.push(op(JEQ_K, to(seccomp_at + 1, trace_at), to(seccomp_at + 1, allow_at), SECCOMP_SET_MODE_STRICT));
    p.push(op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW));
    p.push(op(RET_K, 0, 0, libc::SECCOMP_RET_TRACE | TRACE_DATA));
    debug_assert_eq!(p.len(), trace_at + 1);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny interpreter of the instructions `program` uses, to check every jump lands: the
    /// action, and the offsets of `seccomp_data` it loaded.
    fn run_with(p: &[libc::sock_filter], nr: u32, arch: u32, args: [u32; 6]) -> (u32, Vec<usize>) {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..20 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let (mut pc, mut acc, mut loaded) = (0usize, 0u32, vec![]);
        loop {
            let i = p[pc];
            match i.code as u32 {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => {
                    let k = i.k as usize;
                    loaded.push(k);
                    acc = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
                    pc += 1;
                }
                c if c == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K => {
                    pc += 1 + if acc == i.k { i.jt } else { i.jf } as usize;
                }
                c if c == libc::BPF_RET | libc::BPF_K => return (i.k, loaded),
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    /// The action for a call with `advice` as its third argument.
    fn run(p: &[libc::sock_filter], nr: u32, arch: u32, advice: u32) -> u32 {
        run_with(p, nr, arch, [0, 0, advice, 0, 0, 0]).0
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

    /// Seccomp strict mode, by prctl or seccomp(2), is stopped (the recorder refuses it: the
    /// kernel would fail it over this filter); every other prctl and seccomp call runs.
    #[test]
    fn stops_only_the_requests_for_strict_mode() {
        let p = program();
        let (prctl, seccomp) = (libc::SYS_prctl as u32, libc::SYS_seccomp as u32);
        let trace = libc::SECCOMP_RET_TRACE | TRACE_DATA;
        let act = |nr, a0| run_with(&p, nr, AUDIT_ARCH_X86_64, [a0, 0, 0, 0, 0, 0]).0;
        assert_eq!(act(prctl, PR_SET_SECCOMP), trace);
        assert_eq!(act(seccomp, SECCOMP_SET_MODE_STRICT), trace);
        for option in
            [libc::PR_SET_NAME as u32, libc::PR_SET_NO_NEW_PRIVS as u32, libc::PR_GET_SECCOMP as u32]
        {
            assert_eq!(act(prctl, option), libc::SECCOMP_RET_ALLOW, "prctl {option}");
        }
        for op in [1, 2, 3] {
            assert_eq!(act(seccomp, op), libc::SECCOMP_RET_ALLOW, "seccomp op {op}");
        }
    }

    /// The kernel caches a filter's action for a call number when the program, run with that
    /// number and the native architecture, reaches a return without reading any other field of
    /// `seccomp_data` (kernel/seccomp.c, `seccomp_is_const_allow`): for every call but prctl
    /// and seccomp, every load is of nr or arch, the architecture first.
    #[test]
    fn decides_on_nr_and_arch_alone() {
        let p = program();
        for nr in 0..600u32 {
            let (_, loaded) = run_with(&p, nr, AUDIT_ARCH_X86_64, [u32::MAX; 6]);
            if nr == libc::SYS_prctl as u32 || nr == libc::SYS_seccomp as u32 {
                assert_eq!(loaded, [4, 0, 16], "nr {nr}");
            } else {
                assert_eq!(loaded, [4, 0], "nr {nr}");
            }
        }
    }
}
