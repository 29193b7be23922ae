//! libc's resolver entry points: `getaddrinfo`, `freeaddrinfo`, `getnameinfo`, the
//! `gethostbyname`/`gethostbyaddr` family, the `res_*` query functions (under both their
//! `res_` names and glibc's `__res_` names, which older headers and Go's cgo use) and
//! `getaddrinfo_a`. They share one job, so they share this file: run the real call unguarded
//! (it mallocs, may load NSS modules and start threads, and those are the program's to
//! record), then write one Resolve record with the arguments, the outcome and the stack, and
//! record any image the call loaded.
//!
//! Which of these ran is the evidence for "did this Go binary resolve names with libc (cgo) or
//! with Go's own resolver?": Go's resolver makes no libc call at all.

use crate::os::guard::Guard;
use crate::{os::syscall as sys, out::writer, unwind::walk};
use core::ffi::{CStr, c_char, c_int, c_void};
use libc::{addrinfo, hostent, sockaddr, socklen_t};
use vmshim_trace::record::resolve::{self, ResolveRecord};
use vmshim_trace::{MAX_ADDRS, MAX_FRAMES};

use crate::os::real::real;

unsafe extern "C" {
    fn __h_errno_location() -> *mut c_int;
}

/// Indexes into `vmshim_trace::LOADING_FUNCTIONS`.
#[derive(Clone, Copy)]
enum Api {
    Getaddrinfo = 2,
    Getnameinfo = 3,
    Gethostbyname = 4,
    Gethostbyname2 = 5,
    GethostbynameR = 6,
    Gethostbyname2R = 7,
    Gethostbyaddr = 8,
    GethostbyaddrR = 9,
    ResQuery = 10,
    ResSearch = 11,
    ResQuerydomain = 12,
    GetaddrinfoA = 13,
    ResNquery = 14,
    ResNsearch = 15,
    ResNquerydomain = 16,
    Freeaddrinfo = 17,
}

/// One call, as it will be recorded.
struct Rec<'a> {
    api: Api,
    start_ns: u64,
    hints: [i32; 4],
    ret: i32,
    error: i32,
    handle: u64,
    name: &'a [u8],
    service: &'a [u8],
    addrs: [(u16, [u8; 16]); MAX_ADDRS],
    naddrs: usize,
}

impl<'a> Rec<'a> {
    fn new(api: Api, start_ns: u64) -> Rec<'a> {
        Rec {
            api,
            start_ns,
            hints: [0; 4],
            ret: 0,
            error: 0,
            handle: 0,
            name: &[],
            service: &[],
            addrs: [(0, [0; 16]); MAX_ADDRS],
            naddrs: 0,
        }
    }

    fn add_addr(&mut self, family: u16, bytes: &[u8]) {
        let mut a = [0u8; 16];
        let n = bytes.len().min(16);
        a[..n].copy_from_slice(&bytes[..n]);
        if self.naddrs < MAX_ADDRS && !self.addrs[..self.naddrs].contains(&(family, a)) {
            self.addrs[self.naddrs] = (family, a);
            self.naddrs += 1;
        }
    }

    /// An IPv4 or IPv6 socket address.
    ///
    /// # Safety
    /// `sa` is null or points at a socket address of at least its family's size.
    unsafe fn add_sockaddr(&mut self, sa: *const sockaddr) {
        if sa.is_null() {
            return;
        }
        // SAFETY: per the contract; sockaddr_in has sin_addr at 4, sockaddr_in6 sin6_addr at 8.
        unsafe {
            match (*sa).sa_family as c_int {
                libc::AF_INET => self
                    .add_addr(libc::AF_INET as u16, core::slice::from_raw_parts((sa as *const u8).add(4), 4)),
                libc::AF_INET6 => self.add_addr(
                    libc::AF_INET6 as u16,
                    core::slice::from_raw_parts((sa as *const u8).add(8), 16),
                ),
                _ => {}
            }
        }
    }

    /// The addresses of a hostent.
    ///
    /// # Safety
    /// `h` is null or a hostent libc filled in.
    unsafe fn add_hostent(&mut self, h: *const hostent) {
        if h.is_null() {
            return;
        }
        // SAFETY: libc's hostent: h_addr_list is a NULL-terminated array of h_length-byte addresses.
        unsafe {
            let (family, len) = ((*h).h_addrtype as u16, (*h).h_length as usize);
            let mut p = (*h).h_addr_list;
            while !p.is_null() && !(*p).is_null() {
                self.add_addr(family, core::slice::from_raw_parts(*p as *const u8, len.min(16)));
                p = p.add(1);
            }
        }
    }

    /// Writes the record, then records any image the call loaded (NSS modules), on a shim stack
    /// (the real call ran on the caller's).
    fn commit(&self) {
        if !crate::os::ownstack::run(|| self.commit_here()) {
            crate::out::writer::count_dropped();
        }
    }

    fn commit_here(&self) {
        let Some(g) = Guard::enter() else { return };
        crate::record::start::ensure_started();
        if !writer::is_ready() {
            return;
        }
        let saved = sys::errno();
        let mut frames = [0u64; MAX_FRAMES];
        let n = walk::capture(&mut frames[..crate::record::start::depth()]);
        let mut buf = [0u8; resolve::MAX_LEN];
        let q = ResolveRecord {
            api: self.api as u16,
            tid: sys::gettid(),
            start_ns: self.start_ns,
            end_ns: sys::monotonic_ns(),
            hints: self.hints,
            ret: self.ret,
            error: self.error,
            handle: self.handle,
            name: self.name,
            service: self.service,
            addrs: &self.addrs[..self.naddrs],
            stack: &frames[..n],
        };
        if let Some(len) = resolve::encode(&mut buf, &q) {
            writer::append(&buf[..len]);
        }
        crate::record::call::new_modules(&g, self.api as usize);
        sys::set_errno(saved);
    }
}

