//! libvmshim.so: injected with `LD_PRELOAD`, it records every call that shapes a process's
//! address space — `mmap`, `munmap`, `mremap`, `mprotect`, `pthread_create` — with its thread,
//! time and call stack, into a trace file that `vmshim report` explains.
//!
//! # Design constraints
//! - **The hook path.** A hook runs inside the target, on any thread, possibly inside malloc or
//!   a signal handler. It never calls glibc's malloc (a malloc in a fresh thread creates a
//!   64 MiB arena: the tool would create what it measures), takes no blocking lock, does no std
//!   I/O, never panics (`panic = "abort"`, and no code path indexes out of bounds by design),
//!   never recurses (see [`os::guard`]), and returns exactly the real call's value with errno
//!   exactly as the real call left it. The real calls are raw system calls ([`os::syscall`]):
//!   `__mmap` and friends are GLIBC_PRIVATE.
//! - **The stack budget.** A hook may run on a 16 KiB (PTHREAD_STACK_MIN) thread stack or in
//!   a signal handler on a minimal sigaltstack, so it keeps its work off the caller's stack
//!   ([`os::ownstack`]: a pool of 64 stacks of 64 KiB in .bss). `mmap`, `mmap64`, `munmap`,
//!   `mremap`, `mprotect` and `pthread_create` use 0 bytes of the caller's stack beyond the
//!   return address its call pushed, as glibc's own functions do: they switch stacks before
//!   anything else. The malloc family, `dlopen` and the resolver functions run the real call on
//!   the caller's stack (it may run program code) and use at most 1024 bytes more than it does
//!   there before they switch for the recording. Start-up's buffers are static (one
//!   initialiser at a time). The recording needs at most [`os::ownstack::RECORDING_MAX`] of a shim
//!   stack; a signal handler that interrupts a hook there has the rest,
//!   [`os::ownstack::HEADROOM`] (32 KiB). When all stacks are taken, the real call runs unrecorded
//!   and the record is counted as dropped. `tests/small_stacks.rs` measures all of this.
//! - **No helper thread.** Records go straight into a shared file mapping ([`out::writer`]), so
//!   nothing needs flushing: Go's raw `exit_group` and SIGKILL lose no committed record.
//! - **libc's blind spots.** glibc maps thread stacks, malloc arenas and large malloc chunks
//!   with its internal mmap, which no interposed `mmap` sees. Thread stacks are covered by
//!   [`hooks::pthread_create`]: each new thread reports an address on its stack and its
//!   creator's call stack; the report finds the mapping around it. Arenas and large chunks are
//!   left to the report, which lists what it cannot attribute as `unattributed`.
//! - **Own mappings.** The trace segments the shim maps are recorded with `CALL_FLAG_OWN` and
//!   the trace path, so the report files them, and this library's image, under `vmshim`.
//! - **Bounded footprint.** The trace is mapped through a window ([`out::writer`]): a segment is
//!   unmapped (and the unmap recorded, `CALL_FLAG_OWN`) once its last writer is done with it.
//!   At most 4 segments (`out::writer::WINDOW` x `VMSHIM_SEGMENT_BYTES`) plus the header page are
//!   mapped at any time — 16 MiB + 4 KiB of VSZ, and no more RSS, with the default 4 MiB —
//!   however long the target runs; one or two segments in practice.
//! - **The trace path never destroys anything.** An existing name is never removed, truncated
//!   or followed: a regular file or symlink there gets a free `.N` suffix; a device, FIFO,
//!   socket or directory there is refused with one line on stderr, and the target runs on
//!   untraced. A file the shim created but could not set up (a full disk) is removed again,
//!   by its path, only while that path still names the very file it created.
//! - **Fork and exec.** A fork child forgets the parent's trace and creates its own inside fork
//!   ([`record::fork`]: pthread_atfork; the child's Start names the forking process, thread, time and
//!   stack), before the program can drop privileges, close descriptors or be re-parented; a
//!   failure there prints nothing (the child's stderr is the program's). vfork and posix_spawn
//!   children run no handler and share the parent's memory until they exec: untouched. An
//!   exec'd image loads the shim afresh through LD_PRELOAD and writes a new file (a taken name
//!   `T` gives way to `T.<pid>`, then `T.<pid>.<n>`, never an overwrite). An exec'd image that
//!   cannot create its trace still says so in one line on stderr: run with plain LD_PRELOAD,
//!   nothing else would tell the user that the program ran untraced.
//! - **Start-up cost.** Nothing a process does not need before its first record: the TSC is
//!   calibrated by the first record 200 us later, not waited for; the file grows as records
//!   arrive; libgcc's unwinder is linked in
//!   (loading libgcc_s runs cpuid, which traps in a VM). A fork child writes the executable's
//!   path and the resolver configuration its parent read at its own start (the fork changes
//!   neither, and the child resolves with the parent's libc state), reading only its command
//!   line and its map afresh. Under `vmshim run`'s exit watcher (`VMSHIM_WATCHED=1`), which
//!   reads every process's map at exit, the start-up map, Module records and resolver
//!   configuration wait for the first recorded call ([`record::start`]): a process that
//!   records nothing (the fork child that execs a shell's `/bin/true`) writes its Start record
//!   only. An exec'd image that vmshim did not launch goes further and creates no file until
//!   its first recorded call ([`record::waiting`]): it keeps its parent, start time, run id and
//!   the loader's addresses in a note in its memory, which the watcher reads at its exit, and
//!   `vmshim run` writes the trace of one that never recorded (in the 1,000-process loop, about
//!   a hundred microseconds less per iteration: a file, its mapping and the Start's /proc read).
//!   The small statics (atomics) that start-up and the hooks touch are placed together in
//!   `.data.vmshim_hot`: in .bss each sat beside its module's large tables, a page fault apiece
//!   at every start and a page copy in every fork child (7 fewer faults per `/bin/true`).
//!   Code is placed the same way: a file page is mapped by a fault that maps the 64 KiB around
//!   it, so the functions an image runs before its first record (the constructor, the waiting
//!   note) and a fork child runs in its fork, and the malloc hooks a shell's child calls before
//!   its exec, are in `.text.hot.vmshim` sections, one output section (`-z
//!   keep-text-section-prefix`, build.rs), not spread over the windows of `.text`. And the
//!   page-aligned tables (the wipe-on-fork caches, the shim's stacks) are in `.sbss.vmshim`,
//!   after `.bss`: their alignment made `.bss` begin on a page of its own, where crtbegin's
//!   `completed.0`, read and written by every exit, cost two faults; `.bss` now begins in the
//!   last page of `.data`, which the loader writes anyway. With the start-up clocks read by
//!   system call (`os::syscall::clocks_by_syscall`), a `/bin/true` under `vmshim run` takes 68
//!   page faults, 5 fewer, and the fork child that execs it 30, 5 fewer (issue 12).
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

