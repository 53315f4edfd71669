//! Unique object keys: `<prefix>/<YYYY>/<YYYYMMDDTHHMMSSZ>-<random><suffix>`.

use std::time::SystemTime;

use snap_core::{Error, Result};
use time::OffsetDateTime;
use time::macros::format_description;

/// Build a key that no other run can produce: the UTC time to the second and
/// 64 random bits. `prefix` may be empty; slashes around it are trimmed.
/// `suffix` (such as `.sqfs.gpg`) is appended as given.
pub fn archive_key(prefix: &str, now: SystemTime, suffix: &str) -> Result<String> {
    let prefix = prefix.trim_matches('/');
    check_part("prefix", prefix)?;
    check_part("suffix", suffix)?;
    if suffix.contains('/') {
        return Err(Error::invalid_input(format!(
            "key suffix {suffix:?} must not contain '/'"
        )));
    }
    let t = OffsetDateTime::from(now);
    let stamp = t
        .format(format_description!(
            "[year]/[year][month][day]T[hour][minute][second]Z"
        ))
        .map_err(|e| Error::internal(format!("formatting time {t}")).with_source(e))?;
    let mut random = [0u8; 8];
    getrandom::fill(&mut random)
        .map_err(|e| Error::internal(format!("no randomness for an object key: {e}")))?;
    let rand = hex::encode(random);
    Ok(if prefix.is_empty() {
        format!("{stamp}-{rand}{suffix}")
    } else {
        format!("{prefix}/{stamp}-{rand}{suffix}")
    })
}

fn check_part(what: &str, text: &str) -> Result<()> {
    if let Some(c) = text.chars().find(|c| {
        c.is_control() || matches!(c, '\\' | '{' | '}' | '^' | '`' | '|' | '"' | '<' | '>')
    }) {
        return Err(Error::invalid_input(format!(
            "key {what} {text:?} contains the unsafe character {c:?}"
        )));
    }
    if text.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(Error::invalid_input(format!(
            "key {what} {text:?} contains a '.' or '..' segment"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn layout() {
        // 2024-02-29T13:14:15Z
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_212_455);
        let key = archive_key("/backup/web/", now, ".sqfs.gpg").unwrap();
        let rest = key
            .strip_prefix("backup/web/2024/20240229T131415Z-")
            .unwrap();
        let (rand, suffix) = rest.split_at(16);
        assert!(rand.chars().all(|c| c.is_ascii_hexdigit()), "{key}");
        assert_eq!(suffix, ".sqfs.gpg");
        let bare = archive_key("", now, "").unwrap();
        assert!(bare.starts_with("2024/20240229T131415Z-"), "{bare}");
    }

    #[test]
    fn unique() {
        let now = SystemTime::now();
        let a = archive_key("p", now, "").unwrap();
        let b = archive_key("p", now, "").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn unsafe_parts_refused() {
        assert!(archive_key("a/../b", SystemTime::now(), "").is_err());
        assert!(archive_key("a\nb", SystemTime::now(), "").is_err());
        assert!(archive_key("a", SystemTime::now(), "/x").is_err());
    }
}
