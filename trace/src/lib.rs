//! The vmshim trace format, shared by the shim (which writes it from inside the target) and the
//! report (which reads it afterwards).
//!
//! This crate owns the byte layout and nothing else: no I/O, no allocation on the writing side.
//! The writer half (an encoder per record kind in [`record`]) only fills caller-provided
//! buffers, so the shim can use it inside an `mmap` hook; nothing outside this crate writes
//! record bytes. The reader half ([`parse`]) never
//! panics and never trusts a length it has not bounded: any byte sequence gives either events or
//! an [`Error`] that names the byte offset.
//!
//! # Layout
//! A file starts with a [`HEADER_SIZE`]-byte header (magic, version, segment size, the write
//! cursor and a dropped-record counter), followed by records. Every record is 8-byte aligned:
//!
//! ```text
//! word0: u64  = RECORD_MAGIC | kind << 16 | total_len << 32   (stored last, with Release)
//! word1: u64  = checksum(body) ^ total_len
//! body:  total_len - 16 bytes, little-endian fields, zero-padded to 8
//! ```
//!
//! Writers reserve space by bumping the cursor, fill word1 and the body, and publish word0 last.
//! A writer killed in between leaves a zero or mismatching header: the reader counts it as torn,
//! then scans forward for the next record whose magic, length and checksum agree, so one torn
//! record never hides the committed records that other threads wrote after it.
#![forbid(unsafe_code)]

use std::fmt;

pub mod decode;
mod encode;
mod reader;
pub mod record;
pub mod sent;
pub mod waiting;

pub use decode::{Event, Fork, Stream, parse};
pub use record::Record;

/// First eight bytes of every trace file.
pub const FILE_MAGIC: [u8; 8] = *b"VMSHIMT1";
/// Format version written into the header.
/// 2: record checksums hashed in four lanes. 3: stacks written once, referred to by offset.
pub const VERSION: u32 = 3;
/// Size of the file header; the first record starts here.
pub const HEADER_SIZE: usize = 64;
/// Byte offsets of the header fields.
pub mod header {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const HEADER_SIZE: usize = 12;
    pub const SEGMENT_SIZE: usize = 16;
    /// The next free byte offset; records live in `HEADER_SIZE..cursor`.
    pub const CURSOR: usize = 24;
    /// Records the writer could not store (size limit reached, no segment could be mapped).
    pub const DROPPED: usize = 32;
    /// Size limit the writer was configured with.
    pub const LIMIT: usize = 40;
    /// Nanoseconds the hooks spent recording (unwinding, encoding, writing; not the real
    /// calls), summed over threads: the shim's own cost.
    pub const RECORDING_NS: usize = 48;
    /// How many records that time covers.
    pub const TIMED: usize = 56;
}

/// Low 16 bits of every committed record's first word.
pub const RECORD_MAGIC: u16 = 0x5652;
/// word0 + word1.
pub const RECORD_HEADER: usize = 16;
/// No record is larger than this; the reader rejects larger lengths as corrupt.
pub const MAX_RECORD: usize = 1 << 20;
/// The deepest stack a record carries.
pub const MAX_FRAMES: usize = 128;

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Kind {
    /// Filler up to a segment end; the reader skips it.
    Pad = 0,
    /// Process identity, written once by the shim's constructor.
    Start = 1,
    /// A chunk of a `/proc/PID/maps` or `smaps` text.
    Maps = 2,
    /// One loaded ELF module.
    Module = 3,
    /// One interposed call (mmap, munmap, ...).
    Call = 4,
    /// A thread created through `pthread_create` began running.
    ThreadStart = 5,
    /// How the process ended, appended by `vmshim run`.
    Exit = 6,
    /// A thread's name as the kernel had it at exit, appended by `vmshim run`.
    ThreadName = 7,
    /// One call of a libc resolver function (getaddrinfo, gethostbyname, res_search, ...).
    Resolve = 8,
    /// What steers name resolution, read at start: `key=value` lines (the `hosts:` line of
    /// /etc/nsswitch.conf, the `options` of /etc/resolv.conf, GODEBUG, LOCALDOMAIN, RES_OPTIONS,
    /// HOSTALIASES).
    Config = 9,
    /// A call stack that call records refer to by this record's file offset
    /// ([`CALL_FLAG_STACK_REF`]): each distinct stack is written once.
    Stack = 10,
}

