//! Parsing `/proc/PID/maps` and `smaps` text into regions. Pure text work, no I/O.

/// One line of maps, with what smaps adds when the text came from smaps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    /// As the kernel prints it: `rw-p`, `---p`, `r-xs`.
    pub perms: Perms,
    pub offset: u64,
    pub inode: u64,
    /// File path or pseudo-path (`[heap]`, `[stack]`, `[vdso]`, `[anon:name]`); empty when anonymous.
    pub path: String,
    /// smaps `Rss:` in bytes, when known.
    pub rss: Option<u64>,
    /// smaps `VmFlags:` two-letter flags (`nr` MAP_NORESERVE, `nh` no huge pages: MAP_STACK),
    /// as the kernel lists them, space-separated; empty when the text was maps.
    pub vm_flags: String,
}

/// A region's permissions as the kernel prints them (`rw-p`, `r-xs`), read as a `&str`: four
/// ASCII bytes kept inline. A String each was an allocation per line of every map read, and a
/// run of a thousand processes reads a thousand maps (issue 12).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Perms([u8; 4]);

impl Perms {
    /// `text` when it is four ASCII bytes (not NUL).
    pub fn new(text: &str) -> Option<Perms> {
        let bytes: [u8; 4] = text.as_bytes().try_into().ok()?;
        (bytes.is_ascii() && !bytes.contains(&0)).then_some(Perms(bytes))
    }

    /// From mmap's `prot` and `flags` (`r`, `w`, `x`; `s` for MAP_SHARED, else `p`).
    pub fn of_prot(prot: u64, flags: u64) -> Perms {
        let bit = |on: bool, c: u8| if on { c } else { b'-' };
        Perms([
            bit(prot & 1 != 0, b'r'),
            bit(prot & 2 != 0, b'w'),
            bit(prot & 4 != 0, b'x'),
            if flags & 1 != 0 { b's' } else { b'p' },
        ])
    }
}

impl Default for Perms {
    /// Not known: reads as "", as the String it replaces did.
    fn default() -> Perms {
        Perms([0; 4])
    }
}

impl std::ops::Deref for Perms {
    type Target = str;
    fn deref(&self) -> &str {
        // Four ASCII bytes by construction, or none (the default).
        if self.0[0] == 0 { "" } else { std::str::from_utf8(&self.0).unwrap_or("") }
    }
}

impl PartialEq<str> for Perms {
    fn eq(&self, other: &str) -> bool {
        **self == *other
    }
}

impl PartialEq<&str> for Perms {
    fn eq(&self, other: &&str) -> bool {
        **self == **other
    }
}

impl std::fmt::Display for Perms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self)
    }
}

impl std::fmt::Debug for Perms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl Region {
    pub fn size(&self) -> u64 {
        self.end - self.start
    }
    /// Anonymous memory: no path, or a name given with PR_SET_VMA_ANON_NAME (`[anon:...]`).
    pub fn is_anonymous(&self) -> bool {
        self.path.is_empty() || self.path.starts_with("[anon:")
    }
    /// A file-backed region (a path that is not a `[pseudo]` name).
    pub fn is_file(&self) -> bool {
        self.path.starts_with('/')
    }
    /// The path without the kernel's ` (deleted)` suffix.
    pub fn file_path(&self) -> &str {
        self.path.strip_suffix(" (deleted)").unwrap_or(&self.path)
    }
    pub fn has_flag(&self, f: &str) -> bool {
        self.vm_flags.split_ascii_whitespace().any(|v| v == f)
    }
}

/// The next field of a maps line: the bytes up to a space, and the rest after it.
fn field(line: &str) -> Option<(&str, &str)> {
    let at = line.as_bytes().iter().position(|&b| b == b' ')?;
    Some((&line[..at], &line[at + 1..]))
}

/// A hex number as maps prints its addresses and offsets: 1 to 16 digits, nothing else.
/// (from_str_radix's general digit and overflow handling was a fifth of parsing a map.)
fn hex(text: &str) -> Option<u64> {
    let digits = text.as_bytes();
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        Some(n << 4 | d as u64)
    })
}

fn parse_line(line: &str) -> Option<Region> {
    let (range, rest) = field(line)?;
    let dash = range.as_bytes().iter().position(|&b| b == b'-')?;
    let start = hex(&range[..dash])?;
    let end = hex(&range[dash + 1..])?;
    let (perms, rest) = field(rest)?;
    let perms = Perms::new(perms)?;
    if end < start {
        return None;
    }
    let (offset, rest) = field(rest)?;
    let offset = hex(offset)?;
    let (_dev, rest) = field(rest)?;
    // The inode ends the line of a region without a path (the kernel pads it with a space).
    let (inode, path) = field(rest).unwrap_or((rest, ""));
    let inode = inode.parse().ok()?;
    // The kernel pads the inode to a column with spaces: skipped as bytes (trim_start's
    // Unicode whitespace test per char was a sixth of parsing a map).
    let path = path[path.bytes().take_while(|&b| b == b' ').count()..].to_string();
    Some(Region { start, end, perms, offset, inode, path, rss: None, vm_flags: String::new() })
}

