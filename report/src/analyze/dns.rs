//! Which DNS resolver path ran. libc's resolver leaves Resolve records (every getaddrinfo,
//! gethostbyname, res_search, ... the program called); Go's own resolver makes no libc call
//! at all. For a Go executable the build information embedded in the binary (the
//! `.go.buildinfo` section: Go version, CGO_ENABLED, -tags) and the environment at start
//! (GODEBUG, LOCALDOMAIN, RES_OPTIONS, HOSTALIASES, nsswitch.conf's `hosts:` line) say what the
//! Go runtime should have chosen; the verdict says what ran and whether the two agree.

use crate::load::read::Recording;
use crate::symbolize::Symbolizer;
use std::fmt::Write;
use vmshim_trace::decode::Resolve;
use vmshim_trace::{CallKind, LOADING_FUNCTIONS};

/// What a Go binary says about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GoBuild {
    pub version: String,
    pub cgo_enabled: Option<bool>,
    pub tags: Vec<String>,
}

/// Reads the build information of a Go executable (Go 1.18+ inline format), or None.
pub fn go_build(exe: &str) -> Option<GoBuild> {
    use object::{Object, ObjectSection};
    let data = std::fs::read(exe).ok()?;
    let file = object::File::parse(&*data).ok()?;
    let section = file.section_by_name(".go.buildinfo")?;
    let bytes = section.data().ok()?;
    if bytes.len() < 32 || &bytes[..14] != b"\xff Go buildinf:" || bytes[15] & 2 == 0 {
        return None;
    }
    let mut at = 32;
    let mut string = || -> Option<String> {
        let (len, n) = uvarint(bytes.get(at..)?)?;
        let s = bytes.get(at + n..at + n + len as usize)?;
        at += n + len as usize;
        Some(String::from_utf8_lossy(s).into_owned())
    };
    let version = string()?;
    let modinfo = string().unwrap_or_default();
    // modinfo is framed by 16-byte sentinels.
    let modinfo = if modinfo.len() >= 32 { &modinfo[16..modinfo.len() - 16] } else { "" };
    let mut b = GoBuild { version, ..GoBuild::default() };
    for line in modinfo.lines() {
        let Some(setting) = line.strip_prefix("build\t") else { continue };
        if let Some(v) = setting.strip_prefix("CGO_ENABLED=") {
            b.cgo_enabled = Some(v == "1");
        } else if let Some(v) = setting.strip_prefix("-tags=") {
            b.tags = v.split(',').map(str::to_string).filter(|t| !t.is_empty()).collect();
        }
    }
    Some(b)
}

fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= ((byte & 0x7f) as u64) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Which resolver a path means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    Libc,
    Go,
}

/// What the Go runtime (1.19, net/conf.go) should choose, and why.
pub fn expected(build: &GoBuild, config: &[(String, String)]) -> (Path, String) {
    let get = |k: &str| config.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    let netdns = get("env.GODEBUG").and_then(|g| g.split(',').find_map(|kv| kv.strip_prefix("netdns=")));
    let mode = netdns.map(|m| m.split('+').next().unwrap_or(m));
    if build.tags.iter().any(|t| t == "netgo") {
        return (Path::Go, "binary built with netgo".into());
    }
    if build.cgo_enabled == Some(false) {
        return (Path::Go, "binary built with CGO_ENABLED=0".into());
    }
    match mode {
        Some("go") => return (Path::Go, "GODEBUG=netdns=go".into()),
        Some("cgo") => return (Path::Libc, "GODEBUG=netdns=cgo".into()),
        _ => {}
    }
    if build.tags.iter().any(|t| t == "netcgo") {
        return (Path::Libc, "binary built with netcgo".into());
    }
    for var in ["LOCALDOMAIN", "RES_OPTIONS", "HOSTALIASES"] {
        if get(&format!("env.{var}")).is_some() {
            return (Path::Libc, format!("{var} is set"));
        }
    }
    let hosts = get("nsswitch.hosts").unwrap_or("files dns");
    let sources: Vec<&str> = hosts.split_whitespace().filter(|w| !w.starts_with('[')).collect();
    if sources.iter().any(|s| *s != "files" && *s != "dns") {
        return (Path::Libc, format!("nsswitch.conf asks for \"{hosts}\", which Go's resolver cannot do"));
    }
    (Path::Go, format!("Go's default: nsswitch.conf asks only for \"{hosts}\""))
}

