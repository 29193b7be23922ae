//! Issue 12 with real programs: nginx's master and its two workers (which switch to nobody),
//! and Python's `multiprocessing.Pool(4)`. Every process is in the run's report, and each one's
//! own trace is explained against the kernel's map at its exit to within 0.1%.

use crate::common::report::Report;
use crate::common::*;
use crate::under_vmshim::{TIMEOUT, category_bytes};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The JSON report of each trace in `dir` whose name starts with `prefix`, by pid; of several
/// images of one pid, the one that carries the kernel's map at exit.
fn reports_by_pid(dir: &Path, prefix: &str) -> Vec<(u32, PathBuf, Report)> {
    let mut out: Vec<(u32, PathBuf, Report)> = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if !p.file_name().unwrap().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let r = run_with_timeout(Command::new(vmshim_bin()).arg("report").arg("--json").arg(&p), TIMEOUT);
        // A trace that gives no report is passed over; one that does must be vmshim-report/1.
        let Ok(report) = serde_json::from_slice::<Value>(&r.stdout) else { continue };
        let report = typed_report(&report);
        let pid = report.process.pid;
        let has_map = report.vsz.kernel_final_bytes.is_some();
        match out.iter_mut().find(|(q, _, _)| *q == pid) {
            Some(slot) if has_map => *slot = (pid, p, report),
            Some(_) => {}
            None => out.push((pid, p, report)),
        }
    }
    out
}

/// Each process's own report reconciles with the kernel's map at its exit and leaves at most
/// 0.1% unattributed.
fn assert_explained(pid: u32, path: &Path, report: &Report) {
    let kernel = report
        .vsz
        .kernel_final_bytes
        .unwrap_or_else(|| panic!("pid {pid} ({}): no kernel map at exit: {:?}", path.display(), report.vsz));
    assert_eq!(report.vsz.final_bytes, kernel, "pid {pid}: the report's VSZ is the kernel's");
    let unattributed = category_bytes(report, "unattributed");
    assert!(
        unattributed * 1000 <= kernel,
        "pid {pid} ({}): {unattributed} of {kernel} bytes unattributed",
        path.display()
    );
}

/// The pids whose parent is `ppid`, from /proc.
fn children_of(ppid: u32) -> Vec<u32> {
    let mut out: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            stat.rsplit_once(") ").and_then(|(_, rest)| rest.split(' ').nth(1)?.parse::<u32>().ok())
                == Some(ppid)
        })
        .collect();
    out.sort_unstable();
    out
}

fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:")?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(u32::MAX)
}

fn wait_exit(child: &mut std::process::Child, secs: u64) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("vmshim did not finish within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// nginx with two workers and the default `user` (nobody, as root): the master and both workers
/// are in the run's process list with their parent links, and each is explained >= 99.9%
/// against its own map at exit; nothing is written on the target's stderr.
#[test]
fn nginx_master_and_workers_that_switch_to_nobody_are_each_listed_and_explained() {
    let dir = TestDir::new("real_nginx");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let d = dir.path().display();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "worker_processes 2;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\nevents {{ worker_connections 64; }}\n\
             http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
             server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"ok\\n\"; }} }} }}\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(vmshim_bin())
        .current_dir(dir.path())
        .args(["run", "--json", "--report", "r.json", "--out", "t.trace", "--", "/usr/sbin/nginx", "-p"])
        .arg(dir.path())
        .args(["-c", "nginx.conf", "-e", "error.log", "-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Serving: the workers are up.
    let deadline = Instant::now() + Duration::from_secs(TIMEOUT);
    let answer = loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            let mut a = String::new();
            s.read_to_string(&mut a).unwrap();
            break a;
        }
        assert!(Instant::now() < deadline, "nginx never listened on {port}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(answer.ends_with("ok\n"), "{answer}");
    let comm = |p: &u32| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
    let master: Vec<u32> =
        children_of(child.id()).into_iter().filter(|p| comm(p).trim() == "nginx").collect();
    assert_eq!(master.len(), 1, "vmshim runs one master: {master:?}");
    let master = master[0];
    let workers = children_of(master);
    assert_eq!(workers.len(), 2, "{workers:?}");
    for &w in &workers {
        assert_eq!(uid_of(w), 65534, "worker {w} runs as nobody");
    }
    // A graceful stop, as `nginx -s quit` sends it, to vmshim: passed on to the master.
    send_signal(child.id() as i32, libc::SIGQUIT);
    let status = wait_exit(&mut child, TIMEOUT);
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(err, "", "nothing on the target's stderr");

    let report = read_report(&dir.join("r.json"));
    assert_eq!(report.process.pid, master);
    let listed: Vec<(u32, u32)> =
        report.processes.iter().map(|p| (p.pid, p.ppid)).filter(|(p, _)| *p != master).collect();
    let mut want: Vec<(u32, u32)> = workers.iter().map(|&w| (w, master)).collect();
    want.sort_unstable();
    let mut got = listed.clone();
    got.sort_unstable();
    assert_eq!(got, want, "the workers, each with the master as parent");
    let traces = reports_by_pid(dir.path(), "t.trace");
    for pid in std::iter::once(master).chain(workers.iter().copied()) {
        let (_, path, r) =
            traces.iter().find(|(p, _, _)| *p == pid).unwrap_or_else(|| panic!("no trace of pid {pid}"));
        assert_explained(pid, path, r);
    }
}

/// `multiprocessing.Pool(4)`: the four workers (fork children that only compute) are listed
/// under the parent and each is explained >= 99.9% against its map at exit.
#[test]
fn a_python_pool_of_four_lists_every_worker_and_explains_each() {
    let dir = TestDir::new("real_pool");
    let script = "import multiprocessing as mp, os\n\
                  def f(x):\n    return os.getpid()\n\
                  if __name__ == '__main__':\n\
                  \x20   mp.set_start_method('fork')\n\
                  \x20   p = mp.Pool(4)\n\
                  \x20   seen = set(p.map(f, range(64), chunksize=1))\n\
                  \x20   print('workers', ' '.join(str(w.pid) for w in p._pool), flush=True)\n\
                  \x20   p.close()\n\
                  \x20   p.join()\n";
    std::fs::write(dir.join("pool.py"), script).unwrap();
    let out = run_with_timeout(
        Command::new(vmshim_bin()).current_dir(dir.path()).args([
            "run",
            "--json",
            "--report",
            "r.json",
            "--out",
            "t.trace",
            "--",
            "/usr/bin/python3",
            "pool.py",
        ]),
        TIMEOUT,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(err, "", "nothing on the target's stderr");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let workers: Vec<u32> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("workers "))
        .expect("the workers line")
        .split(' ')
        .map(|w| w.parse().unwrap())
        .collect();
    assert_eq!(workers.len(), 4);
    let report = read_report(&dir.join("r.json"));
    let top = report.process.pid;
    let rows = &report.processes;
    for &w in &workers {
        let row = rows.iter().find(|p| p.pid == w).unwrap_or_else(|| panic!("worker {w}: {rows:#?}"));
        assert_eq!(row.ppid, top, "worker {w}'s parent");
    }
    let traces = reports_by_pid(dir.path(), "t.trace");
    for pid in std::iter::once(top).chain(workers.iter().copied()) {
        let (_, path, r) =
            traces.iter().find(|(p, _, _)| *p == pid).unwrap_or_else(|| panic!("no trace of pid {pid}"));
        assert_explained(pid, path, r);
    }
}
