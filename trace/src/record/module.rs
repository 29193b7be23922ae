//! [`Kind::Module`]: one loaded ELF image, with its build id so the report can symbolize
//! offline. `base` is the load bias (absolute = file vaddr + base); `lo..hi` the absolute
//! address span of its PT_LOAD segments.
//!
//! Body: base u64, lo u64, hi u64, build_id str, path str.

use crate::encode::Encoder;
use crate::reader::Reader;
use crate::{Error, Kind};

/// The longest build id a Module record keeps (it is cut).
pub const MAX_BUILD_ID: usize = 64;
/// The longest path a Module record keeps (it is cut).
pub const MAX_PATH: usize = 8192;

/// One loaded ELF module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub base: u64,
    pub lo: u64,
    pub hi: u64,
    pub build_id: Vec<u8>,
    pub path: String,
}

/// What [`encode`] writes, borrowed from the caller.
#[derive(Clone, Copy, Debug)]
pub struct ModuleRecord<'a> {
    pub base: u64,
    pub lo: u64,
    pub hi: u64,
    pub build_id: &'a [u8],
    pub path: &'a [u8],
}

/// Encodes `m` into `buf`; the record's length, or `None` if it does not fit.
pub fn encode(buf: &mut [u8], m: &ModuleRecord<'_>) -> Option<usize> {
    let mut e = Encoder::new(buf, Kind::Module);
    e.put_u64(m.base);
    e.put_u64(m.lo);
    e.put_u64(m.hi);
    e.put_str(m.build_id, MAX_BUILD_ID);
    e.put_str(m.path, MAX_PATH);
    e.finish()
}

pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Module, Error> {
    Ok(Module { base: r.u64()?, lo: r.u64()?, hi: r.u64()?, build_id: r.blob()?.to_vec(), path: r.string()? })
}

impl Module {
    pub fn record(&self) -> ModuleRecord<'_> {
        ModuleRecord {
            base: self.base,
            lo: self.lo,
            hi: self.hi,
            build_id: &self.build_id,
            path: self.path.as_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::round_trip;

    #[test]
    fn round_trips() {
        let m = Module {
            base: 0x7f00_0000_0000,
            lo: 0x7f00_0000_1000,
            hi: 0x7f00_0002_0000,
            build_id: vec![0xab; 20],
            path: "/lib/x86_64-linux-gnu/libc.so.6".into(),
        };
        round_trip(&m, |b, m| encode(b, &m.record()), decode);
        round_trip(
            &Module { build_id: vec![], path: String::new(), ..m },
            |b, m| encode(b, &m.record()),
            decode,
        );
    }
}
