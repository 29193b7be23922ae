//! Launching the target for `vmshim run`: finding the program the way `execvp` would, refusing
//! programs that `LD_PRELOAD` cannot reach (statically linked, setuid/setgid), starting it with the
//! shim's environment added, and waiting for it while capturing `/proc/PID/smaps` at the moment its
//! main thread begins to exit, when the address space is still whole.
//!
//! This module needs `unsafe` for `fork` (a `pre_exec` hook that runs between fork and exec),
//! `ptrace`, `waitpid` and `sigaction`; every block says why it holds. It must never change what
//! the target does: its stdio is inherited untouched, every signal it receives is re-injected, only
//! its main thread is traced (no `PTRACE_O_TRACECLONE`/`TRACEFORK`: its threads and child processes
//! run untraced), and it never reads or writes the target's memory.
//!
//! ptrace ties a tracee to the *thread* that forked it (ptrace(2): the tracer of a
//! `PTRACE_TRACEME` child is its parent thread), so [`launch`] does everything, from spawn to reap,
//! on the calling thread.

#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod recorder;
pub mod sent;
pub mod watch;

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Why a target cannot be run under the shim.
#[derive(Debug)]
pub enum LaunchError {
    /// The command name as given: not in `PATH`, or no such file.
    NotFound(String),
    /// A statically linked ELF: the dynamic loader never runs, so `LD_PRELOAD` is never read.
    NotDynamic { path: PathBuf, why: String },
    /// A setuid or setgid file: the loader runs it in secure-execution mode and ignores `LD_PRELOAD`.
    SetId { path: PathBuf },
    /// Anything else (permission denied, exec format error, a failed system call), as a message.
    Io(String),
}

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LaunchError::NotFound(name) if name.contains('/') => {
                write!(f, "{name}: no such file")
            }
            LaunchError::NotFound(name) => write!(f, "{name}: command not found in PATH"),
            LaunchError::NotDynamic { path, why } => write!(
                f,
                "{} is statically linked ({why}): LD_PRELOAD cannot apply, so vmshim cannot see \
                 its calls. Build it dynamically (e.g. with cgo) to trace it.",
                path.display()
            ),
            LaunchError::SetId { path } => write!(
                f,
                "{} is setuid or setgid: the dynamic loader ignores LD_PRELOAD for it \
                 (secure-execution mode, see ld.so(8)), so vmshim cannot see its calls. \
                 Trace a copy without the setuid/setgid bit.",
                path.display()
            ),
            LaunchError::Io(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for LaunchError {}

/// How many `#!` interpreters deep a script may go; Linux gives up after 4 levels (ELOOP).
const MAX_INTERPRETER_DEPTH: usize = 4;

/// The part of a file the kernel reads to recognise a `#!` line (BINPRM_BUF_SIZE, Linux >= 5.1).
const SHEBANG_MAX: usize = 256;

/// Resolves CMD like `execvp` does (a name without '/' is searched in `PATH`, default
/// `/bin:/usr/bin`) and refuses what `LD_PRELOAD` cannot reach: a statically linked ELF (no
/// `PT_INTERP`), a setuid or setgid file that changes the effective ids. A `#!` script is
/// checked through its interpreter, and a file that is neither ELF nor `#!` through `/bin/sh`,
/// which `execvp` hands it to: those are what actually run.
pub fn resolve_target(cmd: &OsStr) -> Result<PathBuf, LaunchError> {
    let shown = cmd.to_string_lossy().into_owned();
    if cmd.is_empty() {
        return Err(LaunchError::NotFound(shown));
    }
    if cmd.as_bytes().contains(&b'/') {
        let path = PathBuf::from(cmd);
        check_target(&path, 0)?;
        return Ok(path);
    }
    // glibc's execvp uses confstr(_CS_PATH) when PATH is unset.
    let path_var = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/bin:/usr/bin"));
    let mut denied = None;
    for dir in std::env::split_paths(&path_var) {
        // An empty PATH entry means the current directory.
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        let candidate = dir.join(cmd);
        let Ok(meta) = std::fs::metadata(&candidate) else { continue };
        if !meta.is_file() {
            continue;
        }
        if meta.permissions().mode() & 0o111 == 0 {
            // execvp keeps searching after EACCES and reports it only if nothing else is found.
            denied.get_or_insert(candidate);
            continue;
        }
        check_target(&candidate, 0)?;
        return Ok(candidate);
    }
    match denied {
        Some(path) => Err(LaunchError::Io(format!("{}: permission denied", path.display()))),
        None => Err(LaunchError::NotFound(shown)),
    }
}

/// Checks one file the kernel would execute; `depth` counts `#!` interpreters followed so far.
fn check_target(path: &Path, depth: usize) -> Result<(), LaunchError> {
    let io_err = |e: io::Error| LaunchError::Io(format!("{}: {e}", path.display()));
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(LaunchError::NotFound(path.display().to_string()));
        }
        Err(e) => return Err(io_err(e)),
    };
    if meta.is_dir() {
        return Err(LaunchError::Io(format!("{}: is a directory", path.display())));
    }
    let mode = meta.permissions().mode();
    if mode & 0o111 == 0 {
        return Err(LaunchError::Io(format!("{}: permission denied", path.display())));
    }
    // setgid without group execute is the mandatory-locking mark, not set-group-ID on exec
    // (execve(2), and the kernel's bprm_fill_uid).
    // The loader ignores LD_PRELOAD in secure-execution mode (AT_SECURE), which the kernel sets
    // when exec changes the effective ids away from the real ones: a setuid file owned by
    // someone else, a setgid file of another group. Root running a setuid-root file keeps
    // ruid == euid, so AT_SECURE is 0 there and LD_PRELOAD applies.
    use std::os::unix::fs::MetadataExt;
    // SAFETY: getuid and getgid take nothing and cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let setuid = mode & libc::S_ISUID != 0 && meta.uid() != uid;
    let setgid = mode & libc::S_ISGID != 0 && mode & libc::S_IXGRP != 0 && meta.gid() != gid;
    if setuid || setgid {
        return Err(LaunchError::SetId { path: path.to_owned() });
    }

    let mut file = File::open(path).map_err(io_err)?;
    let mut head = Vec::with_capacity(SHEBANG_MAX);
    file.by_ref().take(SHEBANG_MAX as u64).read_to_end(&mut head).map_err(io_err)?;

    if head.starts_with(b"\x7fELF") {
        return match elf_has_interp(&mut file, &head) {
            Ok(true) => Ok(()),
            Ok(false) => Err(LaunchError::NotDynamic {
                path: path.to_owned(),
                why: "no PT_INTERP program header".to_owned(),
            }),
            Err(why) => Err(LaunchError::Io(format!("{}: {why}", path.display()))),
        };
    }
    if let Some(interp) = shebang_interpreter(&head) {
        if depth >= MAX_INTERPRETER_DEPTH {
            return Err(LaunchError::Io(format!("{}: too many levels of #! interpreters", path.display())));
        }
        // The kernel does not search PATH for an interpreter; a relative one is relative to the
        // current directory, which is what `Path` means too.
        return match check_target(&interp, depth + 1) {
            Ok(()) => Ok(()),
            Err(LaunchError::NotDynamic { path: ipath, why }) => Err(LaunchError::NotDynamic {
                path: ipath,
                why: format!("{why}; it is the #! interpreter of {}", path.display()),
            }),
            Err(LaunchError::NotFound(_)) => Err(LaunchError::Io(format!(
                "{}: bad interpreter {}: no such file",
                path.display(),
                interp.display()
            ))),
            Err(other) => Err(other),
        };
    }
    // Neither ELF nor `#!`: execve says ENOEXEC, and execvp (which starts the target) then runs
    // the file with /bin/sh, as POSIX says; that shell is what LD_PRELOAD must reach.
    if depth >= MAX_INTERPRETER_DEPTH {
        return Err(LaunchError::Io(format!("{}: too many levels of interpreters", path.display())));
    }
    check_target(Path::new("/bin/sh"), depth + 1)
}

