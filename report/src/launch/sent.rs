//! `vmshim run`'s end of the run's socket ([`vmshim_trace::sent`]): the Start records of the
//! fork children that sent theirs instead of creating a trace file (shim/src/record/fork.rs).
//! Each is held until the child is known to be done with it: when a capture of its pid arrives
//! (the child, or the program it exec'd, leaving) or when the tree is gone (a child killed by a
//! signal). Then its trace is written as the shim would have written it, where the shim would
//! have named it, unless the child created its own (it recorded, or changed its credentials):
//! a trace of that pid whose Start names the same fork.
//!
//! The socket is a datagram socket in the abstract namespace, non-blocking: a child never waits
//! for vmshim (a full queue fails its send, and it creates its trace as before), and a thread of
//! vmshim's takes each datagram as it comes. Only datagrams whose sender the kernel names
//! (SO_PASSCRED) as the process the record is of, or as a process of vmshim's own user, are
//! taken.

#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::{Arc, Mutex};
use vmshim_trace::decode::{Event, Start};

/// One child's Start record as it came: decoded, and its bytes (what its trace holds: the record
/// the child would have written, its `trace_path` empty since no file of its was ever mapped).
pub struct Sent {
    pub start: Start,
    pub record: Vec<u8>,
}

/// The records taken so far, by pid, and the buffer each datagram is received into.
struct Held {
    by_pid: HashMap<u32, Vec<Sent>>,
    buf: Vec<u8>,
}

/// The bound socket and the records it has given so far.
pub struct Sink {
    fd: OwnedFd,
    held: Mutex<Held>,
    /// Set once the tree is gone: the draining thread stops.
    stop: AtomicBool,
}

/// How long the draining thread waits in poll before it looks at `stop` again.
const POLL_MS: i32 = 50;

