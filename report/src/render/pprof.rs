//! `--pprof FILE`: the attribution as a gzipped pprof profile (profile.proto), so Go users can
//! open it with the tool they already use (`go tool pprof -top FILE`, `-http`). Two sample
//! types, reserved bytes and regions; every region is one sample, its call stack the
//! locations, with `category`, `thread` and (for the Go runtime's) `purpose` labels. The protobuf is written by hand: a few
//! message types, varints and length-delimited fields.

use crate::analyze::Analysis;
use std::collections::HashMap;
use std::io::Write;

/// A protobuf message under construction.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn key(&mut self, field: u32, wire: u8) {
        self.varint(((field as u64) << 3) | wire as u64);
    }
    fn uint(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.key(field, 0);
            self.varint(v);
        }
    }
    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn msg(&mut self, field: u32, m: Msg) {
        self.bytes(field, &m.0);
    }
    fn packed(&mut self, field: u32, vs: &[u64]) {
        let mut p = Msg::default();
        for &v in vs {
            p.varint(v);
        }
        self.bytes(field, &p.0);
    }
}

/// The string table: index 0 is "".
struct Strings {
    index: HashMap<String, u64>,
    list: Vec<String>,
}

impl Strings {
    fn new() -> Strings {
        Strings { index: HashMap::from([(String::new(), 0)]), list: vec![String::new()] }
    }
    fn id(&mut self, s: &str) -> u64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.list.len() as u64;
        self.list.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

fn value_type(strings: &mut Strings, kind: &str, unit: &str) -> Msg {
    let mut m = Msg::default();
    m.uint(1, strings.id(kind));
    m.uint(2, strings.id(unit));
    m
}

/// Encodes and gzips the profile.
pub fn write(a: &Analysis, out: &mut dyn Write) -> std::io::Result<()> {
    let mut strings = Strings::new();
    let mut profile = Msg::default();
    let types = [value_type(&mut strings, "reserved", "bytes"), value_type(&mut strings, "regions", "count")];
    for t in types {
        profile.msg(1, t);
    }
    let mut locations: HashMap<u64, u64> = HashMap::new(); // address -> location id
    let mut functions: HashMap<(String, String), u64> = HashMap::new();
    let mut loc_msgs = Vec::new();
    let mut fn_msgs = Vec::new();
    // Stackless regions get one pseudo-location per category, at pseudo-addresses past any real one.
    let mut pseudo: HashMap<&str, u64> = HashMap::new();
    for r in &a.attr.regions {
        let mut ids = Vec::new();
        let cat = r.category.name();
        if r.stack.is_empty() {
            let next = u64::MAX - pseudo.len() as u64;
            let addr = *pseudo.entry(cat).or_insert(next);
            let id = *locations.entry(addr).or_insert_with(|| {
                let fid = functions.len() as u64 + 1;
                functions.insert((format!("({cat})"), String::new()), fid);
                let mut f = Msg::default();
                f.uint(1, fid);
                f.uint(2, strings.id(&format!("({cat})")));
                fn_msgs.push(f);
                let id = loc_msgs.len() as u64 + 1;
                let mut l = Msg::default();
                l.uint(1, id);
                let mut line = Msg::default();
                line.uint(1, fid);
                l.msg(4, line);
                loc_msgs.push(l);
                id
            });
            ids.push(id);
        }
        for &addr in &r.stack {
            if let Some(&id) = locations.get(&addr) {
                ids.push(id);
                continue;
            }
            let id = loc_msgs.len() as u64 + 1;
            let mut l = Msg::default();
            l.uint(1, id);
            l.uint(3, addr);
            for f in a.frames(&[addr]) {
                let name = f.function.clone().unwrap_or_else(|| format!("{:#x}", f.addr));
                let file = f.file.clone().unwrap_or_default();
                let key = (name.clone(), file.clone());
                let fid = match functions.get(&key) {
                    Some(&fid) => fid,
                    None => {
                        let fid = functions.len() as u64 + 1;
                        functions.insert(key, fid);
                        let mut m = Msg::default();
                        m.uint(1, fid);
                        m.uint(2, strings.id(&name));
                        m.uint(3, strings.id(&name));
                        m.uint(4, strings.id(&file));
                        fn_msgs.push(m);
                        fid
                    }
                };
                let mut line = Msg::default();
                line.uint(1, fid);
                line.uint(2, f.line.unwrap_or(0) as u64);
                l.msg(4, line);
            }
            loc_msgs.push(l);
            locations.insert(addr, id);
            ids.push(id);
        }
        let mut sample = Msg::default();
        sample.packed(1, &ids);
        sample.packed(2, &[r.size(), 1]);
        let mut label = Msg::default();
        label.uint(1, strings.id("category"));
        label.uint(2, strings.id(cat));
        sample.msg(3, label);
        if let Some(purpose) = &r.purpose {
            let mut label = Msg::default();
            label.uint(1, strings.id("purpose"));
            label.uint(2, strings.id(purpose));
            sample.msg(3, label);
        }
        if let Some(tid) = r.tid {
            let mut label = Msg::default();
            label.uint(1, strings.id("thread"));
            label.uint(3, tid as u64);
            sample.msg(3, label);
        }
        profile.msg(2, sample);
    }
    for l in loc_msgs {
        profile.msg(4, l);
    }
    for f in fn_msgs {
        profile.msg(5, f);
    }
    let list = std::mem::take(&mut strings.list);
    for s in &list {
        profile.bytes(6, s.as_bytes());
    }
    let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    gz.write_all(&profile.0)?;
    gz.finish()?;
    Ok(())
}