/// The interpreter path of a `#!` line, as the kernel's binfmt_script reads it: after `#!` and
/// blanks, up to the next blank or the end of the line.
fn shebang_interpreter(head: &[u8]) -> Option<PathBuf> {
    let rest = head.strip_prefix(b"#!")?;
    let line = rest.split(|&b| b == b'\n').next().unwrap_or(rest);
    let start = line.iter().position(|&b| b != b' ' && b != b'\t')?;
    let line = &line[start..];
    let end = line.iter().position(|&b| b == b' ' || b == b'\t').unwrap_or(line.len());
    Some(PathBuf::from(OsStr::from_bytes(&line[..end])))
}

/// Whether an ELF file has a `PT_INTERP` program header, i.e. whether the kernel starts the
/// dynamic loader for it. `head` holds the file's first bytes; the program headers are read from
/// `file`. Both classes and both byte orders are understood.
fn elf_has_interp(file: &mut File, head: &[u8]) -> Result<bool, String> {
    const PT_INTERP: u32 = 3;
    // e_ident[EI_CLASS], e_ident[EI_DATA]
    let (is64, le) = match (head.get(4), head.get(5)) {
        (Some(1), Some(1)) => (false, true),
        (Some(1), Some(2)) => (false, false),
        (Some(2), Some(1)) => (true, true),
        (Some(2), Some(2)) => (true, false),
        _ => return Err("malformed ELF header (unknown class or byte order)".to_owned()),
    };
    let bytes = |off: usize, len: usize| -> Result<u64, String> {
        let b = head.get(off..off + len).ok_or("truncated ELF header")?;
        let mut v = 0u64;
        for i in 0..len {
            let byte = if le { b[len - 1 - i] } else { b[i] };
            v = v << 8 | u64::from(byte);
        }
        Ok(v)
    };
    // e_phoff, e_phentsize, e_phnum: offsets from the ELF specification.
    let (phoff, phentsize, phnum) = if is64 {
        (bytes(0x20, 8)?, bytes(0x36, 2)?, bytes(0x38, 2)?)
    } else {
        (bytes(0x1c, 4)?, bytes(0x2a, 2)?, bytes(0x2c, 2)?)
    };
    if phnum == 0 {
        return Ok(false);
    }
    if phentsize < 4 || phnum == 0xffff {
        // PN_XNUM (more than 65534 headers) never occurs in an executable the loader accepts.
        return Err("malformed ELF program header table".to_owned());
    }
    let mut table = vec![0u8; (phentsize * phnum) as usize];
    file.seek(SeekFrom::Start(phoff))
        .and_then(|_| file.read_exact(&mut table))
        .map_err(|e| format!("reading ELF program headers: {e}"))?;
    Ok(table.chunks_exact(phentsize as usize).any(|ph| {
        let p_type = [ph[0], ph[1], ph[2], ph[3]];
        let p_type = if le { u32::from_le_bytes(p_type) } else { u32::from_be_bytes(p_type) };
        p_type == PT_INTERP
    }))
}

/// Whether this process may create files in `dir` (access(2) with W_OK|X_OK, the real ids: the
/// target's, which it inherits).
pub fn writable_dir(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    // SAFETY: c is a NUL-terminated path that outlives the call; access only reads it.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// A sanitizer runtime a target links, which changes how vmshim must start it.
#[derive(Debug)]
pub struct SanitizerRuntime {
    /// "AddressSanitizer", ...
    pub name: &'static str,
    /// The soname to preload before the shim (the runtime must come first in the loader's list);
    /// None when the runtime is linked into the executable itself, which always comes first.
    pub library: Option<OsString>,
    /// Whether it stops the world with ptrace (LeakSanitizer's check at exit, on by default with
    /// ASan), which fails on a thread vmshim traces.
    pub uses_ptrace: bool,
}

/// The sanitizer runtime `program` links, from its dynamic section (`DT_NEEDED` of a
/// `libasan.so.N`, ...) or its exported symbols (a runtime linked in, as clang does).
pub fn sanitizer_runtime(program: &Path) -> Option<SanitizerRuntime> {
    use object::{Object, ObjectSymbol};
    const RUNTIMES: [(&str, &str, &str, bool); 4] = [
        ("libasan.so", "__asan_init", "AddressSanitizer", true),
        ("libhwasan.so", "__hwasan_init", "HWAddressSanitizer", true),
        ("liblsan.so", "__lsan_init", "LeakSanitizer", true),
        ("libtsan.so", "__tsan_init", "ThreadSanitizer", false),
    ];
    let data = std::fs::read(program).ok()?;
    let file = object::File::parse(&*data).ok()?;
    let needed = elf_needed(&data);
    let leaks_off = std::env::var("ASAN_OPTIONS")
        .into_iter()
        .chain(std::env::var("LSAN_OPTIONS"))
        .any(|o| o.split([':', ',']).any(|kv| kv == "detect_leaks=0" || kv == "detect_leaks=false"));
    for (soname, init, name, lsan) in RUNTIMES {
        let library = needed.iter().find(|n| n.starts_with(soname)).map(OsString::from);
        let linked_in =
            library.is_none() && file.dynamic_symbols().any(|s| s.name() == Ok(init) && !s.is_undefined());
        if library.is_some() || linked_in {
            return Some(SanitizerRuntime { name, library, uses_ptrace: lsan && !leaks_off });
        }
    }
    None
}

/// The `DT_NEEDED` names of a 64-bit little-endian ELF file (what the sanitizer check needs;
/// anything else gives none).
fn elf_needed(data: &[u8]) -> Vec<String> {
    use object::elf::{DT_NEEDED, FileHeader64};
    use object::read::elf::{Dyn, FileHeader, SectionHeader};
    let Ok(header) = FileHeader64::<object::LittleEndian>::parse(data) else { return Vec::new() };
    let Ok(endian) = header.endian() else { return Vec::new() };
    let Ok(sections) = header.sections(endian, data) else { return Vec::new() };
    let Ok(Some((dynamic, link))) =
        sections.iter().find_map(|s| s.dynamic(endian, data).transpose()).transpose()
    else {
        return Vec::new();
    };
    let Ok(strings) = sections.strings(endian, data, link) else { return Vec::new() };
    dynamic
        .iter()
        .filter(|d| d.d_tag(endian) == DT_NEEDED)
        .filter_map(|d| d.string(endian, strings).ok())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect()
}

/// What to run. The environment is the inherited one plus `env` (e.g. `LD_PRELOAD`, `VMSHIM_OUT`).
pub struct Launch<'a> {
    pub program: &'a Path,
    /// The arguments after `argv[0]`; `argv[0]` is `program` itself.
    pub args: &'a [OsString],
    pub env: Vec<(OsString, OsString)>,
    /// Trace the main thread with ptrace to read the kernel's map at its exit stop. Without it
    /// the target is only waited for (stops and signals are still passed through).
    pub hold: bool,
    /// Watch every process of the tree at its exit with `vmshim __watch`, this vmshim binary
    /// ([`crate::launch::watch`]); `vmshim run` then also waits for the tree's last process.
    pub watch: Option<&'a Path>,
    /// The trace template the shim is given (`VMSHIM_OUT`), for the watcher to know the run's
    /// trace files in a map.
    pub traces: Option<&'a Path>,
    /// Set to the target's pid once it is spawned, for a thread that reads its trace meanwhile.
    pub spawned: Option<&'a std::sync::atomic::AtomicU32>,
    /// Each capture of the watcher as it arrives (see [`watch::Watcher::start`]).
    pub on_capture: Option<watch::OnCapture>,
}

