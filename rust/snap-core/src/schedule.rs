//! The backup minute: `crc32(key) % slots`, as the original ext_pillar did it.
//!
//! The key is the minion id by default (unique in Salt; hostnames are not), so a
//! server's minute never changes while its id does not, and a fleet spreads
//! its pushes over the hour without any coordination.

use crate::error::{Error, Result};

/// `crc32(key) % slots`, identical to Python's `zlib.crc32(key.encode()) % slots`.
pub fn backup_minute(key: &str, slots: u32) -> Result<u32> {
    if slots == 0 {
        return Err(Error::invalid_input(
            "backup slots must be at least 1, got 0",
        ));
    }
    Ok(crc32fast::hash(key.as_bytes()) % slots)
}

/// Seconds into its minute a server waits before connecting:
/// `(crc32(key) / slots) % 60`, independent of the minute itself, so servers
/// that share a minute still spread over it.
pub fn backup_splay(key: &str, slots: u32) -> Result<u32> {
    if slots == 0 {
        return Err(Error::invalid_input(
            "backup slots must be at least 1, got 0",
        ));
    }
    Ok((crc32fast::hash(key.as_bytes()) / slots) % 60)
}

/// Hours must be distinct values in 0..=23; returned sorted.
pub fn validate_hours(hours: &[u32]) -> Result<Vec<u32>> {
    if hours.is_empty() {
        return Err(Error::invalid_input(
            "backup hours must list at least one hour (0-23)",
        ));
    }
    let mut out = hours.to_vec();
    out.sort_unstable();
    if let Some(bad) = out.iter().find(|h| **h > 23) {
        return Err(Error::invalid_input(format!(
            "backup hour {bad} is not an hour of the day (0-23)"
        )));
    }
    out.dedup();
    if out.len() != hours.len() {
        return Err(Error::invalid_input(format!(
            "backup hours {hours:?} list an hour twice"
        )));
    }
    Ok(out)
}

/// How evenly `keys` spread over `slots`: (largest number of keys in one slot,
/// the ideal `ceil(n / slots)`, number of empty slots).
pub fn spread(keys: &[String], slots: u32) -> Result<(usize, usize, usize)> {
    let mut counts = vec![0usize; slots.max(1) as usize];
    for key in keys {
        counts[backup_minute(key, slots)? as usize] += 1;
    }
    let max = counts.iter().copied().max().unwrap_or(0);
    let ideal = keys.len().div_ceil(slots as usize);
    let empty = counts.iter().filter(|c| **c == 0).count();
    Ok((max, ideal, empty))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn matches_python_zlib() {
        // python3 -c 'import zlib; print(zlib.crc32(b"web1"))' -> 2678409197
        assert_eq!(crc32fast::hash(b"web1"), 2678409197);
        assert_eq!(backup_minute("web1", 60).unwrap(), 2678409197 % 60);
        assert_eq!(backup_minute("", 60).unwrap(), 0);
        // UTF-8 is hashed as its bytes, like str.encode().
        assert_eq!(
            backup_minute("héllo", 59).unwrap(),
            crc32fast::hash("héllo".as_bytes()) % 59
        );
    }

    #[test]
    fn splay_uses_the_other_bits() {
        assert_eq!(backup_splay("web1", 60).unwrap(), (2678409197 / 60) % 60);
        assert!(backup_splay("web1", 0).is_err());
    }

    #[test]
    fn zero_slots_is_an_error() {
        assert_eq!(
            backup_minute("web1", 0).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }

    #[test]
    fn hours_are_checked() {
        assert_eq!(validate_hours(&[18, 2, 10]).unwrap(), vec![2, 10, 18]);
        assert!(validate_hours(&[24]).is_err());
        assert!(validate_hours(&[]).is_err());
        assert!(validate_hours(&[2, 2]).is_err());
    }

    #[test]
    fn spread_counts() {
        let keys: Vec<String> = (0..120).map(|i| format!("host{i}")).collect();
        let (max, ideal, _) = spread(&keys, 60).unwrap();
        assert_eq!(ideal, 2);
        assert!(max >= ideal);
    }
}
