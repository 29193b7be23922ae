//! Raw system calls. The shim's real `mmap` is the kernel's, not glibc's `__mmap` (a
//! GLIBC_PRIVATE symbol), and its own file and memory work must not touch `errno`, take a libc
//! lock or land in one of its own hooks. Every function here returns the kernel's raw result:
//! a value, or `-errno`.

use core::arch::asm;

/// Issues system call `n` with six arguments.
///
/// # Safety
/// The caller guarantees the arguments are valid for that system call (pointers point at memory
/// the kernel may read or write as the call documents).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn syscall6(n: i64, a1: usize, a2: usize, a3: usize, a4: usize, a5: usize, a6: usize) -> isize {
    let ret: isize;
    // SAFETY: the x86_64 Linux system call convention: number in rax, arguments in rdi, rsi,
    // rdx, r10, r8, r9; the kernel clobbers rcx and r11 and leaves the stack alone.
    unsafe {
        asm!("syscall", inlateout("rax") n as isize => ret, in("rdi") a1, in("rsi") a2,
             in("rdx") a3, in("r10") a4, in("r8") a5, in("r9") a6,
             lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

/// Issues system call `n` with six arguments.
///
/// # Safety
/// As for the x86_64 version.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
pub unsafe fn syscall6(n: i64, a1: usize, a2: usize, a3: usize, a4: usize, a5: usize, a6: usize) -> isize {
    let ret: isize;
    // SAFETY: the aarch64 Linux convention: number in x8, arguments and result in x0..x5.
    unsafe {
        asm!("svc 0", in("x8") n, inlateout("x0") a1 as isize => ret, in("x1") a2, in("x2") a3,
             in("x3") a4, in("x4") a5, in("x5") a6, options(nostack));
    }
    ret
}

macro_rules! sys {
    ($n:expr $(, $a:expr)*) => {{
        let a: [usize; 6] = {
            let mut a = [0usize; 6];
            let v: &[usize] = &[$($a as usize),*];
            let mut i = 0;
            while i < v.len() { a[i] = v[i]; i += 1; }
            a
        };
        // SAFETY: each wrapper below passes arguments of the types its system call documents.
        unsafe { syscall6($n, a[0], a[1], a[2], a[3], a[4], a[5]) }
    }};
}

pub fn madvise(addr: usize, len: usize, advice: i32) -> isize {
    sys!(libc::SYS_madvise, addr, len, advice)
}
pub fn mmap(addr: usize, len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> isize {
    sys!(libc::SYS_mmap, addr, len, prot as u32, flags as u32, fd as u32 as usize, off as usize)
}
pub fn munmap(addr: usize, len: usize) -> isize {
    sys!(libc::SYS_munmap, addr, len)
}
pub fn mremap(old: usize, old_len: usize, new_len: usize, flags: i32, new_addr: usize) -> isize {
    sys!(libc::SYS_mremap, old, old_len, new_len, flags as u32, new_addr)
}
pub fn mprotect(addr: usize, len: usize, prot: i32) -> isize {
    sys!(libc::SYS_mprotect, addr, len, prot as u32)
}
/// `path` must be NUL-terminated.
pub fn open(path: &[u8], flags: i32, mode: u32) -> isize {
    sys!(libc::SYS_openat, libc::AT_FDCWD as isize as usize, path.as_ptr(), flags as u32, mode)
}
pub fn read(fd: i32, buf: &mut [u8]) -> isize {
    sys!(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len())
}
pub fn write(fd: i32, buf: &[u8]) -> isize {
    sys!(libc::SYS_write, fd, buf.as_ptr(), buf.len())
}
pub fn close(fd: i32) -> isize {
    sys!(libc::SYS_close, fd)
}
/// A datagram socket connected to the abstract Unix socket `name` (its bytes after the leading
/// NUL included), close-on-exec; the descriptor, or the negative errno.
pub fn connect_datagram(name: &[u8]) -> isize {
    let fd = sys!(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
    if fd < 0 {
        return fd;
    }
    // SAFETY: sockaddr_un is plain data.
    let mut to: libc::sockaddr_un = unsafe { core::mem::zeroed() };
    to.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let n = name.len().min(to.sun_path.len());
    for (d, &b) in to.sun_path.iter_mut().zip(&name[..n]) {
        *d = b as libc::c_char;
    }
    let len = core::mem::size_of::<libc::sa_family_t>() + n;
    let r = sys!(libc::SYS_connect, fd, &to as *const libc::sockaddr_un, len);
    if r < 0 {
        close(fd as i32);
        return r;
    }
    fd
}

/// Sends `msg` as one datagram on the connected socket `fd`: never blocks (a full queue is
/// EAGAIN), raises no SIGPIPE. True when the whole datagram went.
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn send_datagram(fd: i32, msg: &[u8]) -> bool {
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    sys!(libc::SYS_sendto, fd, msg.as_ptr(), msg.len(), flags, 0, 0) == msg.len() as isize
}
pub fn fallocate(fd: i32, off: u64, len: u64) -> isize {
    sys!(libc::SYS_fallocate, fd, 0, off, len)
}
/// A copy of `fd` at the lowest free descriptor >= `min`, close-on-exec.
pub fn dup_cloexec_at_least(fd: i32, min: i32) -> isize {
    sys!(libc::SYS_fcntl, fd, libc::F_DUPFD_CLOEXEC, min)
}
/// The soft RLIMIT_NOFILE (0 when unknown).
pub fn open_files_limit() -> u64 {
    let mut lim = libc::rlimit64 { rlim_cur: 0, rlim_max: 0 };
    let r = sys!(libc::SYS_prlimit64, 0, libc::RLIMIT_NOFILE, 0, &mut lim as *mut libc::rlimit64);
    if r == 0 { lim.rlim_cur } else { 0 }
}
pub fn ftruncate(fd: i32, len: u64) -> isize {
    sys!(libc::SYS_ftruncate, fd, len)
}
/// `path` must be NUL-terminated.
pub fn readlink(path: &[u8], buf: &mut [u8]) -> isize {
    sys!(libc::SYS_readlinkat, libc::AT_FDCWD as isize as usize, path.as_ptr(), buf.as_mut_ptr(), buf.len())
}
/// The working directory into `buf`; returns its length including the NUL, or -errno.
pub fn getcwd(buf: &mut [u8]) -> isize {
    sys!(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len())
}

/// (st_dev, st_ino) of an open file.
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn file_id(fd: i32) -> Option<(u64, u64)> {
    // SAFETY: a zeroed stat is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    (sys!(libc::SYS_fstat, fd, &mut st as *mut libc::stat) == 0).then_some((st.st_dev, st.st_ino))
}

/// (st_mode, st_dev, st_ino) of `path` itself, never following a final symlink (lstat).
/// `path` must be NUL-terminated.
pub fn lstat_id(path: &[u8]) -> Result<(u32, u64, u64), i32> {
    // SAFETY: a zeroed stat is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    let dirfd = libc::AT_FDCWD as isize as usize;
    let r = sys!(
        libc::SYS_newfstatat,
        dirfd,
        path.as_ptr(),
        &mut st as *mut libc::stat,
        libc::AT_SYMLINK_NOFOLLOW
    );
    if r == 0 { Ok((st.st_mode, st.st_dev, st.st_ino)) } else { Err((-r) as i32) }
}

/// Removes the name `path` (not a directory). `path` must be NUL-terminated.
pub fn unlink(path: &[u8]) -> isize {
    sys!(libc::SYS_unlinkat, libc::AT_FDCWD as isize as usize, path.as_ptr(), 0)
}

/// The soft RLIMIT_FSIZE in bytes (u64::MAX when unlimited or unknown).
pub fn file_size_limit() -> u64 {
    let mut lim = libc::rlimit64 { rlim_cur: 0, rlim_max: 0 };
    let r = sys!(libc::SYS_prlimit64, 0, libc::RLIMIT_FSIZE, 0, &mut lim as *mut libc::rlimit64);
    if r == 0 { lim.rlim_cur } else { u64::MAX }
}

/// RLIMIT_STACK's soft value (RLIM_INFINITY is u64::MAX); 0 when it cannot be read.
pub fn stack_limit() -> u64 {
    let mut lim = libc::rlimit64 { rlim_cur: 0, rlim_max: 0 };
    let r = sys!(libc::SYS_prlimit64, 0, libc::RLIMIT_STACK, 0, &mut lim as *mut libc::rlimit64);
    if r == 0 { lim.rlim_cur } else { 0 }
}

/// The current program break (brk(0) changes nothing and returns it).
pub fn brk_now() -> usize {
    sys!(libc::SYS_brk, 0) as usize
}
pub fn getpid() -> u32 {
    sys!(libc::SYS_getpid) as u32
}

/// This process's pid as the trace writer last noted it ([`set_own_pid`]): 0 until then.
#[unsafe(link_section = ".data.vmshim_hot")]
static PID: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// This process's pid, as of the last (re)initialisation: the child of a fork gets its own.
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn own_pid() -> u32 {
    match PID.load(core::sync::atomic::Ordering::Relaxed) {
        0 => getpid(),
        p => p,
    }
}

/// Notes the pid [`own_pid`] answers with (the writer, as it opens a trace); 0 forgets it (a
/// fork child, until it opens its own).
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn set_own_pid(pid: u32) {
    PID.store(pid, core::sync::atomic::Ordering::Relaxed);
}
pub fn getppid() -> u32 {
    sys!(libc::SYS_getppid) as u32
}
/// The calling thread's id, asked of the kernel once per thread (a system call per event
/// was a tenth of an event's cost).
pub fn gettid() -> u32 {
    use crate::os::tls::{self, Slot};
    match tls::get(Slot::Tid) {
        0 => {
            let tid = sys!(libc::SYS_gettid) as u32;
            tls::set(Slot::Tid, tid as usize);
            tid
        }
        tid => tid as u32,
    }
}

/// Reads this process's memory at `addr` into `dst` without faulting: an unmapped or unreadable
/// address makes the kernel return an error instead of a SIGSEGV. Returns how many bytes were
/// read: fewer than asked when the range runs into an unmapped page.
pub fn read_own_memory_partial(addr: usize, dst: &mut [u8]) -> usize {
    read_own_memory_raw(addr, dst.as_mut_ptr(), dst.len())
}

/// As [`read_own_memory_partial`], into `len` bytes at `dst`, which need not be initialised
/// (the kernel only writes them).
pub fn read_own_memory_raw(addr: usize, dst: *mut u8, len: usize) -> usize {
    let local = libc::iovec { iov_base: dst.cast(), iov_len: len };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: len };
    let pid = own_pid();
    let n = sys!(
        libc::SYS_process_vm_readv,
        pid,
        &local as *const libc::iovec,
        1,
        &remote as *const libc::iovec,
        1,
        0
    );
    n.max(0) as usize
}
/// How many bytes of the `pages` pages from page-aligned `addr` up are readable, up to the
/// first that is not: one `process_vm_readv` that reads the first word of each page (a page is
/// readable as a whole or not at all) into `scratch`, 4096 bytes that need not be initialised.
pub fn read_own_pages(addr: usize, pages: usize, scratch: *mut u8) -> usize {
    const MAX: usize = 64;
    let pages = pages.min(MAX);
    let mut local = [libc::iovec { iov_base: core::ptr::null_mut(), iov_len: 8 }; MAX];
    let mut remote = [libc::iovec { iov_base: core::ptr::null_mut(), iov_len: 8 }; MAX];
    for (i, (l, r)) in local.iter_mut().zip(remote.iter_mut()).enumerate().take(pages) {
        l.iov_base = scratch.wrapping_add(i * 8).cast();
        r.iov_base = addr.wrapping_add(i * 4096) as *mut libc::c_void;
    }
    let n = sys!(libc::SYS_process_vm_readv, own_pid(), local.as_ptr(), pages, remote.as_ptr(), pages, 0);
    (n.max(0) as usize / 8) * 4096
}
/// Whether the cost figures may read the TSC: not when the process asked rdtsc to fault
/// (PR_SET_TSC, as sandboxes and record-replay tools do).
#[unsafe(link_section = ".data.vmshim_hot")]
static USE_TSC: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
/// Nanoseconds per [`cycles`] tick, in 32.32 fixed point.
#[unsafe(link_section = ".data.vmshim_hot")]
static NS_PER_TICK_Q32: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(1 << 32);

/// Set in a [`cycles`] value read from the TSC (one from the monotonic clock has it clear), so
/// that an interval that began before the TSC was calibrated and ends after counts 0, not the
/// difference of two clocks. The TSC reaches 2^63 after a century.
const TSC_TAG: u64 = 1 << 63;

/// A tick count for the shim's own cost figures: the TSC where it may be read (a third of a
/// clock_gettime here) once calibrated, else monotonic nanoseconds. [`ns_since`] converts.
#[inline(always)]
pub fn cycles() -> u64 {
    #[cfg(target_arch = "x86_64")]
    if USE_TSC.load(core::sync::atomic::Ordering::Acquire) {
        // SAFETY: rdtsc has no memory effects; USE_TSC is set only when it does not fault.
        return unsafe { core::arch::x86_64::_rdtsc() } | TSC_TAG;
    }
    monotonic_ns()
}

/// Ticks from `c0` (an earlier [`cycles`]) to now; 0 if the clock reads lower than `c0`, as the
/// TSC of another CPU can after the thread migrates: an unchecked subtraction would abort the
/// target in a build with overflow checks (issue 11), and wrap to centuries in one without.
/// Also 0 when the two were read from different clocks (the TSC's calibration came between).
#[inline(always)]
pub fn ticks_since(c0: u64) -> u64 {
    let now = cycles();
    if (now ^ c0) & TSC_TAG != 0 { 0 } else { elapsed(c0 & !TSC_TAG, now & !TSC_TAG) }
}

/// Nanoseconds from `c0` (an earlier [`cycles`]) to now.
#[inline(always)]
pub fn ns_since(c0: u64) -> u64 {
    let t = ticks_since(c0);
    if c0 & TSC_TAG != 0 { ticks_to_ns(t) } else { t }
}

/// `now - then`, or 0 when `now` is lower.
#[inline(always)]
pub fn elapsed(then: u64, now: u64) -> u64 {
    now.saturating_sub(then)
}

#[inline(always)]
pub fn ticks_to_ns(ticks: u64) -> u64 {
    ((ticks as u128 * NS_PER_TICK_Q32.load(core::sync::atomic::Ordering::Relaxed) as u128) >> 32) as u64
}

/// The TSC and the monotonic clock as start-up read them, for [`calibrate_when_ready`].
#[unsafe(link_section = ".data.vmshim_hot")]
static MARK_TSC: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
#[unsafe(link_section = ".data.vmshim_hot")]
static MARK_NS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
/// 0: no calibration (the TSC may not be read); 1: marked, waiting; 2: done.
#[unsafe(link_section = ".data.vmshim_hot")]
static CALIBRATION: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);

/// Notes the TSC and the clock, if the process lets rdtsc run, for a calibration that
/// [`calibrate_when_ready`] completes once 200 us have passed. Start-up used to wait those
/// 200 us (issue 12: a process that records little should not pay for a precise clock).
pub fn begin_tsc_calibration() {
    #[cfg(target_arch = "x86_64")]
    {
        use core::sync::atomic::Ordering::*;
        let mut mode: libc::c_int = 0;
        let r = sys!(libc::SYS_prctl, libc::PR_GET_TSC, &mut mode as *mut libc::c_int);
        if r == 0 && mode == libc::PR_TSC_ENABLE {
            // SAFETY: as in cycles(); the process lets rdtsc run.
            MARK_TSC.store(unsafe { core::arch::x86_64::_rdtsc() }, Relaxed);
            MARK_NS.store(monotonic_ns(), Relaxed);
            CALIBRATION.store(1, Release);
        }
    }
}

/// Whether [`begin_tsc_calibration`] ran and let the TSC be used (a fork child has its
/// parent's state).
pub fn tsc_calibration_begun() -> bool {
    CALIBRATION.load(core::sync::atomic::Ordering::Relaxed) != 0
}

/// Once at least 200 us have passed since [`begin_tsc_calibration`], measures the TSC's rate
/// against the monotonic clock and from then on lets [`cycles`] use it. Costs one load while
/// nothing is pending.
#[inline(always)]
pub fn calibrate_when_ready() {
    if CALIBRATION.load(core::sync::atomic::Ordering::Acquire) == 1 {
        calibrate();
    }
}

#[cold]
fn calibrate() {
    #[cfg(target_arch = "x86_64")]
    {
        use core::sync::atomic::Ordering::*;
        // SAFETY: as in cycles(); CALIBRATION is 1 only when rdtsc may run.
        let (tsc, ns) = (unsafe { core::arch::x86_64::_rdtsc() }, monotonic_ns());
        let (t0, n0) = (MARK_TSC.load(Relaxed), MARK_NS.load(Relaxed));
        if ns.saturating_sub(n0) < 200_000 || CALIBRATION.compare_exchange(1, 2, AcqRel, Relaxed).is_err() {
            return;
        }
        let ticks = tsc.saturating_sub(t0);
        if ticks == 0 {
            return;
        }
        let q = (((ns - n0) as u128) << 32) / ticks as u128;
        NS_PER_TICK_Q32.store(q as u64, Relaxed);
        USE_TSC.store(true, Release);
    }
}

/// The page size, asked of libc once per image (a fork child has its parent's answer: its own
/// call would fault in two pages of libc's text).
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn page_size() -> usize {
    use core::sync::atomic::Ordering::Relaxed;
    match PAGE_SIZE.load(Relaxed) {
        0 => {
            // SAFETY: sysconf only reads a constant for _SC_PAGESIZE.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
            PAGE_SIZE.store(page, Relaxed);
            page
        }
        page => page,
    }
}
#[unsafe(link_section = ".data.vmshim_hot")]
static PAGE_SIZE: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Monotonic nanoseconds (vDSO, no system call, no errno change on success).
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// (monotonic, real) nanoseconds by system call, not through the vDSO: for a process's one
/// reading at its start (a waiting image's note). A process's first vDSO call takes two page
/// faults, on libc's `clock_gettime` page and on the vvar page (2-7 us each on the hosts here),
/// in a shell's `/bin/true`, which reads no clock otherwise (issue 12).
pub fn clocks_by_syscall() -> (u64, u64) {
    let read = |clock: libc::clockid_t| {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        sys!(libc::SYS_clock_gettime, clock, &mut ts as *mut libc::timespec);
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    };
    (read(libc::CLOCK_MONOTONIC), read(libc::CLOCK_REALTIME))
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec to a valid pointer; it neither allocates nor
    // locks, and with a valid clock id it cannot fail.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The calling thread's `errno`.
pub fn errno() -> i32 {
    // SAFETY: __errno_location returns the calling thread's errno slot, valid for the thread's life.
    unsafe { *libc::__errno_location() }
}
pub fn set_errno(e: i32) {
    // SAFETY: as in errno().
    unsafe { *libc::__errno_location() = e }
}

/// Splits a raw result into (value, errno) the way glibc's wrappers do: -4095..-1 are errors.
pub fn split(ret: isize) -> (usize, i32) {
    if (-4095..0).contains(&ret) { (usize::MAX, (-ret) as i32) } else { (ret as usize, 0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11, item 7: a TSC that reads lower after a CPU migration costs nothing, never an
    /// overflow (which aborts a debug build of the target).
    #[test]
    fn a_clock_that_reads_lower_counts_zero_ticks() {
        assert_eq!(elapsed(1000, 400), 0);
        assert_eq!(elapsed(u64::MAX, 0), 0);
        assert_eq!(elapsed(400, 1000), 600);
        let c0 = cycles();
        assert!(ticks_since(c0) < 1 << 40, "a plausible, non-wrapped figure");
        assert_eq!(ticks_since(u64::MAX), 0, "a start later than now");
    }
}
