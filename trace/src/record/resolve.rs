//! [`Kind::Resolve`]: one call of a libc resolver function (getaddrinfo, gethostbyname,
//! res_search, ...).
//!
//! Body: api u16, 0 u16, tid u32, start_ns u64, end_ns u64, family i32, socktype i32,
//! protocol i32, flags i32, ret i32, error i32, handle u64, name str, service str, naddrs u32,
//! (family u16, 0 u16 x3, addr 16 bytes) x naddrs, frames.

use crate::encode::Encoder;
use crate::reader::Reader;
use crate::{Error, Kind, MAX_ADDRS, MAX_FRAMES};

/// The longest host name a Resolve record keeps (it is cut).
pub const MAX_NAME: usize = 255;
/// The longest service name a Resolve record keeps (it is cut).
pub const MAX_SERVICE: usize = 64;
/// Room for the largest Resolve record.
pub const MAX_LEN: usize = 1024 + MAX_ADDRS * 24 + MAX_FRAMES * 8;

/// One resolver call. For getaddrinfo `family`, `socktype`, `protocol` and `flags` are the
/// hints, `ret` its EAI_* code, `handle` the result list (freeaddrinfo's argument); for the
/// gethostby* family `error` is h_errno; for res_* `family` is the class and `socktype` the type,
/// `ret` the answer length; for getnameinfo `name` and `service` are what it returned and
/// `addrs` the address it was asked about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolve {
    /// An index into [`crate::LOADING_FUNCTIONS`].
    pub api: u16,
    pub tid: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub family: i32,
    pub socktype: i32,
    pub protocol: i32,
    pub flags: i32,
    pub ret: i32,
    pub error: i32,
    pub handle: u64,
    pub name: String,
    pub service: String,
    /// (address family, up to 16 address bytes: 4 for AF_INET, 16 for AF_INET6)
    pub addrs: Vec<(u16, [u8; 16])>,
    pub stack: Vec<u64>,
}

/// What [`encode`] writes, borrowed from the caller.
#[derive(Clone, Copy, Debug)]
pub struct ResolveRecord<'a> {
    pub api: u16,
    pub tid: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    /// family, socktype, protocol, flags (see [`Resolve`]).
    pub hints: [i32; 4],
    pub ret: i32,
    pub error: i32,
    pub handle: u64,
    pub name: &'a [u8],
    pub service: &'a [u8],
    /// At most [`MAX_ADDRS`] kept.
    pub addrs: &'a [(u16, [u8; 16])],
    /// At most [`MAX_FRAMES`] kept.
    pub stack: &'a [u64],
}

/// Encodes `q` into `buf`; the record's length, or `None` if it does not fit.
pub fn encode(buf: &mut [u8], q: &ResolveRecord<'_>) -> Option<usize> {
    let mut e = Encoder::new(buf, Kind::Resolve);
    e.put_u16(q.api);
    e.put_u16(0);
    e.put_u32(q.tid);
    e.put_u64(q.start_ns);
    e.put_u64(q.end_ns);
    for h in q.hints {
        e.put_i32(h);
    }
    e.put_i32(q.ret);
    e.put_i32(q.error);
    e.put_u64(q.handle);
    e.put_str(q.name, MAX_NAME);
    e.put_str(q.service, MAX_SERVICE);
    let addrs = &q.addrs[..q.addrs.len().min(MAX_ADDRS)];
    e.put_u32(addrs.len() as u32);
    for (family, a) in addrs {
        e.put_u16(*family);
        e.put_bytes(&[0; 6]);
        e.put_bytes(a);
    }
    e.put_frames(q.stack);
    e.finish()
}

pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Resolve, Error> {
    let api = r.u16()?;
    r.u16()?;
    let tid = r.u32()?;
    let (start_ns, end_ns) = (r.u64()?, r.u64()?);
    let (family, socktype, protocol, flags, ret, error) =
        (r.i32()?, r.i32()?, r.i32()?, r.i32()?, r.i32()?, r.i32()?);
    let handle = r.u64()?;
    let name = r.string()?;
    let service = r.string()?;
    let n = r.u32()? as usize;
    if n > MAX_ADDRS {
        return Err(r.err(format!("{n} addresses exceed the limit of {MAX_ADDRS}")));
    }
    let mut addrs = Vec::with_capacity(n);
    for _ in 0..n {
        let fam = r.u16()?;
        r.bytes(6)?;
        let mut a = [0u8; 16];
        a.copy_from_slice(r.bytes(16)?);
        addrs.push((fam, a));
    }
    let stack = r.frames()?;
    Ok(Resolve {
        api,
        tid,
        start_ns,
        end_ns,
        family,
        socktype,
        protocol,
        flags,
        ret,
        error,
        handle,
        name,
        service,
        addrs,
        stack,
    })
}

impl Resolve {
    pub fn record(&self) -> ResolveRecord<'_> {
        ResolveRecord {
            api: self.api,
            tid: self.tid,
            start_ns: self.start_ns,
            end_ns: self.end_ns,
            hints: [self.family, self.socktype, self.protocol, self.flags],
            ret: self.ret,
            error: self.error,
            handle: self.handle,
            name: self.name.as_bytes(),
            service: self.service.as_bytes(),
            addrs: &self.addrs,
            stack: &self.stack,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::round_trip;

    #[test]
    fn round_trips_and_fits_its_largest() {
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        let q = Resolve {
            api: 2,
            tid: 9,
            start_ns: 10,
            end_ns: 20,
            family: 0,
            socktype: 1,
            protocol: 6,
            flags: 0x20,
            ret: -2,
            error: 0,
            handle: 0x5555_0000_2000,
            name: "example.com".into(),
            service: "https".into(),
            addrs: vec![(2, [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), (10, v6)],
            stack: vec![4, 5, 6],
        };
        round_trip(&q, |b, q| encode(b, &q.record()), decode);
        let full = Resolve {
            name: "n".repeat(MAX_NAME),
            service: "s".repeat(MAX_SERVICE),
            addrs: vec![(2, [1; 16]); MAX_ADDRS],
            stack: vec![7; MAX_FRAMES],
            ..q
        };
        round_trip(&full, |b, q| encode(b, &q.record()), decode);
        assert!(encode(&mut [0u8; MAX_LEN], &full.record()).is_some());
    }

    #[test]
    fn too_many_addresses_is_an_error() {
        let mut buf = [0u8; 256];
        let q = ResolveRecord {
            api: 0,
            tid: 0,
            start_ns: 0,
            end_ns: 0,
            hints: [0; 4],
            ret: 0,
            error: 0,
            handle: 0,
            name: b"",
            service: b"",
            addrs: &[],
            stack: &[],
        };
        let n = encode(&mut buf, &q).unwrap();
        let mut body = crate::record::tests::body_of(&buf[..n]).to_vec();
        body[64..68].copy_from_slice(&(MAX_ADDRS as u32 + 1).to_le_bytes());
        assert!(decode(&mut Reader::new(&body, 0)).unwrap_err().message.contains("addresses exceed"));
    }
}
