//! Reading every lock back.
//!
//! Sending `x-amz-object-lock-mode: COMPLIANCE` is a request, not a fact: an
//! S3 server may store the object without the lock (Ceph RGW 16 does for
//! multipart uploads, tracker 63724; moto never locks them) and still answer
//! 200. So after each object is complete, snap asks the server what it holds
//! for that exact version (GetObjectRetention with the version id) and
//! judges the answer against what it asked for:
//!
//! - COMPLIANCE until at least the date asked: **held**;
//! - no lock, another mode, or an earlier date: snap sets it with
//!   PutObjectRetention (COMPLIANCE can only be extended, so this never
//!   weakens anything), reads it back again, and reports the object as
//!   **repaired** (the run's record and summary say so);
//! - the repair refused or not taking effect: a loud error naming the
//!   object, the version, what the server answered and what to fix. A run
//!   that gets it never calls itself done.
//!
//! [`ensure_locked`] is the one function every upload goes through (archive,
//! manifest, each piece of an incremental chain); [`read_lock`] is the same
//! judgement without the repair, for audits (`snap.verify`), which run with a
//! read-only identity.

use std::time::SystemTime;

use serde::Serialize;
use snap_core::{Error, ErrorKind, Result};

use crate::{ArchiveTarget, UploadResult};

/// The only lock mode snap accepts.
pub const COMPLIANCE: &str = "COMPLIANCE";

/// Object Lock retention of one object version, as the server reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Retention {
    /// `COMPLIANCE`, `GOVERNANCE`, or None (no lock at all).
    pub mode: Option<String>,
    #[serde(serialize_with = "ser_time")]
    pub retain_until: Option<SystemTime>,
}

impl Retention {
    /// `COMPLIANCE until 2026-03-01T00:00:00Z`, or `no lock`.
    pub fn describe(&self) -> String {
        match (&self.mode, self.retain_until) {
            (None, None) => "no lock".into(),
            (m, u) => format!(
                "{} until {}",
                m.as_deref().unwrap_or("no mode"),
                u.map_or_else(|| "no date".into(), rfc3339)
            ),
        }
    }

    /// Whether this is at least COMPLIANCE until `until`, to the second
    /// (servers keep whole seconds; snap asks for whole seconds).
    pub fn holds(&self, until: SystemTime) -> bool {
        self.mode.as_deref() == Some(COMPLIANCE)
            && self.retain_until.is_some_and(|u| secs(u) >= secs(until))
    }
}

/// How one object version's lock was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockStatus {
    /// COMPLIANCE until at least the date asked, as stored.
    Held,
    /// Missing or short as stored; snap set it and read it back.
    Repaired,
    /// Missing or short, and not fixed (audit, or the repair was refused).
    Missing,
}

/// The verdict on one object version.
#[derive(Debug, Clone, Serialize)]
pub struct LockCheck {
    /// `s3://bucket/key` (the target's description of the object).
    pub object: String,
    pub key: String,
    pub version_id: Option<String>,
    /// COMPLIANCE until at least this date was asked for.
    #[serde(serialize_with = "ser_time_req")]
    pub wanted_until: SystemTime,
    /// What the server held when first asked.
    pub found: Retention,
    /// What it holds now (after a repair: the second reading).
    pub now: Retention,
    pub status: LockStatus,
    /// One line for the run's summary, or why it is not locked and what to fix.
    pub detail: String,
}

impl LockCheck {
    pub fn is_locked(&self) -> bool {
        self.status != LockStatus::Missing
    }

    /// The check as a result: a missing lock is an error naming the object,
    /// the version, what the server answered and what to fix.
    pub fn require(self) -> Result<LockCheck> {
        if self.is_locked() {
            Ok(self)
        } else {
            Err(Error::new(ErrorKind::Integrity, self.detail))
        }
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    snap_core::record::format_unix(secs)
}

fn ser_time<S: serde::Serializer>(
    t: &Option<SystemTime>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_some(&rfc3339(*t)),
        None => s.serialize_none(),
    }
}

