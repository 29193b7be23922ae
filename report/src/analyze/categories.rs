//! The categories a byte of address space is filed under, in the words a user would say, and
//! what the kernel's map alone proves about a region no recorded call explains (its path,
//! permissions, an ELF image's span, a sanitizer's fixed ranges).

use crate::load::maps::Region;
use crate::symbolize::Symbolizer;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    ThreadStack,
    MallocArena,
    MallocLarge,
    GoRuntime,
    AnonMmap,
    Library,
    FileMmap,
    BrkHeap,
    MainStack,
    Kernel,
    /// A sanitizer runtime's shadow memory (ASan's, TSan's shadow and metadata).
    SanitizerShadow,
    /// A sanitizer runtime's own allocator reservation.
    SanitizerAllocator,
    Vmshim,
    /// A fork child's memory from a parent that left no trace: where it came from is known,
    /// why is not.
    Inherited,
    Unattributed,
}

impl Category {
    pub const ALL: [Category; 15] = [
        Category::ThreadStack,
        Category::MallocArena,
        Category::MallocLarge,
        Category::GoRuntime,
        Category::AnonMmap,
        Category::Library,
        Category::FileMmap,
        Category::BrkHeap,
        Category::MainStack,
        Category::Kernel,
        Category::SanitizerShadow,
        Category::SanitizerAllocator,
        Category::Vmshim,
        Category::Inherited,
        Category::Unattributed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Category::ThreadStack => "thread_stack",
            Category::MallocArena => "malloc_arena",
            Category::MallocLarge => "malloc_large",
            Category::GoRuntime => "go_runtime",
            Category::AnonMmap => "anon_mmap",
            Category::Library => "library",
            Category::FileMmap => "file_mmap",
            Category::BrkHeap => "brk_heap",
            Category::MainStack => "main_stack",
            Category::Kernel => "kernel",
            Category::SanitizerShadow => "sanitizer_shadow",
            Category::SanitizerAllocator => "sanitizer_allocator",
            Category::Vmshim => "vmshim",
            Category::Inherited => "inherited",
            Category::Unattributed => "unattributed",
        }
    }
}

/// What the map alone proves about a region no recorded call explains.
/// `at` is where the piece being classified starts inside `r`.
pub fn by_map(r: &Region, at: u64, trace_path: &str, shim_libs: &[String], sym: &Symbolizer) -> Category {
    match r.path.as_str() {
        "[heap]" => return Category::BrkHeap,
        "[stack]" => return Category::MainStack,
        "[vdso]" | "[vvar]" | "[vsyscall]" | "[vvar_vclock]" | "[uprobes]" => return Category::Kernel,
        _ => {}
    }
    if r.is_file() {
        let p = r.file_path();
        if p == trace_path
            || p.ends_with("/libvmshim.so")
            || (!shim_libs.is_empty() && shim_libs.contains(&canonical(p)))
        {
            return Category::Vmshim;
        }
        return if sym.module_of(at).is_some() { Category::Library } else { Category::FileMmap };
    }
    if let Some(c) = sanitizer_region(at, sym) {
        return c;
    }
    // An anonymous region inside an ELF image's span is its .bss (ld.so maps it anonymously).
    if let Some(m) = sym.module_of(at) {
        let ours = m.path.ends_with("/libvmshim.so")
            || (!shim_libs.is_empty() && shim_libs.contains(&canonical(&m.path)));
        return if ours { Category::Vmshim } else { Category::Library };
    }
    Category::Unattributed
}

/// The fixed x86_64 ranges of the sanitizer runtimes, from compiler-rt's layouts
/// (`asan_mapping.h`: shadow at offset 0x7fff8000 from low memory up to the top of high
/// shadow; `asan_allocator.h`: kAllocatorSpace 0x500000000000 or 0x600000000000, 4 TiB or
/// more; `tsan_platform.h`: shadow and metadata below the heap at 0x7b0000000000), checked
/// against the maps of gcc 12's libasan.so.8 and libtsan.so.2 on this machine. The runtimes
/// map them with their own system calls, which no hook sees. Innermost ranges first.
const SANITIZER_RANGES: [(&str, u64, u64, Category); 4] = [
    ("libasan.so", 0x0000_7fff_8000, 0x1000_7fff_8000, Category::SanitizerShadow),
    ("libasan.so", 0x5000_0000_0000, 0x6400_0000_0000, Category::SanitizerAllocator),
    ("libtsan.so", 0x7b00_0000_0000, 0x7c00_0000_0000, Category::SanitizerAllocator),
    ("libtsan.so", 0x0080_0000_0000, 0x7e80_0000_0000, Category::SanitizerShadow),
];

/// The sanitizer category of an anonymous address that no call explains, when the process
/// loaded that sanitizer's runtime.
fn sanitizer_region(at: u64, sym: &Symbolizer) -> Option<Category> {
    SANITIZER_RANGES.iter().find_map(|&(lib, lo, hi, c)| {
        let loaded =
            || sym.modules().iter().any(|m| m.path.rsplit('/').next().is_some_and(|f| f.starts_with(lib)));
        (lo <= at && at < hi && loaded()).then_some(c)
    })
}

/// A path with its symbolic links resolved (the loader may name `/lib/x.so` what the kernel's
/// map names `/usr/lib/x.so`). Remembered for the rest of the command: a run of a thousand
/// processes asks for the same few libraries' paths over and over, a readlink of every component
/// each time (10% of reporting the 1,000-process loop; issue 12).
pub fn canonical(p: &str) -> String {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static KNOWN: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    let known = KNOWN.get_or_init(Default::default);
    if let Some(c) = known.lock().ok().and_then(|k| k.get(p).cloned()) {
        return c;
    }
    let c = std::fs::canonicalize(p).map_or_else(|_| p.to_string(), |c| c.to_string_lossy().into_owned());
    if let Ok(mut k) = known.lock() {
        k.insert(p.to_string(), c.clone());
    }
    c
}
