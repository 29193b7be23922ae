//! Symbolization: turns absolute addresses in the target into function, source file and line.
//!
//! This module owns everything between an address and a name: which loaded module holds the
//! address, finding that module's ELF file and its separate debug file (by build id, then by
//! `.gnu_debuglink`, the places gdb looks), reading DWARF (with inlined frames) and the symbol
//! tables once per file, and caching every answer per address. It must never give an address a
//! name that does not belong to it: a nearest-preceding symbol whose known size ends before the
//! address is not used, and a file whose build id differs from the one recorded in the trace is
//! not read. A missing, non-ELF or corrupt file yields frames without a function, never an error
//! or a panic (the report aborts on panic). It never reads the target's memory and needs no
//! `unsafe`: files are read through `object::ReadCache`, not mapped.
//!
//! Addresses come in two kinds here: *absolute* addresses in the target (what the trace records)
//! and *module-relative* ones, the ELF virtual addresses that symbol tables and DWARF use
//! (absolute = module-relative + the module's load bias).

pub mod gosym;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, ReadCache, SymbolKind};

/// Where distributions install separate debug files (Debian's `*-dbg` and `*-dbgsym` packages).
const DEBUG_ROOT: &str = "/usr/lib/debug";

/// Mappings start on page boundaries; the kernel maps a segment from the page holding its first
/// byte. x86-64 and most aarch64 kernels use 4 KiB pages; the offset-0 mapping that
/// [`LoadedModule::from_mapping`] is normally given does not depend on this value.
const PAGE_SIZE: u64 = 4096;

/// How many symbols a lookup examines below the address before giving up. Only overlapping
/// symbols make the walk longer than one or two steps; giving up leaves the address unnamed,
/// which is honest, rather than slow.
const MAX_SYMBOL_WALK: usize = 256;

/// The reader DWARF is parsed from: owned, shared section bytes, so a parsed context outlives
/// the file it came from.
type DwarfReader = gimli::EndianArcSlice<gimli::RunTimeEndian>;

/// An ELF file read on demand: only the headers, tables and sections asked for are read.
type ElfFile<'cache> = object::File<'cache, &'cache ReadCache<Source>>;

/// Files up to this size are read whole, once, and parsed from memory.
const READ_WHOLE_MAX: u64 = 64 << 20;

/// What an ELF file is parsed from: its bytes, read whole with one read, or the file itself.
/// `ReadCache` reads every string of a symbol table with a seek and a 256-byte read of its own:
/// libc's debug file took 8,500 of each, 30 ms, for a report that names a few frames (issue 12).
enum Source {
    Memory(std::io::Cursor<Vec<u8>>),
    File(File),
}

impl Source {
    /// `None` when the file is not ELF: any file mapping is asked about (a trace's own mapping
    /// of tens of MiB included), and only ELF files are worth reading whole, when `whole`.
    fn open(path: &Path, len: u64, whole: bool) -> Option<Source> {
        let mut f = File::open(path).ok()?;
        let mut magic = [0u8; 4];
        f.read_exact(&mut magic).ok().filter(|_| magic == *b"\x7fELF")?;
        if !whole || len > READ_WHOLE_MAX {
            return Some(Source::File(f));
        }
        let mut bytes = magic.to_vec();
        f.read_to_end(&mut bytes).ok()?;
        Some(Source::Memory(std::io::Cursor::new(bytes)))
    }
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Source::Memory(c) => c.read(buf),
            Source::File(f) => f.read(buf),
        }
    }
}

impl std::io::Seek for Source {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        match self {
            Source::Memory(c) => c.seek(to),
            Source::File(f) => f.seek(to),
        }
    }
}

/// A loaded ELF image in the target. `base` is the load bias (absolute address = ELF vaddr +
/// base); `lo..hi` is the absolute span of its PT_LOAD segments.
#[derive(Clone, Debug)]
pub struct LoadedModule {
    pub path: String,
    pub base: u64,
    pub lo: u64,
    pub hi: u64,
    pub build_id: Vec<u8>,
}

impl LoadedModule {
    /// Builds a module from a file-backed region of /proc/PID/maps (start address, file offset,
    /// path) by reading the ELF file's program headers: None when the file is not ELF or cannot
    /// be read.
    ///
    /// Pass the file's lowest mapping (offset 0 for everything the dynamic loader maps). A later
    /// region is resolved too, but when two segments share a file page (old linkers without
    /// `-z separate-code`) the region's offset alone cannot say which segment it holds; the lower
    /// one is assumed.
    pub fn from_mapping(path: &str, start: u64, file_offset: u64) -> Option<LoadedModule> {
        Self::with_layout(path, &*layout_of(Path::new(path))?, start, file_offset)
    }

    /// [`LoadedModule::from_mapping`] for a region whose map gives the file's `inode` (0: none):
    /// what the file at `path` is, ELF or not, is remembered for the rest of the command by the
    /// path and that inode, without asking the file system again. A process of a shell loop maps
    /// some twenty files (its libraries, a dozen locale files), and the report of the
    /// 1,000-process loop stat'ed each for each process: 17,000 system calls (issue 12). What a
    /// map names by the same path and inode is the same file unless it was rewritten in place
    /// during the command.
    pub fn from_mapped_file(path: &str, inode: u64, start: u64, file_offset: u64) -> Option<LoadedModule> {
        Self::with_layout(path, &*layout_of_mapped(path, inode)?, start, file_offset)
    }

    fn with_layout(path: &str, layout: &Layout, start: u64, file_offset: u64) -> Option<LoadedModule> {
        let segments = &layout.segments;
        // The segment this region maps: the kernel maps it from the page holding its first
        // file byte, so the region's offset lies between that page and the segment's end.
        let &(vaddr, _, offset, _) = segments
            .iter()
            .filter(|&&(_, _, offset, file_size)| {
                file_size > 0
                    && page_down(offset) <= file_offset
                    && file_offset < offset.saturating_add(file_size)
            })
            .max_by_key(|&&(_, _, offset, _)| (page_down(offset), std::cmp::Reverse(offset)))?;
        // start = base + vaddr - (offset - file_offset): the region begins that many bytes
        // before the segment's first byte.
        let base = start.wrapping_sub(vaddr.wrapping_sub(offset.wrapping_sub(file_offset)));
        let loaded = segments.iter().filter(|&&(_, mem_size, _, _)| mem_size > 0);
        let lo = loaded.clone().map(|&(vaddr, ..)| vaddr).min()?;
        let hi = loaded.map(|&(vaddr, mem_size, ..)| vaddr.saturating_add(mem_size)).max()?;
        Some(LoadedModule {
            path: path.to_owned(),
            base,
            lo: lo.wrapping_add(base),
            hi: hi.wrapping_add(base),
            build_id: layout.build_id.clone(),
        })
    }

    fn contains(&self, addr: u64) -> bool {
        self.lo <= addr && addr < self.hi
    }
}

/// One symbolized frame. Inlined functions produce several Frames for one address (innermost
/// first); `addr` is the absolute address asked about, as recorded (not `addr - 1`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Frame {
    pub addr: u64,
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub module: Option<String>,
}

/// Symbolizes absolute addresses of one target. Files are opened on the first lookup that needs
/// them, each (path, build id) is parsed once, and each address is looked up once.
pub struct Symbolizer {
    /// Sorted by `lo`.
    modules: Vec<LoadedModule>,
    /// For each module, its index in `debug_infos` once loaded.
    debug_info_of_module: Vec<Option<usize>>,
    debug_infos: Vec<std::rc::Rc<DebugInfo>>,
    /// (path, recorded build id) -> index in `debug_infos`, so a file mapped twice is read once.
    debug_info_by_file: HashMap<(String, Vec<u8>), usize>,
    /// (absolute address, is_return_address) -> the answer given.
    frames_by_address: HashMap<(u64, bool), Vec<Frame>>,
}