/// Parses maps or smaps text; lines that fit neither shape are ignored. smaps gives each region
/// some twenty field lines, of which two are kept: this is most of reading a run of a thousand
/// processes' maps at exit (issue 12), so a field line is told by its first byte.
pub fn parse(text: &str) -> Vec<Region> {
    let mut out: Vec<Region> = Vec::new();
    for line in lines(text) {
        match line.as_bytes().first() {
            // A region's line starts with its address in lowercase hex; smaps' field lines
            // (`Size:`, `Rss:`, ...) with a capital letter.
            Some(b) if b.is_ascii_digit() || (b'a'..=b'f').contains(b) => {
                if let Some(r) = parse_line(line) {
                    out.push(r);
                }
            }
            Some(b'R') => {
                if let (Some(v), Some(last)) = (line.strip_prefix("Rss:"), out.last_mut()) {
                    last.rss = v.trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|k| k * 1024);
                }
            }
            Some(b'V') => {
                if let (Some(v), Some(last)) = (line.strip_prefix("VmFlags:"), out.last_mut()) {
                    last.vm_flags = v.trim().to_string();
                }
            }
            _ => {}
        }
    }
    out
}

/// The lines of `text` as [`str::lines`] gives them (split at `\n`, a `\r` before it dropped),
/// the newlines found by one vectorised scan of the whole text: smaps lines are some thirty bytes
/// long, and `lines`' search per line took most of the parse, itself most of reading a thousand
/// processes' traces (issue 12).
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut newlines = memchr::memchr_iter(b'\n', text.as_bytes());
    let mut from = 0;
    std::iter::from_fn(move || {
        if from >= text.len() {
            return None;
        }
        let Some(at) = newlines.next() else {
            return Some(&text[std::mem::replace(&mut from, text.len())..]);
        };
        let line = &text[std::mem::replace(&mut from, at + 1)..at];
        Some(line.strip_suffix('\r').unwrap_or(line))
    })
}

/// Total bytes, the kernel's VSZ.
pub fn vsz(regions: &[Region]) -> u64 {
    regions.iter().map(Region::size).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_as_str_lines_does() {
        for text in ["", "\n", "a", "a\n", "a\nb", "a\n\nb\n", "a\r\nb\r", "\r\n\r", "a\rb\n", "é\nü\r\n"] {
            assert_eq!(lines(text).collect::<Vec<_>>(), text.lines().collect::<Vec<_>>(), "{text:?}");
        }
    }

    #[test]
    fn reads_hex_as_from_str_radix_does() {
        for t in [
            "0",
            "7f",
            "ffffffffff600000",
            "FFFFFFFFFFFFFFFF",
            "00000000000000001",
            "",
            "-1",
            "+1",
            "1g",
            "12 ",
        ] {
            assert_eq!(
                hex(t),
                u64::from_str_radix(t, 16).ok().filter(|_| t.len() <= 16 && !t.starts_with('+')),
                "{t:?}"
            );
        }
    }

    #[test]
    fn perms_read_as_the_kernel_wrote_them() {
        let p = Perms::new("r-xs").unwrap();
        assert_eq!((&*p, p.starts_with("r-"), format!("[{p:6}]")), ("r-xs", true, "[r-xs  ]".to_string()));
        assert!(p == "r-xs" && Perms::new("rw-").is_none() && Perms::new("rw-p ").is_none());
        assert_eq!(
            (&*Perms::default(), Perms::of_prot(3, 0) == "rw-p", Perms::of_prot(5, 1) == "r-xs"),
            ("", true, true)
        );
    }

    #[test]
    fn parses_maps_and_smaps_lines() {
        let text = "7f0000000000-7f0000021000 rw-p 00000000 00:00 0 \n\
                    Rss:                   8 kB\n\
                    VmFlags: rd wr mr mw me nr \n\
                    7f1000000000-7f1000001000 r--p 00001000 fd:01 1234   /usr/lib/x86_64-linux-gnu/libc.so.6\n\
                    7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]\n";
        let r = parse(text);
        assert_eq!(r.len(), 3);
        assert_eq!((r[0].size(), r[0].rss, r[0].has_flag("nr")), (0x21000, Some(8192), true));
        assert_eq!(
            (r[1].offset, r[1].inode, r[1].path.as_str()),
            (0x1000, 1234, "/usr/lib/x86_64-linux-gnu/libc.so.6")
        );
        assert_eq!(r[2].path, "[stack]");
        assert_eq!(vsz(&r), 0x21000 + 0x1000 + 0x21000);
    }
}
