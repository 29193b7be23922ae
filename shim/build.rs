//! Links libgcc's unwinder (`libgcc_eh.a`) into libvmshim.so instead of loading
//! `libgcc_s.so.1` beside it (issue 12, cheap start). Loading libgcc_s runs its constructor,
//! `__cpu_indicator_init`, whose `cpuid` instructions trap to the hypervisor in a VM: measured
//! here at 0.15 ms of every process start, half the start-up budget, for a library only the
//! shim's stack walks need. The static copy is the same code (`_Unwind_Find_FDE` through
//! `_dl_find_object`, `_Unwind_Backtrace`), local to the shim: the cdylib exports only its hooks.
//! Linked as the shim crate's own native library, it comes right after the shim's objects, so
//! it satisfies their `_Unwind_*` references before the linker reaches std's `-lgcc_s`, which
//! `--as-needed` then leaves out.
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if !target.contains("linux-gnu") {
        return;
    }
    // The functions a short process runs at its start and a fork child in its fork are placed in
    // `.text.hot.vmshim` sections; this keeps them together in one output section (LLD, and GNU
    // ld from 2.31; GNU ld's default script groups `.text.hot.*` by itself).
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,keep-text-section-prefix");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let Ok(out) = Command::new(&cc).arg("-print-file-name=libgcc_eh.a").output() else {
        println!("cargo:warning={cc} not found: libvmshim.so will load libgcc_s.so.1");
        return;
    };
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let path = std::path::Path::new(&path);
    match path.parent().filter(|_| path.is_absolute() && path.exists()) {
        Some(dir) => {
            println!("cargo:rustc-link-search=native={}", dir.display());
            println!("cargo:rustc-link-lib=static=gcc_eh");
        }
        None => println!("cargo:warning=no libgcc_eh.a: libvmshim.so will load libgcc_s.so.1"),
    }
}
