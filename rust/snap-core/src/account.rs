//! Minion id → account name on the backup server.
//!
//! Every minion id gets a distinct, readable, portable name by construction,
//! with no manual step:
//!
//! - the **readable forms** of an id are `snap-` + its first label, then its
//!   first two labels, and so on, lowercased and joined by `-`
//!   (`web1.dc1.example.com` → `snap-web1`, `snap-web1-dc1`, …), as long as
//!   they fit `useradd`'s 32 characters;
//! - an id takes its shortest readable form that **no other id in the fleet
//!   shares** and no existing account or override holds: `web1.dc1.example.com`
//!   and `web1.dc2.example.com` become `snap-web1-dc1` and `snap-web1-dc2`,
//!   a lone `db1.example.com` stays `snap-db1`;
//! - when none is free (`Web1` and `web1`, or a first label too long), the id
//!   gets a **hashed form**: `snap-` + at most 18 characters of its first
//!   label + `-` + 8 hex digits of the CRC-32 of the whole id;
//! - an id that **already has an account** (the account's comment binds it to
//!   the id it was made for, see `bound`) keeps that name whatever the rule
//!   says now, and an override from pillar wins over the rule.
//!
//! The choice depends only on the set of ids, never on their order. Anything
//! that would still give two ids one name (a hash collision, an override
//! naming another server's account) is refused for every id involved, with an
//! error naming them: nothing is ever merged.

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

/// The readable forms of an id's account name, shortest first: `snap-` and
/// its first 1, 2, … labels, lowercased, joined by `-`, while they fit.
pub fn readable_names(id: &str) -> Result<Vec<String>> {
    validate_minion_id(id)?;
    let labels: Vec<String> = id.split('.').map(str::to_ascii_lowercase).collect();
    let mut out = Vec::new();
    let mut name = PREFIX.trim_end_matches('-').to_string();
    for label in labels {
        name.push('-');
        name.push_str(&label);
        if name.len() > MAX_NAME {
            break;
        }
        out.push(name.clone());
    }
    Ok(out)
}

/// The hashed form of an id's account name: `snap-` + at most 18
/// characters of its first label + `-` + 8 hex digits of the CRC-32 of the
/// whole id (case and all), always distinct for ids that differ only in case.
pub fn hashed_name(id: &str) -> Result<String> {
    validate_minion_id(id)?;
    let label = id.split('.').next().unwrap_or(id).to_ascii_lowercase();
    let room = MAX_NAME - PREFIX.len() - 9;
    let head = label[..label.len().min(room)].trim_end_matches(['-', '_']);
    let hash = crc32fast::hash(id.as_bytes());
    Ok(format!("{PREFIX}{head}-{hash:08x}"))
}

/// The account name one id gets when no other id shares its first label:
/// its shortest readable form, or the hashed form when even that is too long.
/// In a fleet, [`assign_accounts`] decides.
pub fn account_name(id: &str) -> Result<String> {
    match readable_names(id)?.into_iter().next() {
        Some(name) => Ok(name),
        None => hashed_name(id),
    }
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
    /// `{minion id: why not}`: bad ids, bad overrides, and every side of a
    /// name two ids would share.
    pub rejected: BTreeMap<String, Error>,
}