/// A NUL-terminated C string's bytes, or empty for null.
///
/// # Safety
/// `p` is null or a NUL-terminated string that outlives the returned slice.
unsafe fn cstr<'a>(p: *const c_char) -> &'a [u8] {
    // SAFETY: per the contract.
    if p.is_null() { &[] } else { unsafe { CStr::from_ptr(p) }.to_bytes() }
}

fn h_errno() -> c_int {
    // SAFETY: glibc's per-thread h_errno slot.
    unsafe { *__h_errno_location() }
}

type GaiFn = unsafe extern "C" fn(*const c_char, *const c_char, *const addrinfo, *mut *mut addrinfo) -> c_int;

/// # Safety
/// As for getaddrinfo(3).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> c_int {
    let (p, real) = real!("getaddrinfo", GaiFn);
    if p == 0 {
        return libc::EAI_SYSTEM;
    }
    let mut rec = Rec::new(Api::Getaddrinfo, sys::monotonic_ns());
    // SAFETY: forwarding the caller's arguments unchanged.
    let ret = unsafe { real(node, service, hints, res) };
    let saved = sys::errno();
    // SAFETY: the caller's strings and hints, valid for this call; on success `*res` is the
    // list getaddrinfo built.
    unsafe {
        rec.name = cstr(node);
        rec.service = cstr(service);
        if !hints.is_null() {
            rec.hints = [(*hints).ai_family, (*hints).ai_socktype, (*hints).ai_protocol, (*hints).ai_flags];
        }
        rec.ret = ret;
        rec.error = if ret == libc::EAI_SYSTEM { saved } else { 0 };
        if ret == 0 && !res.is_null() {
            rec.handle = *res as u64;
            let mut ai = *res;
            while !ai.is_null() {
                rec.add_sockaddr((*ai).ai_addr);
                ai = (*ai).ai_next;
            }
        }
    }
    rec.commit();
    sys::set_errno(saved);
    ret
}

/// # Safety
/// As for freeaddrinfo(3).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn freeaddrinfo(res: *mut addrinfo) {
    let (p, real) = real!("freeaddrinfo", unsafe extern "C" fn(*mut addrinfo));
    if p == 0 {
        return;
    }
    let mut rec = Rec::new(Api::Freeaddrinfo, sys::monotonic_ns());
    rec.handle = res as u64;
    // SAFETY: forwarding the caller's argument unchanged.
    unsafe { real(res) };
    let saved = sys::errno();
    rec.commit();
    sys::set_errno(saved);
}

type GniFn = unsafe extern "C" fn(
    *const sockaddr,
    socklen_t,
    *mut c_char,
    socklen_t,
    *mut c_char,
    socklen_t,
    c_int,
) -> c_int;