impl Symbolizer {
    pub fn new(mut modules: Vec<LoadedModule>) -> Symbolizer {
        modules.sort_by_key(|module| module.lo);
        Symbolizer {
            debug_info_of_module: vec![None; modules.len()],
            modules,
            debug_infos: Vec::new(),
            debug_info_by_file: HashMap::new(),
            frames_by_address: HashMap::new(),
        }
    }

    /// `addr` is an absolute address in the target. When `is_return_address` is true (every
    /// frame except a thread's start routine) `addr - 1` is looked up, because a return address
    /// points after the call instruction and may already be in the next function/line. Results
    /// are cached per address. Never empty: at least one Frame with `addr` set.
    pub fn symbolize(&mut self, addr: u64, is_return_address: bool) -> Vec<Frame> {
        if let Some(frames) = self.frames_by_address.get(&(addr, is_return_address)) {
            return frames.clone();
        }
        let frames = self.look_up(addr, is_return_address);
        self.frames_by_address.insert((addr, is_return_address), frames.clone());
        frames
    }

    /// Reads the debug information of the modules that hold these return addresses, naming
    /// nothing: what a file with a build id gives is kept for this thread's later symbolizers
    /// (see [`DebugInfo::shared`]), so a report can read it ahead, while other work goes on. A
    /// module without a build id is left alone: its file is read again by each symbolizer.
    pub fn read_ahead(&mut self, return_addresses: &[u64]) {
        for &addr in return_addresses {
            // The module is chosen by the call's byte, as `look_up` chooses it.
            if let Some(index) = self.module_index(addr.saturating_sub(1))
                && !self.modules[index].build_id.is_empty()
            {
                self.debug_info(index);
            }
        }
    }

    /// Every module, by address.
    pub fn modules(&self) -> &[LoadedModule] {
        &self.modules
    }

    /// The module containing addr, if any.
    pub fn module_of(&self, addr: u64) -> Option<&LoadedModule> {
        self.module_index(addr).map(|index| &self.modules[index])
    }

    fn module_index(&self, addr: u64) -> Option<usize> {
        let after = self.modules.partition_point(|module| module.lo <= addr);
        let index = after.checked_sub(1)?;
        self.modules[index].contains(addr).then_some(index)
    }

    fn look_up(&mut self, addr: u64, is_return_address: bool) -> Vec<Frame> {
        // A return address points just past the call instruction: that byte may begin the next
        // line, or the next function when the call was to a noreturn function. The call itself
        // covers addr - 1 (framehop and every unwinder symbolize the same way). The module is
        // chosen by that byte too: a noreturn call can end a module's last function.
        let probe = if is_return_address { addr.saturating_sub(1) } else { addr };
        let Some(index) = self.module_index(probe) else {
            return vec![Frame { addr, function: None, file: None, line: None, module: None }];
        };
        let debug_info = self.debug_info(index);
        let module = &self.modules[index];
        let module_relative = probe.wrapping_sub(module.base);
        self.debug_infos[debug_info].frames(addr, module_relative, &module.path)
    }

    /// Index in `debug_infos` of module `index`'s debug information, loading it on first use.
    fn debug_info(&mut self, index: usize) -> usize {
        if let Some(loaded) = self.debug_info_of_module[index] {
            return loaded;
        }
        let module = &self.modules[index];
        let key = (module.path.clone(), module.build_id.clone());
        let loaded = match self.debug_info_by_file.get(&key) {
            Some(&loaded) => loaded,
            None => {
                self.debug_infos.push(DebugInfo::shared(module));
                let loaded = self.debug_infos.len() - 1;
                self.debug_info_by_file.insert(key, loaded);
                loaded
            }
        };
        self.debug_info_of_module[index] = Some(loaded);
        loaded
    }
}

/// Everything known about one module's code: DWARF when some file has it, and the merged
/// symbol tables of the separate debug file (`.symtab`) and the module file (`.symtab`,
/// `.dynsym`). Empty when nothing could be read.
struct DebugInfo {
    dwarf: Option<addr2line::Context<DwarfReader>>,
    symbols: SymbolTable,
    /// A Go binary's own table (`.gopclntab`), which stripping keeps: it names Go frames, with
    /// their inlined calls, whether or not DWARF and symtab are there.
    go: Option<crate::symbolize::gosym::GoTable>,
}

/// Parsed debug information by (path, build id).
type ParsedFiles = std::cell::RefCell<HashMap<(String, Vec<u8>), std::rc::Rc<DebugInfo>>>;

thread_local! {
    /// Debug information already parsed by this command, by (path, recorded build id): the
    /// processes of a run share their libraries (and a fork child its parent's executable), so
    /// each file is parsed once however many processes are reported.
    static PARSED: ParsedFiles = std::cell::RefCell::new(HashMap::new());
}

/// Leaves the debug information this thread parsed ([`PARSED`]) to the end of the process,
/// unfreed: for a thread that ends just before vmshim does. `vmshim run`'s report thread freed
/// libc's parsed DWARF, many small allocations, in 6-7 ms after the report was written.
pub fn keep_parsed_until_exit() {
    PARSED.with(|p| std::mem::forget(p.take()));
}

impl DebugInfo {
    /// The module's debug information, parsed once per command for a file with a build id (the
    /// id names its contents; a file without one is read each time).
    fn shared(module: &LoadedModule) -> std::rc::Rc<DebugInfo> {
        if module.build_id.is_empty() {
            return std::rc::Rc::new(DebugInfo::load(module));
        }
        let key = (module.path.clone(), module.build_id.clone());
        if let Some(d) = PARSED.with(|p| p.borrow().get(&key).cloned()) {
            return d;
        }
        let d = std::rc::Rc::new(DebugInfo::load(module));
        PARSED.with(|p| p.borrow_mut().insert(key, d.clone()));
        d
    }

    fn load(module: &LoadedModule) -> DebugInfo {
        let path = Path::new(&module.path);
        let recorded_id = (!module.build_id.is_empty()).then_some(module.build_id.as_slice());
        let mut collected = Collected::default();
        let mut go = None;
        let read_module_file = with_elf(path, |elf| {
            let on_disk_id = build_id_of(elf);
            if recorded_id.is_some_and(|recorded| on_disk_id != Some(recorded)) {
                // The file was replaced after the trace was taken (a package upgrade, a
                // rebuild): its symbols would name another build's code.
                return None;
            }
            let build_id = recorded_id.or(on_disk_id);
            let debuglink = elf.gnu_debuglink().ok().flatten();
            collected.read_separate_debug_file(path, build_id, debuglink);
            collected.read(elf, path);
            go = go_table(elf, path);
            Some(())
        });
        if read_module_file.is_none()
            && let Some(recorded_id) = recorded_id
        {
            // The module file is gone or differs, but a debug file under the recorded build id
            // still describes exactly the code that ran.
            collected.read_separate_debug_file(path, Some(recorded_id), None);
        }
        DebugInfo { dwarf: collected.dwarf, symbols: SymbolTable::new(collected.symbols), go }
    }