fn ser_time_req<S: serde::Serializer>(
    t: &SystemTime,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

fn version_text(version_id: Option<&str>) -> String {
    match version_id {
        Some(v) => format!("version {v}"),
        None => "(no version id: the current version)".into(),
    }
}

/// Read the lock of `key` at `version_id` and judge it against COMPLIANCE
/// until `wanted_until`; never changes anything (audits).
pub fn read_lock(
    target: &dyn ArchiveTarget,
    key: &str,
    version_id: Option<&str>,
    wanted_until: SystemTime,
) -> Result<LockCheck> {
    let found = target.retention(key, version_id)?;
    let object = target.object_url(key);
    let status = if found.holds(wanted_until) {
        LockStatus::Held
    } else {
        LockStatus::Missing
    };
    let detail = match status {
        LockStatus::Held => format!(
            "{object} {}: {} (read back)",
            version_text(version_id),
            found.describe()
        ),
        _ => format!(
            "{object} {}: the server holds {}, COMPLIANCE until at least {} is required",
            version_text(version_id),
            found.describe(),
            rfc3339(wanted_until)
        ),
    };
    Ok(LockCheck {
        object,
        key: key.to_string(),
        version_id: version_id.map(str::to_owned),
        wanted_until,
        now: found.clone(),
        found,
        status,
        detail,
    })
}

/// Read the lock of one uploaded object version back and, if the server
/// dropped or shortened it, set it (COMPLIANCE until `wanted_until`, or the
/// later date the server already holds) and read it back again.
///
/// Returns the check (held or repaired); an object whose lock could not be
/// established is an [`ErrorKind::Integrity`] error naming the object, the
/// version, the server's answers and what to fix.
pub fn ensure_locked(
    target: &dyn ArchiveTarget,
    key: &str,
    version_id: Option<&str>,
    wanted_until: SystemTime,
) -> Result<LockCheck> {
    let first = read_lock(target, key, version_id, wanted_until)?;
    if first.status == LockStatus::Held {
        return Ok(first);
    }
    let object = first.object.clone();
    let version = version_text(version_id);
    let found = first.found.clone();
    // Never ask for less than the server already holds.
    let until = found
        .retain_until
        .filter(|u| *u > wanted_until)
        .unwrap_or(wanted_until);
    let fix = format!(
        "set it as an administrator (aws s3api put-object-retention --bucket ... --key {key}{} \
         --retention Mode=COMPLIANCE,RetainUntilDate={}); make the bucket's default retention \
         COMPLIANCE for at least as long as snap asks (salt-run snap.provision: it covers uploads \
         a server stores without their own lock), or allow the backup identity \
         s3:PutObjectRetention so snap can set it itself (snap:offsite:retention_repair)",
        version_id.map_or_else(String::new, |v| format!(" --version-id {v}")),
        rfc3339(until)
    );
    let exposure = if found.mode.is_none() {
        "It can be deleted by whoever owns the bucket."
    } else {
        "Its lock ends before the date promised."
    };
    if let Err(e) = target.set_retention(key, version_id, until) {
        return Ok(LockCheck {
            status: LockStatus::Missing,
            detail: format!(
                "{object} {version} is NOT under Object Lock as asked: the server stored it with {} \
                 although COMPLIANCE until {} was requested, and setting the retention failed ({e}). \
                 {exposure} Fix: {fix}",
                found.describe(),
                rfc3339(wanted_until)
            ),
            ..first
        });
    }
    let now = target.retention(key, version_id)?;
    if now.holds(wanted_until) {
        Ok(LockCheck {
            status: LockStatus::Repaired,
            detail: format!(
                "{object} {version}: the server had stored it with {}; snap set COMPLIANCE until {} \
                 and read it back: {}",
                found.describe(),
                rfc3339(until),
                now.describe()
            ),
            now,
            ..first
        })
    } else {
        Ok(LockCheck {
            status: LockStatus::Missing,
            detail: format!(
                "{object} {version} is NOT under Object Lock as asked: the server stored it with {}, \
                 accepted PutObjectRetention COMPLIANCE until {} and still answers {}. \
                 This server does not keep Object Lock: do not use it for snap's archives. Fix: {fix}",
                found.describe(),
                rfc3339(until),
                now.describe()
            ),
            now,
            ..first
        })
    }
}

/// [`ensure_locked`] for what an upload returned: its key, version id and
/// the retain-until it asked for. Targets without object retention (Glacier
/// vaults: the vault lock decides) return None.
pub fn ensure_upload_locked(
    target: &dyn ArchiveTarget,
    up: &UploadResult,
) -> Result<Option<LockCheck>> {
    match up.retain_until {
        // A bucket with Object Lock is always versioned: an upload without a
        // version id is not what it seems (a proxy, or a server that stored
        // it unversioned), and "the current version" could be anyone's.
        Some(_) if target.has_object_lock() && up.version_id.is_none() => Err(Error::new(
            ErrorKind::Integrity,
            format!(
                "{} was stored without a version id, so its lock cannot be read back by version: \
                 a bucket with Object Lock always versions its objects. Check that the endpoint is \
                 the bucket with Object Lock (aws s3api get-object-lock-configuration) and not a \
                 proxy or another bucket; not counted as done",
                target.object_url(&up.key)
            ),
        )),
        Some(until) if target.has_object_lock() => {
            ensure_locked(target, &up.key, up.version_id.as_deref(), until)?
                .require()
                .map(Some)
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ArchiveWriter, IncompleteUpload, ListEntry, ObjectInfo, PutOptions, RetrievalStatus,
        RetrievalTier,
    };
    use snap_core::Progress;
    use std::io::Write;
    use std::sync::Mutex;
    use std::time::Duration;

    /// The judgement only: a server's answers to GetObjectRetention and
    /// PutObjectRetention, scripted (real servers: tests/integration).
    struct Server {
        held: Mutex<Retention>,
        /// PutObjectRetention: refused with this text, or accepted and kept (or not).
        refuse: Option<&'static str>,
        keeps: bool,
    }

    impl ArchiveTarget for Server {
        fn describe(&self) -> String {
            "s3://b".into()
        }
        fn object_url(&self, key: &str) -> String {
            format!("s3://b/{key}")
        }
        fn has_object_lock(&self) -> bool {
            true
        }
        fn retention(&self, _: &str, _: Option<&str>) -> Result<Retention> {
            Ok(self.held.lock().unwrap().clone())
        }
        fn set_retention(&self, _: &str, _: Option<&str>, until: SystemTime) -> Result<()> {
            if let Some(why) = self.refuse {
                return Err(Error::new(ErrorKind::Refused, why));
            }
            if self.keeps {
                *self.held.lock().unwrap() = Retention {
                    mode: Some(COMPLIANCE.into()),
                    retain_until: Some(until),
                };
            }
            Ok(())
        }
        fn create_writer<'a>(
            &'a self,
            _: &str,
            _: &PutOptions,
            _: &'a Progress,
        ) -> Result<Box<dyn ArchiveWriter + 'a>> {
            unimplemented!()
        }
        fn put_small(&self, _: &str, _: &[u8], _: &PutOptions) -> Result<UploadResult> {
            unimplemented!()
        }
        fn head(&self, _: &str) -> Result<ObjectInfo> {
            unimplemented!()
        }
        fn list(&self, _: &str) -> Result<Vec<ListEntry>> {
            unimplemented!()
        }
        fn list_incomplete(&self, _: &str) -> Result<Vec<IncompleteUpload>> {
            unimplemented!()
        }
        fn abort_incomplete(&self, _: &IncompleteUpload) -> Result<()> {
            unimplemented!()
        }
        fn get(&self, _: &str, _: u64, _: &mut dyn Write, _: &Progress) -> Result<u64> {
            unimplemented!()
        }
        fn request_retrieval(&self, _: &str, _: u32, _: RetrievalTier) -> Result<RetrievalStatus> {
            unimplemented!()
        }
        fn retrieval_status(&self, _: &str) -> Result<RetrievalStatus> {
            unimplemented!()
        }
    }

    fn server(held: Retention, refuse: Option<&'static str>, keeps: bool) -> Server {
        Server {
            held: Mutex::new(held),
            refuse,
            keeps,
        }
    }

    #[test]
    fn held_repaired_or_a_loud_error_naming_object_version_answer_and_fix() {
        let want = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let compliance = |u| Retention {
            mode: Some(COMPLIANCE.into()),
            retain_until: Some(u),
        };
        // As asked: held, nothing set.
        let s = server(compliance(want), Some("must not be called"), true);
        let c = ensure_locked(&s, "k", Some("v1"), want).unwrap();
        assert_eq!(c.status, LockStatus::Held);
        // Dropped (Ceph multipart, moto): set and read back.
        let s = server(Retention::default(), None, true);
        let c = ensure_locked(&s, "k", Some("v1"), want).unwrap();
        assert_eq!(
            (c.status, c.found.mode.clone()),
            (LockStatus::Repaired, None)
        );
        assert!(
            c.now.holds(want) && c.detail.contains("no lock"),
            "{}",
            c.detail
        );
        // A day short (a bucket default): extended to the date asked.
        let s = server(compliance(want - Duration::from_secs(86400)), None, true);
        assert_eq!(
            ensure_locked(&s, "k", None, want).unwrap().status,
            LockStatus::Repaired
        );
        // GOVERNANCE past the date: COMPLIANCE until the later date, never shorter.
        let later = want + Duration::from_secs(86400);
        let s = server(
            Retention {
                mode: Some("GOVERNANCE".into()),
                retain_until: Some(later),
            },
            None,
            true,
        );
        let c = ensure_locked(&s, "k", None, want).unwrap();
        assert_eq!(c.now.retain_until, Some(later));
        // The repair refused: an error naming object, version, answer and fix.
        let s = server(Retention::default(), Some("AccessDenied (HTTP 403)"), true);
        let e = ensure_locked(&s, "a/k", Some("v9"), want)
            .unwrap()
            .require()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity);
        for needle in [
            "s3://b/a/k",
            "version v9",
            "no lock",
            "AccessDenied",
            "put-object-retention",
        ] {
            assert!(e.to_string().contains(needle), "{needle} not in {e}");
        }
        // Accepted but not kept: a server that cannot keep a lock.
        let s = server(Retention::default(), None, false);
        let c = ensure_locked(&s, "k", Some("v1"), want).unwrap();
        assert_eq!(c.status, LockStatus::Missing);
        assert!(
            c.detail.contains("does not keep Object Lock"),
            "{}",
            c.detail
        );
        // An audit only reads.
        let s = server(Retention::default(), Some("must not be called"), true);
        assert_eq!(
            read_lock(&s, "k", None, want).unwrap().status,
            LockStatus::Missing
        );
    }

    #[test]
    fn an_upload_without_a_version_id_is_not_done() {
        let want = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let held = Retention {
            mode: Some(COMPLIANCE.into()),
            retain_until: Some(want),
        };
        let s = server(held, Some("must not be called"), true);
        let mut up = UploadResult {
            key: "a/k".into(),
            size: 1,
            sha256: String::new(),
            tree_hash: None,
            version_id: None,
            etag: None,
            parts: 0,
            part_size: 0,
            retain_until: Some(want),
            storage_class: None,
        };
        let e = ensure_upload_locked(&s, &up).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity);
        assert!(
            e.to_string()
                .contains("s3://b/a/k was stored without a version id"),
            "{e}"
        );
        up.version_id = Some("v1".into());
        assert!(ensure_upload_locked(&s, &up).unwrap().unwrap().is_locked());
    }

    #[test]
    fn compliance_until_the_date_or_later_holds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let r = |m: Option<&str>, u: Option<SystemTime>| Retention {
            mode: m.map(str::to_owned),
            retain_until: u,
        };
        assert!(r(Some("COMPLIANCE"), Some(t)).holds(t));
        assert!(r(Some("COMPLIANCE"), Some(t + Duration::from_secs(1))).holds(t));
        assert!(!r(Some("COMPLIANCE"), Some(t - Duration::from_secs(1))).holds(t));
        assert!(!r(Some("GOVERNANCE"), Some(t + Duration::from_secs(86400))).holds(t));
        assert!(!r(None, None).holds(t));
        assert!(!r(Some("COMPLIANCE"), None).holds(t));
        assert_eq!(r(None, None).describe(), "no lock");
        assert_eq!(
            r(Some("GOVERNANCE"), Some(t)).describe(),
            "GOVERNANCE until 2027-01-15T08:00:00Z"
        );
    }
}