fn eai_name(code: i32) -> String {
    match code {
        0 => "".into(),
        -1 => "EAI_BADFLAGS".into(),
        -2 => "EAI_NONAME".into(),
        -3 => "EAI_AGAIN".into(),
        -4 => "EAI_FAIL".into(),
        -5 => "EAI_NODATA".into(),
        -6 => "EAI_FAMILY".into(),
        -7 => "EAI_SOCKTYPE".into(),
        -8 => "EAI_SERVICE".into(),
        -9 => "EAI_ADDRFAMILY".into(),
        -10 => "EAI_MEMORY".into(),
        -11 => "EAI_SYSTEM".into(),
        -12 => "EAI_OVERFLOW".into(),
        c => format!("EAI {c}"),
    }
}

fn h_errno_name(code: i32) -> String {
    match code {
        1 => "HOST_NOT_FOUND".into(),
        2 => "TRY_AGAIN".into(),
        3 => "NO_RECOVERY".into(),
        4 => "NO_DATA".into(),
        c => format!("h_errno {c}"),
    }
}

fn family_name(f: i32) -> &'static str {
    match f {
        0 => "AF_UNSPEC",
        2 => "AF_INET",
        10 => "AF_INET6",
        _ => "?",
    }
}

fn flag_names(flags: i32) -> String {
    const AI: &[(i32, &str)] = &[
        (1, "AI_PASSIVE"),
        (2, "AI_CANONNAME"),
        (4, "AI_NUMERICHOST"),
        (8, "AI_V4MAPPED"),
        (0x10, "AI_ALL"),
        (0x20, "AI_ADDRCONFIG"),
        (0x400, "AI_NUMERICSERV"),
    ];
    let v: Vec<&str> = AI.iter().filter(|(b, _)| flags & b != 0).map(|(_, n)| *n).collect();
    if v.is_empty() { "0".into() } else { v.join("|") }
}

fn address(family: u16, a: &[u8; 16]) -> String {
    match family {
        2 => std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string(),
        10 => std::net::Ipv6Addr::from(*a).to_string(),
        _ => format!("family {family}"),
    }
}

fn api_name(r: &Resolve) -> &'static str {
    LOADING_FUNCTIONS.get(r.api as usize).copied().unwrap_or("?")
}

/// The outcome as the call reported it: "" on success, else the error by name.
fn error_of(r: &Resolve) -> String {
    match api_name(r) {
        "getaddrinfo" | "getnameinfo" | "getaddrinfo_a" => eai_name(r.ret),
        "freeaddrinfo" => String::new(),
        _ if r.error != 0 => h_errno_name(r.error),
        _ => String::new(),
    }
}

/// Images loaded during each lookup: ModuleLoad events the same thread recorded right after it.
fn loaded_during(rec: &Recording, idx: usize) -> Vec<String> {
    let (seq, r) = &rec.resolves[idx];
    let next = rec.resolves[idx + 1..].iter().find(|(_, o)| o.tid == r.tid).map_or(usize::MAX, |(s, _)| *s);
    rec.calls
        .iter()
        .filter_map(|(i, c)| rec.call_seq.get(i).map(|s| (c, s)))
        .filter(|(c, s)| c.call == CallKind::ModuleLoad && c.tid == r.tid && **s > *seq && **s < next)
        .filter_map(|(c, _)| rec.modules.iter().find(|m| m.lo == c.args[1]).map(|m| m.path.clone()))
        .collect()
}

/// The DNS verdict and the lookups behind it, in the words and figures the reports show.
pub struct Dns {
    pub verdict: String,
    /// The text report's lines under the verdict: each lookup, then its stack.
    pub lines: Vec<String>,
    /// Whether a libc resolver call was seen.
    pub observed: bool,
    /// What the Go build and the environment say the runtime should choose, and why.
    pub expected: Option<(Path, String)>,
    pub go_build: Option<GoBuild>,
    pub nsswitch_hosts: Option<String>,
    pub nss_modules_loaded: Vec<String>,
    pub calls: Vec<Lookup>,
}

/// One lookup the program made through libc.
pub struct Lookup {
    pub api: &'static str,
    pub name: String,
    pub service: String,
    pub family: &'static str,
    pub socktype: i32,
    pub flags: String,
    pub result: Vec<String>,
    /// Empty when the call succeeded.
    pub error: String,
    pub duration_ns: u64,
    pub tid: u32,
    pub nss_modules: Vec<String>,
    pub stack: Vec<crate::symbolize::Frame>,
}