/// How the target ended.
pub struct Outcome {
    pub pid: u32,
    /// As from waitpid.
    pub raw_status: i32,
    /// "exited 0", "exited 3", "killed by SIGKILL", "killed by SIGSEGV (core dumped)".
    pub how: String,
    /// What vmshim should exit with to pass the status through: the code, or 128+signal.
    pub exit_code: i32,
    /// The text of /proc/PID/smaps read at the moment the target's main thread began to exit
    /// (the PTRACE_EVENT_EXIT stop; the address space is still intact there), None if it could
    /// not be captured.
    pub final_smaps: Option<Vec<u8>>,
    /// `/proc/PID/statm` when `final_smaps` is a maps text (the watcher's capture of a process
    /// that recorded nothing).
    pub final_statm: Option<Vec<u8>>,
    /// `(tid, comm)` of the threads present at that moment.
    pub thread_names: Vec<(u32, String)>,
    /// Whether the tree's exits were watched, and if not why (None: not asked to).
    pub watched: Option<crate::launch::watch::State>,
    /// The tree's other processes (and earlier images of the target's pid) caught at their
    /// exit_group, in the order they left.
    pub exits: Vec<crate::launch::watch::Capture>,
    /// The tree had processes left when vmshim stopped waiting for it (told so twice).
    pub left_running: bool,
}

/// The signals sent to vmshim that it passes on to the target (when a user, systemd or `docker
/// stop` sends them to vmshim's pid, the target runs its handlers and vmshim still reports), plus
/// the ones it must see for itself: SIGCHLD (the tracee stopped or exited) and SIGCONT (vmshim was
/// resumed after a stop it took on the target's behalf). All are blocked in the launching thread
/// while the target runs and taken with `sigtimedwait`, so none interrupts vmshim's own work.
const FORWARDED: [libc::c_int; 8] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGTSTP,
];

/// What the shim's `ptrace` hook sends to the target's main thread, as `sival_ptr` of a queued
/// SIGWINCH, when the target asks to be traced itself (PTRACE_TRACEME): vmshim lets go of it.
/// The signal never reaches the target: vmshim sees it first (a signal-delivery stop) and
/// suppresses it. Must equal the shim's `hooks::ptrace::RELEASE_MAGIC`.
pub const RELEASE_MAGIC: u64 = u64::from_le_bytes(*b"vmshimRL");
/// Sent the same way once the target's own PTRACE_TRACEME succeeded: vmshim, its parent, is its
/// tracer again (and was told nothing by the kernel); at this stop it sets its options again, so
/// the exit stop and the kernel's map at exit are not lost. Must equal the shim's.
pub const RETAKEN_MAGIC: u64 = u64::from_le_bytes(*b"vmshimRT");
/// The signal that carries [`RELEASE_MAGIC`] and [`RETAKEN_MAGIC`].
pub const RELEASE_SIGNAL: libc::c_int = libc::SIGWINCH;

/// Runs the target to completion under ptrace (main thread only) and reports how it ended.
///
/// The target behaves as if vmshim were not there:
/// - SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1/2, SIGALRM and SIGTSTP sent to vmshim by `kill`
///   are passed on to the target; the ones a terminal sends to the whole foreground group
///   (SI_KERNEL) reach the target by themselves and are passed on only if the target left
///   vmshim's process group.
/// - A stop (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU, from anyone) that stops the target stops vmshim
///   too, with the same signal, so the shell sees the job stop; when vmshim is continued it
///   continues the target.
/// - A target that asks to be traced (PTRACE_TRACEME, through the shim's `ptrace` hook) is let go
///   first, so the request succeeds as it would without vmshim; vmshim, its parent, is then its
///   tracer as the request says, and keeps capturing its exit.
///
/// vmshim traces with `PTRACE_TRACEME` (a tracee stopped at exec before its first instruction),
/// so a group-stop is a ptrace-stop that only vmshim can end: a SIGCONT sent to the target alone,
/// not to vmshim or its process group, does not resume the main thread until vmshim is resumed.
pub fn launch(l: &Launch) -> Result<Outcome, LaunchError> {
    let blocked = BlockedSignals::enter()?;
    let child_mask = blocked.original;

    let mut watcher = match l.watch {
        Some(vmshim) => Some(
            crate::launch::watch::Watcher::start(vmshim, l.traces, l.on_capture.clone())
                .map_err(|e| LaunchError::Io(format!("cannot start the exit watcher: {e}")))?,
        ),
        None => None,
    };
    let watch_fd = watcher.as_ref().map_or(-1, |w| w.target_fd());

    let mut command = Command::new(l.program);
    command.args(l.args);
    command.envs(l.env.iter().map(|(k, v)| (k, v)));
    let hold = l.hold;
    let in_child = move || {
        // SAFETY: PTRACE_TRACEME takes no pointers; it makes the parent thread our tracer, so
        // that exec stops us with SIGTRAP before the target's first instruction.
        if hold && unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0usize, 0usize) } == -1 {
            return Err(io::Error::last_os_error());
        }
        // The target starts with the signal mask vmshim was started with, not vmshim's.
        // SAFETY: child_mask is a copy of a sigset_t that sigprocmask filled.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &child_mask, std::ptr::null_mut()) };
        // Last, so that nothing of vmshim's own set-up is filtered.
        if watch_fd >= 0 {
            crate::launch::watch::install_in_child(watch_fd);
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec, where only async-signal-safe calls
    // are allowed: it makes plain system calls (ptrace, sigprocmask, seccomp, sendmsg) on values
    // captured by copy and on stack data, and neither allocates nor takes a lock.
    unsafe { command.pre_exec(in_child) };
    let spawned = command.spawn();
    if let Some(w) = watcher.as_mut() {
        w.spawned();
    }
    let child = spawned.map_err(|e| LaunchError::Io(format!("cannot start {}: {e}", l.program.display())))?;
    // `child` is not waited through std: its waitpid lacks __WALL and does not know ptrace stops.
    let pid = child.id() as libc::pid_t;
    drop(child);
    if let Some(spawned) = l.spawned {
        spawned.store(pid as u32, std::sync::atomic::Ordering::Release);
    }

    let mut tracer = Tracer::new(pid, &blocked, l.hold);
    // `VMSHIM_RUN=<id>`, which every process of the tree inherits: how its processes are found.
    tracer.marker = l.env.iter().find(|(k, _)| k == "VMSHIM_RUN").map(|(k, v)| {
        let mut m = k.as_bytes().to_vec();
        m.push(b'=');
        m.extend_from_slice(v.as_bytes());
        m
    });
    let traced = tracer.run();
    let left_running = match (&traced, &watcher) {
        (Ok(_), Some(w)) => !tracer.follow_tree(w),
        _ => false,
    };
    let Tracer { final_smaps, final_at, names, .. } = tracer;
    drop(blocked);
    let raw_status = traced?;
    let (watched, mut exits) = match watcher {
        Some(w) => {
            let (state, exits) = w.finish();
            (Some(state), exits)
        }
        None => (None, Vec::new()),
    };
    // The target's map at exit: the ptrace exit stop's, unless the watcher caught the same pid
    // later (an exec from another thread replaced the traced leader, whose exit stop then showed
    // the old image) or ptrace caught nothing.
    let (mut final_smaps, mut thread_names, mut final_statm) = (final_smaps, names, None);
    let last_own = exits.iter().rposition(|c| c.pid == pid as u32);
    if let Some(i) = last_own
        && (final_smaps.is_none() || exits[i].mono_ns > final_at)
        && !exits[i].smaps.is_empty()
    {
        let c = exits.remove(i);
        (final_smaps, thread_names) = (Some(c.smaps), c.thread_names);
        final_statm = Some(c.statm).filter(|s| !s.is_empty());
    } else if let Some(i) = last_own {
        exits.remove(i);
    }
    let (how, exit_code) = describe_status(raw_status);
    Ok(Outcome {
        pid: pid as u32,
        raw_status,
        how,
        exit_code,
        final_smaps,
        final_statm,
        thread_names,
        watched,
        exits,
        left_running,
    })
}

