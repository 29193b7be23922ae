//! What the Go runtime reserved a region for, in Go's own words.
//!
//! Every place in Go's runtime that asks the OS for memory names it at the call
//! (`sysReserve(nil, n, "page summary")`, `sysAlloc(n, stat, "gc bits")`, ...; Go >= 1.25 also
//! writes those words into the kernel's map names, `[anon: Go: page summary]`, where the kernel
//! has CONFIG_ANON_VMA_NAME). A recorded call's stack shows which runtime function asked: the
//! first frame, counting outwards from libc's `mmap`, that is not one of the runtime's memory
//! primitives (`sysReserve`, `sysMap`, `sysAllocOS`, cgo's mmap trampoline, ...). [`PURPOSES`]
//! maps that function to the words of its call site; the function names have held from Go 1.19
//! to 1.27 (checked against each version's `src/runtime`).

/// The runtime's memory primitives and the cgo path to libc's mmap: frames between the
/// function that asked and the system call.
fn is_primitive(f: &str) -> bool {
    matches!(
        f,
        "mmap"
            | "mmap64"
            | "x_cgo_mmap"
            | "runtime.callCgoMmap"
            | "runtime.mmap"
            | "runtime.mmap.func1"
            | "runtime.sysMmap"
            | "runtime.(*linearAlloc).alloc"
    ) || (f.starts_with("runtime.sys") && !f.starts_with("runtime.sysmon"))
}

/// The runtime function that asks for memory, and what Go calls what it gets.
const PURPOSES: &[(&str, &str)] = &[
    ("runtime.(*pageAlloc).sysInit", "page summary"),
    ("runtime.(*pageAlloc).sysGrow", "page alloc"),
    ("runtime.(*pageAlloc).grow", "page alloc index"),
    ("runtime.(*scavengeIndex).sysInit", "scavenge index"),
    ("runtime.(*scavengeIndex).sysGrow", "scavenge index"),
    ("runtime.(*scavengeIndex).grow", "scavenge index"),
    ("runtime.mallocinit", "heap reservation"),
    ("runtime.(*mheap).grow", "heap"),
    ("runtime.(*mheap).allocUserArenaChunk", "user arena chunk"),
    ("runtime.persistentalloc1", "immortal metadata"),
    ("runtime.newArenaMayUnlock", "gc bits"),
    ("runtime.recordspan", "allspans array"),
    ("runtime.stkbucket", "profiler hash buckets"),
    ("runtime.stackalloc", "goroutine stack (system)"),
    ("runtime.newosproc", "OS thread stack"),
    ("runtime.newosproc0", "OS thread stack"),
    ("runtime.traceWriter.refill", "trace buffer"),
    ("runtime.(*traceRegionAlloc).alloc", "trace arena alloc"),
    ("runtime.newSpanSPMC", "GC span queue"),
    ("runtime.dlogImpl", "debug log"),
    ("runtime.makeheapobjbv", "heapdump"),
];

/// What `(*mheap).sysAlloc` gets depends on the primitive it called: the heap's address range,
/// or the heap's index of arenas.
fn mheap_sys_alloc(primitive: Option<&str>) -> &'static str {
    match primitive {
        Some("runtime.sysAllocOS") | Some("runtime.sysAlloc") => "heap index",
        Some("runtime.sysMap") | Some("runtime.sysMapOS") => "heap",
        _ => "heap reservation",
    }
}

/// The purpose of a Go runtime region and the function that asked for it, from the recorded
/// call's frames (function names, innermost first; None for a frame without one). None when no
/// runtime function is on the stack above the primitives.
pub fn from_stack(functions: &[Option<&str>]) -> Option<(String, String)> {
    let mut primitive = None;
    for f in functions {
        let Some(f) = *f else { continue };
        if is_primitive(f) {
            primitive = Some(f);
            continue;
        }
        // The program's own code, or C code it called through cgo, asked: not the runtime.
        if !f.starts_with("runtime.") || matches!(f, "runtime.cgocall" | "runtime.asmcgocall") {
            return None;
        }
        let words = match f {
            "runtime.(*mheap).sysAlloc" => mheap_sys_alloc(primitive),
            _ => match PURPOSES.iter().find(|(name, _)| *name == f) {
                Some((_, words)) => words,
                None => return Some((format!("other ({f})"), f.to_owned())),
            },
        };
        return Some((words.to_owned(), f.to_owned()));
    }
    None
}

/// The purpose the kernel's map already gives a mapping Go >= 1.25 named
/// (`[anon: Go: page summary]`).
pub fn from_kernel_name(path: &str) -> Option<String> {
    let words = path.strip_prefix("[anon: Go: ")?.strip_suffix(']')?;
    (!words.is_empty()).then(|| words.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_asking_function_is_the_first_above_the_primitives() {
        let cgo = [
            Some("mmap"),
            Some("x_cgo_mmap"),
            Some("runtime.callCgoMmap"),
            Some("runtime.mmap.func1"),
            Some("runtime.mmap"),
            Some("runtime.sysReserveOS"),
            Some("runtime.sysReserve"),
            Some("runtime.(*pageAlloc).sysInit"),
            Some("runtime.(*pageAlloc).init"),
        ];
        assert_eq!(from_stack(&cgo), Some(("page summary".into(), "runtime.(*pageAlloc).sysInit".into())));
        // A stripped C trampoline has no name: it is skipped, not taken for the asker.
        let stripped = [
            Some("mmap"),
            None,
            Some("runtime.callCgoMmap"),
            Some("runtime.sysAllocOS"),
            Some("runtime.(*mheap).sysAlloc"),
        ];
        assert_eq!(from_stack(&stripped).unwrap().0, "heap index");
        let reserve = [Some("mmap"), Some("runtime.sysReserve"), Some("runtime.(*mheap).sysAlloc")];
        assert_eq!(from_stack(&reserve).unwrap().0, "heap reservation");
        let unknown = [Some("mmap"), Some("runtime.sysAlloc"), Some("runtime.somethingNew")];
        assert_eq!(from_stack(&unknown).unwrap().0, "other (runtime.somethingNew)");
        // Not the runtime's: a program's own mmap from Go code (syscall.Mmap) or C.
        assert_eq!(from_stack(&[Some("mmap"), Some("main.main")]), None);
        assert_eq!(from_stack(&[Some("mmap"), None, Some("runtime.cgocall")]), None, "C code called from Go");
        assert_eq!(from_kernel_name("[anon: Go: gc bits]").as_deref(), Some("gc bits"));
        assert_eq!(from_kernel_name("[anon: glibc: malloc arena]"), None);
    }
}