/// # Safety
/// As for getnameinfo(3).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn getnameinfo(
    addr: *const sockaddr,
    addrlen: socklen_t,
    host: *mut c_char,
    hostlen: socklen_t,
    serv: *mut c_char,
    servlen: socklen_t,
    flags: c_int,
) -> c_int {
    let (p, real) = real!("getnameinfo", GniFn);
    if p == 0 {
        return libc::EAI_SYSTEM;
    }
    let mut rec = Rec::new(Api::Getnameinfo, sys::monotonic_ns());
    // SAFETY: forwarding the caller's arguments unchanged.
    let ret = unsafe { real(addr, addrlen, host, hostlen, serv, servlen, flags) };
    let saved = sys::errno();
    rec.ret = ret;
    rec.hints[3] = flags;
    rec.error = if ret == libc::EAI_SYSTEM { saved } else { 0 };
    // SAFETY: the caller's address; on success host and serv hold NUL-terminated strings.
    unsafe {
        if (addrlen as usize) >= core::mem::size_of::<libc::sockaddr_in>() {
            rec.add_sockaddr(addr);
        }
        if ret == 0 {
            if hostlen > 0 {
                rec.name = cstr(host);
            }
            if servlen > 0 {
                rec.service = cstr(serv);
            }
        }
    }
    rec.commit();
    sys::set_errno(saved);
    ret
}

/// Records a call that returned a hostent (or null and h_errno).
fn hostent_call(api: Api, start: u64, name: &[u8], family: c_int, h: *const hostent) {
    let saved = sys::errno();
    let mut rec = Rec::new(api, start);
    rec.name = name;
    rec.hints[0] = family;
    rec.ret = if h.is_null() { -1 } else { 0 };
    rec.error = if h.is_null() { h_errno() } else { 0 };
    // SAFETY: a hostent libc just returned, or null.
    unsafe { rec.add_hostent(h) };
    rec.commit();
    sys::set_errno(saved);
}

/// # Safety
/// As for gethostbyname(3).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn gethostbyname(name: *const c_char) -> *mut hostent {
    let (p, real) = real!("gethostbyname", unsafe extern "C" fn(*const c_char) -> *mut hostent);
    if p == 0 {
        return core::ptr::null_mut();
    }
    let start = sys::monotonic_ns();
    // SAFETY: forwarding the caller's argument unchanged.
    let h = unsafe { real(name) };
    // SAFETY: the caller's string.
    hostent_call(Api::Gethostbyname, start, unsafe { cstr(name) }, libc::AF_INET, h);
    h
}

/// # Safety
/// As for gethostbyname2(3).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn gethostbyname2(name: *const c_char, af: c_int) -> *mut hostent {
    let (p, real) = real!("gethostbyname2", unsafe extern "C" fn(*const c_char, c_int) -> *mut hostent);
    if p == 0 {
        return core::ptr::null_mut();
    }
    let start = sys::monotonic_ns();
    // SAFETY: forwarding the caller's arguments unchanged.
    let h = unsafe { real(name, af) };
    // SAFETY: the caller's string.
    hostent_call(Api::Gethostbyname2, start, unsafe { cstr(name) }, af, h);
    h
}

/// # Safety
/// As for gethostbyaddr(3).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn gethostbyaddr(addr: *const c_void, len: socklen_t, kind: c_int) -> *mut hostent {
    let (p, real) =
        real!("gethostbyaddr", unsafe extern "C" fn(*const c_void, socklen_t, c_int) -> *mut hostent);
    if p == 0 {
        return core::ptr::null_mut();
    }
    let start = sys::monotonic_ns();
    // SAFETY: forwarding the caller's arguments unchanged.
    let h = unsafe { real(addr, len, kind) };
    let saved = sys::errno();
    let mut rec = Rec::new(Api::Gethostbyaddr, start);
    rec.hints[0] = kind;
    rec.ret = if h.is_null() { -1 } else { 0 };
    rec.error = if h.is_null() { h_errno() } else { 0 };
    // SAFETY: the caller's address of `len` bytes; the hostent libc returned.
    unsafe {
        if !addr.is_null() {
            rec.add_addr(kind as u16, core::slice::from_raw_parts(addr as *const u8, (len as usize).min(16)));
        }
        if !h.is_null() {
            rec.name = cstr((*h).h_name);
        }
    }
    rec.commit();
    sys::set_errno(saved);
    h
}

/// Records a reentrant gethostby* call: `result` and `h_errnop` are its out-parameters.
///
/// # Safety
/// The pointers are the ones the call was given.
unsafe fn hostent_r_call(
    api: Api,
    start: u64,
    name: &[u8],
    family: c_int,
    ret: c_int,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) {
    let saved = sys::errno();
    let mut rec = Rec::new(api, start);
    rec.name = name;
    rec.hints[0] = family;
    rec.ret = ret;
    // SAFETY: per the contract; libc wrote both before returning.
    unsafe {
        let h = if result.is_null() { core::ptr::null_mut() } else { *result };
        rec.error = if h.is_null() && !h_errnop.is_null() { *h_errnop } else { 0 };
        rec.add_hostent(h);
    }
    rec.commit();
    sys::set_errno(saved);
}

