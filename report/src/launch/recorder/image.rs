//! What the recorder learns about a process from `/proc/PID/maps` and the ELF files it maps:
//! the modules to symbolize with (the same Module records the shim writes from
//! `dl_iterate_phdr`), and the executable ranges the unwinder accepts return addresses in.

use object::{Object, ObjectSegment};

/// One mapped ELF file. `base` is the load bias (absolute = file vaddr + base), `lo..hi` the
/// absolute span of its PT_LOAD segments.
#[derive(Clone, Debug)]
pub struct Module {
    pub base: u64,
    pub lo: u64,
    pub hi: u64,
    pub build_id: Vec<u8>,
    pub path: String,
}

/// One line of a maps text: (start, end, perms, offset, inode, path).
pub struct MapLine<'a> {
    pub start: u64,
    pub end: u64,
    pub perms: &'a str,
    pub offset: u64,
    pub inode: u64,
    pub path: &'a str,
}

pub fn map_lines(text: &str) -> impl Iterator<Item = MapLine<'_>> {
    text.lines().filter_map(|line| {
        let mut f = line.splitn(6, ' ');
        let (range, perms, offset, _dev, inode) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
        let path = f.next().unwrap_or("").trim_start();
        let (a, b) = range.split_once('-')?;
        Some(MapLine {
            start: u64::from_str_radix(a, 16).ok()?,
            end: u64::from_str_radix(b, 16).ok()?,
            perms,
            offset: u64::from_str_radix(offset, 16).ok()?,
            inode: inode.parse().ok()?,
            path,
        })
    })
}

/// The executable ranges of a maps text, sorted.
pub fn executable_ranges(text: &str) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = map_lines(text)
        .filter(|m| m.perms.as_bytes().get(2) == Some(&b'x'))
        .map(|m| (m.start, m.end))
        .collect();
    v.sort_unstable();
    v
}

/// The ELF files mapped at offset 0 in a maps text that are not in `known` (paths), as modules.
/// A file that cannot be read or parsed is left out (it is named by its path in the map all the
/// same).
pub fn new_modules(text: &str, known: &mut std::collections::HashSet<String>) -> Vec<Module> {
    let mut out = Vec::new();
    for m in map_lines(text) {
        if m.offset != 0 || m.inode == 0 || !m.path.starts_with('/') || known.contains(m.path) {
            continue;
        }
        known.insert(m.path.to_string());
        if let Some(module) = module_at(m.path, m.start) {
            out.push(module);
        }
    }
    out
}

/// The module of the ELF file at `path` whose first page is mapped at `map_start`.
fn module_at(path: &str, map_start: u64) -> Option<Module> {
    let data = std::fs::read(path).ok()?;
    if !data.starts_with(b"\x7fELF") {
        return None;
    }
    let file = object::File::parse(&*data).ok()?;
    let loads: Vec<(u64, u64, u64)> = file
        .segments()
        .map(|s| (s.address(), s.size(), s.file_range().0))
        .filter(|&(_, size, _)| size > 0)
        .collect();
    let page = 4096u64;
    // The segment the offset-0 mapping shows starts at file offset 0.
    let (first_vaddr, _, _) = *loads.iter().find(|l| l.2 == 0).or(loads.first())?;
    let base = match file.kind() {
        object::ObjectKind::Executable => 0,
        _ => map_start.wrapping_sub(first_vaddr & !(page - 1)),
    };
    let lo = loads.iter().map(|l| l.0).min()?.wrapping_add(base);
    let hi = loads.iter().map(|l| l.0 + l.1).max()?.wrapping_add(base);
    let build_id = file.build_id().ok().flatten().map(<[u8]>::to_vec).unwrap_or_default();
    Some(Module { base, lo, hi, build_id, path: path.to_string() })
}
