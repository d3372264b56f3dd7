//! Entity ids (spec §F.1): a UUID in the database, `<prefix>` + 25 base36 characters on the wire.
//!
//! Every id type is its own newtype so a team id can never be passed where a user id is meant.
//! The database stores the canonical hyphenated UUID text (`Self::db`), which reads the same in
//! SQLite and PostgreSQL and stays independent of the wire prefixes.

use std::fmt;
use uuid::Uuid;

/// Length of the base36 body: 36^25 > 2^128, and 36^24 < 2^128.
const BODY_LEN: usize = 25;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} id: expected `{prefix}` followed by 25 characters of 0-9a-z")]
pub struct InvalidId {
    pub kind: &'static str,
    pub prefix: &'static str,
}

/// Lets the database layer read any id type back from its column.
pub trait DbId: Sized {
    fn from_db(s: &str) -> Option<Self>;
}

fn encode(prefix: &str, uuid: Uuid) -> String {
    let mut value = uuid.as_u128();
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
    let mut out = String::with_capacity(prefix.len() + BODY_LEN);
    out.push_str(prefix);
    out.extend(body.iter().map(|&b| b as char));
    out
}

/// Strict: exact prefix, exactly 25 lowercase base36 digits, value within 128 bits.
fn decode(prefix: &str, s: &str) -> Option<Uuid> {
    let body = s.strip_prefix(prefix)?;
    if body.len() != BODY_LEN {
        return None;
    }
    let mut value: u128 = 0;
    for b in body.bytes() {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'z' => b - b'a' + 10,
            _ => return None,
        };
        value = value.checked_mul(36)?.checked_add(u128::from(digit))?;
    }
    Some(Uuid::from_u128(value))
}

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Uuid);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random (v4) id.
            pub fn random() -> Self {
                Self(Uuid::new_v4())
            }

            /// Parses the wire form strictly (spec §F.1).
            pub fn parse(s: &str) -> Result<Self, InvalidId> {
                decode($prefix, s).map(Self).ok_or(InvalidId { kind: $kind, prefix: $prefix })
            }

            /// The value stored in the database.
            pub fn db(&self) -> String {
                self.0.hyphenated().to_string()
            }

            /// Reads the database value back; `None` when the column holds something else.
            pub fn from_db(s: &str) -> Option<Self> {
                Uuid::parse_str(s).ok().map(Self)
            }
        }

        impl DbId for $name {
            fn from_db(s: &str) -> Option<Self> {
                $name::from_db(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&encode($prefix, self.0))
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                Self::parse(s)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some(concat!("^", $prefix, "[0-9a-z]{25}$")))
                    .examples([serde_json::json!(concat!($prefix, "0000000000000000000000001"))])
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

id_type!(
    /// `cl-…`: a capsule (sandbox).
    CapsuleId, "cl-", "capsule"
);
id_type!(UserId, "usr-", "user");
id_type!(TeamId, "team-", "team");
id_type!(ApiKeyId, "key-", "API key");
id_type!(HostId, "host-", "host");
id_type!(AuditLogId, "log-", "audit log");
id_type!(TemplateId, "tpl-", "template");
id_type!(BuildId, "bld-", "build");

impl TeamId {
    /// The all-zero Platform team (owner of platform templates and the admin context).
    pub const PLATFORM: TeamId = TeamId(Uuid::nil());
}

impl AuditLogId {
    /// Audit ids are time-ordered (v7) so `ORDER BY created_at DESC, id DESC` is the insertion
    /// order even within one second, which keeps cursor pagination stable and intuitive.
    pub fn time_ordered() -> Self {
        Self(Uuid::now_v7())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_width() {
        for _ in 0..100 {
            let id = UserId::random();
            let wire = id.to_string();
            assert_eq!(wire.len(), 4 + BODY_LEN);
            assert_eq!(UserId::parse(&wire), Ok(id));
        }
        assert_eq!(
            TeamId::PLATFORM.to_string(),
            "team-0000000000000000000000000"
        );
        let max = UserId(Uuid::from_u128(u128::MAX)).to_string();
        assert_eq!(UserId::parse(&max).map(|u| u.0.as_u128()), Ok(u128::MAX));
    }

    #[test]
    fn strict_parsing() {
        let good = TeamId::random().to_string();
        assert!(UserId::parse(&good).is_err(), "wrong prefix");
        assert!(TeamId::parse(&good.to_uppercase()).is_err());
        assert!(TeamId::parse(&good[..good.len() - 1]).is_err());
        assert!(TeamId::parse(&format!("{good}0")).is_err());
        assert!(
            TeamId::parse("team-zzzzzzzzzzzzzzzzzzzzzzzzz").is_err(),
            "overflow"
        );
        assert!(TeamId::parse("team-000000000000000000000000-").is_err());
    }
}