type GhbnR = unsafe extern "C" fn(
    *const c_char,
    *mut hostent,
    *mut c_char,
    usize,
    *mut *mut hostent,
    *mut c_int,
) -> c_int;
type Ghbn2R = unsafe extern "C" fn(
    *const c_char,
    c_int,
    *mut hostent,
    *mut c_char,
    usize,
    *mut *mut hostent,
    *mut c_int,
) -> c_int;
type GhbaR = unsafe extern "C" fn(
    *const c_void,
    socklen_t,
    c_int,
    *mut hostent,
    *mut c_char,
    usize,
    *mut *mut hostent,
    *mut c_int,
) -> c_int;

/// # Safety
/// As for gethostbyname_r(3).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn gethostbyname_r(
    name: *const c_char,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: usize,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> c_int {
    let (p, real) = real!("gethostbyname_r", GhbnR);
    if p == 0 {
        return libc::ENOSYS;
    }
    let start = sys::monotonic_ns();
    // SAFETY: forwarding the caller's arguments unchanged; then reading its out-parameters.
    unsafe {
        let r = real(name, ret, buf, buflen, result, h_errnop);
        hostent_r_call(Api::GethostbynameR, start, cstr(name), libc::AF_INET, r, result, h_errnop);
        r
    }
}

/// # Safety
/// As for gethostbyname2_r(3).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn gethostbyname2_r(
    name: *const c_char,
    af: c_int,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: usize,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> c_int {
    let (p, real) = real!("gethostbyname2_r", Ghbn2R);
    if p == 0 {
        return libc::ENOSYS;
    }
    let start = sys::monotonic_ns();
    // SAFETY: forwarding the caller's arguments unchanged; then reading its out-parameters.
    unsafe {
        let r = real(name, af, ret, buf, buflen, result, h_errnop);
        hostent_r_call(Api::Gethostbyname2R, start, cstr(name), af, r, result, h_errnop);
        r
    }
}

/// # Safety
/// As for gethostbyaddr_r(3).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn gethostbyaddr_r(
    addr: *const c_void,
    len: socklen_t,
    kind: c_int,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: usize,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> c_int {
    let (p, real) = real!("gethostbyaddr_r", GhbaR);
    if p == 0 {
        return libc::ENOSYS;
    }
    let start = sys::monotonic_ns();
    // SAFETY: forwarding the caller's arguments unchanged; then reading its out-parameters.
    unsafe {
        let r = real(addr, len, kind, ret, buf, buflen, result, h_errnop);
        let h = if result.is_null() { core::ptr::null_mut() } else { *result };
        let name = if h.is_null() { &[][..] } else { cstr((*h).h_name) };
        hostent_r_call(Api::GethostbyaddrR, start, name, kind, r, result, h_errnop);
        r
    }
}

/// Records a res_* query: `ret` is the answer's length or -1 (then h_errno says why).
fn res_call(api: Api, start: u64, name: &[u8], class: c_int, kind: c_int, ret: c_int) {
    let saved = sys::errno();
    let mut rec = Rec::new(api, start);
    rec.name = name;
    rec.hints[0] = class;
    rec.hints[1] = kind;
    rec.ret = ret;
    rec.error = if ret < 0 { h_errno() } else { 0 };
    rec.commit();
    sys::set_errno(saved);
}

type ResFn = unsafe extern "C" fn(*const c_char, c_int, c_int, *mut u8, c_int) -> c_int;
type ResDomFn = unsafe extern "C" fn(*const c_char, *const c_char, c_int, c_int, *mut u8, c_int) -> c_int;
type ResNFn = unsafe extern "C" fn(*mut c_void, *const c_char, c_int, c_int, *mut u8, c_int) -> c_int;
type ResNDomFn =
    unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char, c_int, c_int, *mut u8, c_int) -> c_int;

/// Defines a res_* hook under its public name and glibc's `__res_` name, each forwarding to the
/// next definition of the same name.
macro_rules! res_hook {
    ($api:expr, $ty:ty, ($($arg:ident: $t:ty),*), $name_arg:ident, $class:ident, $kind:ident, $sym:ident = $lit:literal) => {
        /// # Safety
        /// As for resolver(3).
        #[cfg_attr(not(test), unsafe(no_mangle))]
        pub unsafe extern "C" fn $sym($($arg: $t),*) -> c_int {
            let (p, real) = real!($lit, $ty);
            if p == 0 {
                return -1;
            }
            let start = sys::monotonic_ns();
            // SAFETY: forwarding the caller's arguments unchanged; its name string is valid.
            unsafe {
                let r = real($($arg),*);
                res_call($api, start, cstr($name_arg), $class, $kind, r);
                r
            }
        }
    };
}

