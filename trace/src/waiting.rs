//! The note an image keeps in its own memory while it waits for its first recorded call with no
//! trace file yet (issue 12): under `vmshim run`'s exit watcher, an exec'd image that records
//! nothing (a shell's `/bin/true`) is written by `vmshim run` from this note and the kernel's
//! map at its exit, which the watcher reads with the note (`process_vm_readv`) while the
//! process waits in `exit_group`.
//!
//! The shim exports the note as the dynamic symbol [`SYMBOL`]; the watcher finds it at the
//! library's load address plus the symbol's value. The layout is little-endian words at the
//! offsets below, [`MAGIC`] first while the image waits (0 once it has its own trace).

/// The exported name of the note in libvmshim.so.
pub const SYMBOL: &str = "vmshim_waiting_image";
/// The first word while the image has no trace of its own.
pub const MAGIC: u64 = u64::from_le_bytes(*b"VMSHIMW1");
/// Byte offsets of the fields.
pub const OFF_MAGIC: usize = 0;
pub const OFF_PID: usize = 8;
pub const OFF_PPID: usize = 12;
pub const OFF_MONO_NS: usize = 16;
pub const OFF_REAL_NS: usize = 24;
pub const OFF_RUN_ID: usize = 32;
pub const OFF_PAGE_SIZE: usize = 40;
/// How many of the [`OFF_AT`] words hold the loader's addresses (`loader.at`).
pub const OFF_AT_COUNT: usize = 44;
/// An address in the executable's first mapping (`AT_PHDR`): the map at exit names the file.
pub const OFF_EXE_AT: usize = 48;
/// The main thread's thread pointer and DTV, then the link maps: what the shim writes as
/// `loader.at` (see the shim's know/startup.rs).
pub const OFF_AT: usize = 56;
/// At most this many loader addresses; an image with more link maps does not wait.
pub const AT_MAX: usize = 64;
/// The whole note.
pub const SIZE: usize = OFF_AT + 8 * AT_MAX;

/// The note as the watcher read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub pid: u32,
    pub ppid: u32,
    pub mono_ns: u64,
    pub real_ns: u64,
    pub run_id: u64,
    pub page_size: u32,
    pub exe_at: u64,
    pub loader_at: Vec<u64>,
}

/// The note in `b` (the bytes at the symbol), or None when it does not hold one.
pub fn parse(b: &[u8]) -> Option<Note> {
    let u64_at = |o: usize| Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?));
    if u64_at(OFF_MAGIC)? != MAGIC {
        return None;
    }
    let count = (u32_at(OFF_AT_COUNT)? as usize).min(AT_MAX);
    Some(Note {
        pid: u32_at(OFF_PID)?,
        ppid: u32_at(OFF_PPID)?,
        mono_ns: u64_at(OFF_MONO_NS)?,
        real_ns: u64_at(OFF_REAL_NS)?,
        run_id: u64_at(OFF_RUN_ID)?,
        page_size: u32_at(OFF_PAGE_SIZE)?,
        exe_at: u64_at(OFF_EXE_AT)?,
        loader_at: (0..count).map(|i| u64_at(OFF_AT + 8 * i)).collect::<Option<_>>()?,
    })
}

/// The `loader.at` line's value for these addresses, as the shim writes it.
pub fn loader_at_text(at: &[u64]) -> String {
    at.iter().map(|a| format!("{a:x}")).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_note_reads_back_and_anything_else_is_none() {
        let mut b = vec![0u8; super::SIZE];
        assert_eq!(super::parse(&b), None);
        b[..8].copy_from_slice(&super::MAGIC.to_le_bytes());
        b[8..12].copy_from_slice(&42u32.to_le_bytes());
        b[16..24].copy_from_slice(&7u64.to_le_bytes());
        b[44..48].copy_from_slice(&2u32.to_le_bytes());
        b[56..64].copy_from_slice(&0xabcu64.to_le_bytes());
        let n = super::parse(&b).unwrap();
        assert_eq!((n.pid, n.mono_ns, n.loader_at.clone()), (42, 7, vec![0xabc, 0]));
        assert_eq!(super::loader_at_text(&n.loader_at), "abc,0");
        assert_eq!(super::parse(&b[..20]), None);
    }
}
