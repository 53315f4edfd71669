//! Minion id → account name on the backup server.
//!
//! The name is `snap-` + the first label of the id, lowercased
//! (`web1.example.com` → `snap-web1`): readable in `ls -l` and `ps`, valid for
//! `useradd` (at most 32 characters of `[a-z0-9_-]`, starting with a letter)
//! and deterministic, so an account never changes name while its server
//! keeps its id. A first label longer than fits is cut and given a short hash
//! of the whole id, so long ids stay distinct.
//!
//! Because the name drops the domain, two ids *can* map to the same name
//! (`web1.example.com` and `web1.example.org`). [`account_names`] checks a whole
//! fleet and refuses such a collision with an error naming both ids; an
//! operator resolves it with an explicit override. Nothing is ever merged.

use std::collections::BTreeMap;

use crate::error::{Error, ErrorKind, Result};

pub const PREFIX: &str = "snap-";
/// Longest account name `useradd` takes portably.
pub const MAX_NAME: usize = 32;
/// Longest minion id accepted (a DNS name is at most 253 characters).
pub const MAX_ID: usize = 253;

/// Render an id for an error message: printable ASCII as is, the rest escaped.
pub fn quote(id: &str) -> String {
    format!("{:?}", id)
}

/// Check that `id` is a minion id snap can work with: 1-253 characters of
/// `[A-Za-z0-9._-]`, starting with a letter, digit or underscore, no empty label.
pub fn validate_minion_id(id: &str) -> Result<()> {
    let fail = |why: &str| {
        Err(Error::invalid_input(format!(
            "minion id {} cannot be used by snap: {why}",
            quote(id)
        )))
    };
    if id.is_empty() {
        return fail("it is empty");
    }
    if id.len() > MAX_ID {
        return fail("it is longer than 253 characters");
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return fail(&format!(
            "character {c:?} is not allowed (only letters, digits, '.', '-' and '_')"
        ));
    }
    let first = id.as_bytes()[0];
    if !(first.is_ascii_alphanumeric() || first == b'_') {
        return fail("it must start with a letter, a digit or '_'");
    }
    if id.split('.').any(str::is_empty) {
        return fail("it has an empty label ('..' or a trailing '.')");
    }
    Ok(())
}

/// The account name for one minion id.
pub fn account_name(id: &str) -> Result<String> {
    validate_minion_id(id)?;
    let label = id.split('.').next().unwrap_or(id).to_ascii_lowercase();
    let room = MAX_NAME - PREFIX.len();
    if label.len() <= room {
        return Ok(format!("{PREFIX}{label}"));
    }
    // Too long: keep a readable head and add 8 hex digits of the whole id.
    let hash = crc32fast::hash(id.as_bytes());
    let head = label[..room - 9].trim_end_matches(['-', '_']);
    Ok(format!("{PREFIX}{head}-{hash:08x}"))
}

/// Check an account name given by an operator (an override).
pub fn validate_account_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_input(format!(
            "account name {} is not a portable Linux user name \
             (1-32 characters of a-z, 0-9, '-', '_', starting with a letter)",
            quote(name)
        )))
    }
}

/// Account names for a fleet, with every id that cannot have one set aside.
#[derive(Debug, Default)]
pub struct Assignment {
    /// `{minion id: account name}` for every id that got a name.
    pub names: BTreeMap<String, String>,
    /// `{minion id: why not}`: bad ids, bad overrides, and both sides of a collision.
    pub rejected: BTreeMap<String, Error>,
}