// The layers, lowest first. A module names (`crate::` paths, doc links included) only its own
// layer and those below; the tests in `layers.rs` hold that.

/// 1. The operating system: raw system calls, clock, TLS, pid/tid, the guard, own stacks.
pub mod os;

/// 2. The configuration: `VMSHIM_*` variables.
pub mod config;

/// 3. The trace's output: the file's segments, each stack written once.
pub mod out;

/// 4. The unwinder: the walk, `.eh_frame` rules, frame pointers, the bounds-checked reader.
pub mod unwind;

/// 5. What the shim knows of the process: start-up, modules, malloc chunks, mapping names.
pub mod know;

/// 6. Recording: a call into a record, the start of the recording, fork.
pub mod record;

/// 7. The hooks: a file per interposed libc symbol.
pub mod hooks;

#[cfg(test)]
mod layers;

/// The fork prepare handler: the real functions of the credential hooks are looked up here, in
/// the parent (once), for its fork children, which must not ask the loader; then the recording's
/// own ([`record::fork::before_fork`]).
#[unsafe(link_section = ".text.hot.vmshim")]
extern "C" fn prepare_fork() {
    hooks::credentials::resolve();
    record::fork::before_fork();
}

/// The constructor: runs when the loader initialises this library, before `main`, with the
/// process's arguments and environment (glibc passes them to every init_array function).
#[cfg_attr(test, allow(dead_code))]
#[unsafe(link_section = ".text.hot.vmshim")]
extern "C" fn vmshim_init(
    argc: core::ffi::c_int,
    argv: *const *const core::ffi::c_char,
    envp: *const *const core::ffi::c_char,
) {
    // SAFETY: glibc's arguments to an init_array function, as os::args::note requires.
    unsafe { os::args::note(argc, argv, envp) };
    let _guard = os::guard::Guard::enter();
    hooks::pthread_create::resolve();
    hooks::malloc::resolve();
    hooks::dlopen::resolve();
    hooks::ptrace::resolve();
    // SAFETY: registers plain functions; glibc keeps the first handlers in static storage, so
    // this does not allocate.
    unsafe {
        libc::pthread_atfork(
            Some(prepare_fork),
            Some(record::fork::after_fork_in_parent),
            Some(record::fork::after_fork_in_child),
        )
    };
    record::start::ensure_started();
}

