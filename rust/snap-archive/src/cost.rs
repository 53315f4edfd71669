//! What the off-site copies cost while they are locked: every object a run
//! uploaded is kept in a local ledger (key, size, storage class, retain
//! until); each run sums what is still under lock and prices it at list
//! prices per storage class (USD per GiB-month, overridable in pillar
//! `snap:archive:prices`), so an operator sees the bill before it comes.
//!
//! The estimate is storage only (no requests, retrievals or transfer). S3's
//! archival classes also bill 40 KiB per object (32 KiB at the class's price,
//! 8 KiB at STANDARD's for its index), which is counted.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use snap_core::{Error, Result, record};

/// List prices (USD per GiB-month, us-east-1, 2026) of the storage classes.
pub fn list_prices() -> BTreeMap<String, f64> {
    [
        ("STANDARD", 0.023),
        ("INTELLIGENT_TIERING", 0.023),
        ("STANDARD_IA", 0.0125),
        ("ONEZONE_IA", 0.01),
        ("GLACIER_IR", 0.004),
        ("GLACIER", 0.0036),
        ("DEEP_ARCHIVE", 0.00099),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The list prices with pillar's overrides; a negative or unknown-looking
/// price is refused.
pub fn prices(overrides: &BTreeMap<String, f64>) -> Result<BTreeMap<String, f64>> {
    let mut p = list_prices();
    for (class, price) in overrides {
        if !price.is_finite() || *price < 0.0 {
            return Err(Error::invalid_input(format!(
                "archive configuration: price of {class} must be a number >= 0 (USD per GiB-month), not {price}"
            )));
        }
        p.insert(class.to_ascii_uppercase(), *price);
    }
    Ok(p)
}

/// One object uploaded under lock.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Held {
    pub key: String,
    pub size: u64,
    pub storage_class: String,
    /// Unix seconds.
    pub retain_until: i64,
}

/// What is held under lock now and what it costs a month.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct StorageCost {
    pub objects: u64,
    pub bytes_locked: u64,
    /// Bytes per storage class.
    pub by_class: BTreeMap<String, u64>,
    /// Estimated USD per month at `prices`.
    pub monthly_usd: f64,
    /// USD per GiB-month used.
    pub prices: BTreeMap<String, f64>,
    /// The latest retain-until of what is held (RFC 3339).
    pub locked_until: Option<String>,
}

const GIB: f64 = (1u64 << 30) as f64;
/// Per-object overhead S3 bills for GLACIER and DEEP_ARCHIVE objects.
const ARCHIVE_OVERHEAD: u64 = 32 * 1024;
const INDEX_OVERHEAD: u64 = 8 * 1024;

/// Sum and price `held` (only what is still locked at `now`).
pub fn estimate(held: &[Held], now: SystemTime, prices: &BTreeMap<String, f64>) -> StorageCost {
    let now = unix(now);
    let mut c = StorageCost {
        prices: prices.clone(),
        ..StorageCost::default()
    };
    let mut cost = 0.0;
    let mut latest = None::<i64>;
    let price = |class: &str| prices.get(class).copied().unwrap_or(0.023);
    for h in held.iter().filter(|h| h.retain_until > now) {
        c.objects += 1;
        c.bytes_locked += h.size;
        *c.by_class.entry(h.storage_class.clone()).or_default() += h.size;
        cost += h.size as f64 / GIB * price(&h.storage_class);
        if matches!(h.storage_class.as_str(), "GLACIER" | "DEEP_ARCHIVE") {
            cost += ARCHIVE_OVERHEAD as f64 / GIB * price(&h.storage_class);
            cost += INDEX_OVERHEAD as f64 / GIB * price("STANDARD");
        }
        latest = Some(latest.map_or(h.retain_until, |l| l.max(h.retain_until)));
    }
    c.monthly_usd = cost;
    c.locked_until = latest.map(record::format_unix);
    c
}

pub fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The ledger of uploads under `state_dir` (`offsite-held.json`).
pub struct Ledger {
    path: std::path::PathBuf,
    pub held: Vec<Held>,
}

impl Ledger {
    pub fn load(state_dir: &Path) -> Result<Ledger> {
        let path = state_dir.join("offsite-held.json");
        let held = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                Error::invalid_input(format!(
                    "{}: not a ledger of uploads ({e}); move it away to start a new one",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io_path("reading", &path, e)),
        };
        Ok(Ledger { path, held })
    }

    /// Add an upload; forget what expired before `now`; save.
    pub fn add(&mut self, items: impl IntoIterator<Item = Held>, now: SystemTime) -> Result<()> {
        let t = unix(now);
        self.held.retain(|h| h.retain_until > t);
        self.held.extend(items);
        record::write_json(&self.path, &self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_what_is_locked_is_priced_per_class() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let gib = 1u64 << 30;
        let held = vec![
            Held {
                key: "a".into(),
                size: 10 * gib,
                storage_class: "GLACIER".into(),
                retain_until: 2_000_000,
            },
            Held {
                key: "b".into(),
                size: gib,
                storage_class: "STANDARD".into(),
                retain_until: 2_000_000,
            },
            Held {
                key: "gone".into(),
                size: 100 * gib,
                storage_class: "GLACIER".into(),
                retain_until: 999_999,
            },
        ];
        let p = prices(&BTreeMap::new()).unwrap();
        let c = estimate(&held, now, &p);
        assert_eq!(c.objects, 2);
        assert_eq!(c.bytes_locked, 11 * gib);
        assert!((c.monthly_usd - (0.036 + 0.023)).abs() < 0.001, "{c:?}");
        let cheap = prices(&[("glacier".to_string(), 0.0)].into()).unwrap();
        assert!(estimate(&held, now, &cheap).monthly_usd < 0.024);
        assert!(prices(&[("GLACIER".to_string(), -1.0)].into()).is_err());
    }
}
