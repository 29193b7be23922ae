//! Issue 11, item 1 (the shim's side): the trace path never destroys anything. A name taken by
//! something that is not a file (a FIFO, a directory, a device, a socket) is refused with one
//! warning and the target runs untraced; a trace the shim created but could not set up is not
//! left behind.

use crate::common::*;
use crate::under_vmshim::*;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `footprint 1000 0` (bare with `out` None, else under the shim with VMSHIM_OUT=out).
fn footprint(dir: &TestDir, out: Option<&Path>) -> Output {
    let mut cmd = Command::new(build_c("footprint"));
    cmd.args(["1000", "0"]).current_dir(dir.path());
    if let Some(out) = out {
        cmd.env("LD_PRELOAD", shim_lib()).env("VMSHIM_OUT", out);
    }
    run_with_timeout(&mut cmd, TIMEOUT)
}

/// What the target printed, less its memory figures (which the shim changes by design).
fn calls_line(out: &Output) -> String {
    let s = String::from_utf8_lossy(&out.stdout);
    s.split(" rss ").next().unwrap_or("").to_string()
}

/// Every name under `dir` (recursively) with its (inode, mode, size, mtime).
fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, u32, u64, i64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        out.push((p.clone(), m.ino(), m.mode(), m.size(), m.mtime_nsec() + m.mtime() * 1_000_000_000));
        if m.is_dir() {
            out.extend(snapshot(&p));
        }
    }
    out.sort();
    out
}

fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// Issue 11: VMSHIM_OUT=/dev/full wrote a 12 MB `/dev/full.1` and a directory got `DIR.1`. A
/// FIFO, a directory, a character device (a node for /dev/null made in the test directory, so
/// the test never writes to /dev) and a socket at VMSHIM_OUT are each refused with one line
/// naming the kind; the target's output and exit status are as bare, and nothing is created or
/// changed.
#[test]
fn issue_11_a_trace_path_taken_by_a_fifo_directory_device_or_socket_is_refused_untouched() {
    let dir = TestDir::new("out_path_not_a_file");
    let bare = footprint(&dir, None);
    assert!(bare.status.success());
    let fifo = dir.join("fifo");
    // SAFETY: a valid NUL-terminated path; mkfifo and mknod only create the named node.
    assert_eq!(unsafe { libc::mkfifo(c_path(&fifo).as_ptr(), 0o600) }, 0);
    let sub = dir.join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("keep"), b"data").unwrap();
    let null = dir.join("null");
    // SAFETY: as above; (1, 3) is the null device, so even a write to it would change nothing.
    assert_eq!(unsafe { libc::mknod(c_path(&null).as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) }, 0);
    let sock = dir.join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();

    for (path, kind) in
        [(&fifo, "a FIFO"), (&sub, "a directory"), (&null, "a character device"), (&sock, "a socket")]
    {
        let before = snapshot(dir.path());
        let out = footprint(&dir, Some(path));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), bare.status.code(), "{kind}: {stderr}");
        assert_eq!(calls_line(&out), calls_line(&bare), "{kind}: the target ran as bare");
        assert_eq!(
            stderr,
            format!(
                "vmshim: VMSHIM_OUT={} is {kind}, not a trace file; the program runs on untraced\n",
                path.display()
            ),
            "one warning naming the kind"
        );
        assert_eq!(snapshot(dir.path()), before, "{kind}: nothing created or changed");
    }
}

/// Issue 11: a trace the shim created but could not set up (fallocate fails on a full file
/// system) was left behind as a 0-byte file. On a full 1 MiB tmpfs the target runs as bare and
/// the file system holds only what it held before.
#[test]
fn issue_11_a_full_file_system_leaves_no_empty_trace_behind() {
    let dir = TestDir::new("out_path_full_fs");
    let mnt = dir.join("mnt");
    let _fs = Tmpfs::mount(mnt.clone(), "1m");
    // Fill it: writes until ENOSPC.
    {
        use std::io::Write;
        let mut f = std::fs::File::create(mnt.join("filler")).unwrap();
        let chunk = vec![1u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
    }
    let bare = footprint(&dir, None);
    let before = snapshot(&mnt);
    let out = footprint(&dir, Some(&mnt.join("t.trace")));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), bare.status.code(), "{stderr}");
    assert_eq!(calls_line(&out), calls_line(&bare), "the target ran as bare");
    assert!(stderr.contains("cannot create the trace file"), "one warning: {stderr}");
    assert_eq!(snapshot(&mnt), before, "no stray trace file");
}