/// The wait loop's state.
struct Tracer<'a> {
    pid: libc::pid_t,
    signals: &'a BlockedSignals,
    /// Whether vmshim traces the main thread now (not when asked not to hold it, nor after it
    /// let go of it until the shim says it is traced again).
    traced: bool,
    /// Whether PTRACE_SETOPTIONS was done since vmshim (re)became the tracer.
    options_set: bool,
    /// The first stop after spawn is exec's SIGTRAP, which is vmshim's own.
    first_stop: bool,
    final_smaps: Option<Vec<u8>>,
    /// CLOCK_MONOTONIC when `final_smaps` was read.
    final_at: u64,
    names: Vec<(u32, String)>,
    /// `VMSHIM_RUN=<id>` as found in the environment of the tree's processes.
    marker: Option<Vec<u8>>,
}

impl<'a> Tracer<'a> {
    fn new(pid: libc::pid_t, signals: &'a BlockedSignals, hold: bool) -> Tracer<'a> {
        Tracer {
            pid,
            signals,
            traced: hold,
            options_set: false,
            first_stop: true,
            final_smaps: None,
            final_at: 0,
            names: Vec::new(),
            marker: None,
        }
    }

    /// Waits on the tracee until it exits or dies, capturing smaps at its main thread's exit
    /// stop, and passes signals sent to vmshim on to it.
    fn run(&mut self) -> Result<i32, LaunchError> {
        loop {
            // Every status that is there now, then wait for a signal: SIGCHLD for the next one,
            // or one to pass on. The timeout covers a SIGCHLD taken by another thread of this
            // process (the unit tests launch from several threads at once).
            loop {
                let mut status = 0;
                let flags = libc::__WALL | libc::WNOHANG | libc::WUNTRACED | libc::WCONTINUED;
                // SAFETY: status is a live, writable int; pid is our own child.
                let r = unsafe { libc::waitpid(self.pid, &mut status, flags) };
                if r == 0 {
                    break;
                }
                if r == -1 {
                    let err = io::Error::last_os_error();
                    if err.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(LaunchError::Io(format!("waiting for process {}: {err}", self.pid)));
                }
                if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                    return Ok(status);
                }
                // After a PTRACE_TRACEME of its own the target is vmshim's tracee again.
                if libc::WIFSTOPPED(status) && !self.traced && tracer_of(self.pid) == Some(std::process::id())
                {
                    self.traced = true;
                }
                if libc::WIFSTOPPED(status) && self.traced {
                    self.stopped(status)?;
                } else if libc::WIFSTOPPED(status) {
                    // Untraced, a stop is a plain group-stop: stop with it, continue it after.
                    stop_self(libc::WSTOPSIG(status));
                    resume_stopped_threads(self.pid);
                }
            }
            if let Some(info) = self.signals.wait(Duration::from_millis(100)) {
                self.signalled(&info);
            }
        }
    }

    /// One ptrace stop of the main thread: decide what it is and resume it (or not).
    fn stopped(&mut self, status: i32) -> Result<(), LaunchError> {
        let pid = self.pid;
        let sig = libc::WSTOPSIG(status);
        let event = (status >> 16) & 0xff;
        if !self.options_set {
            self.options_set = true;
            let options = libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_EXITKILL | libc::PTRACE_O_TRACEEXEC;
            ptrace_request(libc::PTRACE_SETOPTIONS, pid, options as usize)
                .map_err(|e| LaunchError::Io(format!("ptrace(SETOPTIONS) on {pid}: {e}")))?;
        }
        let inject = if std::mem::take(&mut self.first_stop) {
            // The first stop is the SIGTRAP that PTRACE_TRACEME makes exec send; it is ours and
            // is swallowed. (A signal that arrived between fork and exec would come first, and
            // then the exec reports PTRACE_EVENT_EXEC instead.)
            if sig == libc::SIGTRAP && event == 0 { 0 } else { sig }
        } else if event == libc::PTRACE_EVENT_EXIT {
            self.capture();
            0
        } else if event == libc::PTRACE_EVENT_EXEC {
            // A new program image: what was captured belongs to the old one.
            (self.final_smaps, self.names) = (None, Vec::new());
            0
        } else if event != 0 {
            0
        } else {
            match signal_stop_now(pid) {
                // The shim's word that the target's PTRACE_TRACEME made vmshim its tracer again
                // (options were set again above): suppressed, never seen by the target.
                SignalStop::Retaken => 0,
                SignalStop::Release => {
                    // The shim asks on the target's behalf: detach, suppressing the signal.
                    self.options_set = false;
                    self.traced = false;
                    return match ptrace_request(libc::PTRACE_DETACH, pid, 0) {
                        Ok(()) => Ok(()),
                        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
                        Err(e) => Err(LaunchError::Io(format!("ptrace(DETACH) on {pid}: {e}"))),
                    };
                }
                // Deliver the signal as if no one were watching (the kernel keeps its siginfo
                // when the same signal is passed back).
                SignalStop::Delivery => sig,
                SignalStop::Group => {
                    // The target is stopped; stop vmshim the same way, so whoever waits on
                    // vmshim (the shell) sees the stop, and resume the target when vmshim is
                    // resumed.
                    stop_self(sig);
                    resume_stopped_threads(pid);
                    0
                }
                SignalStop::Exiting => {
                    self.capture();
                    0
                }
                // Woken by SIGKILL; its next stop, if any, is the exit stop: wait for it rather
                // than risk resuming it unseen.
                SignalStop::Left => return Ok(()),
            }
        };
        match ptrace_request(libc::PTRACE_CONT, pid, inject as usize) {
            Ok(()) => Ok(()),
            // Killed meanwhile (SIGKILL does not wait for us): waitpid will say so.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            Err(e) => Err(LaunchError::Io(format!("ptrace(CONT) on {pid}: {e}"))),
        }
    }

    /// The map and thread names at the main thread's exit stop.
    fn capture(&mut self) {
        (self.final_smaps, self.names) = (read_smaps(self.pid), thread_names(self.pid));
        self.final_at = crate::launch::watch::monotonic_ns();
    }

    /// After the target has exited: waits for the rest of its tree (fork children, daemons) to
    /// exit, as the watcher sees it, passing signals sent to vmshim on to every process of the
    /// tree. A second such signal ends the wait (the watcher goes on serving the processes left).
    /// True if the tree is done.
    fn follow_tree(&self, watcher: &crate::launch::watch::Watcher) -> bool {
        let started = std::time::Instant::now();
        let mut said = false;
        let mut told = 0;
        while !watcher.done() {
            if !said && started.elapsed() > Duration::from_millis(500) {
                said = true;
                let left = tree_processes(self.pid, self.marker.as_deref());
                eprintln!(
                    "vmshim: process {} exited; waiting for the {} process{} of its tree still running ({}); \
                     Ctrl-C or SIGTERM to vmshim passes the signal on, a second one stops the wait",
                    self.pid,
                    left.len(),
                    if left.len() == 1 { "" } else { "es" },
                    left.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(" ")
                );
            }
            let Some(info) = self.signals.wait(Duration::from_millis(20)) else { continue };
            let sig = info.si_signo;
            if sig == libc::SIGCHLD || sig == libc::SIGCONT {
                continue;
            }
            told += 1;
            if told > 1 && matches!(sig, libc::SIGINT | libc::SIGTERM | libc::SIGHUP | libc::SIGQUIT) {
                return false;
            }
            for p in tree_processes(self.pid, self.marker.as_deref()) {
                // SAFETY: kill takes no pointers; p was a process of the tree a moment ago.
                unsafe { libc::kill(p as libc::pid_t, sig) };
            }
        }
        true
    }