/// Assign account names to a fleet. Ids that collide are all rejected (with an
/// error naming the others), so one bad pair cannot block everyone else.
/// `overrides` maps ids to names chosen by an operator. `bound` maps the
/// accounts that already exist on the backup server to the minion id each was
/// made for: an id keeps the account made for it (whatever the naming rule
/// says now), an account is never handed to another id (a retired server
/// keeps its name, jail and history until its account is purged), and in a
/// collision the id that holds the account keeps it.
pub fn assign_accounts<'a, I>(
    ids: I,
    overrides: &BTreeMap<String, String>,
    bound: &BTreeMap<String, String>,
) -> Assignment
where
    I: IntoIterator<Item = &'a str>,
{
    let mut out = Assignment::default();
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let held: BTreeMap<&str, &str> = bound
        .iter()
        .map(|(a, m)| (m.as_str(), a.as_str()))
        .collect();
    for id in ids {
        let name = match (overrides.get(id), held.get(id)) {
            (Some(name), _) => validate_minion_id(id)
                .and_then(|_| validate_account_name(name))
                .map(|_| name.clone()),
            (None, Some(name)) => validate_minion_id(id).map(|_| name.to_string()),
            (None, None) => account_name(id),
        };
        match name {
            Ok(name) => {
                let owners = by_name.entry(name).or_default();
                if !owners.iter().any(|o| o == id) {
                    owners.push(id.to_string());
                }
            }
            Err(e) => {
                out.rejected.insert(id.to_string(), e);
            }
        }
    }
    for (name, mut owners) in by_name {
        owners.sort();
        if let Some(holder) = bound.get(&name) {
            let present = owners.contains(holder);
            for id in owners {
                if &id == holder {
                    out.names.insert(id, name.clone());
                    continue;
                }
                let whose = if present {
                    format!("{} (it was made for it)", quote(holder))
                } else {
                    format!(
                        "{}, a server no longer in the fleet: its jail and history stay its own \
                         until the account is purged (pillar snap:server:purge)",
                        quote(holder)
                    )
                };
                out.rejected.insert(
                    id.clone(),
                    Error::new(
                        ErrorKind::AccountCollision,
                        format!(
                            "minion id {} maps to account {name}, which belongs to {whose}; \
                             give {} its own name in pillar snap:server:account_overrides",
                            quote(&id),
                            quote(&id)
                        ),
                    ),
                );
            }
            continue;
        }
        if owners.len() == 1 {
            out.names.insert(owners.pop().unwrap_or_default(), name);
            continue;
        }
        let all = owners
            .iter()
            .map(|o| quote(o))
            .collect::<Vec<_>>()
            .join(" and ");
        for id in &owners {
            out.rejected.insert(
                id.clone(),
                Error::new(
                    ErrorKind::AccountCollision,
                    format!(
                        "minion ids {all} {} map to account {name}; \
                         give each its own name in pillar snap:server:account_overrides",
                        if owners.len() == 2 { "both" } else { "all" }
                    ),
                ),
            );
        }
    }
    out
}

