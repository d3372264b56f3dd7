//! Request rules of `POST /v1/capsules` (spec §B.2) and SafeName (§J).

use std::collections::BTreeMap;

use crate::error::{ApiError, ApiResult};

pub const DEFAULT_TEMPLATE: &str = "minimal";
pub const DEFAULT_VCPUS: i64 = 1;
pub const DEFAULT_MEMORY_MB: i64 = 512;
/// The agent's bounds (crates/agent capsule.rs): checked here so the answer is a 400 at once
/// rather than an `error` capsule later.
pub const MAX_VCPUS: i64 = 8;
pub const MEMORY_RANGE_MB: std::ops::RangeInclusive<i64> = 128..=16_384;
pub const DISK_RANGE_MB: std::ops::RangeInclusive<i64> = 512..=102_400;
/// Auto-pause TTLs below this are raised to it (spec §B.2, [N]/[SDK]).
pub const MIN_TIMEOUT_SEC: i64 = 60;
pub const MAX_TIMEOUT_SEC: i64 = 7 * 86_400;
pub const MAX_METADATA_KEYS: usize = 20;
pub const MAX_METADATA_VALUE: usize = 64;
/// System keys the server sets; users may not.
pub const RESERVED_KEYS: &[&str] = &[
    "kernel_version",
    "vmm_version",
    "agent_version",
    "envd_version",
];

/// `POST /v1/capsules` body; every field optional.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
pub struct CreateRequest {
    /// Template or snapshot name (SafeName); default `minimal`.
    pub template: Option<String>,
    /// ≤ 0 → 1; at most 8.
    pub vcpus: Option<i64>,
    /// ≤ 0 → 512; 128..=16384.
    pub memory_mb: Option<i64>,
    /// Auto-pause after this many idle seconds; 0 = never; 1..59 → 60.
    pub timeout_sec: Option<i64>,
    /// ≤ 20 labels; keys SafeName, values ≤ 64 characters.
    pub metadata: Option<BTreeMap<String, String>>,
    /// Writable layer limit; default: the agent's.
    pub disk_size_mb: Option<i64>,
}

/// A validated create request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSpec {
    pub template: String,
    pub vcpus: i64,
    pub memory_mb: i64,
    pub timeout_sec: i64,
    pub metadata: BTreeMap<String, String>,
    pub disk_size_mb: Option<i64>,
}

/// `^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$`.
pub fn is_safe_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

pub fn safe_name(field: &str, s: &str) -> ApiResult<String> {
    if is_safe_name(s) {
        Ok(s.to_owned())
    } else {
        Err(ApiError::invalid(format!(
            "{field} must match ^[a-zA-Z0-9][a-zA-Z0-9._-]{{0,63}}$"
        )))
    }
}

pub fn create_spec(req: CreateRequest) -> ApiResult<CreateSpec> {
    let template = match req.template.as_deref().map(str::trim) {
        None | Some("") => DEFAULT_TEMPLATE.to_owned(),
        Some(t) => safe_name("template", t)?,
    };
    let vcpus = match req.vcpus {
        Some(v) if v > 0 => v,
        _ => DEFAULT_VCPUS,
    };
    if vcpus > MAX_VCPUS {
        return Err(ApiError::invalid(format!(
            "vcpus must be at most {MAX_VCPUS}"
        )));
    }
    let memory_mb = match req.memory_mb {
        Some(m) if m > 0 => m,
        _ => DEFAULT_MEMORY_MB,
    };
    if !MEMORY_RANGE_MB.contains(&memory_mb) {
        return Err(ApiError::invalid(format!(
            "memory_mb must be between {} and {}",
            MEMORY_RANGE_MB.start(),
            MEMORY_RANGE_MB.end()
        )));
    }
    let timeout_sec = match req.timeout_sec.unwrap_or(0) {
        t if t < 0 => return Err(ApiError::invalid("timeout_sec must not be negative")),
        0 => 0,
        t if t > MAX_TIMEOUT_SEC => {
            return Err(ApiError::invalid(format!(
                "timeout_sec must be at most {MAX_TIMEOUT_SEC}"
            )));
        }
        t => t.max(MIN_TIMEOUT_SEC),
    };
    let disk_size_mb = match req.disk_size_mb {
        None | Some(0) => None,
        Some(d) if DISK_RANGE_MB.contains(&d) => Some(d),
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "disk_size_mb must be between {} and {}",
                DISK_RANGE_MB.start(),
                DISK_RANGE_MB.end()
            )));
        }
    };
    let metadata = req.metadata.unwrap_or_default();
    if metadata.len() > MAX_METADATA_KEYS {
        return Err(ApiError::invalid(format!(
            "metadata holds at most {MAX_METADATA_KEYS} keys"
        )));
    }
    for (k, v) in &metadata {
        if !is_safe_name(k) {
            return Err(ApiError::invalid(format!(
                "metadata key {k:?} must match ^[a-zA-Z0-9][a-zA-Z0-9._-]{{0,63}}$"
            )));
        }
        if RESERVED_KEYS.contains(&k.as_str()) {
            return Err(ApiError::invalid(format!("metadata key {k:?} is reserved")));
        }
        if v.chars().count() > MAX_METADATA_VALUE {
            return Err(ApiError::invalid(format!(
                "metadata value of {k:?} is longer than {MAX_METADATA_VALUE} characters"
            )));
        }
    }
    Ok(CreateSpec {
        template,
        vcpus,
        memory_mb,
        timeout_sec,
        metadata,
        disk_size_mb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["minimal", "a", "snap-1.2_x", &"a".repeat(64)] {
            assert!(is_safe_name(ok), "{ok}");
        }
        for bad in [
            "",
            "../etc",
            "a/b",
            ".hidden",
            "-dash",
            &"a".repeat(65),
            "sp ace",
            "ünï",
        ] {
            assert!(!is_safe_name(bad), "{bad}");
        }
    }

    #[test]
    fn defaults_and_bounds() {
        let spec = create_spec(CreateRequest::default()).unwrap();
        assert_eq!(
            spec,
            CreateSpec {
                template: "minimal".into(),
                vcpus: 1,
                memory_mb: 512,
                timeout_sec: 0,
                metadata: BTreeMap::new(),
                disk_size_mb: None,
            }
        );
        let spec = create_spec(CreateRequest {
            vcpus: Some(-1),
            memory_mb: Some(0),
            timeout_sec: Some(30),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((spec.vcpus, spec.memory_mb, spec.timeout_sec), (1, 512, 60));
        for bad in [
            CreateRequest {
                timeout_sec: Some(-1),
                ..Default::default()
            },
            CreateRequest {
                vcpus: Some(9),
                ..Default::default()
            },
            CreateRequest {
                memory_mb: Some(64),
                ..Default::default()
            },
            CreateRequest {
                template: Some("a/b".into()),
                ..Default::default()
            },
            CreateRequest {
                metadata: Some([("kernel_version".to_owned(), "x".to_owned())].into()),
                ..Default::default()
            },
            CreateRequest {
                metadata: Some((0..21).map(|i| (format!("k{i}"), "v".to_owned())).collect()),
                ..Default::default()
            },
        ] {
            assert!(create_spec(bad).is_err());
        }
    }
}