    /// A signal sent to vmshim while the target runs.
    fn signalled(&self, info: &libc::siginfo_t) {
        let sig = info.si_signo;
        if sig == libc::SIGCHLD || sig == libc::SIGCONT {
            return;
        }
        // A terminal sends SIGINT, SIGQUIT, SIGTSTP (and SIGHUP on hang-up) to its whole
        // foreground process group, the target included, with si_code SI_KERNEL: passing those
        // on would deliver them twice, unless the target left vmshim's process group.
        // SAFETY: getpgid takes a pid and returns a number.
        let same_group = unsafe { libc::getpgid(self.pid) == libc::getpgid(0) };
        if info.si_code == libc::SI_KERNEL && same_group {
            return;
        }
        // SAFETY: kill takes no pointers; pid is our child, not reaped before the loop ends.
        unsafe { libc::kill(self.pid, sig) };
    }
}

/// The processes of the target's tree that are still running: those whose environment at exec
/// holds `marker` (`VMSHIM_RUN=<id>`, which vmshim gave the target and its tree inherits) and
/// that are not zombies. A process that exec'd with a cleaned environment is not found.
fn tree_processes(top: libc::pid_t, marker: Option<&[u8]>) -> Vec<u32> {
    let Some(id) = marker else { return Vec::new() };
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut out: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| p != top as u32 && p != std::process::id())
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let alive = stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z'));
            alive
                && std::fs::read(format!("/proc/{p}/environ"))
                    .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == id))
        })
        .collect();
    out.sort_unstable();
    out
}

/// The `TracerPid:` of a process.
fn tracer_of(pid: libc::pid_t) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("TracerPid:")).and_then(|v| v.trim().parse().ok())
}

/// Stops this process with `sig` (a stop signal, default action), the way the target stopped;
/// returns once something continues it.
pub(crate) fn stop_self(sig: libc::c_int) {
    let sig = if matches!(sig, libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU) { sig } else { libc::SIGSTOP };
    let mut dfl = zeroed_sigaction();
    dfl.sa_sigaction = libc::SIG_DFL;
    let mut old = zeroed_sigaction();
    // SAFETY: sigemptyset/sigaddset fill a local sigset_t; sigaction and pthread_sigmask take
    // pointers to live values; raise stops this process, which continues on SIGCONT. The old
    // disposition and mask are restored before returning.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::sigaction(sig, &dfl, &mut old);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::sigaction(sig, &old, std::ptr::null_mut());
    }
}

/// After vmshim was continued: the target's other threads are still stopped unless the SIGCONT
/// went to the whole process group; send it one if any of them is.
fn resume_stopped_threads(pid: libc::pid_t) {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return };
    let stopped = dir.filter_map(Result::ok).any(|task| {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // The state follows the command name in parentheses, which may itself hold ')'.
        stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('T'))
    });
    if stopped {
        // SAFETY: kill takes no pointers; pid is our child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGCONT) };
    }
}

/// [`FORWARDED`], SIGCHLD and SIGCONT: what the launching thread waits for.
fn waited_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in FORWARDED.into_iter().chain([libc::SIGCHLD, libc::SIGCONT]) {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// Spawns a scoped thread with [`FORWARDED`], SIGCHLD and SIGCONT blocked in it (the mask a new
/// thread starts with is its creator's, set here for the spawn only): those signals must reach
/// the launching thread's wait ([`BlockedSignals::wait`]), and a thread that left them open would
/// take a Ctrl-C meant for the target and die of it, with vmshim.
pub(crate) fn spawn_blocked<'scope, T: Send + 'scope>(
    s: &'scope std::thread::Scope<'scope, '_>,
    name: &str,
    f: impl FnOnce() -> T + Send + 'scope,
) -> io::Result<std::thread::ScopedJoinHandle<'scope, T>> {
    with_waited_signals_blocked(|| std::thread::Builder::new().name(name.into()).spawn_scoped(s, f))?
}

/// As [`spawn_blocked`], for a thread outside any scope.
pub(crate) fn spawn_blocked_unscoped<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<std::thread::JoinHandle<T>> {
    with_waited_signals_blocked(|| std::thread::Builder::new().name(name.into()).spawn(f))?
}

/// Runs `f` (which starts a thread) with the signals vmshim waits for blocked in this thread,
/// so that the new thread inherits them blocked.
fn with_waited_signals_blocked<R>(f: impl FnOnce() -> R) -> io::Result<R> {
    let set = waited_signals();
    // SAFETY: sigset_t is plain data; pthread_sigmask reads `set` and writes the old mask into
    // `old`, which the second call restores.
    unsafe {
        let mut old: libc::sigset_t = std::mem::zeroed();
        let r = libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        let out = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        Ok(out)
    }
}

/// While alive, the launching thread has [`FORWARDED`], SIGCHLD and SIGCONT blocked, to take
/// them with [`BlockedSignals::wait`]; dropping it takes what is still pending (so that a
/// Ctrl-C that already reached the target does not kill vmshim before it reports) and restores
/// the mask.
pub(crate) struct BlockedSignals {
    set: libc::sigset_t,
    /// The thread's mask before: what the target starts with.
    pub(crate) original: libc::sigset_t,
}

impl BlockedSignals {
    pub(crate) fn enter() -> Result<BlockedSignals, LaunchError> {
        let set = waited_signals();
        // SAFETY: sigset_t is plain data; pthread_sigmask reads `set` and writes the old mask
        // into `original`.
        unsafe {
            let mut original: libc::sigset_t = std::mem::zeroed();
            let r = libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut original);
            if r != 0 {
                return Err(LaunchError::Io(format!("pthread_sigmask: {}", io::Error::from_raw_os_error(r))));
            }
            Ok(BlockedSignals { set, original })
        }
    }

    /// The next blocked signal, waiting at most `timeout`.
    pub(crate) fn wait(&self, timeout: Duration) -> Option<libc::siginfo_t> {
        let ts = libc::timespec { tv_sec: timeout.as_secs() as _, tv_nsec: timeout.subsec_nanos() as _ };
        let mut info = std::mem::MaybeUninit::<libc::siginfo_t>::uninit();
        // SAFETY: set is initialised; info points at one siginfo_t; ts is a live timespec.
        let r = unsafe { libc::sigtimedwait(&self.set, info.as_mut_ptr(), &ts) };
        // SAFETY: a positive return means the kernel filled info.
        (r > 0).then(|| unsafe { info.assume_init() })
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        while self.wait(Duration::ZERO).is_some() {}
        // SAFETY: restores the mask pthread_sigmask returned in enter().
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.original, std::ptr::null_mut()) };
    }
}

/// Reads smaps at the main thread's exit stop: it is exiting (its own exit, an exit_group from any
/// thread, or a fatal signal) but has not yet released the address space. Empty means the address
/// space was already gone, which counts as not captured.
pub(crate) fn read_smaps(pid: libc::pid_t) -> Option<Vec<u8>> {
    Some(read_proc(&format!("/proc/{pid}/smaps"))).filter(|text| !text.is_empty())
}

/// A /proc file's text, read with large reads and nothing else: `fs::read` asks statx and lseek
/// for a size that /proc does not give, then starts with small reads, while the exiting process
/// waits (issue 12: the exit watcher's and the exit stop's read). Empty when it cannot be read.
///
/// The reads go into this thread's scratch buffer, kept from one call to the next, and only the
/// text is copied out: a fresh 64 KiB buffer per read (zeroed, grown to 128 KiB to see the end
/// of the file) was fresh memory each time, about 40 µs of page faults for a 30-byte statm
/// while the exiting process waited (48 µs against 8 µs, measured in the watcher).
pub(crate) fn read_proc(path: &str) -> Vec<u8> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let Ok(mut f) = std::fs::File::open(path) else { return vec![] };
    SCRATCH.with_borrow_mut(|buf| {
        if buf.is_empty() {
            buf.resize(64 << 10, 0);
        }
        let mut at = 0;
        loop {
            if at == buf.len() {
                buf.resize(2 * at, 0);
            }
            match f.read(&mut buf[at..]) {
                Ok(0) | Err(_) => return buf[..at].to_vec(),
                Ok(n) => at += n,
            }
        }
    })
}