res_hook!(Api::ResQuery, ResFn, (dname: *const c_char, class: c_int, kind: c_int, answer: *mut u8, anslen: c_int), dname, class, kind, res_query = "res_query");
res_hook!(Api::ResQuery, ResFn, (dname: *const c_char, class: c_int, kind: c_int, answer: *mut u8, anslen: c_int), dname, class, kind, __res_query = "__res_query");
res_hook!(Api::ResSearch, ResFn, (dname: *const c_char, class: c_int, kind: c_int, answer: *mut u8, anslen: c_int), dname, class, kind, res_search = "res_search");
res_hook!(Api::ResSearch, ResFn, (dname: *const c_char, class: c_int, kind: c_int, answer: *mut u8, anslen: c_int), dname, class, kind, __res_search = "__res_search");
res_hook!(Api::ResQuerydomain, ResDomFn, (name: *const c_char, domain: *const c_char, class: c_int, kind: c_int, answer: *mut u8, anslen: c_int), name, class, kind, res_querydomain = "res_querydomain");
res_hook!(Api::ResQuerydomain, ResDomFn, (name: *const c_char, domain: *const c_char, class: c_int, kind: c_int, answer: *mut u8, anslen: c_int), name, class, kind, __res_querydomain = "__res_querydomain");
res_hook!(Api::ResNquery, ResNFn, (statp: *mut c_void, dname: *const c_char, class: c_int, kind: c_int, answer: *mut u8, anslen: c_int), dname, class, kind, res_nquery = "res_nquery");
res_hook!(Api::ResNquery, ResNFn, (statp: *mut c_void, dname: *const c_char, class: c_int, kind: c_int, answer: *mut u8, anslen: c_int), dname, class, kind, __res_nquery = "__res_nquery");
res_hook!(Api::ResNsearch, ResNFn, (statp: *mut c_void, dname: *const c_char, class: c_int, kind: c_int, answer: *mut u8, anslen: c_int), dname, class, kind, res_nsearch = "res_nsearch");
res_hook!(Api::ResNsearch, ResNFn, (statp: *mut c_void, dname: *const c_char, class: c_int, kind: c_int, answer: *mut u8, anslen: c_int), dname, class, kind, __res_nsearch = "__res_nsearch");
res_hook!(Api::ResNquerydomain, ResNDomFn, (statp: *mut c_void, name: *const c_char, domain: *const c_char, class: c_int, kind: c_int, answer: *mut u8, anslen: c_int), name, class, kind, res_nquerydomain = "res_nquerydomain");
res_hook!(Api::ResNquerydomain, ResNDomFn, (statp: *mut c_void, name: *const c_char, domain: *const c_char, class: c_int, kind: c_int, answer: *mut u8, anslen: c_int), name, class, kind, __res_nquerydomain = "__res_nquerydomain");

/// glibc's `struct gaicb` (netdb.h).
#[repr(C)]
struct Gaicb {
    ar_name: *const c_char,
    ar_service: *const c_char,
    ar_request: *const addrinfo,
    ar_result: *mut addrinfo,
}

/// # Safety
/// As for getaddrinfo_a(3).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn getaddrinfo_a(
    mode: c_int,
    list: *mut *mut c_void,
    nitems: c_int,
    sevp: *mut c_void,
) -> c_int {
    let (p, real) =
        real!("getaddrinfo_a", unsafe extern "C" fn(c_int, *mut *mut c_void, c_int, *mut c_void) -> c_int);
    if p == 0 {
        return libc::EAI_SYSTEM;
    }
    let start = sys::monotonic_ns();
    // SAFETY: forwarding the caller's arguments unchanged; the list's first request names the
    // host (the lookups themselves run later, on glibc's threads, through getaddrinfo).
    unsafe {
        let r = real(mode, list, nitems, sevp);
        let saved = sys::errno();
        let mut rec = Rec::new(Api::GetaddrinfoA, start);
        rec.ret = r;
        rec.hints[3] = mode;
        rec.hints[2] = nitems;
        if nitems > 0 && !list.is_null() && !(*list).is_null() {
            let first = *list as *const Gaicb;
            rec.name = cstr((*first).ar_name);
            rec.service = cstr((*first).ar_service);
        }
        rec.commit();
        sys::set_errno(saved);
        r
    }
}