impl Sink {
    /// Binds the socket of run `run_id`; None when it cannot (the children then create their
    /// traces as without it: `VMSHIM_SINK` is not given).
    pub fn bind(run_id: u64) -> Option<Sink> {
        // SAFETY: plain system calls; the descriptor is owned from here.
        let fd = unsafe {
            libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0)
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = vmshim_trace::sent::name(run_id);
        // SAFETY: sockaddr_un is plain data.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, &b) in addr.sun_path.iter_mut().zip(&name) {
            *d = b as libc::c_char;
        }
        let len = (std::mem::size_of::<libc::sa_family_t>() + name.len()) as libc::socklen_t;
        let one: libc::c_int = 1;
        // A queue deep enough for the forks of a busy tree between two captures (as far as the
        // limits let an unprivileged vmshim go; root forces it).
        let bytes: libc::c_int = 8 << 20;
        let int = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `addr` and the option values outlive the calls, with the lengths given.
        let ok = unsafe {
            libc::bind(fd.as_raw_fd(), (&addr as *const libc::sockaddr_un).cast(), len) == 0
                && libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_PASSCRED,
                    (&one as *const libc::c_int).cast(),
                    int,
                ) == 0
        };
        if !ok {
            return None;
        }
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
            // SAFETY: as above.
            if unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&bytes as *const libc::c_int).cast(),
                    int,
                )
            } == 0
            {
                break;
            }
        }
        let held = Held { by_pid: HashMap::new(), buf: vec![0u8; 64 << 10] };
        Some(Sink { fd, held: Mutex::new(held), stop: AtomicBool::new(false) })
    }

    /// Starts the thread that takes each datagram as it comes: a datagram socket's queue holds
    /// only `net.unix.max_dgram_qlen` datagrams (10 by default), and a child whose send finds it
    /// full creates its trace file after all. It stops at [`Sink::take_all`].
    pub fn drain_while_the_tree_runs(self: &Arc<Sink>) -> std::io::Result<std::thread::JoinHandle<()>> {
        let sink = self.clone();
        // With the signals vmshim waits for blocked, as its other threads: a SIGTERM for the tree
        // must not end vmshim in this thread.
        crate::launch::spawn_blocked_unscoped("vmshim-sink", move || {
            while !sink.stop.load(Acquire) {
                let mut p = libc::pollfd { fd: sink.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                // SAFETY: one pollfd, alive for the call.
                if unsafe { libc::poll(&mut p, 1, POLL_MS) } > 0 {
                    let announced = match sink.held.lock() {
                        Ok(mut held) => sink.drain(&mut held),
                        Err(_) => Vec::new(),
                    };
                    // Out of the lock: a capture may be taking its records meanwhile.
                    for pid in announced {
                        crate::launch::watch::look_up_ahead(pid);
                    }
                }
            }
        })
    }

    /// Takes every datagram waiting on the socket into `held`; the pids they came for.
    fn drain(&self, held: &mut Held) -> Vec<u32> {
        let Held { by_pid, buf } = held;
        let mut pids = Vec::new();
        loop {
            let Some((n, sender)) = self.receive(buf) else { return pids };
            let Some(start) = decode(&buf[..n]) else { continue };
            // The process the record is of, or one of this user's (a child in a pid namespace
            // of its own names itself by that namespace's pid, as its own trace would).
            // SAFETY: geteuid only reads the caller's credentials.
            let ours = sender.is_some_and(|(pid, uid)| pid == start.pid || uid == unsafe { libc::geteuid() });
            if !ours || start.fork.is_none() {
                continue;
            }
            pids.push(start.pid);
            by_pid.entry(start.pid).or_default().push(Sent { start, record: buf[..n].to_vec() });
        }
    }

    /// One datagram into `buf`: its length and the sender's pid and uid (None when the kernel
    /// did not say); None when none is waiting.
    fn receive(&self, buf: &mut [u8]) -> Option<(usize, Option<(u32, u32)>)> {
        // Room for one SCM_CREDENTIALS message.
        let mut control = [0u64; 8];
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // SAFETY: msghdr is plain data.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: recvmsg writes at most the lengths `msg` gives into `buf` and `control`.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            return None;
        }
        if msg.msg_flags & libc::MSG_TRUNC != 0 {
            return Some((0, None));
        }
        let mut sender = None;
        // SAFETY: the CMSG_* macros walk the control buffer recvmsg filled, within its length.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_CREDENTIALS {
                    let cred = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::ucred>());
                    sender = Some((cred.pid as u32, cred.uid));
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        Some((n as usize, sender))
    }

    /// The records held for `pid` of forks before `mono_ns` (a capture's time), taken.
    pub fn take_before(&self, pid: u32, mono_ns: u64) -> Vec<Sent> {
        let Ok(mut held) = self.held.lock() else { return Vec::new() };
        self.drain(&mut held);
        let Some(of_pid) = held.by_pid.get_mut(&pid) else { return Vec::new() };
        let (done, keep): (Vec<Sent>, Vec<Sent>) =
            of_pid.drain(..).partition(|s| s.start.fork.as_ref().is_some_and(|f| f.mono_ns < mono_ns));
        *of_pid = keep;
        if of_pid.is_empty() {
            held.by_pid.remove(&pid);
        }
        done
    }

    /// Every record held, taken (the tree is gone), oldest first; the draining thread stops.
    pub fn take_all(&self) -> Vec<Sent> {
        self.stop.store(true, Release);
        let Ok(mut held) = self.held.lock() else { return Vec::new() };
        self.drain(&mut held);
        let mut all: Vec<Sent> = held.by_pid.drain().flat_map(|(_, v)| v).collect();
        all.sort_by_key(|s| s.start.mono_ns);
        all
    }
}

/// The Start record a datagram holds (one whole encoded record), if it is one.
fn decode(record: &[u8]) -> Option<Start> {
    let mut bytes =
        crate::launch::recorder::out::header((vmshim_trace::HEADER_SIZE + record.len()) as u64).to_vec();
    bytes.extend_from_slice(record);
    let trace = vmshim_trace::parse(&bytes).ok()?;
    match trace.events.into_iter().next()? {
        Event::Start(s) => Some(s),
        _ => None,
    }
}