#[cfg(not(test))]
#[used]
#[unsafe(link_section = ".init_array")]
static INIT: extern "C" fn(
    core::ffi::c_int,
    *const *const core::ffi::c_char,
    *const *const core::ffi::c_char,
) = vmshim_init;

#[cfg(test)]
mod tests {
    //! The recording core, driven directly (the crate's tests export no hooks).
    use super::*;
    use vmshim_trace::{CallKind, Event};

    #[test]
    fn a_hooked_call_keeps_errno_and_lands_in_the_trace_with_a_stack() {
        let dir = std::env::temp_dir().join(format!("vmshim-shim-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("t.trace");
        let _ = std::fs::remove_file(&out);
        // SAFETY: set before any thread of this test binary reads the environment through the
        // shim; this is the only test that sets it.
        unsafe { std::env::set_var("VMSHIM_OUT", &out) };
        record::start::ensure_started();
        assert!(out::writer::is_ready(), "the writer opened {}", out.display());

        let len = 3 * 4096;
        os::syscall::set_errno(1234);
        // SAFETY: an anonymous private mapping of `len` bytes, unmapped below.
        let p = unsafe {
            hooks::mmap::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        assert_eq!(os::syscall::errno(), 1234, "success leaves errno as it was");
        // SAFETY: an invalid length fails with EINVAL and maps nothing.
        let bad = unsafe {
            hooks::mmap::mmap(
                core::ptr::null_mut(),
                0,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_eq!((bad, os::syscall::errno()), (libc::MAP_FAILED, libc::EINVAL));
        // SAFETY: unmaps the mapping made above.
        assert_eq!(unsafe { hooks::munmap::munmap(p, len) }, 0);

        let trace = vmshim_trace::parse(&std::fs::read(&out).unwrap()).unwrap();
        let calls: Vec<_> =
            trace.events.iter().filter_map(|e| if let Event::Call(c) = e { Some(c) } else { None }).collect();
        let mine: Vec<_> = calls.iter().filter(|c| c.flags & vmshim_trace::CALL_FLAG_OWN == 0).collect();
        assert_eq!(mine.len(), 3, "{mine:?}");
        assert_eq!((mine[0].call, mine[0].result, mine[0].args[1]), (CallKind::Mmap, p as u64, len as u64));
        assert_eq!((mine[1].result, mine[1].errno), (u64::MAX, libc::EINVAL));
        assert_eq!((mine[2].call, mine[2].args[0]), (CallKind::Munmap, p as u64));
        assert!(!mine[0].stack.is_empty(), "a stack was captured");
        assert!(trace.events.iter().any(|e| matches!(e, Event::Start(_))));
        assert!(trace.events.iter().any(|e| matches!(e, Event::Module(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