/// A /proc file of one line (`stat`, `statm`), as [`read_proc`] reads it but for the read that finds
/// its end: the kernel makes such a file whole at its first read, which returns it all when it
/// fits, so a first read that ends in a newline is the file (one system call less while an
/// exiting process waits; issue 12). Anything else is read on to the end.
pub(crate) fn read_proc_line(path: &str) -> Vec<u8> {
    let Ok(mut f) = std::fs::File::open(path) else { return vec![] };
    let mut line = [0u8; 1024];
    match f.read(&mut line) {
        Ok(n) if n > 0 && n < line.len() && line[n - 1] == b'\n' => line[..n].to_vec(),
        Ok(n) => {
            let mut all = line[..n].to_vec();
            let _ = f.read_to_end(&mut all);
            all
        }
        Err(_) => vec![],
    }
}

/// The names (`comm`) of the threads still there at the exit stop; threads that already left
/// (an exit_group reaps the others first) are missing.
pub(crate) fn thread_names(pid: libc::pid_t) -> Vec<(u32, String)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    dir.filter_map(|e| {
        let tid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let name = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
        Some((tid, name.trim_end().to_string()))
    })
    .collect()
}

/// A ptrace request whose data argument is a number (options, a signal) and whose addr is unused.
fn ptrace_request(request: libc::c_uint, pid: libc::pid_t, data: usize) -> io::Result<()> {
    // SAFETY: SETOPTIONS and CONT read `data` as a number and ignore `addr`; no memory is passed.
    let r = unsafe { libc::ptrace(request, pid, 0usize, data) };
    if r == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// What a stop reported with a signal and no event is, asked at the moment of asking.
enum SignalStop {
    /// A signal is being delivered: pass it on.
    Delivery,
    /// The shim's request to let go of the target ([`RELEASE_MAGIC`]).
    Release,
    /// The shim's word that vmshim traces the target again ([`RETAKEN_MAGIC`]).
    Retaken,
    /// The stop signal already took effect (ptrace(2), "Group-stop": no siginfo, EINVAL).
    Group,
    /// No longer that stop: SIGKILL (e.g. another thread's exit_group) woke the tracee and it has
    /// already reached its PTRACE_EVENT_EXIT stop.
    Exiting,
    /// No longer stopped at all: SIGKILL woke it and it is on its way out.
    Left,
}

/// Classifies a signal stop by its siginfo. The question matters because SIGKILL ends a ptrace
/// stop without the tracer: a PTRACE_CONT meant for the signal stop would otherwise resume the
/// exit stop that followed it, and the smaps capture would be lost. (A window remains between this
/// call and the PTRACE_CONT; it is a few system calls wide.)
fn signal_stop_now(pid: libc::pid_t) -> SignalStop {
    let mut info = std::mem::MaybeUninit::<libc::siginfo_t>::uninit();
    // SAFETY: GETSIGINFO writes one siginfo_t to `data`, which points at one; `addr` is unused.
    let r = unsafe { libc::ptrace(libc::PTRACE_GETSIGINFO, pid, 0usize, info.as_mut_ptr()) };
    if r == -1 {
        return match io::Error::last_os_error().raw_os_error() {
            Some(libc::EINVAL) => SignalStop::Group,
            _ => SignalStop::Left,
        };
    }
    // SAFETY: the call succeeded, so the kernel filled the siginfo.
    let info = unsafe { info.assume_init() };
    // An event stop's siginfo is SIGTRAP with si_code = SIGTRAP | event << 8 (ptrace(2)).
    if info.si_signo == libc::SIGTRAP && info.si_code == libc::SIGTRAP | libc::PTRACE_EVENT_EXIT << 8 {
        SignalStop::Exiting
    } else if info.si_signo == RELEASE_SIGNAL
        && info.si_code == libc::SI_QUEUE
        // SAFETY: a queued signal's siginfo holds the sender's pid and value.
        && unsafe { info.si_pid() == pid && info.si_value().sival_ptr as u64 == RELEASE_MAGIC }
    {
        SignalStop::Release
    } else if info.si_signo == RELEASE_SIGNAL
        && info.si_code == libc::SI_QUEUE
        // SAFETY: as above.
        && unsafe { info.si_pid() == pid && info.si_value().sival_ptr as u64 == RETAKEN_MAGIC }
    {
        SignalStop::Retaken
    } else {
        SignalStop::Delivery
    }
}

/// The words for a wait status, and the exit code that passes it through (128+signal, as shells do).
pub(crate) fn describe_status(status: i32) -> (String, i32) {
    if libc::WIFEXITED(status) {
        let code = libc::WEXITSTATUS(status);
        (format!("exited {code}"), code)
    } else if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        let core = if libc::WCOREDUMP(status) { " (core dumped)" } else { "" };
        (format!("killed by {}{core}", signal_name(sig)), 128 + sig)
    } else {
        (format!("unknown wait status {status:#x}"), 1)
    }
}

/// The name a user knows a signal by: "SIGKILL", "SIGRTMIN+3".
fn signal_name(sig: i32) -> String {
    const NAMES: &[(i32, &str)] = &[
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGQUIT, "SIGQUIT"),
        (libc::SIGILL, "SIGILL"),
        (libc::SIGTRAP, "SIGTRAP"),
        (libc::SIGABRT, "SIGABRT"),
        (libc::SIGBUS, "SIGBUS"),
        (libc::SIGFPE, "SIGFPE"),
        (libc::SIGKILL, "SIGKILL"),
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGPIPE, "SIGPIPE"),
        (libc::SIGALRM, "SIGALRM"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGSTKFLT, "SIGSTKFLT"),
        (libc::SIGCHLD, "SIGCHLD"),
        (libc::SIGCONT, "SIGCONT"),
        (libc::SIGSTOP, "SIGSTOP"),
        (libc::SIGTSTP, "SIGTSTP"),
        (libc::SIGTTIN, "SIGTTIN"),
        (libc::SIGTTOU, "SIGTTOU"),
        (libc::SIGURG, "SIGURG"),
        (libc::SIGXCPU, "SIGXCPU"),
        (libc::SIGXFSZ, "SIGXFSZ"),
        (libc::SIGVTALRM, "SIGVTALRM"),
        (libc::SIGPROF, "SIGPROF"),
        (libc::SIGWINCH, "SIGWINCH"),
        (libc::SIGIO, "SIGIO"),
        (libc::SIGPWR, "SIGPWR"),
        (libc::SIGSYS, "SIGSYS"),
    ];
    if let Some((_, name)) = NAMES.iter().find(|(n, _)| *n == sig) {
        return (*name).to_owned();
    }
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    match sig {
        s if s == min => "SIGRTMIN".to_owned(),
        s if s > min && s <= max => format!("SIGRTMIN+{}", s - min),
        s => format!("signal {s}"),
    }
}