/// Assign account names to a fleet (see the module documentation for the
/// rule). `overrides` maps ids to names chosen by an operator. `bound` maps
/// the accounts that already exist on the backup server to the minion id
/// each was made for: an id keeps the account made for it, an account is
/// never handed to another id (a retired server keeps its name, jail and
/// history until its account is purged), and a name two ids would share is
/// refused for both (the holder of an existing account keeps it). One bad id
/// never blocks the rest of the fleet.
pub fn assign_accounts<'a, I>(
    ids: I,
    overrides: &BTreeMap<String, String>,
    bound: &BTreeMap<String, String>,
) -> Assignment
where
    I: IntoIterator<Item = &'a str>,
{
    let mut out = Assignment::default();
    let held: BTreeMap<&str, &str> = bound
        .iter()
        .map(|(a, m)| (m.as_str(), a.as_str()))
        .collect();
    // Names fixed by an override or an existing account; the readable forms of the rest.
    let mut fixed: BTreeMap<&str, String> = BTreeMap::new();
    let mut free: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for id in ids {
        if fixed.contains_key(id) || free.contains_key(id) || out.rejected.contains_key(id) {
            continue;
        }
        let outcome =
            validate_minion_id(id).and_then(|_| match (overrides.get(id), held.get(id)) {
                (Some(name), _) => validate_account_name(name).map(|_| Some(name.clone())),
                (None, Some(name)) => Ok(Some(name.to_string())),
                (None, None) => Ok(None),
            });
        match outcome {
            Ok(Some(name)) => {
                fixed.insert(id, name);
            }
            Ok(None) => {
                free.insert(id, readable_names(id).unwrap_or_default());
            }
            Err(e) => {
                out.rejected.insert(id.to_string(), e);
            }
        }
    }
    // A readable form is free when exactly one id has it and nobody holds it.
    let mut reserved: BTreeMap<&str, usize> = BTreeMap::new();
    for name in bound.keys().chain(fixed.values()) {
        *reserved.entry(name.as_str()).or_default() += 1;
    }
    let mut wanted: BTreeMap<&str, usize> = BTreeMap::new();
    for forms in free.values() {
        for form in forms {
            *wanted.entry(form.as_str()).or_default() += 1;
        }
    }
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, forms) in &free {
        let readable = forms
            .iter()
            .find(|f| wanted[f.as_str()] == 1 && !reserved.contains_key(f.as_str()));
        let name = match readable {
            Some(name) => name.clone(),
            None => hashed_name(id).unwrap_or_default(),
        };
        by_name.entry(name).or_default().push(id.to_string());
    }
    for (id, name) in fixed {
        by_name.entry(name).or_default().push(id.to_string());
    }
    for (name, mut owners) in by_name {
        owners.sort();
        let holder = bound.get(&name);
        if owners.len() == 1 && holder.is_none_or(|h| *h == owners[0]) {
            out.names.insert(owners.pop().unwrap_or_default(), name);
            continue;
        }
        let others = |id: &str| {
            owners
                .iter()
                .filter(|o| o.as_str() != id)
                .map(|o| quote(o))
                .collect::<Vec<_>>()
                .join(" and ")
        };
        for id in &owners {
            if holder == Some(id) {
                out.names.insert(id.clone(), name.clone());
                continue;
            }
            let why = match holder {
                Some(h) if owners.contains(h) => format!(
                    "minion id {} maps to account {name}, which belongs to {} (it was made for it)",
                    quote(id),
                    quote(h)
                ),
                Some(h) => format!(
                    "minion id {} maps to account {name}, which belongs to {}, a server no longer \
                     in the fleet: its jail and history stay its own until the account is purged \
                     (pillar snap:server:purge)",
                    quote(id),
                    quote(h)
                ),
                None => format!(
                    "minion id {} and {} would share account {name}; nothing is merged",
                    quote(id),
                    others(id)
                ),
            };
            out.rejected.insert(
                id.clone(),
                Error::new(
                    ErrorKind::AccountCollision,
                    format!(
                        "{why}; give {} its own name in pillar snap:server:account_overrides",
                        quote(id)
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

    fn ids_of(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("web{}.dc{}.example.com", i % 7, i / 7))
            .collect()
    }

    #[test]
    fn shared_labels_get_the_next_readable_form() {
        let none = BTreeMap::new();
        let names = account_names(
            [
                "web1.dc1.example.com",
                "web1.dc2.example.com",
                "db1.example.com",
            ],
            &none,
        )
        .unwrap();
        assert_eq!(names["web1.dc1.example.com"], "snap-web1-dc1");
        assert_eq!(names["web1.dc2.example.com"], "snap-web1-dc2");
        assert_eq!(names["db1.example.com"], "snap-db1");
        // Same first two labels: the third tells them apart.
        let names = account_names(["web1.example.com", "web1.example.org"], &none).unwrap();
        assert_eq!(names["web1.example.com"], "snap-web1-example-com");
        assert_eq!(names["web1.example.org"], "snap-web1-example-org");
        // A bare label shared with a longer id: the bare one is hashed.
        let names = account_names(["web1", "web1.dc1"], &none).unwrap();
        assert_eq!(names["web1.dc1"], "snap-web1-dc1");
        assert_eq!(names["web1"], hashed_name("web1").unwrap());
    }

    #[test]
    fn ids_that_differ_only_in_case_get_hashed_names() {
        let none = BTreeMap::new();
        let names = account_names(["Web1", "web1"], &none).unwrap();
        assert_ne!(names["Web1"], names["web1"]);
        for name in names.values() {
            assert!(name.starts_with("snap-web1-"), "{name}");
            validate_account_name(name).unwrap();
        }
        // The same id twice is one id.
        assert_eq!(account_names(["web1", "web1"], &none).unwrap().len(), 1);
    }

    #[test]
    fn a_big_fleet_gets_distinct_valid_names_whatever_the_order() {
        let none = BTreeMap::new();
        let mut ids = ids_of(10_000);
        ids.push("a-very-long-hostname-that-goes-on-and-on.dc1.example.com".into());
        ids.push("a-very-long-hostname-that-goes-on-and-on.dc2.example.com".into());
        let a = account_names(ids.iter().map(String::as_str), &none).unwrap();
        assert_eq!(a.len(), ids.len());
        let distinct: std::collections::BTreeSet<_> = a.values().collect();
        assert_eq!(distinct.len(), ids.len());
        for name in a.values() {
            validate_account_name(name).unwrap();
        }
        assert_eq!(a["web3.dc5.example.com"], "snap-web3-dc5");
        let mut rev = ids.clone();
        rev.reverse();
        assert_eq!(
            account_names(rev.iter().map(String::as_str), &none).unwrap(),
            a
        );
    }

    #[test]
    fn a_shared_name_is_refused_for_every_id_never_merged() {
        let mut o = BTreeMap::new();
        o.insert("a.example".to_string(), "snap-same".to_string());
        o.insert("b.example".to_string(), "snap-same".to_string());
        let a = assign_accounts(["a.example", "b.example", "db1"], &o, &BTreeMap::new());
        assert_eq!(a.names.len(), 1);
        assert_eq!(a.names["db1"], "snap-db1");
        let e = &a.rejected["a.example"];
        assert_eq!(e.kind(), ErrorKind::AccountCollision);
        assert!(e.to_string().contains("\"b.example\""), "{e}");
        assert!(e.to_string().contains("snap-same"), "{e}");
        assert!(a.rejected.contains_key("b.example"));
    }

    #[test]
    fn bad_ids_are_set_aside_and_the_rest_keep_going() {
        let a = assign_accounts(["db1", "bad id"], &BTreeMap::new(), &BTreeMap::new());
        assert_eq!(a.names["db1"], "snap-db1");
        assert_eq!(a.rejected["bad id"].kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn overrides_win_and_are_checked() {
        let mut o = BTreeMap::new();
        o.insert("web1.example.org".to_string(), "snap-web1-org".to_string());
        let names = account_names(["web1.example.com", "web1.example.org"], &o).unwrap();
        assert_eq!(names["web1.example.org"], "snap-web1-org");
        // The other takes its shortest free form.
        assert_eq!(names["web1.example.com"], "snap-web1");
        o.insert("web1.example.org".to_string(), "Root!".to_string());
        assert!(account_names(["web1.example.org"], &o).is_err());
    }

    #[test]
    fn an_account_stays_with_the_server_it_was_made_for() {
        let none = BTreeMap::new();
        let mut bound = BTreeMap::new();
        bound.insert("snap-web1".to_string(), "web1.old".to_string());
        // The holder keeps its name; a newcomer gets a name of its own.
        let a = assign_accounts(["web1.old", "web1.new"], &none, &bound);
        assert_eq!(a.names["web1.old"], "snap-web1");
        assert_eq!(a.names["web1.new"], "snap-web1-new");
        assert!(a.rejected.is_empty());
        // The holder retired: its account is not handed to the newcomer.
        let a = assign_accounts(["web1.new"], &none, &bound);
        assert_eq!(a.names["web1.new"], "snap-web1-new");
        // An id keeps the account made for it whatever the rule says now.
        let mut bound = BTreeMap::new();
        bound.insert("snap-legacy".to_string(), "web1.example.com".to_string());
        let a = assign_accounts(["web1.example.com"], &none, &bound);
        assert_eq!(a.names["web1.example.com"], "snap-legacy");
    }

    #[test]
    fn an_override_never_takes_another_servers_account() {
        let mut bound = BTreeMap::new();
        bound.insert("snap-web1".to_string(), "web1.old".to_string());
        let mut o = BTreeMap::new();
        o.insert("web1.new".to_string(), "snap-web1".to_string());
        let a = assign_accounts(["web1.old", "web1.new"], &o, &bound);
        assert_eq!(a.names["web1.old"], "snap-web1");
        let e = a.rejected["web1.new"].to_string();
        assert!(
            e.contains("belongs to \"web1.old\" (it was made for it)"),
            "{e}"
        );
        let a = assign_accounts(["web1.new"], &o, &bound);
        let e = a.rejected["web1.new"].to_string();
        assert!(
            e.contains("no longer in the fleet") && e.contains("purge"),
            "{e}"
        );
    }
}
