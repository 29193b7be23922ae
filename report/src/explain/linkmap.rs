//! The dynamic loader's link map read from outside: `_r_debug` (found through the executable's
//! `DT_DEBUG` entry, which ld.so fills in at start-up, else through ld.so's own `_r_debug`
//! symbol) and its `r_map` list of `struct link_map` (`l_addr`, `l_name`, `l_ld`, `l_next`),
//! the objects ld.so loaded at start and by `dlopen`. A file mapping is a loaded library when an
//! entry's load bias is that of the ELF image the mapping belongs to; an ELF file mapped by a
//! plain `mmap` has no entry. Only reads (process_vm_readv through [`Memory`]), each pointer
//! checked against the kernel's map before it is followed; the list is walked a bounded number
//! of steps, since the target may be inside dlopen while it is read.

use super::stop::Memory;
use crate::load::maps::Region;
use crate::symbolize::LoadedModule;
use object::{Object, ObjectSymbol};

/// `PT_DYNAMIC`: the program header of the dynamic section.
const PT_DYNAMIC: u32 = 2;
/// `DT_DEBUG`: the dynamic entry whose value ld.so sets to `&_r_debug`.
const DT_DEBUG: u64 = 21;
/// At most this many objects are followed in `r_map` (a loop or a torn list ends the walk).
const MAX_OBJECTS: usize = 4096;

/// One `struct link_map` of the list.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// `l_addr`: the object's load bias (the difference between its addresses in memory and in
    /// its file), what [`LoadedModule::base`] is.
    pub bias: u64,
    /// `l_name`: as ld.so found it (empty for the executable).
    pub name: String,
}

/// The link map, and where it was found.
pub struct LinkMap {
    pub r_debug: u64,
    /// How `r_debug` was found: "DT_DEBUG of EXE" or "ld.so's _r_debug symbol".
    pub found_by: String,
    pub objects: Vec<Loaded>,
}

impl LinkMap {
    /// The entry for the ELF image `m`, by its load bias.
    pub fn entry_of(&self, m: &LoadedModule) -> Option<&Loaded> {
        self.objects.iter().find(|o| o.bias == m.base)
    }
}

fn readable(regions: &[Region], addr: u64, len: u64) -> bool {
    regions.iter().any(|r| r.start <= addr && addr.saturating_add(len) <= r.end && r.perms.starts_with('r'))
}

/// The address and size of the executable's dynamic section in memory, if it has one (a static
/// executable has none, and no loader). Only the ELF header and program headers are read (the
/// first pages of the file, not all of a large Go binary): this runs once a second under
/// `--watch` and in the benchmark.
fn dynamic_of(exe: &LoadedModule) -> Option<(u64, u64)> {
    use std::io::Read;
    let mut head = vec![0u8; 64 << 10];
    let mut f = std::fs::File::open(&exe.path).ok()?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return None,
        }
    }
    let head = &head[..n];
    let u16_at = |o: usize| Some(u16::from_le_bytes(head.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(head.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(head.get(o..o + 8)?.try_into().ok()?));
    // A little-endian ELF64 (x86_64): e_phoff at 0x20, e_phentsize at 0x36, e_phnum at 0x38.
    if head.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return None;
    }
    let (phoff, entsize, phnum) = (u64_at(0x20)? as usize, u16_at(0x36)? as usize, u16_at(0x38)? as usize);
    (0..phnum).find_map(|i| {
        let p = phoff + i * entsize;
        // p_type at 0, p_vaddr at 0x10, p_memsz at 0x28.
        (u32_at(p)? == PT_DYNAMIC)
            .then(|| Some((exe.base.wrapping_add(u64_at(p + 0x10)?), u64_at(p + 0x28)?)))?
    })
}

/// `&_r_debug` from the executable's DT_DEBUG entry, read in memory.
fn from_dt_debug(mem: &Memory, regions: &[Region], exe: &LoadedModule) -> Option<u64> {
    let (at, size) = dynamic_of(exe)?;
    let n = (size / 16).min(512);
    (0..n).find_map(|i| {
        let a = at + i * 16;
        let tag = mem.u64(a)?;
        let val = mem.u64(a + 8)?;
        (tag == DT_DEBUG && val != 0 && readable(regions, val, 40)).then_some(val)
    })
}

/// `&_r_debug` from ld.so's symbol table.
fn from_ld_so(regions: &[Region], ld: &LoadedModule) -> Option<u64> {
    let data = std::fs::read(&ld.path).ok()?;
    let elf = object::File::parse(&*data).ok()?;
    let sym = elf.dynamic_symbols().chain(elf.symbols()).find(|s| s.name() == Ok("_r_debug"))?;
    let at = ld.base.wrapping_add(sym.address());
    readable(regions, at, 40).then_some(at)
}

/// A NUL-terminated string in the target, at most 4 KiB, read a page piece at a time.
fn string_at(mem: &Memory, regions: &[Region], mut at: u64) -> Option<String> {
    let mut out = vec![];
    while out.len() < 4096 {
        if !readable(regions, at, 1) {
            return None;
        }
        let len = (4096 - (at & 4095)).min(256);
        let mut buf = vec![0u8; len as usize];
        if !mem.read(at, &mut buf) {
            return None;
        }
        if let Some(z) = buf.iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..z]);
            return Some(String::from_utf8_lossy(&out).into_owned());
        }
        out.extend_from_slice(&buf);
        at += len;
    }
    None
}

/// The link map of the process whose executable is `exe` and whose loader is `ld` (None for a
/// static executable, or when no `_r_debug` can be found and read).
pub fn read(
    mem: &Memory,
    regions: &[Region],
    exe: Option<&LoadedModule>,
    ld: Option<&LoadedModule>,
) -> Option<LinkMap> {
    let (r_debug, found_by) = match exe.and_then(|x| from_dt_debug(mem, regions, x)) {
        Some(a) => (a, format!("DT_DEBUG of {}", exe.map_or("", |x| x.path.as_str()))),
        None => (ld.and_then(|l| from_ld_so(regions, l))?, "ld.so's _r_debug symbol".to_string()),
    };
    // struct r_debug { int r_version; struct link_map *r_map; ... }
    let mut next = mem.u64(r_debug + 8)?;
    let mut objects = vec![];
    while next != 0 && objects.len() < MAX_OBJECTS {
        // struct link_map { l_addr; l_name; l_ld; l_next; l_prev; ... }
        if !readable(regions, next, 40) {
            break;
        }
        let (Some(bias), Some(name), Some(l_next)) = (mem.u64(next), mem.u64(next + 8), mem.u64(next + 24))
        else {
            break;
        };
        let name = if name == 0 { String::new() } else { string_at(mem, regions, name).unwrap_or_default() };
        objects.push(Loaded { bias, name });
        next = l_next;
    }
    // A walk that did not reach the list's end (a torn list, mid-dlopen) would call the objects
    // it missed not loaded: no link map then, and the images are told by their headers alone.
    (next == 0 && !objects.is_empty()).then_some(LinkMap { r_debug, found_by, objects })
}

/// Whether `path` is a dynamic loader by its file name (`ld-linux-x86-64.so.2`, `ld-2.36.so`).
pub fn is_loader(path: &str) -> bool {
    path.rsplit('/').next().is_some_and(|f| f.starts_with("ld-linux") || f.starts_with("ld-"))
}
