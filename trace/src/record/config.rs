//! [`Kind::Config`]: what steers name resolution, read at start as `key=value` lines (the
//! `hosts:` line of /etc/nsswitch.conf, the `options` of /etc/resolv.conf, GODEBUG, ...), and
//! the libc symbols another library defines before the shim (`shadowed.NAME=path`).
//!
//! Body: text str.

use crate::encode::Encoder;
use crate::reader::Reader;
use crate::{Error, Kind};

/// The longest text a Config record keeps (it is cut).
pub const MAX_TEXT: usize = 4096;

/// Encodes `text` into `buf`; the record's length, or `None` if it does not fit.
pub fn encode(buf: &mut [u8], text: &[u8]) -> Option<usize> {
    let mut e = Encoder::new(buf, Kind::Config);
    e.put_str(text, MAX_TEXT);
    e.finish()
}

pub(crate) fn decode(r: &mut Reader<'_>) -> Result<String, Error> {
    r.string()
}

#[cfg(test)]
mod tests {
    use crate::record::tests::round_trip;

    #[test]
    fn round_trips_and_cuts_at_the_limit() {
        for text in ["", "nsswitch.hosts=files dns\nenv.GODEBUG=netdns=go\n"] {
            round_trip(&text.to_string(), |b, t| super::encode(b, t.as_bytes()), super::decode);
        }
        let long = "x".repeat(super::MAX_TEXT + 10);
        let mut buf = vec![0u8; 2 * super::MAX_TEXT];
        let n = super::encode(&mut buf, long.as_bytes()).unwrap();
        let back =
            super::decode(&mut crate::reader::Reader::new(crate::record::tests::body_of(&buf[..n]), 0));
        assert_eq!(back.unwrap().len(), super::MAX_TEXT);
    }
}
