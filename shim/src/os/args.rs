//! The process's command line as `/proc/self/cmdline` gives it, read from the argument area
//! itself. Opening the file cost a fork child or a new image about 10 µs (its first access to
//! /proc makes the kernel build the pid's directory) and the read two more, in every process
//! of a shell loop (issue 12); a copy from the process's own memory is one system call.
//!
//! The kernel's area (`mm->arg_start..arg_end`) holds the argument strings as exec laid them
//! out, each right after the one before; the environment strings follow, then the name the
//! program was exec'd by (`AT_EXECFN`). The constructor notes it from the argc, argv and envp
//! glibc passes to every init_array function, and only when the pointers lie exactly so: the
//! loader run as a command (`ld.so PROGRAM`) shifts argv past its own arguments, and a
//! constructor before ours may have moved them. Otherwise the file is read as before.
//!
//! What the file gives (fs/proc/base.c, get_mm_cmdline) is the area as it is now, except when
//! its last byte is no longer a NUL (a program that wrote its title over its arguments, as
//! setproctitle does): then from the area's start up to the first NUL, as far as the end of
//! the environment strings. [`cmdline`] reads the same bytes, with `process_vm_readv`, which
//! fails rather than faults should the area be gone.

use crate::os::syscall as sys;
use core::ffi::{c_char, c_int};
use core::sync::atomic::{AtomicUsize, Ordering::*};

/// The area: its start (0 while unknown), the end of the arguments, the end of the environment.
#[unsafe(link_section = ".data.vmshim_hot")]
static AREA: [AtomicUsize; 3] = [const { AtomicUsize::new(0) }; 3];

/// Notes the argument area from the constructor's arguments, if they lie as exec laid them out.
///
/// # Safety
/// `argv` holds `argc` pointers to NUL-terminated strings and `envp` is a null-terminated array
/// of them, as glibc passes to an init_array function.
#[unsafe(link_section = ".text.hot.vmshim")]
pub unsafe fn note(argc: c_int, argv: *const *const c_char, envp: *const *const c_char) {
    if argc <= 0 || argv.is_null() || envp.is_null() {
        return;
    }
    // Each string of `list` right after the one before, from `at`: where the last one ends.
    let contiguous = |list: *const *const c_char, n: Option<usize>, mut at: usize| {
        // SAFETY: `list` is argv (argc pointers) or envp (null-terminated), the caller's
        // contract, and each string ends at its NUL, which strlen reads to.
        unsafe {
            let mut i = 0;
            loop {
                let s = *list.add(i);
                if n.map_or(s.is_null(), |n| i == n) {
                    return Some(at);
                }
                if s.is_null() || s as usize != at {
                    return None;
                }
                at += libc::strlen(s) + 1;
                i += 1;
            }
        }
    };
    // SAFETY: argv holds argc pointers (the caller's contract).
    let start = unsafe { *argv } as usize;
    let Some(arg_end) = contiguous(argv, Some(argc as usize), start) else { return };
    let Some(env_end) = contiguous(envp, None, arg_end) else { return };
    // SAFETY: getauxval reads the auxiliary vector the kernel gave the process.
    if unsafe { libc::getauxval(libc::AT_EXECFN) } as usize != env_end {
        return;
    }
    AREA[1].store(arg_end, Relaxed);
    AREA[2].store(env_end, Relaxed);
    AREA[0].store(start, Release);
}

/// `/proc/self/cmdline` as far as `out` holds it, its length; None when the area is not known
/// (read the file then).
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn cmdline(out: &mut [u8]) -> Option<usize> {
    let start = AREA[0].load(Acquire);
    if start == 0 {
        return None;
    }
    let (arg_end, env_end) = (AREA[1].load(Relaxed), AREA[2].load(Relaxed));
    // The arguments in one read when they fit, their last byte with them; a separate read of
    // that byte otherwise (one system call less in every fork child, issue 12).
    let whole = arg_end - start;
    if whole <= out.len() {
        if sys::read_own_memory_partial(start, &mut out[..whole]) != whole {
            return None;
        }
        if out[whole - 1] == 0 {
            return Some(whole);
        }
    }
    let mut last = [0u8];
    if sys::read_own_memory_partial(arg_end - 1, &mut last) != 1 {
        return None;
    }
    let retitled = last[0] != 0;
    let n = (if retitled { env_end } else { arg_end } - start).min(out.len());
    if sys::read_own_memory_partial(start, &mut out[..n]) != n {
        return None;
    }
    Some(if retitled { out[..n].iter().position(|&b| b == 0).map_or(n, |i| i + 1) } else { n })
}
