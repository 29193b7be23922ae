//! [`Kind::Start`]: who the process is, written once by the shim as its trace opens (in the
//! constructor, or in the fork for a fork child's trace).
//!
//! Body: pid u32, ppid u32, page_size u32, 0 u32, mono_ns u64, real_ns u64, exe str,
//! trace_path str, argc u32, argv str..., run_id u64, origin u32 (0 exec, 1 fork), and for
//! origin 1: parent_tid u32, fork_mono_ns u64, frames (the forking call's stack). A trace
//! written before run_id existed ends after argv (at most 7 bytes of padding follow) and reads
//! as run_id 0, no fork.

use crate::encode::Encoder;
use crate::reader::Reader;
use crate::{Error, Kind};

/// The longest executable path, trace path and argument a Start record keeps (each is cut).
pub const MAX_STRING: usize = 4096;

/// `Start::fork`'s origin word: the image started from exec.
pub const ORIGIN_EXEC: u32 = 0;
/// `Start::fork`'s origin word: the trace was created in a fork child.
pub const ORIGIN_FORK: u32 = 1;

/// Process identity, from the shim's constructor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Start {
    pub pid: u32,
    pub ppid: u32,
    pub page_size: u32,
    pub mono_ns: u64,
    pub real_ns: u64,
    pub exe: String,
    /// Where the shim wrote this trace; its mappings of the file are the shim's own.
    pub trace_path: String,
    pub argv: Vec<String>,
    /// The run this process belongs to: `VMSHIM_RUN` parsed as hex, set by `vmshim run` for
    /// every process of the tree; 0 when it was unset or malformed (or the trace predates it).
    pub run_id: u64,
    /// Set when the trace was created inside fork, in the child (origin 1); `None` for an image
    /// that started from exec (origin 0), or a trace written before the field existed.
    pub fork: Option<Fork>,
}

/// How a fork child came to be, noted in the parent as fork was called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fork {
    /// The parent's thread that called fork.
    pub parent_tid: u32,
    /// CLOCK_MONOTONIC when fork was called: the clock of `Start::mono_ns` and call records.
    pub mono_ns: u64,
    /// The forking call's stack: absolute return addresses in the parent (and child, which
    /// shares its image), innermost first, as in call records.
    pub stack: Vec<u64>,
}

/// The command line of a [`StartRecord`].
#[derive(Clone, Copy, Debug)]
pub enum Argv<'a> {
    /// As `/proc/PID/cmdline` holds it: each argument NUL-terminated, back to back. Bytes after
    /// the last NUL (an argument cut by a short read) are left out.
    Cmdline(&'a [u8]),
    /// One string per argument.
    List(&'a [String]),
}

/// What [`encode`] writes, borrowed from the caller.
#[derive(Clone, Copy, Debug)]
pub struct StartRecord<'a> {
    pub pid: u32,
    pub ppid: u32,
    pub page_size: u32,
    pub mono_ns: u64,
    pub real_ns: u64,
    pub exe: &'a [u8],
    pub trace_path: &'a [u8],
    pub argv: Argv<'a>,
    pub run_id: u64,
    /// `None`: started from exec. Some: a fork child's trace.
    pub fork: Option<ForkRecord<'a>>,
}

/// [`Fork`], borrowed.
#[derive(Clone, Copy, Debug)]
pub struct ForkRecord<'a> {
    pub parent_tid: u32,
    pub mono_ns: u64,
    /// Innermost first, at most [`crate::MAX_FRAMES`] are kept.
    pub stack: &'a [u64],
}

/// Encodes `s` into `buf`; the record's length, or `None` if it does not fit. Strings are cut to
/// [`MAX_STRING`] bytes.
#[inline]
pub fn encode(buf: &mut [u8], s: &StartRecord<'_>) -> Option<usize> {
    let mut e = Encoder::new(buf, Kind::Start);
    e.put_u32(s.pid);
    e.put_u32(s.ppid);
    e.put_u32(s.page_size);
    e.put_u32(0);
    e.put_u64(s.mono_ns);
    e.put_u64(s.real_ns);
    e.put_str(s.exe, MAX_STRING);
    e.put_str(s.trace_path, MAX_STRING);
    match s.argv {
        Argv::Cmdline(cmd) => {
            let argc = cmd.iter().filter(|&&b| b == 0).count();
            e.put_u32(argc as u32);
            for a in cmd.split(|&b| b == 0).take(argc) {
                e.put_str(a, MAX_STRING);
            }
        }
        Argv::List(args) => {
            e.put_u32(args.len() as u32);
            for a in args {
                e.put_str(a.as_bytes(), MAX_STRING);
            }
        }
    }
    e.put_u64(s.run_id);
    match s.fork {
        None => e.put_u32(ORIGIN_EXEC),
        Some(f) => {
            e.put_u32(ORIGIN_FORK);
            e.put_u32(f.parent_tid);
            e.put_u64(f.mono_ns);
            e.put_frames(f.stack);
        }
    }
    e.finish()
}

pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Start, Error> {
    let pid = r.u32()?;
    let ppid = r.u32()?;
    let page_size = r.u32()?;
    r.u32()?;
    let mono_ns = r.u64()?;
    let real_ns = r.u64()?;
    let exe = r.string()?;
    let trace_path = r.string()?;
    let argc = r.u32()? as usize;
    // Each argument takes at least 4 bytes, which bounds argc by the record's size.
    if argc > r.buf.len() / 4 {
        return Err(r.err(format!("argc {argc} exceeds what the record can hold")));
    }
    let argv = (0..argc).map(|_| r.string()).collect::<Result<_, _>>()?;
    // Older traces end here; their record padding is under 8 bytes, shorter than run_id and
    // origin together.
    let (run_id, fork) = if r.left() < 12 {
        (0, None)
    } else {
        let run_id = r.u64()?;
        let fork = match r.u32()? {
            ORIGIN_EXEC => None,
            ORIGIN_FORK => Some(Fork { parent_tid: r.u32()?, mono_ns: r.u64()?, stack: r.frames()? }),
            o => return Err(r.err(format!("unknown process origin {o}"))),
        };
        (run_id, fork)
    };
    Ok(Start { pid, ppid, page_size, mono_ns, real_ns, exe, trace_path, argv, run_id, fork })
}

impl Start {
    /// The record this value encodes to (a trace written before run_id existed re-encodes with
    /// run id 0 from exec).
    pub fn record(&self) -> StartRecord<'_> {
        StartRecord {
            pid: self.pid,
            ppid: self.ppid,
            page_size: self.page_size,
            mono_ns: self.mono_ns,
            real_ns: self.real_ns,
            exe: self.exe.as_bytes(),
            trace_path: self.trace_path.as_bytes(),
            argv: Argv::List(&self.argv),
            run_id: self.run_id,
            fork: self.fork.as_ref().map(|f| ForkRecord {
                parent_tid: f.parent_tid,
                mono_ns: f.mono_ns,
                stack: &f.stack,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::{body_of, round_trip};

    fn sample(argv: &[String], fork: Option<Fork>) -> Start {
        Start {
            pid: 1234,
            ppid: 1,
            page_size: 4096,
            mono_ns: 111,
            real_ns: 222,
            exe: "/bin/true".into(),
            trace_path: "/tmp/t.trace".into(),
            argv: argv.to_vec(),
            run_id: 0x0123_4567_89ab_cdef,
            fork,
        }
    }

    #[test]
    fn round_trips_exec_and_fork_starts() {
        for n in 0..9 {
            let args: Vec<String> = (0..n).map(|i| "a".repeat(i + 1)).collect();
            round_trip(&sample(&args, None), |b, s| encode(b, &s.record()), decode);
            let fork = Fork { parent_tid: 4321, mono_ns: 99, stack: vec![7, 8, 9] };
            round_trip(&sample(&args, Some(fork)), |b, s| encode(b, &s.record()), decode);
        }
    }

    #[test]
    fn a_cmdline_encodes_as_its_list_of_arguments() {
        let list = sample(&["ls".into(), "-l".into(), String::new()], None);
        let mut cmd = list.record();
        cmd.argv = Argv::Cmdline(b"ls\0-l\0\0cut-by-a-short-read");
        let (mut a, mut b) = ([0u8; 512], [0u8; 512]);
        let (na, nb) = (encode(&mut a, &list.record()), encode(&mut b, &cmd));
        assert_eq!(na, nb);
        assert_eq!(a[..na.unwrap()], b[..nb.unwrap()]);
    }

    /// Issue 12: a Start written before run id and origin existed still reads, as run 0 from
    /// exec, whatever padding its argv left.
    #[test]
    fn an_old_start_without_run_id_reads_as_run_zero_from_exec() {
        for n in 0..9 {
            let args: Vec<String> = (0..n).map(|i| "a".repeat(i + 1)).collect();
            let mut buf = [0u8; 512];
            let mut e = Encoder::new(&mut buf, Kind::Start);
            for v in [1234, 1, 4096, 0] {
                e.put_u32(v);
            }
            e.put_u64(111);
            e.put_u64(222);
            e.put_str(b"/bin/true", MAX_STRING);
            e.put_str(b"/tmp/t.trace", MAX_STRING);
            e.put_u32(n as u32);
            for a in &args {
                e.put_str(a.as_bytes(), MAX_STRING);
            }
            let len = e.finish().unwrap();
            let old = decode(&mut Reader::new(body_of(&buf[..len]), 0)).unwrap();
            assert_eq!(old, Start { run_id: 0, ..sample(&args, None) }, "{n} args");
        }
    }

    #[test]
    fn an_unknown_origin_is_an_error() {
        let mut buf = [0u8; 512];
        let mut e = Encoder::new(&mut buf, Kind::Start);
        for v in [1, 1, 4096, 0] {
            e.put_u32(v);
        }
        e.put_u64(0);
        e.put_u64(0);
        e.put_str(b"", 0);
        e.put_str(b"", 0);
        e.put_u32(0);
        e.put_u64(1);
        e.put_u32(7);
        let len = e.finish().unwrap();
        let err = decode(&mut Reader::new(body_of(&buf[..len]), 0)).unwrap_err();
        assert!(err.message.contains("unknown process origin 7"), "{err}");
    }
}
