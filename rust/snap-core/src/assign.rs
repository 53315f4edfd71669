//! Which backup server each server pushes to, when a fleet has several
//! (docs/SCALE.md). An explicit map wins; otherwise **rendezvous hashing**:
//! a server goes to the backup server with the highest score
//! `sha256("snap-assign/1" ‖ 0 ‖ backup id ‖ 0 ‖ minion id)` (first 8 bytes).
//! Adding a backup server moves only the servers that now score highest on
//! it (about 1/(k+1) of them), all to it; removing one moves only its own
//! servers, spread over the rest. The score is the same on every machine and
//! in every snap version that reads "snap-assign/1": the master (ext_pillar)
//! and each backup server (whose accounts to make) compute it apart.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::account::validate_minion_id;
use crate::error::{Error, Result};

fn score(backup: &str, minion: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(b"snap-assign/1\0");
    h.update(backup.as_bytes());
    h.update(b"\0");
    h.update(minion.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().unwrap_or_default())
}

/// The backup server `minion_id` pushes to: `explicit[minion_id]` if set
/// (it must name one of `backups`), else the rendezvous choice. Every id is
/// checked as a minion id; an empty list of backup servers is an error.
pub fn assign(
    minion_id: &str,
    backups: &[String],
    explicit: &BTreeMap<String, String>,
) -> Result<String> {
    validate_minion_id(minion_id)?;
    if backups.is_empty() {
        return Err(Error::invalid_input(
            "snap:backup_servers names no backup server",
        ));
    }
    for b in backups {
        validate_minion_id(b)
            .map_err(|e| Error::invalid_input(format!("snap:backup_servers: {e}")))?;
    }
    if let Some(b) = explicit.get(minion_id) {
        if !backups.contains(b) {
            return Err(Error::invalid_input(format!(
                "snap:assignment sends {minion_id} to {b}, which snap:backup_servers does not name \
                 (it names {})",
                backups.join(", ")
            )));
        }
        return Ok(b.clone());
    }
    // Ties (a 64-bit collision) go to the smaller id, whatever the order given.
    let best = backups
        .iter()
        .max_by(|a, b| {
            score(a, minion_id)
                .cmp(&score(b, minion_id))
                .then_with(|| b.cmp(a))
        })
        .cloned();
    best.ok_or_else(|| Error::invalid_input("snap:backup_servers names no backup server"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("web{i}.dc{}.example.com", i % 3))
            .collect()
    }

    fn backups(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_choice_is_stable_and_balanced_and_ignores_order() {
        let none = BTreeMap::new();
        let two = backups(&["backup1", "backup2"]);
        let swapped = backups(&["backup2", "backup1"]);
        let mut count = BTreeMap::new();
        for m in ids(10_000) {
            let a = assign(&m, &two, &none).unwrap();
            assert_eq!(a, assign(&m, &swapped, &none).unwrap());
            *count.entry(a).or_insert(0) += 1;
        }
        let on1 = count["backup1"];
        assert!((4_700..=5_300).contains(&on1), "{count:?}");
    }

    #[test]
    fn adding_a_backup_server_moves_only_what_goes_to_it() {
        let none = BTreeMap::new();
        let three = backups(&["backup1", "backup2", "backup3"]);
        let four = backups(&["backup1", "backup2", "backup3", "backup4"]);
        let mut moved = 0;
        for m in ids(10_000) {
            let before = assign(&m, &three, &none).unwrap();
            let after = assign(&m, &four, &none).unwrap();
            if before != after {
                assert_eq!(after, "backup4", "{m} moved from {before} to {after}");
                moved += 1;
            }
        }
        assert!((2_200..=2_800).contains(&moved), "{moved} of 10,000 moved");
    }

    #[test]
    fn the_explicit_map_wins_and_must_name_a_backup_server() {
        let two = backups(&["backup1", "backup2"]);
        let m = "db1.example.com";
        let natural = assign(m, &two, &BTreeMap::new()).unwrap();
        let other = if natural == "backup1" {
            "backup2"
        } else {
            "backup1"
        };
        let map = BTreeMap::from([(m.to_string(), other.to_string())]);
        assert_eq!(assign(m, &two, &map).unwrap(), other);
        let bad = BTreeMap::from([(m.to_string(), "backup9".to_string())]);
        let e = assign(m, &two, &bad).unwrap_err().to_string();
        assert!(e.contains("backup9") && e.contains("does not name"), "{e}");
        assert!(assign(m, &[], &BTreeMap::new()).is_err());
        assert!(assign("bad id!", &two, &BTreeMap::new()).is_err());
        assert!(assign(m, &backups(&["back up"]), &BTreeMap::new()).is_err());
    }
}