pub fn analyse(rec: &Recording, sym: &mut Symbolizer) -> Dns {
    let exe = rec.start.as_ref().map(|s| s.exe.clone()).unwrap_or_default();
    let build = go_build(&exe);
    let expect = build.as_ref().map(|b| expected(b, &rec.config));
    let hosts = rec.config.iter().find(|(k, _)| k == "nsswitch.hosts").map(|(_, v)| v.clone());
    let lookups: Vec<usize> =
        (0..rec.resolves.len()).filter(|&i| api_name(&rec.resolves[i].1) != "freeaddrinfo").collect();
    let nss: Vec<String> = rec
        .modules
        .iter()
        .filter(|m| m.path.rsplit('/').next().is_some_and(|f| f.starts_with("libnss_")))
        .map(|m| m.path.clone())
        .collect();
    let observed = if lookups.is_empty() { None } else { Some(Path::Libc) };
    let mut verdict = match observed {
        Some(_) => {
            let via = hosts.as_deref().map_or(String::new(), |h| format!(", via NSS {h}"));
            format!("libc resolver (cgo) ran: {} lookup(s){via}", lookups.len())
        }
        None => match &expect {
            Some((Path::Go, why)) => format!("no libc resolver call: Go's built-in resolver ({why})"),
            _ => "no name lookups observed".to_string(),
        },
    };
    match (&expect, observed) {
        (Some((Path::Go, why)), Some(Path::Libc)) => {
            let _ = write!(
                verdict,
                " -- but the build says Go's resolver ({why}): observation and build disagree"
            );
        }
        (Some((Path::Libc, why)), None) => {
            let _ = write!(verdict, " (the build says the libc resolver would be used: {why})");
        }
        (Some((Path::Libc, why)), Some(Path::Libc)) => {
            let _ = write!(verdict, "; as the build says ({why})");
        }
        _ => {}
    }
    let mut lines = Vec::new();
    let mut calls = Vec::new();
    for &i in &lookups {
        let (_, r) = &rec.resolves[i];
        let addrs: Vec<String> = r.addrs.iter().map(|(f, a)| address(*f, a)).collect();
        let error = error_of(r);
        let modules = loaded_during(rec, i);
        let frames: Vec<_> = r.stack.iter().flat_map(|&a| sym.symbolize(a, true)).collect();
        let outcome = if error.is_empty() { addrs.join(" ") } else { error.clone() };
        lines.push(format!(
            "{:<7} {}({:?}{}) = {}  [{:.1} ms{}]",
            r.tid,
            api_name(r),
            r.name,
            if r.service.is_empty() { String::new() } else { format!(", {:?}", r.service) },
            outcome,
            r.end_ns.saturating_sub(r.start_ns) as f64 / 1e6,
            if modules.is_empty() { String::new() } else { format!("; loaded {}", modules.join(", ")) }
        ));
        for f in frames.iter().take(12) {
            lines.push(format!("          {}", f.function.as_deref().unwrap_or("?")));
        }
        calls.push(Lookup {
            api: api_name(r),
            name: r.name.clone(),
            service: r.service.clone(),
            family: family_name(r.family),
            socktype: r.socktype,
            flags: flag_names(r.flags),
            result: addrs,
            error,
            duration_ns: r.end_ns.saturating_sub(r.start_ns),
            tid: r.tid,
            nss_modules: modules,
            stack: frames,
        });
    }
    Dns {
        verdict,
        lines,
        observed: observed.is_some(),
        expected: expect,
        go_build: build,
        nsswitch_hosts: hosts,
        nss_modules_loaded: nss,
        calls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn go_19_choices() {
        let b = |tags: &[&str], cgo| GoBuild {
            version: "go1.19".into(),
            cgo_enabled: Some(cgo),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        };
        let files_dns = cfg(&[("nsswitch.hosts", "files dns")]);
        assert_eq!(expected(&b(&["netgo"], true), &files_dns).0, Path::Go);
        assert_eq!(expected(&b(&["netcgo"], true), &files_dns).0, Path::Libc);
        assert_eq!(expected(&b(&[], false), &files_dns).0, Path::Go);
        assert_eq!(expected(&b(&[], true), &files_dns).0, Path::Go);
        let godebug = cfg(&[("nsswitch.hosts", "files dns"), ("env.GODEBUG", "netdns=cgo+1")]);
        assert_eq!(expected(&b(&[], true), &godebug).0, Path::Libc);
        let mdns = cfg(&[("nsswitch.hosts", "files mdns4_minimal [NOTFOUND=return] dns")]);
        assert_eq!(expected(&b(&[], true), &mdns).0, Path::Libc);
    }
}
