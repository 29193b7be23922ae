//! rustprog: a Rust target for vmshim, built by the tests with plain `rustc -O`.
//!
//! Exercises std's thread spawning (pthread_create with Rust's own 2 MiB default stack) and
//! malloc in fresh threads (each thread's first allocation makes glibc create an arena). The
//! two worker threads, named `worker-0` and `worker-1`, each allocate and touch a 1 MiB Vec,
//! then stay alive (blocked on a barrier) through the handshake.
//!
//! Usage: rustprog
//! Stdout, flushed before the handshake:
//!   thread <i> tid <tid> name worker-<i>
//!   ready <pid>
//! Then reads one byte (or EOF) from stdin and exits 0 with the workers still blocked.

use std::io::{Read, Write};
use std::sync::{Arc, Barrier, mpsc};
use std::thread;

/// The kernel's id of the calling thread, from the `/proc/thread-self` link (`<pid>/task/<tid>`).
fn gettid() -> u32 {
    let link = std::fs::read_link("/proc/thread-self").expect("read /proc/thread-self");
    let tid = link.file_name().expect("tid in /proc/thread-self").to_string_lossy().into_owned();
    tid.parse().expect("numeric tid")
}

fn main() {
    const WORKERS: usize = 2;
    let release = Arc::new(Barrier::new(WORKERS + 1));
    let (started, tids) = mpsc::channel();
    let handles: Vec<_> = (0..WORKERS)
        .map(|i| {
            let release = Arc::clone(&release);
            let started = started.clone();
            thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    let block = vec![i as u8 + 1; 1 << 20];
                    started.send((i, gettid())).expect("main is listening");
                    release.wait();
                    block.iter().map(|&b| b as usize).sum::<usize>()
                })
                .expect("spawn worker")
        })
        .collect();
    let mut reported: Vec<(usize, u32)> = tids.iter().take(WORKERS).collect();
    reported.sort();

    let mut out = std::io::stdout().lock();
    for (i, tid) in reported {
        writeln!(out, "thread {i} tid {tid} name worker-{i}").unwrap();
    }
    writeln!(out, "ready {}", std::process::id()).unwrap();
    out.flush().unwrap();
    drop(out);

    let mut byte = [0u8; 1];
    let _ = std::io::stdin().read(&mut byte); // a byte or EOF: either ends the wait
    // Leave with the workers still blocked and through _exit: joining them, or std's exit
    // path, unmaps the threads' and main's signal stacks, and the address space at exit would
    // no longer be the one the test read at the handshake.
    drop((release, handles));
    unsafe extern "C" {
        fn _exit(code: i32) -> !;
    }
    // SAFETY: _exit(2) ends the process at once; nothing here needs to run after it.
    unsafe { _exit(0) }
}