    /// The frames for `module_relative` (already `- 1` for return addresses), labelled with the
    /// absolute `addr` asked about.
    fn frames(&self, addr: u64, module_relative: u64, module_path: &str) -> Vec<Frame> {
        let frame = |function: Option<String>, file: Option<String>, line: Option<u32>| Frame {
            addr,
            function: function.filter(|name| !name.is_empty()),
            file,
            line,
            module: Some(module_path.to_owned()),
        };
        // Go's own table first where it covers the address: a stripped build and an unstripped
        // one then name their frames alike (symtab calls assembly functions `F.abi0`, DWARF
        // spells generic instances differently).
        if let Some(go) = &self.go {
            let found = go.lookup(module_relative);
            if !found.is_empty() {
                return found.into_iter().map(|f| frame(Some(f.function), f.file, f.line)).collect();
            }
        }
        let mut frames = Vec::new();
        if let Some(dwarf) = &self.dwarf
            && let Ok(mut found) = dwarf.find_frames(module_relative).skip_all_loads()
        {
            // A broken DIE ends the list; the frames read so far are still right.
            while let Ok(Some(found_frame)) = found.next() {
                let function =
                    found_frame.function.and_then(|name| name.demangle().ok().map(Cow::into_owned));
                let location = found_frame.location;
                frames.push(frame(
                    function,
                    location.as_ref().and_then(|l| l.file).map(str::to_owned),
                    location.and_then(|l| l.line),
                ));
            }
        }
        if frames.is_empty() {
            frames.push(frame(None, None, None));
        }
        // DWARF may cover an address with a line table only (assembly sources) or not at all;
        // the symbol tables then name the function that was not inlined.
        if let Some(outermost) = frames.last_mut()
            && outermost.function.is_none()
        {
            outermost.function =
                self.symbols.name_of(module_relative).map(demangle_symbol).filter(|name| !name.is_empty());
        }
        frames
    }
}

/// The Go table of a Go binary (one with a `.gopclntab` or `.go.buildinfo` section: an
/// externally linked PIE folds the table into `.data.rel.ro`), read whole; None for any other
/// file, or a Go table this reader does not know (then DWARF and symtab are all there is).
fn go_table(elf: &ElfFile<'_>, path: &Path) -> Option<crate::symbolize::gosym::GoTable> {
    let go = elf.section_by_name(".gopclntab").is_some() || elf.section_by_name(".go.buildinfo").is_some();
    if !go {
        return None;
    }
    crate::symbolize::gosym::GoTable::parse(&std::fs::read(path).ok()?).ok().flatten()
}

/// Demangles an Itanium C++ (`_Z`) or Rust (`_R`, legacy `_ZN..h<hash>E`) symbol and leaves any
/// other name alone: a plain C name such as `f` is also a valid mangled C++ *type* (`float`), so
/// guessing would rename C functions.
fn demangle_symbol(name: &str) -> String {
    if name.starts_with("_Z") || name.starts_with("_R") {
        addr2line::demangle_auto(Cow::Borrowed(name), None).into_owned()
    } else {
        name.to_owned()
    }
}

/// What [`DebugInfo::load`] gathers from the files it reads.
#[derive(Default)]
struct Collected {
    symbols: Vec<TableSymbol>,
    dwarf: Option<addr2line::Context<DwarfReader>>,
}

impl Collected {
    /// Adds `elf`'s function symbols, and its DWARF if none was found before (the separate debug
    /// file is read first: when it exists, it holds the full DWARF).
    fn read(&mut self, elf: &ElfFile<'_>, path: &Path) {
        if self.dwarf.is_some() {
            collect_function_symbols(elf, &mut self.symbols);
            return;
        }
        // A large compressed .debug_info (libc6-dbg's: 5.8 MiB of a debug file's 8.6) inflates
        // on a thread of its own while this one reads the symbols and the other sections: at the
        // end of a run the second core is idle (issue 12, the fixed cost of a run).
        let info = elf.section_by_name(".debug_info").and_then(|s| s.compressed_data().ok()).filter(|c| {
            c.format == object::CompressionFormat::Zlib && c.uncompressed_size >= INFLATE_APART_MIN
        });
        std::thread::scope(|s| {
            // A thread that cannot be made leaves the section to this one.
            let inflating = info
                .and_then(|c| std::thread::Builder::new().spawn_scoped(s, move || inflate_shared(&c)).ok());
            collect_function_symbols(elf, &mut self.symbols);
            self.dwarf = load_dwarf(elf, path, inflating);
        });
    }

    /// Finds and reads the module's separate debug file, trying the places gdb tries, in its
    /// order (<https://sourceware.org/gdb/current/onlinedocs/gdb.html/Separate-Debug-Files.html>):
    /// the build-id tree, then the `.gnu_debuglink` name next to the module, in its `.debug/`
    /// directory and under the debug root.
    fn read_separate_debug_file(
        &mut self,
        module_path: &Path,
        build_id: Option<&[u8]>,
        debuglink: Option<(&[u8], u32)>,
    ) {
        if let Some(build_id) = build_id
            && let Some(candidate) = build_id_debug_path(build_id)
            && self.read_if_matching(&candidate, &DebugFileCheck::BuildId(build_id))
        {
            return;
        }
        let Some((name, crc)) = debuglink else { return };
        let Ok(name) = std::str::from_utf8(name) else { return };
        if name.is_empty() || name.contains('/') {
            return;
        }
        let check = DebugFileCheck::DebugLink { build_id, crc };
        let module_real_path = std::fs::canonicalize(module_path).ok();
        for dir in debuglink_dirs(module_path) {
            let candidate = dir.join(name);
            // A debuglink may name the module's own file name; reading it again adds nothing.
            if std::fs::canonicalize(&candidate).ok() == module_real_path {
                continue;
            }
            if self.read_if_matching(&candidate, &check) {
                return;
            }
        }
    }

    /// Reads `candidate` when it proves to be the module's debug file; says whether it did.
    fn read_if_matching(&mut self, candidate: &Path, check: &DebugFileCheck<'_>) -> bool {
        with_elf(candidate, |debug| {
            check.accepts(candidate, build_id_of(debug)).then(|| self.read(debug, candidate))
        })
        .is_some()
    }
}

/// What a separate debug file must show before its names are trusted.
enum DebugFileCheck<'a> {
    /// Found in the build-id tree: its own build id must be this one.
    BuildId(&'a [u8]),
    /// Found by `.gnu_debuglink` name: the build ids must agree when both files have one,
    /// otherwise the whole file's CRC-32 must be the one the link records.
    DebugLink { build_id: Option<&'a [u8]>, crc: u32 },
}

impl DebugFileCheck<'_> {
    fn accepts(&self, candidate: &Path, candidate_id: Option<&[u8]>) -> bool {
        match *self {
            DebugFileCheck::BuildId(expected) => candidate_id == Some(expected),
            DebugFileCheck::DebugLink { build_id: Some(expected), .. } if candidate_id.is_some() => {
                candidate_id == Some(expected)
            }
            DebugFileCheck::DebugLink { crc, .. } => file_crc32(candidate) == Some(crc),
        }
    }
}

/// `/usr/lib/debug/.build-id/xx/yyyy….debug` for a build id.
fn build_id_debug_path(build_id: &[u8]) -> Option<PathBuf> {
    let (first, rest) = build_id.split_first()?;
    if rest.is_empty() {
        return None;
    }
    let rest: String = rest.iter().map(|byte| format!("{byte:02x}")).collect();
    Some(Path::new(DEBUG_ROOT).join(format!(".build-id/{first:02x}/{rest}.debug")))
}

/// The directories a `.gnu_debuglink` name is looked up in, for the module's directory as
/// written and as resolved (with merged /usr, /lib is a link to /usr/lib).
fn debuglink_dirs(module_path: &Path) -> Vec<PathBuf> {
    let mut module_dirs = Vec::new();
    if let Some(dir) = module_path.parent() {
        module_dirs.push(dir.to_path_buf());
    }
    if let Some(dir) =
        std::fs::canonicalize(module_path).ok().and_then(|real| real.parent().map(Path::to_path_buf))
        && !module_dirs.contains(&dir)
    {
        module_dirs.push(dir);
    }
    let mut dirs = Vec::new();
    for dir in &module_dirs {
        dirs.push(dir.clone());
        dirs.push(dir.join(".debug"));
    }
    for dir in &module_dirs {
        if dir.is_absolute() {
            let relative = dir.strip_prefix("/").unwrap_or(dir);
            dirs.push(Path::new(DEBUG_ROOT).join(relative));
        }
    }
    dirs
}

