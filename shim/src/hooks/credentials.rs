//! The calls that change a process's credentials or root: `setuid` and the rest of its family,
//! `setgroups`, `initgroups`, `capset`, `chroot`, `unshare`. A fork child whose Start record went
//! to `vmshim run` (record/fork.rs) has no trace file yet; it creates it here, before the real
//! call, while it may still create a file in the trace's directory as the user who started the
//! run, and keeps writing into it after (the descriptor stays open). Otherwise the hooks only
//! forward: the same arguments, the real function's return value and errno.
//!
//! The real functions are looked up before each fork, in the parent ([`resolve`], from the
//! prepare handler `lib.rs` registers; once per image): a fork child does not ask the loader,
//! whose lock another thread of its parent may have held at the fork. An image that never
//! forked looks them up at its first call.

use crate::os::guard::Guard;
use crate::os::syscall as sys;
use core::ffi::{c_char, c_int, c_void};
use core::sync::atomic::AtomicUsize;

/// Creates the trace of a sent fork child that has none yet; nothing otherwise.
fn own_trace_first() {
    // Not in a vfork child of such a process (its memory is the parent's, its pid its own).
    if crate::record::sent::origin().is_none() || sys::getpid() != sys::own_pid() {
        return;
    }
    let Some(_g) = Guard::enter() else { return };
    let saved = sys::errno();
    crate::os::ownstack::run(crate::record::start::start_sent_now);
    sys::set_errno(saved);
}

macro_rules! credentials {
    ($($name:ident: fn($($arg:ident: $ty:ty),*);)*) => {
        /// Each hook's index in [`REAL`] and [`NAMES`].
        #[allow(non_camel_case_types)]
        enum Hook { $($name),* }

        /// The real functions' addresses, by the order of the hooks below (0: not looked up).
        static REAL: [AtomicUsize; [$(stringify!($name)),*].len()] =
            [const { AtomicUsize::new(0) }; [$(stringify!($name)),*].len()];
        const NAMES: &[&core::ffi::CStr] = &[$(
            // SAFETY: the literal gets its NUL here and has none inside.
            unsafe { core::ffi::CStr::from_bytes_with_nul_unchecked(concat!(stringify!($name), "\0").as_bytes()) }
        ),*];

        /// Looks up every real function, once (before a fork, in the parent).
        pub fn resolve() {
            #[unsafe(link_section = ".data.vmshim_hot")]
            static DONE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
            // Loaded first: a store to the flag's page would be a copy-on-write fault per fork.
            if DONE.load(core::sync::atomic::Ordering::Acquire) {
                return;
            }
            for (name, cache) in NAMES.iter().zip(&REAL) {
                crate::os::real::next(name, cache);
            }
            DONE.store(true, core::sync::atomic::Ordering::Release);
        }

        $(
            /// # Safety
            /// As for the libc function of this name.
            #[cfg_attr(not(test), unsafe(no_mangle))]
            pub unsafe extern "C" fn $name($($arg: $ty),*) -> c_int {
                own_trace_first();
                let i = Hook::$name as usize;
                let p = crate::os::real::next(NAMES[i], &REAL[i]);
                if p == 0 {
                    sys::set_errno(libc::ENOSYS);
                    return -1;
                }
                // SAFETY: the next definition of this function, whose prototype this is.
                let real = unsafe { core::mem::transmute::<usize, unsafe extern "C" fn($($ty),*) -> c_int>(p) };
                // SAFETY: forwarding the caller's arguments unchanged.
                unsafe { real($($arg),*) }
            }
        )*
    };
}

credentials! {
    setuid: fn(uid: libc::uid_t);
    setgid: fn(gid: libc::gid_t);
    seteuid: fn(uid: libc::uid_t);
    setegid: fn(gid: libc::gid_t);
    setreuid: fn(ruid: libc::uid_t, euid: libc::uid_t);
    setregid: fn(rgid: libc::gid_t, egid: libc::gid_t);
    setresuid: fn(ruid: libc::uid_t, euid: libc::uid_t, suid: libc::uid_t);
    setresgid: fn(rgid: libc::gid_t, egid: libc::gid_t, sgid: libc::gid_t);
    setgroups: fn(size: libc::size_t, list: *const libc::gid_t);
    initgroups: fn(user: *const c_char, group: libc::gid_t);
    capset: fn(header: *mut c_void, data: *const c_void);
    chroot: fn(path: *const c_char);
    unshare: fn(flags: c_int);
}