impl Kind {
    pub fn from_u16(v: u16) -> Option<Kind> {
        Some(match v {
            0 => Kind::Pad,
            1 => Kind::Start,
            2 => Kind::Maps,
            3 => Kind::Module,
            4 => Kind::Call,
            5 => Kind::ThreadStart,
            6 => Kind::Exit,
            7 => Kind::ThreadName,
            8 => Kind::Resolve,
            9 => Kind::Config,
            10 => Kind::Stack,
            _ => return None,
        })
    }
}

/// The interposed call a [`Kind::Call`] record describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CallKind {
    Mmap = 1,
    Munmap = 2,
    Mremap = 3,
    Mprotect = 4,
    PthreadCreate = 5,
    /// A thread was seen using a malloc arena heap for the first time (or a new one): glibc
    /// made or attached it inside the malloc-family call recorded with it.
    ArenaAttach = 6,
    /// malloc served a request with its own mmap (a chunk above the mmap threshold).
    MallocLarge = 7,
    /// Such a chunk was freed (glibc unmaps it).
    FreeLarge = 8,
    /// The main arena moved the program break up.
    BrkGrow = 9,
    /// An ELF image appeared during a call the shim watches (dlopen, or a resolver call that
    /// loaded NSS modules).
    ModuleLoad = 10,
}

impl CallKind {
    pub fn from_u16(v: u16) -> Option<CallKind> {
        Some(match v {
            1 => CallKind::Mmap,
            2 => CallKind::Munmap,
            3 => CallKind::Mremap,
            4 => CallKind::Mprotect,
            5 => CallKind::PthreadCreate,
            6 => CallKind::ArenaAttach,
            7 => CallKind::MallocLarge,
            8 => CallKind::FreeLarge,
            9 => CallKind::BrkGrow,
            10 => CallKind::ModuleLoad,
            _ => return None,
        })
    }

    /// The libc function's name.
    pub fn name(self) -> &'static str {
        match self {
            CallKind::Mmap => "mmap",
            CallKind::Munmap => "munmap",
            CallKind::Mremap => "mremap",
            CallKind::Mprotect => "mprotect",
            CallKind::PthreadCreate => "pthread_create",
            CallKind::ArenaAttach => "arena_attach",
            CallKind::MallocLarge => "malloc_large",
            CallKind::FreeLarge => "free_large",
            CallKind::BrkGrow => "brk_grow",
            CallKind::ModuleLoad => "module_load",
        }
    }

    /// Parameter names of the libc prototype, in order; `args` holds them in this order.
    pub fn params(self) -> &'static [&'static str] {
        match self {
            CallKind::Mmap => &["addr", "length", "prot", "flags", "fd", "offset"],
            CallKind::Munmap => &["addr", "length"],
            CallKind::Mremap => &["old_address", "old_size", "new_size", "flags", "new_address"],
            CallKind::Mprotect => &["addr", "len", "prot"],
            CallKind::PthreadCreate => &["thread", "attr", "start_routine", "arg"],
            // `heap` is the 64 MiB-aligned heap the chunk lies in (0: the main, brk arena);
            // `arena` glibc's malloc_state; `via` the malloc-family function that showed it.
            CallKind::ArenaAttach => &["heap", "heap_size", "arena", "via"],
            // `block` and `size`: the mapping (chunk header and alignment padding included).
            CallKind::MallocLarge => &["block", "size", "ptr", "request", "via"],
            CallKind::FreeLarge => &["block", "size", "ptr", "via"],
            CallKind::BrkGrow => &["old_break", "new_break", "via"],
            // `via`: an index into LOADING_FUNCTIONS.
            CallKind::ModuleLoad => &["base", "lo", "hi", "via"],
        }
    }
}