/// The CRC-32 that `.gnu_debuglink` records: zlib's, over the whole file.
fn file_crc32(path: &Path) -> Option<u32> {
    let mut file = File::open(path).ok()?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buffer = vec![0; 1 << 16];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => return Some(hasher.finalize()),
            Ok(read) => hasher.update(&buffer[..read]),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// Opens `path` as an ELF file and runs `read` on it; None when it is not a regular file, cannot
/// be opened or does not parse as ELF.
fn with_elf<T>(path: &Path, read: impl FnOnce(&ElfFile<'_>) -> Option<T>) -> Option<T> {
    with_elf_read(path, true, read)
}

/// [`with_elf`], reading the file whole first when `whole` (what parsing its tables wants), or
/// only the parts `read` asks for (its headers, for a layout: the end of a run read every
/// library a map at exit names whole for its program headers, libvmshim.so's 5 MiB of line
/// tables included).
fn with_elf_read<T>(path: &Path, whole: bool, read: impl FnOnce(&ElfFile<'_>) -> Option<T>) -> Option<T> {
    // Regular files only: opening a device or a FIFO named in /proc/PID/maps could block or have
    // side effects.
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let cache = ReadCache::new(open_elf(path, &meta, whole)?);
    let elf = object::File::parse(&cache).ok()?;
    if elf.format() != object::BinaryFormat::Elf {
        return None;
    }
    read(&elf)
}

/// What [`LoadedModule::from_mapping`] needs of an ELF file: its PT_LOAD segments (vaddr,
/// memsz, file offset, filesz) and its build id.
struct Layout {
    segments: Vec<(u64, u64, u64, u64)>,
    build_id: Vec<u8>,
}

/// The layout of the ELF file at `path`, or None when it is not one: remembered for the rest of
/// the command by the file's identity (device, inode, size, modification time). A map at exit
/// whose images have no Module records (a process that recorded nothing, issue 12) names them
/// by their files, and a thousand such processes read the same four libraries whole a thousand
/// times: 8 MiB each, most of the report's time.
fn layout_of(path: &Path) -> Option<std::sync::Arc<Layout>> {
    use std::os::unix::fs::MetadataExt;
    type Identity = (std::path::PathBuf, u64, u64, u64, i64, i64);
    type Known = std::collections::HashMap<Identity, Option<std::sync::Arc<Layout>>>;
    static KNOWN: std::sync::OnceLock<std::sync::Mutex<Known>> = std::sync::OnceLock::new();
    let meta = std::fs::metadata(path).ok()?;
    let identity = (path.to_path_buf(), meta.dev(), meta.ino(), meta.len(), meta.mtime(), meta.mtime_nsec());
    let known = KNOWN.get_or_init(Default::default);
    if let Some(layout) = known.lock().ok().and_then(|k| k.get(&identity).cloned()) {
        return layout;
    }
    let layout = with_elf_read(path, false, |elf| {
        let segments = elf
            .segments()
            .map(|segment| {
                let (offset, file_size) = segment.file_range();
                (segment.address(), segment.size(), offset, file_size)
            })
            .collect();
        Some(Layout { segments, build_id: build_id_of(elf).map(<[u8]>::to_vec).unwrap_or_default() })
    })
    .map(std::sync::Arc::new);
    if let Ok(mut k) = known.lock() {
        k.insert(identity, layout.clone());
    }
    layout
}

/// [`layout_of`] the file a map names by `path` and `inode`, remembered by those two (see
/// [`LoadedModule::from_mapped_file`]); a region without an inode asks [`layout_of`] each time.
fn layout_of_mapped(path: &str, inode: u64) -> Option<std::sync::Arc<Layout>> {
    type Known = std::collections::HashMap<u64, Vec<(String, Option<std::sync::Arc<Layout>>)>>;
    static KNOWN: std::sync::OnceLock<std::sync::Mutex<Known>> = std::sync::OnceLock::new();
    if inode == 0 {
        return layout_of(Path::new(path));
    }
    let known = KNOWN.get_or_init(Default::default);
    let seen = |k: &Known| k.get(&inode)?.iter().find(|(p, _)| p == path).map(|(_, l)| l.clone());
    if let Some(layout) = known.lock().ok().and_then(|k| seen(&k)) {
        return layout;
    }
    let layout = layout_of(Path::new(path));
    if let Ok(mut k) = known.lock() {
        k.entry(inode).or_default().push((path.to_string(), layout.clone()));
    }
    layout
}

/// The file's [`Source`], or None when it is not ELF or cannot be read: remembered for the rest
/// of the command by the file's identity (device, inode, size, modification time). Every file
/// region outside the modules is asked about, and most are files that are not ELF asked about
/// again: a process's own trace (its header and its records, in its maps at start and at exit)
/// and the locale files a run's processes share. `vmshim report` of the 1,000-process loop opened
/// 9,045 files, 3,006 of them for this (issue 12).
fn open_elf(path: &Path, meta: &std::fs::Metadata, whole: bool) -> Option<Source> {
    use std::os::unix::fs::MetadataExt;
    type Identity = (u64, u64, u64, i64, i64);
    static NOT_ELF: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<Identity>>> =
        std::sync::OnceLock::new();
    let identity = (meta.dev(), meta.ino(), meta.len(), meta.mtime(), meta.mtime_nsec());
    let not_elf = NOT_ELF.get_or_init(Default::default);
    if not_elf.lock().is_ok_and(|known| known.contains(&identity)) {
        return None;
    }
    let source = Source::open(path, meta.len(), whole);
    if source.is_none()
        && let Ok(mut known) = not_elf.lock()
    {
        known.insert(identity);
    }
    source
}

fn build_id_of<'cache>(elf: &ElfFile<'cache>) -> Option<&'cache [u8]> {
    elf.build_id().ok().flatten().filter(|id| !id.is_empty())
}

fn page_down(offset: u64) -> u64 {
    offset & !(PAGE_SIZE - 1)
}

/// Parses `elf`'s DWARF, if it has any. Compressed sections, whether `SHF_COMPRESSED` (what
/// Go 1.19 and `gcc -gz` write, and Debian's debug files) or the older `.zdebug_*` names, are
/// decompressed by [`dwarf_section`]; `.debug_info` is the one `inflating` gives, when the
/// caller inflates it apart (an empty section stands in for it until then). A
/// `.gnu_debugaltlink` supplementary file (written by dwz) is loaded when it can be found.
fn load_dwarf(
    elf: &ElfFile<'_>,
    path: &Path,
    inflating: Option<std::thread::ScopedJoinHandle<'_, Option<Arc<[u8]>>>>,
) -> Option<addr2line::Context<DwarfReader>> {
    elf.section_by_name(".debug_info")?;
    let apart = inflating.is_some();
    let mut dwarf = gimli::Dwarf::load(|id| match id {
        gimli::SectionId::DebugInfo if apart => Ok(reader(elf, Arc::from(&[][..]))),
        _ => dwarf_section(elf, id),
    })
    .ok()?;
    if let Some(inflating) = inflating {
        let info = match inflating.join().ok().flatten() {
            Some(bytes) => reader(elf, bytes),
            None => dwarf_section(elf, gimli::SectionId::DebugInfo).ok()?,
        };
        dwarf.debug_info = gimli::DebugInfo::from(info);
    }
    if let Ok(Some((alt_path, alt_build_id))) = elf.gnu_debugaltlink() {
        let mut candidates: Vec<PathBuf> = build_id_debug_path(alt_build_id).into_iter().collect();
        if let Ok(alt_path) = std::str::from_utf8(alt_path) {
            // A relative link is relative to the directory of the file that holds it.
            let base = path.parent().unwrap_or(Path::new("/"));
            candidates.push(base.join(alt_path));
        }
        for candidate in candidates {
            let loaded = with_elf(&candidate, |alt| {
                if build_id_of(alt) != Some(alt_build_id) {
                    return None;
                }
                dwarf.load_sup(|id| dwarf_section(alt, id)).ok()
            });
            if loaded.is_some() {
                break;
            }
        }
    }
    addr2line::Context::from_dwarf(dwarf).ok()
}

/// One DWARF section of `elf`, owned: inflated into its buffer ([`inflate_shared`]), or copied out
/// (uncompressed, or zstd); empty when absent, an error when it cannot be decompressed (then the
/// file's DWARF is not used at all).
fn dwarf_section(elf: &ElfFile<'_>, id: gimli::SectionId) -> Result<DwarfReader, object::Error> {
    // Names and lines need neither location lists nor macros nor type units: left empty, they
    // are not decompressed (libc's location lists are a fifth of its debug file).
    let unused = matches!(
        id,
        gimli::SectionId::DebugLoc
            | gimli::SectionId::DebugLocLists
            | gimli::SectionId::DebugMacinfo
            | gimli::SectionId::DebugMacro
            | gimli::SectionId::DebugTypes
    );
    let bytes: Arc<[u8]> = match elf.section_by_name(id.name()).filter(|_| !unused) {
        Some(section) => match inflate_shared(&section.compressed_data()?) {
            Some(bytes) => bytes,
            None => Arc::from(&*section.uncompressed_data()?),
        },
        None => Arc::from(&[][..]),
    };
    Ok(reader(elf, bytes))
}

/// A section's bytes as gimli reads them, in `elf`'s byte order.
fn reader(elf: &ElfFile<'_>, bytes: Arc<[u8]>) -> DwarfReader {
    let endian =
        if elf.is_little_endian() { gimli::RunTimeEndian::Little } else { gimli::RunTimeEndian::Big };
    gimli::EndianArcSlice::new(bytes, endian)
}

/// The smallest compressed `.debug_info` that [`Collected::read`] inflates on a thread of its own.
const INFLATE_APART_MIN: u64 = 1 << 20;

/// The largest section [`inflate_shared`] inflates itself; a larger one (only a corrupt header
/// would say so of a debug section) goes through `object`, which asks for the memory fallibly.
const INFLATE_SHARED_MAX: u64 = 256 << 20;

/// A zlib-compressed section inflated straight into the shared buffer gimli reads: `object`
/// inflates into a Vec, which became an `Arc<[u8]>` by a copy, so that libc's 8.6 MiB of DWARF
/// (libc6-dbg) were written twice and faulted in twice: a report naming libc frames took 12,588
/// page faults, 11,147 this way (issue 12: the fixed cost of every run).
/// None when the section is not zlib-compressed or is too large for this path; an error in the
/// data gives None too, and `object`'s path then says what it is.
fn inflate_shared(data: &object::CompressedData<'_>) -> Option<Arc<[u8]>> {
    if data.format != object::CompressionFormat::Zlib || data.uncompressed_size > INFLATE_SHARED_MAX {
        return None;
    }
    let mut out: Arc<[u8]> = std::iter::repeat_n(0u8, data.uncompressed_size as usize).collect();
    let buf = Arc::get_mut(&mut out)?;
    let mut inflate = flate2::Decompress::new(true);
    let status = inflate.decompress(data.data, buf, flate2::FlushDecompress::Finish).ok()?;
    (status == flate2::Status::StreamEnd && inflate.total_out() == data.uncompressed_size).then_some(out)
}

/// A function symbol as read from a symbol table, before the table is indexed.
struct TableSymbol {
    /// Module-relative.
    start: u64,
    /// 0 when the symbol table does not say.
    size: u64,
    /// Module-relative end of the section holding the symbol, when known.
    section_end: Option<u64>,
    is_local: bool,
    name: Box<str>,
}

/// Appends `elf`'s defined function symbols from `.symtab` and `.dynsym`.
fn collect_function_symbols(elf: &ElfFile<'_>, symbols: &mut Vec<TableSymbol>) {
    for symbol in elf.symbols().chain(elf.dynamic_symbols()) {
        if symbol.kind() != SymbolKind::Text || !symbol.is_definition() {
            continue;
        }
        let Ok(name) = symbol.name() else { continue };
        if name.is_empty() {
            continue;
        }
        let section_end = symbol
            .section_index()
            .and_then(|index| elf.section_by_index(index).ok())
            .map(|section| section.address().saturating_add(section.size()));
        symbols.push(TableSymbol {
            start: symbol.address(),
            size: symbol.size(),
            section_end,
            is_local: symbol.is_local(),
            name: name.into(),
        });
    }
}

/// Function symbols sorted by address, answering "which function contains this address" while
/// respecting each symbol's extent.
#[derive(Default)]
struct SymbolTable {
    /// Sorted by start, then best name first among aliases.
    symbols: Vec<IndexedSymbol>,
    /// `reach[i]` is the largest end among `symbols[..=i]`: a lookup walking down can stop once
    /// no earlier symbol reaches the address.
    reach: Vec<u64>,
}

/// A symbol's module-relative extent `start..end` and name.
struct IndexedSymbol {
    start: u64,
    end: u64,
    name: Box<str>,
}

impl SymbolTable {
    fn new(mut symbols: Vec<TableSymbol>) -> SymbolTable {
        // Among aliases at one address (`__mmap`, `mmap`, `mmap64`), the name a user would
        // write comes first: fewest leading underscores, global before local, shortest.
        let preference = |symbol: &TableSymbol| {
            let underscores = symbol.name.bytes().take_while(|&byte| byte == b'_').count();
            (underscores, symbol.is_local, symbol.name.len())
        };
        symbols.sort_by(|a, b| {
            (a.start, preference(a), &a.name, std::cmp::Reverse(a.size)).cmp(&(
                b.start,
                preference(b),
                &b.name,
                std::cmp::Reverse(b.size),
            ))
        });
        // The same symbol often appears in .symtab of both files and in .dynsym; the copy with
        // a size sorts first and is kept.
        symbols.dedup_by(|later, kept| later.start == kept.start && later.name == kept.name);

        let mut indexed = Vec::with_capacity(symbols.len());
        let mut next_start = None;
        for symbol in symbols.into_iter().rev() {
            let end = if symbol.size > 0 {
                symbol.start.saturating_add(symbol.size)
            } else {
                // A symbol of unknown size (hand-written assembly without `.size`) covers the
                // bytes up to the next symbol, and never past its section. Without a section
                // it covers nothing.
                match (symbol.section_end, next_start) {
                    (Some(section_end), Some(next)) => section_end.min(next),
                    (Some(section_end), None) => section_end,
                    (None, _) => symbol.start,
                }
            };
            if next_start.is_none_or(|next| symbol.start < next) {
                next_start = Some(symbol.start);
            }
            indexed.push(IndexedSymbol { start: symbol.start, end, name: symbol.name });
        }
        indexed.reverse();
        let reach = indexed
            .iter()
            .scan(0, |reach, symbol| {
                *reach = symbol.end.max(*reach);
                Some(*reach)
            })
            .collect();
        SymbolTable { symbols: indexed, reach }
    }

    /// The (raw, mangled) name of the function containing module-relative `addr`: the symbol
    /// with the highest start whose extent contains it. Never a symbol that ends before `addr`.
    fn name_of(&self, addr: u64) -> Option<&str> {
        let candidates = self.symbols.partition_point(|symbol| symbol.start <= addr);
        let mut found: Option<&IndexedSymbol> = None;
        for index in (0..candidates).rev().take(MAX_SYMBOL_WALK) {
            if self.reach[index] <= addr {
                break;
            }
            let symbol = &self.symbols[index];
            match found {
                // Past the aliases of the symbol found: an earlier start is an outer symbol.
                Some(best) if best.start != symbol.start => break,
                // Aliases sort best first, so a lower index replaces the one found.
                _ if addr < symbol.end => found = Some(symbol),
                _ => {}
            }
        }
        found.map(|symbol| &*symbol.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// The first (lowest) region of /proc/self/maps whose path satisfies `wanted`:
    /// (start, file offset, path).
    fn self_mapping(wanted: impl Fn(&str) -> bool) -> (u64, u64, String) {
        let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
        for line in maps.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 6 || !wanted(fields[5]) {
                continue;
            }
            let start = fields[0].split('-').next().unwrap();
            return (
                u64::from_str_radix(start, 16).unwrap(),
                u64::from_str_radix(fields[2], 16).unwrap(),
                fields[5..].join(" "),
            );
        }
        panic!("no mapping in /proc/self/maps matches:\n{maps}");
    }

    /// A fresh directory for one test.
    fn scratch_dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vmshim-symbolize-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }

    /// The module-relative address and size of symbol `name` in the ELF file at `path`.
    fn symbol_in_file(path: &Path, name: &str) -> Option<(u64, u64)> {
        let data = std::fs::read(path).expect("read ELF file");
        let elf = object::File::parse(&*data).expect("parse ELF file");
        elf.symbols()
            .chain(elf.dynamic_symbols())
            .find(|symbol| symbol.name() == Ok(name))
            .map(|symbol| (symbol.address(), symbol.size()))
    }

    fn module_of_self(wanted: impl Fn(&str) -> bool) -> LoadedModule {
        let (start, offset, path) = self_mapping(wanted);
        LoadedModule::from_mapping(&path, start, offset)
            .unwrap_or_else(|| panic!("from_mapping failed for {path}"))
    }

    fn table(symbols: &[(u64, u64, Option<u64>, bool, &str)]) -> SymbolTable {
        SymbolTable::new(
            symbols
                .iter()
                .map(|&(start, size, section_end, is_local, name)| TableSymbol {
                    start,
                    size,
                    section_end,
                    is_local,
                    name: name.into(),
                })
                .collect(),
        )
    }

    /// strace -k names an address in glibc's static `alloc_new_heap` `timer_settime+0x1125`,
    /// the nearest exported symbol. With libc6-dbg's debug file, found by build id, it must be
    /// named right, with its file and line.
    #[test]
    fn names_glibc_internal_function_from_build_id_debug_file() {
        let libc = module_of_self(|path| path.ends_with("/libc.so.6"));
        assert!(!libc.build_id.is_empty(), "libc has a build id");
        let debug_file = build_id_debug_path(&libc.build_id).unwrap();
        assert!(debug_file.is_file(), "{} is missing: install libc6-dbg", debug_file.display());
        let (start, size) =
            symbol_in_file(&debug_file, "alloc_new_heap").expect("alloc_new_heap in libc's debug symtab");
        assert!(size > 2);
        assert_eq!(
            symbol_in_file(Path::new(&libc.path), "alloc_new_heap"),
            None,
            "libc itself does not export alloc_new_heap, so the name must come from the debug file"
        );
        let absolute = start + libc.base;

        let mut symbolizer = Symbolizer::new(vec![libc.clone()]);
        assert_eq!(symbolizer.module_of(absolute).unwrap().path, libc.path);
        for (addr, is_return_address) in [(absolute + 1, true), (absolute + size / 2, false)] {
            let frames = symbolizer.symbolize(addr, is_return_address);
            let outermost = frames.last().unwrap();
            assert_eq!(outermost.function.as_deref(), Some("alloc_new_heap"), "{frames:#?}");
            assert!(outermost.file.as_deref().is_some_and(|file| file.ends_with("arena.c")), "{frames:#?}");
            assert!(outermost.line.is_some(), "{frames:#?}");
            assert!(
                frames
                    .iter()
                    .all(|frame| frame.addr == addr && frame.module.as_deref() == Some(libc.path.as_str()))
            );
        }
    }

    /// A module whose recorded build id is not the file's must not be named from the file.
    #[test]
    fn file_with_another_build_id_is_not_used() {
        let mut libc = module_of_self(|path| path.ends_with("/libc.so.6"));
        let (mmap, _) = symbol_in_file(Path::new(&libc.path), "mmap").expect("libc exports mmap");
        libc.build_id = vec![0xde, 0xad, 0xbe, 0xef, 0x01];
        let path = libc.path.clone();
        let absolute = mmap + libc.base;
        let frames = Symbolizer::new(vec![libc]).symbolize(absolute, false);
        assert_eq!(
            frames,
            vec![Frame { addr: absolute, function: None, file: None, line: None, module: Some(path) }]
        );
    }

    #[inline(never)]
    fn marker_function() -> u64 {
        std::hint::black_box(7)
    }

    /// The test binary is a position-independent Rust executable with DWARF: checks the load
    /// bias of a PIE and Rust demangling.
    #[test]
    fn names_rust_function_in_pie_from_dwarf() {
        let exe = std::env::current_exe().unwrap();
        let exe = exe.to_str().unwrap().to_owned();
        let module = module_of_self(|path| path == exe);
        let addr = marker_function as fn() -> u64 as usize as u64;
        assert_eq!(marker_function(), 7);
        let frames = Symbolizer::new(vec![module]).symbolize(addr, false);
        let outermost = frames.last().unwrap();
        assert!(
            outermost
                .function
                .as_deref()
                .is_some_and(|name| name.ends_with("symbolize::tests::marker_function")),
            "{frames:#?}"
        );
        assert!(
            outermost.file.as_deref().is_some_and(|file| file.ends_with("symbolize/mod.rs")),
            "{frames:#?}"
        );
    }

    /// A zlib section inflates into the shared buffer whole; a wrong size in its header, a
    /// corrupt stream or another format leaves it to `object` (None).
    #[test]
    fn a_zlib_section_inflates_into_the_shared_buffer_or_is_left_to_object() {
        use std::io::Write;
        let original: Vec<u8> = (0..200_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&original).unwrap();
        let compressed = z.finish().unwrap();
        fn zlib(data: &[u8], uncompressed_size: u64) -> object::CompressedData<'_> {
            object::CompressedData { format: object::CompressionFormat::Zlib, data, uncompressed_size }
        }
        let size = original.len() as u64;
        assert_eq!(inflate_shared(&zlib(&compressed, size)).as_deref(), Some(&original[..]));
        assert!(inflate_shared(&zlib(&compressed, size - 1)).is_none(), "a header that says less");
        assert!(inflate_shared(&zlib(&compressed, size + 1)).is_none(), "a header that says more");
        assert!(inflate_shared(&zlib(&compressed[..compressed.len() / 2], size)).is_none(), "cut short");
        assert!(inflate_shared(&zlib(&compressed, INFLATE_SHARED_MAX + 1)).is_none(), "too large");
        let plain = object::CompressedData::none(&original);
        assert!(inflate_shared(&plain).is_none(), "uncompressed data is object's to borrow");
    }

    /// libc6-dbg's .debug_info (zlib, 5.8 MiB) inflated on a thread of its own names libc's code
    /// as the same file read on one thread does: the same frames, file and line for a function
    /// of each stretch of libc's text.
    #[test]
    fn libcs_dwarf_inflated_apart_names_frames_as_inflated_in_turn() {
        let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
        let build_id = with_elf(libc, |elf| build_id_of(elf).map(<[u8]>::to_vec)).expect("libc's build id");
        let debug = build_id_debug_path(&build_id).unwrap();
        assert!(debug.exists(), "this test needs libc6-dbg ({} is missing)", debug.display());
        let functions = ["malloc", "__mmap", "start_thread", "getaddrinfo", "setlocale", "qsort"];
        let at: Vec<u64> = functions
            .iter()
            .map(|f| symbol_in_file(&debug, f).unwrap_or_else(|| panic!("{f} in libc's symbols")).0 + 1)
            .collect();
        let frames = |apart: bool| {
            with_elf(&debug, |elf| {
                let info = elf.section_by_name(".debug_info")?.compressed_data().ok()?;
                assert!(info.uncompressed_size >= INFLATE_APART_MIN, "libc's .debug_info is inflated apart");
                let dwarf = std::thread::scope(|s| {
                    let inflating = apart.then(|| s.spawn(move || inflate_shared(&info)));
                    load_dwarf(elf, &debug, inflating)
                })?;
                let named = at.iter().map(|&a| {
                    let mut found = dwarf.find_frames(a).skip_all_loads().ok()?;
                    let mut names = Vec::new();
                    while let Ok(Some(f)) = found.next() {
                        let function = f.function.and_then(|n| n.demangle().ok().map(|n| n.into_owned()));
                        let at = f.location.map(|l| (l.file.map(str::to_owned), l.line));
                        names.push((function, at));
                    }
                    Some(names)
                });
                Some(named.collect::<Vec<_>>())
            })
            .expect("libc's debug file has DWARF")
        };
        let (apart, in_turn) = (frames(true), frames(false));
        assert_eq!(apart, in_turn);
        assert!(
            apart.iter().all(|f| f.as_ref().is_some_and(|f| f
                .iter()
                .any(|(_, at)| at.as_ref().is_some_and(|(file, line)| file.is_some() && line.is_some())))),
            "every function has a file and line: {apart:#?}"
        );
    }

    /// Go 1.19 names functions in .symtab and compresses its DWARF (`SHF_COMPRESSED` sections).
    #[test]
    fn names_go_functions() {
        let dir = scratch_dir("go");
        std::fs::write(
            dir.join("main.go"),
            "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"hello\")\n}\n",
        )
        .unwrap();
        let mut go = Command::new("go");
        go.args(["build", "-o", "hello", "main.go"]).current_dir(&dir);
        if std::env::var_os("GOCACHE").is_none() && std::env::var_os("HOME").is_none() {
            go.env("GOCACHE", dir.join("gocache"));
        }
        let output = go
            .output()
            .unwrap_or_else(|error| panic!("this test needs Go 1.19 or later on PATH (`go`): {error}"));
        assert!(output.status.success(), "go build failed: {}", String::from_utf8_lossy(&output.stderr));
        let binary = dir.join("hello");
        let path = binary.to_str().unwrap();

        // Where the kernel would map the first segment: for a non-PIE Go binary, at its vaddr.
        let data = std::fs::read(&binary).unwrap();
        let elf = object::File::parse(&*data).unwrap();
        let first = elf.segments().map(|segment| segment.address()).min().unwrap();
        let module = LoadedModule::from_mapping(path, page_down(first), 0).unwrap();
        assert_eq!(module.base, 0);
        // Go writes its own .note.go.buildid, not a GNU build id, unless linked with -B.

        let (main_main, _) = symbol_in_file(&binary, "main.main").expect("main.main in symtab");
        let (new_m, _) = symbol_in_file(&binary, "runtime.newm").expect("runtime.newm in symtab");
        let mut symbolizer = Symbolizer::new(vec![module]);
        let frames = symbolizer.symbolize(main_main + 1, true);
        let outermost = frames.last().unwrap();
        assert_eq!(outermost.function.as_deref(), Some("main.main"), "{frames:#?}");
        assert_eq!(outermost.module.as_deref(), Some(path));
        assert!(
            outermost.file.as_deref().is_some_and(|file| file.ends_with("main.go")),
            "DWARF file and line from compressed sections: {frames:#?}"
        );
        assert!(outermost.line.is_some(), "{frames:#?}");
        let frames = symbolizer.symbolize(new_m, false);
        assert_eq!(frames.last().unwrap().function.as_deref(), Some("runtime.newm"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Runs `program` with `args` in `dir`, failing the test with its stderr if it fails.
    fn run(dir: &Path, program: &str, args: &[&str]) {
        let output = Command::new(program)
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|error| panic!("this test needs `{program}` on PATH: {error}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// A C program without a build id, split the way `dh_strip` used to do it: the debug file
    /// is found by its `.gnu_debuglink` name (next to the program, then in `.debug/`) and
    /// trusted only when its CRC matches.
    #[test]
    fn names_static_function_from_debuglink_file() {
        let dir = scratch_dir("debuglink");
        std::fs::write(
            dir.join("prog.c"),
            "static __attribute__((noinline)) int hidden_helper(int x) { return x * 3 + 1; }\n\
             int main(int argc, char **argv) { (void)argv; return hidden_helper(argc); }\n",
        )
        .unwrap();
        run(&dir, "gcc", &["-g", "-O1", "-Wl,--build-id=none", "-o", "prog", "prog.c"]);
        run(&dir, "objcopy", &["--only-keep-debug", "prog", "prog.debug"]);
        run(&dir, "strip", &["--strip-all", "prog"]);
        run(&dir, "objcopy", &["--add-gnu-debuglink=prog.debug", "prog"]);
        let program = dir.join("prog");
        let path = program.to_str().unwrap().to_owned();
        let (helper, _) = symbol_in_file(&dir.join("prog.debug"), "hidden_helper")
            .expect("hidden_helper in the debug file");
        assert_eq!(symbol_in_file(&program, "hidden_helper"), None, "stripped");

        let module = LoadedModule::from_mapping(&path, 0x5555_0000_0000, 0).unwrap();
        assert!(module.build_id.is_empty());
        let named = |module: &LoadedModule| {
            let frames = Symbolizer::new(vec![module.clone()]).symbolize(helper + module.base, false);
            frames.last().unwrap().clone()
        };
        let frame = named(&module);
        assert_eq!(frame.function.as_deref(), Some("hidden_helper"), "{frame:#?}");
        assert!(frame.file.as_deref().is_some_and(|file| file.ends_with("prog.c")));
        assert_eq!(frame.line, Some(1));

        std::fs::create_dir(dir.join(".debug")).unwrap();
        std::fs::rename(dir.join("prog.debug"), dir.join(".debug/prog.debug")).unwrap();
        assert_eq!(named(&module).function.as_deref(), Some("hidden_helper"));

        // Another build's debug file under the same name: its CRC differs, so it is not used.
        run(&dir, "gcc", &["-g", "-O0", "-Wl,--build-id=none", "-o", "other", "prog.c"]);
        run(&dir, "objcopy", &["--only-keep-debug", "other", ".debug/prog.debug"]);
        assert_eq!(named(&module).function, None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn address_past_a_sized_symbol_is_not_named() {
        let symbols = table(&[
            (0x1000, 0x10, Some(0x9000), false, "first"),
            (0x1100, 0x20, Some(0x9000), false, "second"),
        ]);
        assert_eq!(symbols.name_of(0x0fff), None);
        assert_eq!(symbols.name_of(0x1000), Some("first"));
        assert_eq!(symbols.name_of(0x100f), Some("first"));
        assert_eq!(symbols.name_of(0x1010), None, "past the end of `first`");
        assert_eq!(symbols.name_of(0x10ff), None);
        assert_eq!(symbols.name_of(0x111f), Some("second"));
        assert_eq!(symbols.name_of(0x1120), None);
    }

    #[test]
    fn unsized_symbol_reaches_the_next_symbol_or_its_section_end() {
        let symbols = table(&[
            (0x1000, 0, Some(0x3000), false, "asm_entry"),
            (0x1800, 0x10, Some(0x3000), false, "sized"),
            (0x2000, 0, Some(0x3000), false, "last_asm"),
            (0x4000, 0, None, false, "absolute"),
        ]);
        assert_eq!(symbols.name_of(0x17ff), Some("asm_entry"));
        assert_eq!(symbols.name_of(0x1810), None, "an unsized symbol before `sized` stops at it");
        assert_eq!(symbols.name_of(0x2fff), Some("last_asm"));
        assert_eq!(symbols.name_of(0x3000), None, "past the section");
        assert_eq!(symbols.name_of(0x4000), None, "no section, no extent");
    }

    #[test]
    fn symbol_nested_in_a_larger_one() {
        let symbols = table(&[
            (0x1000, 0x100, Some(0x9000), false, "outer"),
            (0x1040, 0x10, Some(0x9000), true, "inner"),
        ]);
        assert_eq!(symbols.name_of(0x1045), Some("inner"));
        assert_eq!(symbols.name_of(0x1080), Some("outer"));
    }

    #[test]
    fn alias_a_user_would_write_is_preferred() {
        let symbols = table(&[
            (0x1000, 0x40, Some(0x9000), false, "__mmap64"),
            (0x1000, 0x40, Some(0x9000), false, "__mmap"),
            (0x1000, 0x40, Some(0x9000), false, "mmap64"),
            (0x1000, 0x40, Some(0x9000), false, "mmap"),
            (0x1000, 0, Some(0x9000), false, "mmap"),
        ]);
        assert_eq!(symbols.symbols.len(), 4, "duplicate `mmap` merged");
        assert_eq!(symbols.name_of(0x1020), Some("mmap"));
        assert_eq!(symbols.name_of(0x1040), None, "the sized copy of `mmap` was kept");
    }

    #[test]
    fn symbol_table_names_are_demangled() {
        let info = DebugInfo {
            dwarf: None,
            symbols: table(&[
                (0x1000, 0x10, None, false, "_ZN3foo3bar17h0123456789abcdefE"),
                (0x2000, 0x10, None, false, "_ZN3foo3bazEi"),
                (0x3000, 0x10, None, false, "runtime.sysReserve"),
                (0x4000, 0x10, None, false, "f"),
            ]),
            go: None,
        };
        let name = |addr| info.frames(addr, addr, "m").pop().unwrap().function;
        assert_eq!(name(0x1000).as_deref(), Some("foo::bar"));
        assert_eq!(name(0x2000).as_deref(), Some("foo::baz(int)"));
        assert_eq!(name(0x3000).as_deref(), Some("runtime.sysReserve"));
        assert_eq!(name(0x4000).as_deref(), Some("f"), "a C name is not a C++ type");
    }

    #[test]
    fn address_outside_every_module_has_no_module() {
        let libc = module_of_self(|path| path.ends_with("/libc.so.6"));
        let mut symbolizer = Symbolizer::new(vec![libc.clone()]);
        for addr in [0, 1, libc.lo - 1, libc.hi, u64::MAX] {
            assert_eq!(symbolizer.module_of(addr).map(|m| &m.path), None);
            assert_eq!(
                symbolizer.symbolize(addr, false),
                vec![Frame { addr, function: None, file: None, line: None, module: None }]
            );
        }
        // A return address just past the module's end belongs to its last byte.
        let frames = symbolizer.symbolize(libc.hi, true);
        assert_eq!(frames[0].module.as_deref(), Some(libc.path.as_str()));
        assert!(symbolizer.module_of(libc.lo).is_some());
        assert!(symbolizer.module_of(libc.hi - 1).is_some());
    }

    /// Missing, non-ELF and damaged files give unnamed frames with the module set: never a
    /// panic, never a name.
    #[test]
    fn unreadable_files_give_unnamed_frames() {
        let dir = scratch_dir("unreadable");
        let text = dir.join("notes.txt");
        std::fs::write(&text, "not an ELF file\n").unwrap();
        assert!(LoadedModule::from_mapping(text.to_str().unwrap(), 0x1000, 0).is_none());
        assert!(LoadedModule::from_mapping("/nonexistent/libgone.so", 0x1000, 0).is_none());
        assert!(LoadedModule::from_mapping("/dev/zero", 0x1000, 0).is_none());

        let libc = module_of_self(|path| path.ends_with("/libc.so.6"));
        let original = std::fs::read(&libc.path).unwrap();
        let mut paths = vec!["/nonexistent/libgone.so".to_owned(), text.to_str().unwrap().to_owned()];
        for cut in [16, 64, 1000, 65536, original.len() / 2] {
            let damaged = dir.join(format!("truncated-{cut}.so"));
            std::fs::write(&damaged, &original[..cut]).unwrap();
            paths.push(damaged.to_str().unwrap().to_owned());
        }
        // Scribble over the headers' tables (program headers at 64, section headers at the end)
        // and over the middle of the file.
        for (at, len) in [(64, 512), (original.len() - 4096, 4096), (original.len() / 3, 65536)] {
            let mut damaged_bytes = original.clone();
            for (index, byte) in damaged_bytes[at..at + len].iter_mut().enumerate() {
                *byte = (index as u8).wrapping_mul(37) ^ 0xa5;
            }
            let damaged = dir.join(format!("scribbled-{at}.so"));
            std::fs::write(&damaged, damaged_bytes).unwrap();
            paths.push(damaged.to_str().unwrap().to_owned());
        }
        for path in paths {
            let _ = LoadedModule::from_mapping(&path, libc.lo, 0);
            let module = LoadedModule { path: path.clone(), ..libc.clone() };
            let build_id_recorded = module.clone();
            let no_build_id = LoadedModule { build_id: Vec::new(), ..module };
            for module in [build_id_recorded, no_build_id] {
                let mut symbolizer = Symbolizer::new(vec![module.clone()]);
                for addr in [module.lo, module.lo + 0x1234, module.hi - 1] {
                    let frames = symbolizer.symbolize(addr, false);
                    assert!(!frames.is_empty());
                    assert_eq!(frames[0].addr, addr);
                    assert_eq!(frames[0].module.as_deref(), Some(path.as_str()));
                    if path.contains("nonexistent") || path.ends_with(".txt") {
                        assert_eq!(frames[0].function, None);
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn answers_are_cached_and_files_read_once() {
        let libc = module_of_self(|path| path.ends_with("/libc.so.6"));
        let second_copy = LoadedModule {
            lo: libc.hi + 0x10000,
            hi: libc.hi + 0x10000 + (libc.hi - libc.lo),
            base: libc.base + (libc.hi - libc.lo) + 0x10000,
            ..libc.clone()
        };
        let mut symbolizer = Symbolizer::new(vec![second_copy.clone(), libc.clone()]);
        let first = symbolizer.symbolize(libc.lo + 0x30000, true);
        let again = symbolizer.symbolize(libc.lo + 0x30000, true);
        assert_eq!(first, again);
        assert!(symbolizer.frames_by_address.contains_key(&(libc.lo + 0x30000, true)));
        symbolizer.symbolize(second_copy.lo + 0x30000, true);
        assert_eq!(symbolizer.debug_infos.len(), 1, "one file, parsed once");
    }
}
