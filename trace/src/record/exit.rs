//! [`Kind::Exit`]: how the process ended, appended by `vmshim run` after the target is gone.
//!
//! Body: raw_status i32, 0 u32, how str.

use crate::encode::Encoder;
use crate::reader::Reader;
use crate::{Error, Kind};

/// How the process ended, as `vmshim run` saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    pub raw_status: i32,
    pub how: String,
}

/// Encodes the exit (`raw_status` as waitpid gave it, `how` in words, kept whole) into `buf`;
/// the record's length, or `None` if it does not fit.
pub fn encode(buf: &mut [u8], raw_status: i32, how: &[u8]) -> Option<usize> {
    let mut e = Encoder::new(buf, Kind::Exit);
    e.put_i32(raw_status);
    e.put_u32(0);
    e.put_str(how, how.len());
    e.finish()
}

pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Exit, Error> {
    let raw_status = r.i32()?;
    r.u32()?;
    Ok(Exit { raw_status, how: r.string()? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::round_trip;

    #[test]
    fn round_trips() {
        for e in [
            Exit { raw_status: 0, how: "exited with status 0".into() },
            Exit { raw_status: -1, how: "".into() },
        ] {
            round_trip(&e, |b, e| encode(b, e.raw_status, e.how.as_bytes()), decode);
        }
    }
}
