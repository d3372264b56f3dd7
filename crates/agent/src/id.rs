//! Capsule ids: `cl-` + 25 base36 characters (the wire format of spec §F.1).
//!
//! Every id has the same width, which matters to runsc: it resolves container ids by prefix, so
//! `cl-…1` would be ambiguous next to `cl-…10` if widths varied.

use std::fmt;
use std::str::FromStr;

const PREFIX: &str = "cl-";
const BODY_LEN: usize = 25;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CapsuleId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid capsule id {0:?}: expected `cl-` followed by 25 characters of 0-9a-z")]
pub struct InvalidCapsuleId(pub String);

impl CapsuleId {
    /// A fresh random id (128 bits from the kernel's CSPRNG).
    pub fn random() -> std::io::Result<Self> {
        let mut bytes = [0u8; 16];
        getrandom(&mut bytes)?;
        Ok(Self::from_u128(u128::from_be_bytes(bytes)))
    }

    pub fn from_u128(mut value: u128) -> Self {
        let mut body = [b'0'; BODY_LEN];
        for slot in body.iter_mut().rev() {
            let digit = (value % 36) as u8;
            *slot = if digit < 10 {
                b'0' + digit
            } else {
                b'a' + digit - 10
            };
            value /= 36;
        }
        // 36^25 > 2^128, so the loop consumed every digit.
        let body: String = body.iter().map(|&b| b as char).collect();
        Self(format!("{PREFIX}{body}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

impl FromStr for CapsuleId {
    type Err = InvalidCapsuleId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = s.strip_prefix(PREFIX).is_some_and(|body| {
            body.len() == BODY_LEN
                && body
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        });
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidCapsuleId(s.to_owned()))
        }
    }
}

impl fmt::Display for CapsuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_fixed_width_base36() {
        assert_eq!(
            CapsuleId::from_u128(0).as_str(),
            "cl-0000000000000000000000000"
        );
        assert_eq!(
            CapsuleId::from_u128(35).as_str(),
            "cl-000000000000000000000000z"
        );
        let max = CapsuleId::from_u128(u128::MAX);
        assert_eq!(max.as_str().len(), 28);
        assert_eq!(max.as_str().parse::<CapsuleId>(), Ok(max.clone()));
    }

    #[test]
    fn random_ids_parse_and_differ() {
        let a = CapsuleId::random().unwrap();
        let b = CapsuleId::random().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().parse::<CapsuleId>().unwrap(), a);
    }

    #[test]
    fn rejects_bad_ids() {
        for bad in [
            "",
            "cl-",
            "sb-0000000000000000000000000",
            "cl-000000000000000000000000",
            "cl-00000000000000000000000000",
            "cl-000000000000000000000000A",
            "cl-../../../../../../etc/pas",
        ] {
            assert!(bad.parse::<CapsuleId>().is_err(), "{bad:?} accepted");
        }
    }
}
