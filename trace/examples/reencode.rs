//! Issue 13: every record of every trace under a directory decodes and encodes again with its
//! kind's encoder to the same bytes. `scripts/reencode.sh DIR` runs it; it prints the counts per
//! kind, names each record that differs, and exits non-zero if any did (or a trace could not be
//! read).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use vmshim_trace::{Kind, RECORD_HEADER, Record, Stream};

fn traces(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        // Regular files only: a corpus of the suite's runs holds FIFOs, sockets and symlinks
        // that the harm tests made (file_type does not follow a symlink).
        let kind = entry.file_type()?;
        if kind.is_dir() {
            traces(&path, out)?;
        } else if kind.is_file()
            && std::fs::read(&path).is_ok_and(|b| b.starts_with(&vmshim_trace::FILE_MAGIC))
        {
            out.push(path);
        }
    }
    Ok(())
}

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: reencode DIR");
        std::process::exit(2);
    };
    let mut files = Vec::new();
    if let Err(e) = traces(Path::new(&dir), &mut files) {
        eprintln!("cannot list {}: {e}", Path::new(&dir).display());
        std::process::exit(2);
    }
    files.sort();
    let (mut same, mut differ, mut unreadable) = (BTreeMap::<String, u64>::new(), 0u64, 0u64);
    let mut buf = vec![0u8; vmshim_trace::MAX_RECORD];
    for path in &files {
        let bytes = std::fs::read(path).unwrap_or_default();
        let mut stream = match Stream::new(&bytes[..], bytes.len() as u64) {
            Ok(s) => s,
            Err(e) => {
                println!("{}: {e}", path.display());
                unreadable += 1;
                continue;
            }
        };
        loop {
            let (offset, kind, record) = match stream.next_record() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    println!("{}: {e}", path.display());
                    unreadable += 1;
                    break;
                }
            };
            let body = if kind == Kind::Pad { &[][..] } else { &record[RECORD_HEADER..] };
            let again = match kind {
                // A pad's body is never written; its length comes from its first word.
                Kind::Pad => Record::Pad((u64::from_le_bytes(record[..8].try_into().unwrap()) >> 32) as u32),
                _ => match Record::decode(kind, body, offset + RECORD_HEADER as u64) {
                    Ok(r) => r,
                    Err(e) => {
                        println!("{}: {e}", path.display());
                        differ += 1;
                        continue;
                    }
                },
            };
            match again.encode(&mut buf) {
                Some(n) if buf[..n] == record[..] => *same.entry(format!("{kind:?}")).or_default() += 1,
                n => {
                    println!(
                        "{}: the {kind:?} record at {offset} encodes to {n:?} other bytes",
                        path.display()
                    );
                    differ += 1;
                }
            }
        }
    }
    let total: u64 = same.values().sum();
    println!(
        "{} traces, {total} records re-encoded to the same bytes, {differ} differ, {unreadable} traces unreadable",
        files.len()
    );
    for (kind, n) in &same {
        println!("  {kind:<12} {n}");
    }
    if differ > 0 || unreadable > 0 {
        std::process::exit(1);
    }
}
