//! Object Lock retention: how long an uploaded object must stay.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use snap_core::{Error, Result};

/// Fewest days of COMPLIANCE retention snap asks for. Pillar may say more,
/// never less (the requirement: every off-site backup is kept three months;
/// 90 days is also Glacier Flexible Retrieval's minimum storage charge).
pub const MIN_RETAIN_DAYS: u32 = 90;

/// Added to every retention so clock skew and a slow upload never make an
/// object expire before the promised number of days.
pub const RETAIN_MARGIN: Duration = Duration::from_secs(24 * 3600);

/// Longest retention accepted (S3 allows up to 100 years; a typo such as
/// 36500 instead of 365 would lock data, and bill it, for a century).
pub const MAX_RETAIN_DAYS: u32 = 3650;

/// `now + days + 1 day` (the margin), in whole seconds (what every S3
/// server stores, so the date read back equals the date asked; the second
/// cut off is far inside the margin, and a bucket default counted from the
/// upload's start by the server still covers it); refuses fewer than
/// [`MIN_RETAIN_DAYS`] days and more than [`MAX_RETAIN_DAYS`].
pub fn retain_until(now: SystemTime, days: u32) -> Result<SystemTime> {
    if days < MIN_RETAIN_DAYS {
        return Err(Error::invalid_input(format!(
            "retention of {days} days is below the minimum of {MIN_RETAIN_DAYS} days"
        )));
    }
    if days > MAX_RETAIN_DAYS {
        return Err(Error::invalid_input(format!(
            "retention of {days} days is above the maximum of {MAX_RETAIN_DAYS} days"
        )));
    }
    let wanted = Duration::from_secs(u64::from(days) * 24 * 3600) + RETAIN_MARGIN;
    let until = now
        .checked_add(wanted)
        .ok_or_else(|| Error::invalid_input(format!("retention of {days} days overflows")))?;
    let since = until.duration_since(UNIX_EPOCH).unwrap_or_default();
    Ok(UNIX_EPOCH + Duration::from_secs(since.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use snap_core::ErrorKind;

    #[test]
    fn ninety_days_plus_margin() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let until = retain_until(now, 90).unwrap();
        assert_eq!(
            until.duration_since(now).unwrap(),
            Duration::from_secs(91 * 86400)
        );
        let until = retain_until(now, 365).unwrap();
        assert_eq!(
            until.duration_since(now).unwrap(),
            Duration::from_secs(366 * 86400)
        );
    }

    #[test]
    fn whole_seconds() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_750);
        let until = retain_until(now, 90).unwrap();
        assert_eq!(
            until.duration_since(SystemTime::UNIX_EPOCH).unwrap(),
            Duration::from_secs(1_700_000_000 + 91 * 86400)
        );
    }

    #[test]
    fn below_ninety_is_refused() {
        for days in [0, 1, 30, 89] {
            let e = retain_until(SystemTime::now(), days).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
            assert!(
                e.to_string().contains("below the minimum of 90 days"),
                "{e}"
            );
        }
    }

    #[test]
    fn absurd_retention_is_refused() {
        let e = retain_until(SystemTime::now(), 36500).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
}