/// Account names for a whole fleet, strictly: the first rejected id is an error
/// ([`ErrorKind::AccountCollision`] naming both ids for a collision).
pub fn account_names<'a, I>(
    ids: I,
    overrides: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut assignment = assign_accounts(ids, overrides, &BTreeMap::new());
    match assignment.rejected.pop_first() {
        Some((_, err)) => Err(err),
        None => Ok(assignment.names),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_names() {
        assert_eq!(account_name("web1.example.com").unwrap(), "snap-web1");
        assert_eq!(account_name("web1").unwrap(), "snap-web1");
        assert_eq!(account_name("DB-01.corp").unwrap(), "snap-db-01");
        assert_eq!(account_name("_svc").unwrap(), "snap-_svc");
        assert_eq!(account_name("1web").unwrap(), "snap-1web");
    }

    #[test]
    fn long_labels_are_cut_with_a_hash_and_stay_distinct() {
        let a = "a-very-long-hostname-that-goes-on-and-on-1.example.com";
        let b = "a-very-long-hostname-that-goes-on-and-on-2.example.com";
        let (na, nb) = (account_name(a).unwrap(), account_name(b).unwrap());
        assert!(na.len() <= MAX_NAME && nb.len() <= MAX_NAME, "{na} {nb}");
        assert_ne!(na, nb);
        assert!(na.starts_with("snap-a-very-long-ho"), "{na}");
        validate_account_name(&na).unwrap();
        assert_eq!(account_name(a).unwrap(), na, "deterministic");
    }

    #[test]
    fn every_name_is_valid() {
        for id in ["x", "web1.example.com", &"z".repeat(200), "a_b-c.d", "9"] {
            validate_account_name(&account_name(id).unwrap()).unwrap();
        }
    }

    #[test]
    fn bad_ids_are_refused_naming_the_id() {
        for id in [
            "",
            ".web1",
            "web1..example",
            "web1.",
            "-web1",
            "web 1",
            "web1/../../etc",
            "web1\n",
            "wéb1",
            "web1\0",
            "a:b",
            &"x".repeat(254),
        ] {
            let err = account_name(id).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{id:?}");
            assert!(err.to_string().contains(&quote(id)), "{err}");
        }
    }

    #[test]
    fn collisions_are_errors_not_merges() {
        let none = BTreeMap::new();
        let err = account_names(["web1.example.com", "web1.example.org"], &none).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AccountCollision);
        let text = err.to_string();
        assert!(text.contains("web1.example.com") && text.contains("web1.example.org"));
        assert!(text.contains("snap-web1"));
        // Case folding collides too.
        assert!(account_names(["Web1", "web1"], &none).is_err());
        // The same id twice is not a collision.
        assert_eq!(account_names(["web1", "web1"], &none).unwrap().len(), 1);
    }

    #[test]
    fn assignment_sets_colliding_ids_aside_and_keeps_the_rest() {
        let a = assign_accounts(
            ["web1.example.com", "web1.example.org", "db1", "bad id"],
            &BTreeMap::new(),
            &BTreeMap::new(),
        );
        assert_eq!(a.names.len(), 1);
        assert_eq!(a.names["db1"], "snap-db1");
        assert_eq!(a.rejected.len(), 3);
        assert_eq!(
            a.rejected["web1.example.org"].kind(),
            ErrorKind::AccountCollision
        );
        assert!(
            a.rejected["web1.example.com"]
                .to_string()
                .contains("web1.example.org")
        );
        assert_eq!(a.rejected["bad id"].kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn overrides_resolve_collisions_and_are_checked() {
        let mut o = BTreeMap::new();
        o.insert("web1.example.org".to_string(), "snap-web1-org".to_string());
        let names = account_names(["web1.example.com", "web1.example.org"], &o).unwrap();
        assert_eq!(names["web1.example.org"], "snap-web1-org");
        o.insert("web1.example.org".to_string(), "Root!".to_string());
        assert!(account_names(["web1.example.org"], &o).is_err());
        // An override may not steal another server's name.
        o.insert("web1.example.org".to_string(), "snap-web1".to_string());
        assert_eq!(
            account_names(["web1.example.com", "web1.example.org"], &o)
                .unwrap_err()
                .kind(),
            ErrorKind::AccountCollision
        );
    }

    #[test]
    fn an_account_stays_with_the_server_it_was_made_for() {
        let none = BTreeMap::new();
        let mut bound = BTreeMap::new();
        bound.insert("snap-web1".to_string(), "web1.old".to_string());
        // The holder is in the fleet and collides with a newcomer: it keeps its account.
        let a = assign_accounts(["web1.old", "web1.new"], &none, &bound);
        assert_eq!(a.names["web1.old"], "snap-web1");
        let e = a.rejected["web1.new"].to_string();
        assert!(
            e.contains("belongs to \"web1.old\" (it was made for it)"),
            "{e}"
        );
        // The holder retired: its account is not handed to the newcomer.
        let a = assign_accounts(["web1.new"], &none, &bound);
        assert!(a.names.is_empty());
        let e = a.rejected["web1.new"].to_string();
        assert!(
            e.contains("no longer in the fleet") && e.contains("purge"),
            "{e}"
        );
        // An id keeps the account made for it whatever the naming rule says now.
        let mut bound = BTreeMap::new();
        bound.insert("snap-legacy".to_string(), "web1.example.com".to_string());
        let a = assign_accounts(["web1.example.com"], &none, &bound);
        assert_eq!(a.names["web1.example.com"], "snap-legacy");
    }
}
