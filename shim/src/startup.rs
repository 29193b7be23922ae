//! What the shim records once, when it starts: who the process is, the address space it finds
//! (`/proc/self/maps`: the executable, libraries, brk heap, main stack, vdso — everything mapped
//! before the shim could watch), and the loaded modules with their build ids so the report can
//! symbolize offline. Runs in the constructor (or the first hook, if another library's
//! constructor maps memory first); reads with raw system calls into stack buffers, no malloc.

use crate::{syscall as sys, writer};
use vmshim_trace::{Encoder, Kind, MapsSource};

const START_BUF: usize = 24 << 10;
const MAPS_CHUNK: usize = 16 << 10;

pub fn record_all() {
    record_start();
    record_config();
    record_maps();
    crate::modules::record_new(None);
}

fn record_start() {
    let mut exe = [0u8; 4096];
    let exe_len = sys::readlink(b"/proc/self/exe\0", &mut exe).max(0) as usize;
    let mut cmdline = [0u8; 16 << 10];
    let cmd_len = read_file(b"/proc/self/cmdline\0", &mut cmdline);
    let cmd = &cmdline[..cmd_len];
    let mut buf = [0u8; START_BUF];
    let mut e = Encoder::new(&mut buf, Kind::Start);
    e.put_u32(writer::own_pid());
    e.put_u32(sys::getppid());
    // SAFETY: sysconf only reads a constant for _SC_PAGESIZE.
    e.put_u32(unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u32);
    e.put_u32(0);
    e.put_u64(sys::monotonic_ns());
    e.put_u64(sys::realtime_ns());
    e.put_str(&exe[..exe_len], 4096);
    e.put_str(writer::path(), 4096);
    // cmdline is NUL-terminated arguments back to back.
    let argc = cmd.iter().filter(|&&b| b == 0).count();
    e.put_u32(argc as u32);
    for a in cmd.split(|&b| b == 0).take(argc) {
        e.put_str(a, 4096);
    }
    if let Some(len) = e.finish() {
        writer::append(&buf[..len]);
    }
}

/// What steers name resolution, as `key=value` lines: the first line of a file that starts
/// with a keyword, and environment variables that glibc's or Go's resolver reads.
fn record_config() {
    let mut text = [0u8; 4096];
    let mut n = 0;
    let mut put = |parts: &[&[u8]]| {
        for p in parts {
            let p = &p[..p.len().min(text.len() - n)];
            text[n..n + p.len()].copy_from_slice(p);
            n += p.len();
        }
    };
    let mut file = [0u8; 8192];
    for (key, path, word) in [
        (b"nsswitch.hosts=".as_slice(), b"/etc/nsswitch.conf\0".as_slice(), b"hosts:".as_slice()),
        (b"resolv.options=", b"/etc/resolv.conf\0", b"options"),
    ] {
        let len = read_file(path, &mut file);
        let line = file[..len].split(|&b| b == b'\n').find(|l| l.starts_with(word));
        if let Some(l) = line {
            let value = l[word.len()..].trim_ascii();
            put(&[key, value, b"\n"]);
        }
    }
    for var in ["GODEBUG", "LOCALDOMAIN", "RES_OPTIONS", "HOSTALIASES"] {
        if let Some(v) = crate::config::getenv(var) {
            put(&[b"env.", var.as_bytes(), b"=", v, b"\n"]);
        }
    }
    let mut buf = [0u8; 4096 + 64];
    let mut e = Encoder::new(&mut buf, Kind::Config);
    e.put_str(&text[..n], 4096);
    if let Some(len) = e.finish() {
        writer::append(&buf[..len]);
    }
}

/// Reads a whole small file into `buf`; returns the length read.
fn read_file(path: &[u8], buf: &mut [u8]) -> usize {
    let fd = sys::open(path, libc::O_RDONLY | libc::O_CLOEXEC, 0);
    if fd < 0 {
        return 0;
    }
    let mut n = 0;
    while n < buf.len() {
        let r = sys::read(fd as i32, &mut buf[n..]);
        if r <= 0 {
            break;
        }
        n += r as usize;
    }
    sys::close(fd as i32);
    n
}

fn record_maps() {
    let fd = sys::open(b"/proc/self/maps\0", libc::O_RDONLY | libc::O_CLOEXEC, 0);
    if fd < 0 {
        return;
    }
    let mut text = [0u8; MAPS_CHUNK];
    let mut chunk = 0u32;
    loop {
        let r = sys::read(fd as i32, &mut text);
        if r <= 0 {
            break;
        }
        let mut buf = [0u8; MAPS_CHUNK + 64];
        let mut e = Encoder::new(&mut buf, Kind::Maps);
        e.put_u8(MapsSource::Initial as u8);
        e.put_bytes(&[0; 3]);
        e.put_u32(chunk);
        e.put_str(&text[..r as usize], MAPS_CHUNK);
        if let Some(len) = e.finish() {
            writer::append(&buf[..len]);
        }
        chunk += 1;
    }
    sys::close(fd as i32);
}

/// The NT_GNU_BUILD_ID descriptor in a run of ELF notes, or an empty slice.
pub fn find_build_id(mut notes: &[u8]) -> &[u8] {
    let word = |b: &[u8], i: usize| {
        b.get(i..i + 4).map(|w| u32::from_le_bytes(w.try_into().unwrap_or_default()) as usize)
    };
    while let (Some(namesz), Some(descsz), Some(kind)) = (word(notes, 0), word(notes, 4), word(notes, 8)) {
        let name_end = 12 + namesz.next_multiple_of(4);
        let desc_end = name_end + descsz.next_multiple_of(4);
        if desc_end > notes.len() {
            break;
        }
        if kind == 3 && notes.get(12..12 + namesz) == Some(b"GNU\0") {
            return &notes[name_end..name_end + descsz];
        }
        notes = &notes[desc_end..];
    }
    &[]
}
