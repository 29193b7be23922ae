//! `VMSHIM_NAME_MAPPINGS=1`: names the anonymous mappings the shim attributes in the kernel's
//! own view (`prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME)`, Linux 5.17+), so that pmap and
//! /proc/PID/maps show `[anon:vmshim mmap 1234]`. Off by default: named mappings no longer
//! merge with unnamed neighbours, which changes the map the tool measures. Where the kernel
//! refuses, one line on stderr and naming stops; nothing else changes.

use crate::os::syscall as sys;
use core::sync::atomic::{AtomicBool, Ordering::Relaxed};

#[unsafe(link_section = ".data.vmshim_hot")]
static ON: AtomicBool = AtomicBool::new(false);

const PR_SET_VMA: usize = 0x5356_4d41;
const PR_SET_VMA_ANON_NAME: usize = 0;

#[unsafe(link_section = ".text.hot.vmshim")]
pub fn enable(on: bool) {
    ON.store(on, Relaxed);
}

/// Names `[addr, addr + len)` "vmshim WHAT TID" (errno untouched: a raw system call).
pub fn name(addr: u64, len: u64, what: &str, tid: u32) {
    if !ON.load(Relaxed) || len == 0 {
        return;
    }
    let mut buf = [0u8; 64];
    let mut n = 0;
    for part in [b"vmshim ".as_slice(), what.as_bytes(), b" "] {
        let part = &part[..part.len().min(40)];
        buf[n..n + part.len()].copy_from_slice(part);
        n += part.len();
    }
    n += crate::os::fmt::fmt_u64(tid as u64, &mut buf[n..63]);
    buf[n] = 0;
    // SAFETY: prctl reads the NUL-terminated name; the range is the caller's own mapping.
    let r = unsafe {
        sys::syscall6(
            libc::SYS_prctl,
            PR_SET_VMA,
            PR_SET_VMA_ANON_NAME,
            addr as usize,
            len as usize,
            buf.as_ptr() as usize,
            0,
        )
    };
    if r < 0 && ON.swap(false, Relaxed) {
        let msg = b"vmshim: the kernel refuses to name mappings (PR_SET_VMA_ANON_NAME); VMSHIM_NAME_MAPPINGS ignored\n";
        sys::write(2, msg);
    }
}