fn zeroed_sigaction() -> libc::sigaction {
    // SAFETY: sigaction is plain data (a handler number, a mask, flags); all-zero is SIG_DFL with
    // an empty mask.
    unsafe { std::mem::zeroed() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    /// Longest any test target may run before the test fails instead of hanging.
    const TIMEOUT: Duration = Duration::from_secs(60);

    /// A directory of its own for one test, removed when dropped.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new(name: &str) -> TestDir {
            let dir = std::env::temp_dir().join(format!("vmshim-launch-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TestDir(dir)
        }
        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Runs a tool that builds a test target and fails the test with its output if it fails.
    fn build(tool: &str, args: &[&OsStr], dir: &Path) {
        let out = Command::new(tool).args(args).current_dir(dir).output().unwrap_or_else(|e| {
            panic!("cannot run `{tool}`, which this test needs to build its target: {e}")
        });
        assert!(
            out.status.success(),
            "`{tool} {args:?}` failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `launch` on a thread of its own (the tracer must stay one thread from spawn to reap)
    /// and fails the test if the target is not done within TIMEOUT.
    fn run(program: &Path, args: &[&OsStr]) -> Outcome {
        run_with_env(program, args, Vec::new())
    }

    fn run_with_env(program: &Path, args: &[&OsStr], env: Vec<(OsString, OsString)>) -> Outcome {
        let program = program.to_owned();
        let args: Vec<OsString> = args.iter().map(|a| a.to_os_string()).collect();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let l = Launch {
                program: &program,
                args: &args,
                env,
                hold: true,
                watch: None,
                traces: None,
                spawned: None,
                on_capture: None,
            };
            let _ = tx.send(launch(&l).map_err(|e| e.to_string()));
        });
        match rx.recv_timeout(TIMEOUT) {
            Ok(result) => result.unwrap_or_else(|e| panic!("launch failed: {e}")),
            Err(_) => panic!("the target did not finish within {TIMEOUT:?}"),
        }
    }

    /// The smaps entries as (start, end, header line, body).
    fn smaps_regions(smaps: &[u8]) -> Vec<(u64, u64, String, String)> {
        let text = String::from_utf8_lossy(smaps);
        let mut regions: Vec<(u64, u64, String, String)> = Vec::new();
        for line in text.lines() {
            let range = line.split(' ').next().unwrap_or("");
            let parsed = range.split_once('-').and_then(|(a, b)| {
                Some((u64::from_str_radix(a, 16).ok()?, u64::from_str_radix(b, 16).ok()?))
            });
            match parsed {
                Some((start, end)) => regions.push((start, end, line.to_owned(), String::new())),
                None => {
                    let last = regions.last_mut().expect("smaps starts with a header line");
                    last.3.push_str(line);
                    last.3.push('\n');
                }
            }
        }
        regions
    }

    /// A "Name:   N kB" line of one smaps entry, in bytes.
    fn smaps_field_bytes(body: &str, name: &str) -> Option<u64> {
        let line = body.lines().find(|l| l.split(':').next() == Some(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    fn page_size() -> u64 {
        // SAFETY: sysconf only reads a configuration value.
        unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
    }

    #[test]
    fn exit_code_passes_through() {
        let code = 3;
        let script = format!("exit {code}");
        let out = run(Path::new("/bin/sh"), &["-c".as_ref(), script.as_ref()]);
        assert_eq!(out.exit_code, code);
        assert_eq!(out.how, format!("exited {code}"));
        assert!(libc::WIFEXITED(out.raw_status));
        assert!(out.final_smaps.is_some(), "sh exits from its main thread: smaps is captured");

        // The environment is the inherited one plus Launch::env.
        let is_shell_name = |name: &OsStr| {
            let name = name.as_bytes();
            !name.is_empty()
                && !name[0].is_ascii_digit()
                && name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_')
        };
        let inherited = std::env::vars_os()
            .find(|(name, _)| is_shell_name(name))
            .expect("the test runs with some environment");
        let added = (OsString::from("VMSHIM_LAUNCH_TEST_CODE"), OsString::from((code + 1).to_string()));
        let script = format!(
            "test \"${}\" = \"$1\" || exit 1; exit \"$VMSHIM_LAUNCH_TEST_CODE\"",
            inherited.0.to_str().expect("a UTF-8 variable name")
        );
        let args: [&OsStr; 4] = ["-c".as_ref(), script.as_ref(), "sh".as_ref(), &inherited.1];
        let out = run_with_env(Path::new("/bin/sh"), &args, vec![added]);
        assert_eq!(out.how, format!("exited {}", code + 1));
    }

    #[test]
    fn interrupts_reach_the_target() {
        // vmshim blocks SIGINT while the target runs; the target must start with the mask and
        // disposition this process had (SIGINT default, unless the test was started with it
        // ignored, as under nohup).
        let mut now = zeroed_sigaction();
        // SAFETY: a null new action only queries the current one into `now`.
        unsafe { libc::sigaction(libc::SIGINT, std::ptr::null(), &mut now) };
        let out = run(Path::new("/bin/sh"), &["-c".as_ref(), "kill -INT $$; exit 0".as_ref()]);
        if now.sa_sigaction == libc::SIG_IGN {
            assert_eq!(out.how, "exited 0");
        } else {
            assert_eq!(out.how, "killed by SIGINT");
            assert_eq!(out.exit_code, 128 + libc::SIGINT);
        }
    }

    /// The target maps `pages` pages between two PROT_NONE guards (so the kernel cannot merge the
    /// region with a neighbour), writes the address to a file and exits without unmapping.
    const MAP_PAGES_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long pages = atol(argv[1]);
    long page = sysconf(_SC_PAGESIZE);
    char *guarded = mmap(NULL, (pages + 2) * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (guarded == MAP_FAILED) return 10;
    char *region = mmap(guarded + page, pages * page, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (region == MAP_FAILED) return 11;
    for (long i = 0; i < pages; i++) region[i * page] = 1;
    FILE *f = fopen(argv[2], "w");
    if (!f) return 12;
    fprintf(f, "%lx\n", (unsigned long)region);
    fclose(f);
    return 0;
}
"#;

    #[test]
    fn smaps_is_captured_before_the_address_space_goes() {
        let dir = TestDir::new("smaps");
        std::fs::write(dir.path("map_pages.c"), MAP_PAGES_C).unwrap();
        build("gcc", &["-O1".as_ref(), "-o".as_ref(), "map_pages".as_ref(), "map_pages.c".as_ref()], &dir.0);

        // Distinctive: no library or heap region of this program is 37 pages long.
        let pages: u64 = 37;
        let addr_file = dir.path("addr");
        let out = run(&dir.path("map_pages"), &[pages.to_string().as_ref(), addr_file.as_os_str()]);
        assert_eq!(out.how, "exited 0");
        assert_eq!(out.exit_code, 0);

        let addr_text = std::fs::read_to_string(&addr_file).unwrap();
        let addr = u64::from_str_radix(addr_text.trim(), 16).unwrap();
        let smaps = out.final_smaps.expect("smaps captured at the exit stop");
        let regions = smaps_regions(&smaps);
        let region = regions
            .iter()
            .find(|r| r.0 == addr)
            .unwrap_or_else(|| panic!("no region at {addr:#x} in the captured smaps"));
        let bytes = pages * page_size();
        assert_eq!(region.1 - region.0, bytes, "region {}", region.2);
        assert!(region.2.contains(" rw-p "), "region {}", region.2);
        // Every page was touched, so all of it is resident.
        assert_eq!(smaps_field_bytes(&region.3, "Rss"), Some(bytes), "region {}", region.2);
        // The process is gone now, which is why the capture had to happen at the exit stop.
        assert!(!Path::new(&format!("/proc/{}", out.pid)).exists());
    }

    #[test]
    fn a_sigkill_from_outside_is_reported() {
        let dir = TestDir::new("sigkill");
        let pid_file = dir.path("pid");
        // `exec` keeps the pid, so the test also goes through a PTRACE_EVENT_EXEC stop.
        let script = format!("echo $$ > {}; exec sleep 30", pid_file.display());
        let killer = std::thread::spawn(move || {
            let deadline = Instant::now() + TIMEOUT;
            let pid = loop {
                let text = std::fs::read_to_string(&pid_file).unwrap_or_default();
                if let Ok(pid) = text.trim().parse::<libc::pid_t>() {
                    break pid;
                }
                assert!(Instant::now() < deadline, "the target never wrote its pid");
                std::thread::sleep(Duration::from_millis(10));
            };
            std::thread::sleep(Duration::from_millis(200));
            // SAFETY: kill takes no pointers; pid is the target, which cannot be reaped (and its
            // pid reused) before launch's waitpid returns.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
            pid
        });
        let started = Instant::now();
        let out = run(Path::new("/bin/sh"), &["-c".as_ref(), script.as_ref()]);
        let killed_pid = killer.join().unwrap();
        assert_eq!(out.pid, killed_pid as u32);
        assert_eq!(out.how, "killed by SIGKILL");
        assert_eq!(out.exit_code, 128 + libc::SIGKILL);
        assert!(libc::WIFSIGNALED(out.raw_status));
        assert!(started.elapsed() < Duration::from_secs(30), "sleep ran to the end");
    }

    /// Starts goroutines on threads of their own, records how many threads the process has, and
    /// exits with os.Exit(0) from `main` (on the main thread, which init locked) or from a
    /// goroutine on another thread (argv[2] = "thread"): Go's exit is a raw exit_group either way.
    const GO_MAIN: &str = r#"package main

import (
	"os"
	"runtime"
	"strings"
	"sync"
)

func init() { runtime.LockOSThread() } // keeps main on the process's main thread

func threads() string {
	status, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "Threads:") {
			return strings.TrimSpace(strings.TrimPrefix(line, "Threads:"))
		}
	}
	return "?"
}

func main() {
	var ready sync.WaitGroup
	block := make(chan struct{})
	for i := 0; i < 4; i++ {
		ready.Add(1)
		go func() {
			runtime.LockOSThread()
			ready.Done()
			<-block
		}()
	}
	ready.Wait()
	exit := func() {
		os.WriteFile(os.Args[1], []byte(threads()), 0o644)
		os.Exit(0)
	}
	if len(os.Args) > 2 && os.Args[2] == "thread" {
		go func() { runtime.LockOSThread(); exit() }()
		<-block
	}
	exit()
}
"#;

    #[test]
    fn a_go_program_exiting_with_exit_group() {
        let dir = TestDir::new("go");
        // With cgo (dynamically linked: what vmshim traces) and without (statically linked: launch
        // itself does not care, resolve_target refuses it).
        for (name, cgo) in [("cgo", true), ("purego", false)] {
            let src = dir.path(name);
            std::fs::create_dir(&src).unwrap();
            let main = if cgo {
                GO_MAIN.replacen("import (", "import \"C\"\nimport (", 1)
            } else {
                GO_MAIN.to_owned()
            };
            std::fs::write(src.join("main.go"), main).unwrap();
            std::fs::write(src.join("go.mod"), format!("module {name}\n\ngo 1.19\n")).unwrap();
            let out = Command::new("go")
                .args(["build", "-o", name, "."])
                .env("CGO_ENABLED", if cgo { "1" } else { "0" })
                .current_dir(&src)
                .output()
                .unwrap_or_else(|e| {
                    panic!("cannot run `go`, which this test needs to build its target: {e}")
                });
            assert!(out.status.success(), "go build {name}: {}", String::from_utf8_lossy(&out.stderr));
            let program = src.join(name);
            match (cgo, resolve_target(program.as_os_str())) {
                (true, Ok(_)) | (false, Err(LaunchError::NotDynamic { .. })) => {}
                (_, other) => panic!("resolve_target on the {name} build: {other:?}"),
            }

            for exit_from in ["main", "thread"] {
                let what = format!("{name} build, exit from {exit_from}");
                let threads_file = dir.path(&format!("threads-{name}-{exit_from}"));
                let out = run(&program, &[threads_file.as_os_str(), exit_from.as_ref()]);
                assert_eq!(out.how, "exited 0", "{what}");
                assert_eq!(out.exit_code, 0, "{what}");
                let threads: usize = std::fs::read_to_string(&threads_file).unwrap().parse().unwrap();
                // The main thread and 4 locked goroutines at least.
                assert!(threads > 4, "{what}: only {threads} threads");
                let smaps = out.final_smaps.unwrap_or_else(|| panic!("{what}: no smaps captured"));
                let binary = std::fs::canonicalize(&program).unwrap();
                assert!(
                    smaps_regions(&smaps).iter().any(|r| r.2.ends_with(&*binary.to_string_lossy())),
                    "{what}: the captured smaps does not map {}",
                    binary.display()
                );
            }
        }
    }

    #[test]
    fn resolve_target_refuses_what_ld_preload_cannot_reach() {
        let dir = TestDir::new("resolve");
        std::fs::write(dir.path("tiny.c"), "int main(void) { return 0; }\n").unwrap();
        build("gcc", &["-static".as_ref(), "-o".as_ref(), "static".as_ref(), "tiny.c".as_ref()], &dir.0);
        build("gcc", &["-o".as_ref(), "dynamic".as_ref(), "tiny.c".as_ref()], &dir.0);

        let static_bin = dir.path("static");
        match resolve_target(static_bin.as_os_str()) {
            Err(LaunchError::NotDynamic { path, .. }) => assert_eq!(path, static_bin),
            other => panic!("static binary: {other:?}"),
        }
        let dynamic = dir.path("dynamic");
        assert_eq!(resolve_target(dynamic.as_os_str()).unwrap(), dynamic);

        let setuid = dir.path("setuid");
        std::fs::copy(&dynamic, &setuid).unwrap();
        let mode = std::fs::metadata(&setuid).unwrap().permissions().mode();
        std::fs::set_permissions(&setuid, std::fs::Permissions::from_mode(mode | libc::S_ISUID)).unwrap();
        // Issue 11: setuid to oneself (root running a setuid-root file) keeps ruid == euid, so
        // AT_SECURE is 0 and LD_PRELOAD applies: accepted.
        assert_eq!(resolve_target(setuid.as_os_str()).unwrap(), setuid, "setuid to its own user");
        // Setuid to another user is secure execution: refused. Root gives the copy to nobody;
        // anyone else has the system's setuid-root `su` for it.
        use std::os::unix::fs::MetadataExt;
        let other = if std::os::unix::fs::chown(&setuid, Some(65534), None).is_ok() {
            std::fs::set_permissions(&setuid, std::fs::Permissions::from_mode(mode | libc::S_ISUID)).unwrap();
            setuid.clone()
        } else {
            PathBuf::from("/bin/su")
        };
        let meta = std::fs::metadata(&other).unwrap();
        // SAFETY: getuid takes nothing and cannot fail.
        assert_ne!(meta.uid(), unsafe { libc::getuid() }, "{} is someone else's", other.display());
        assert_ne!(meta.permissions().mode() & libc::S_ISUID, 0, "{} is setuid", other.display());
        match resolve_target(other.as_os_str()) {
            Err(LaunchError::SetId { path }) => assert_eq!(path, other),
            other => panic!("setuid to another user: {other:?}"),
        }

        // Issue 11: a file that is neither ELF nor `#!` runs under /bin/sh (execvp's ENOEXEC
        // rule), which is dynamic: accepted.
        let plain = dir.path("plain-script");
        std::fs::write(&plain, "exit 0\n").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(resolve_target(plain.as_os_str()).unwrap(), plain);

        // A script runs its interpreter: one that is static is refused, naming the interpreter.
        let script = dir.path("script");
        std::fs::write(&script, format!("#!{} -x\n", static_bin.display())).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        match resolve_target(script.as_os_str()) {
            Err(LaunchError::NotDynamic { path, .. }) => assert_eq!(path, static_bin),
            other => panic!("script with a static interpreter: {other:?}"),
        }

        let true_path = resolve_target("true".as_ref()).unwrap();
        assert_eq!(true_path.file_name().unwrap(), "true");
        assert!(true_path.is_absolute() || true_path.starts_with("."), "{}", true_path.display());

        let missing = format!("vmshim-no-such-command-{}", std::process::id());
        match resolve_target(missing.as_ref()) {
            Err(LaunchError::NotFound(name)) => assert_eq!(name, missing),
            other => panic!("missing command: {other:?}"),
        }
    }
}
