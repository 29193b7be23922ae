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
    /// Loaded at start-up (in the executable's DT_NEEDED closure, a preload, the loader or the
    /// vdso) rather than by dlopen; see [`mark_start`].
    pub at_start: bool,
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
        objects.push(Loaded { bias, name, at_start: false });
        next = l_next;
    }
    // A walk that did not reach the list's end (a torn list, mid-dlopen) would call the objects
    // it missed not loaded: no link map then, and the images are told by their headers alone.
    if next != 0 || objects.is_empty() {
        return None;
    }
    mark_start(&mut objects, exe.map(|x| x.path.as_str()), mem.pid);
    Some(LinkMap { r_debug, found_by, objects })
}

/// `DT_NEEDED`: a dependency's name; `DT_SONAME`: the object's own.
const DT_NEEDED: u64 = 1;
const DT_SONAME: u64 = 14;

/// (DT_SONAME, DT_NEEDED names) of the ELF file at `path`, from its `.dynamic` and `.dynstr`.
fn dynamic_names(path: &str) -> Option<(Option<String>, Vec<String>)> {
    use object::ObjectSection;
    let data = std::fs::read(path).ok()?;
    let elf = object::File::parse(&*data).ok()?;
    let dynamic = elf.section_by_name(".dynamic")?.data().ok()?;
    let strtab = elf.section_by_name(".dynstr")?.data().ok()?;
    let string = |off: u64| {
        let b = strtab.get(usize::try_from(off).ok()?..)?;
        let end = b.iter().position(|&c| c == 0)?;
        Some(String::from_utf8_lossy(&b[..end]).into_owned())
    };
    let (mut soname, mut needed) = (None, vec![]);
    for d in dynamic.chunks_exact(16) {
        let tag = u64::from_le_bytes(d[..8].try_into().ok()?);
        let val = u64::from_le_bytes(d[8..].try_into().ok()?);
        match tag {
            0 => break,
            DT_NEEDED => needed.extend(string(val)),
            DT_SONAME => soname = string(val),
            _ => {}
        }
    }
    Some((soname, needed))
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Marks the objects ld.so loaded at start-up. ld.so loads, before `main`, the executable, the
/// preloads (`LD_PRELOAD` of the process's initial environment and `/etc/ld.so.preload`), the
/// executable's DT_NEEDED libraries, theirs in turn (the closure, matched by DT_SONAME or file
/// name as ld.so matches them), itself and the vdso (rtld.c: dl_main); `dlopen` adds only
/// objects outside that set (an already loaded one just gains a reference). So an object in the
/// closure was loaded at start, and one outside it by dlopen, or as a dependency of one.
/// Position in the list is not enough on its own: a library that a dlopened one needs and the
/// executable needs too is loaded once, at start.
fn mark_start(objects: &mut [Loaded], exe: Option<&str>, pid: u32) {
    let mut wanted: std::collections::BTreeSet<String> = Default::default();
    let mut preload: Vec<String> = vec![];
    if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
        for v in env.split(|&c| c == 0) {
            if let Some(list) = v.strip_prefix(b"LD_PRELOAD=") {
                let list = String::from_utf8_lossy(list);
                preload.extend(list.split([':', ' ']).filter(|x| !x.is_empty()).map(str::to_string));
            }
        }
    }
    if let Ok(list) = std::fs::read_to_string("/etc/ld.so.preload") {
        preload.extend(list.split_whitespace().map(str::to_string));
    }
    for p in &preload {
        wanted.insert(file_name(p).to_string());
    }
    if let Some((_, needed)) = exe.and_then(dynamic_names) {
        wanted.extend(needed);
    }
    let names: Vec<Option<(Option<String>, Vec<String>)>> =
        objects.iter().map(|o| if o.name.is_empty() { None } else { dynamic_names(&o.name) }).collect();
    for (i, o) in objects.iter_mut().enumerate() {
        // The executable (the first entry, with no name), the vdso (no file) and the loader.
        o.at_start = (i == 0 && o.name.is_empty()) || names[i].is_none() || is_loader(&o.name);
    }
    loop {
        let mut grew = false;
        for (i, o) in objects.iter_mut().enumerate() {
            let Some((soname, needed)) = &names[i] else { continue };
            let named = soname.as_deref().is_some_and(|s| wanted.contains(s))
                || wanted.contains(file_name(&o.name))
                || preload.contains(&o.name);
            if o.at_start || !named {
                continue;
            }
            o.at_start = true;
            grew = true;
            wanted.extend(needed.iter().cloned());
        }
        // The loader's and the preloads' own dependencies are loaded at start too.
        for (i, o) in objects.iter().enumerate() {
            if o.at_start
                && let Some((_, needed)) = &names[i]
            {
                for n in needed {
                    grew |= wanted.insert(n.clone());
                }
            }
        }
        if !grew {
            break;
        }
    }
}

/// Whether `path` is a dynamic loader by its file name (`ld-linux-x86-64.so.2`, `ld-2.36.so`).
pub fn is_loader(path: &str) -> bool {
    path.rsplit('/').next().is_some_and(|f| f.starts_with("ld-linux") || f.starts_with("ld-"))
}