/// The malloc-family function a malloc event was seen in (the `via` argument).
pub const MALLOC_FUNCTIONS: &[&str] = &[
    "malloc",
    "free",
    "calloc",
    "realloc",
    "memalign",
    "posix_memalign",
    "aligned_alloc",
    "valloc",
    "pvalloc",
];

/// The watched function a module was loaded in (the `via` argument of ModuleLoad).
/// The same table numbers the resolver functions of [`Kind::Resolve`] records (`api`).
pub const LOADING_FUNCTIONS: &[&str] = &[
    "dlopen",
    "dlmopen",
    "getaddrinfo",
    "getnameinfo",
    "gethostbyname",
    "gethostbyname2",
    "gethostbyname_r",
    "gethostbyname2_r",
    "gethostbyaddr",
    "gethostbyaddr_r",
    "res_query",
    "res_search",
    "res_querydomain",
    "getaddrinfo_a",
    "res_nquery",
    "res_nsearch",
    "res_nquerydomain",
    "freeaddrinfo",
];

/// glibc's HEAP_MAX_SIZE on 64-bit (2 * DEFAULT_MMAP_THRESHOLD_MAX = 2 * 4 MiB * sizeof(long)):
/// a non-main malloc arena's heaps are this large and aligned to it, so the heap a chunk lies
/// in is its address rounded down to it. The `heap_size` of an ArenaAttach call says the same.
pub const HEAP_MAX: u64 = 64 << 20;

/// Most addresses a Resolve record carries.
pub const MAX_ADDRS: usize = 16;

/// [`Kind::Call`] flag: the shim made this mapping for itself (its trace buffer).
pub const CALL_FLAG_OWN: u16 = 1;
/// The call record's stack is the file offset (u64) of a [`Kind::Stack`] record, not frames.
pub const CALL_FLAG_STACK_REF: u16 = 2;

/// Where a [`Kind::Maps`] text came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MapsSource {
    /// `/proc/self/maps` read by the shim's constructor, before the program's own code ran.
    Initial = 0,
    /// `/proc/PID/smaps` read by `vmshim run` at the target's exit stop; `/proc/PID/maps` when a
    /// [`MapsSource::KernelStatm`] text follows it.
    KernelFinal = 1,
    /// `/proc/PID/statm` read with the map at exit when that map is `maps`, not `smaps` (a
    /// process of the shim that recorded nothing): its resident page count is the sum smaps' `Rss:`
    /// lines would give.
    KernelStatm = 2,
}

/// The first word of a committed record.
#[inline]
pub fn record_word0(kind: Kind, total_len: u32) -> u64 {
    RECORD_MAGIC as u64 | (kind as u64) << 16 | (total_len as u64) << 32
}

/// The second word of a record: a 64-bit FNV-1a style hash of the body, mixed with its length,
/// so that stale bytes that happen to look like a header are not taken for a record. Four
/// words are hashed side by side (the lanes are independent multiply chains, so a record's hash
/// costs a quarter of the latency of one chain) and folded together at the end.
#[inline]
pub fn checksum(body: &[u8], total_len: u32) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut lanes = [0xcbf2_9ce4_8422_2325 ^ total_len as u64, 1, 2, 3];
    let mix = |h: u64, w: u64| {
        let h = (h ^ w).wrapping_mul(PRIME);
        h ^ h >> 29
    };
    let mut blocks = body.chunks_exact(32);
    for block in &mut blocks {
        for (i, lane) in lanes.iter_mut().enumerate() {
            let w = u64::from_le_bytes(block[i * 8..i * 8 + 8].try_into().unwrap_or_default());
            *lane = mix(*lane, w);
        }
    }
    for (i, chunk) in blocks.remainder().chunks(8).enumerate() {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        lanes[i] = mix(lanes[i], u64::from_le_bytes(w));
    }
    lanes.into_iter().fold(0, mix)
}

/// Why a trace could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Byte offset in the file where the problem was found.
    pub offset: u64,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte offset {})", self.message, self.offset)
    }
}

impl std::error::Error for Error {}
