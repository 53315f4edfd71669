//! The client's configuration (`snap.client` writes it as JSON): what is
//! sent, where, and how gently; checked before anything runs.

use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::account::{validate_account_name, validate_minion_id};
use crate::config::JsonConfig;
use crate::error::{Error, Result};

/// Client configuration, written by state `snap.client` as JSON.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    pub minion_id: String,
    pub account: String,
    pub server_host: String,
    #[serde(default = "d_port")]
    pub server_port: u16,
    /// This server's private key.
    pub key: PathBuf,
    /// known_hosts with the backup server's pinned host key(s).
    pub known_hosts: PathBuf,
    /// Absolute paths to back up.
    pub paths: Vec<String>,
    /// rsync exclude patterns.
    #[serde(default)]
    pub excludes: Vec<String>,
    /// Directory of pre-hooks (executables run in name order before the push).
    #[serde(default)]
    pub hooks_dir: Option<PathBuf>,
    #[serde(default = "d_hook_timeout")]
    pub hook_timeout: u64,
    #[serde(default)]
    pub bwlimit_kbps: Option<u64>,
    #[serde(default = "d_nice")]
    pub nice: i32,
    /// ionice class: 2 (best effort) or 3 (idle).
    #[serde(default = "d_ionice_class")]
    pub ionice_class: u8,
    #[serde(default = "d_ionice_level")]
    pub ionice_level: u8,
    /// Seconds to wait before connecting (spreads a busy minute).
    #[serde(default)]
    pub splay: u64,
    /// Lock, records, temporary state file (root-only).
    pub state_dir: PathBuf,
    #[serde(default = "d_retries")]
    pub retries: u32,
    #[serde(default = "d_retry_delay")]
    pub retry_delay: u64,
    #[serde(default = "d_connect_timeout")]
    pub connect_timeout: u64,
    /// rsync's I/O timeout: a transfer stalled this long is aborted.
    #[serde(default = "d_io_timeout")]
    pub io_timeout: u64,
    #[serde(default = "d_rsync")]
    pub rsync: String,
    #[serde(default = "d_ssh")]
    pub ssh: String,
}

fn d_port() -> u16 {
    22
}
fn d_hook_timeout() -> u64 {
    3600
}
fn d_nice() -> i32 {
    19
}
fn d_ionice_class() -> u8 {
    2
}
fn d_ionice_level() -> u8 {
    7
}
fn d_retries() -> u32 {
    3
}
fn d_retry_delay() -> u64 {
    30
}
fn d_connect_timeout() -> u64 {
    30
}
fn d_io_timeout() -> u64 {
    600
}
fn d_rsync() -> String {
    "rsync".into()
}
fn d_ssh() -> String {
    "ssh".into()
}

fn bad(field: &str, why: impl std::fmt::Display) -> Error {
    Error::invalid_input(format!("push configuration: {field} {why}"))
}

fn no_quotes(field: &str, p: &Path) -> Result<()> {
    let s = p.to_string_lossy();
    if s.contains(['"', '\'', '\n', '\\']) || !p.is_absolute() {
        return Err(bad(
            field,
            format!("must be an absolute path without quotes: {s:?}"),
        ));
    }
    Ok(())
}

impl JsonConfig for PushConfig {
    const WHAT: &'static str = "push configuration";

    /// Everything that can be checked without touching the network.
    fn check(&self) -> Result<()> {
        validate_minion_id(&self.minion_id)?;
        validate_account_name(&self.account)?;
        let host_ok = !self.server_host.is_empty()
            && !self.server_host.starts_with('-')
            && self
                .server_host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
        if !host_ok {
            return Err(bad(
                "server_host",
                format!("is not a host name or address: {:?}", self.server_host),
            ));
        }
        if self.server_port == 0 {
            return Err(bad("server_port", "must be 1-65535"));
        }
        no_quotes("key", &self.key)?;
        no_quotes("known_hosts", &self.known_hosts)?;
        no_quotes("state_dir", &self.state_dir)?;
        if !(0..=19).contains(&self.nice) {
            return Err(bad("nice", "must be 0-19"));
        }
        if !(2..=3).contains(&self.ionice_class) || self.ionice_level > 7 {
            return Err(bad(
                "ionice",
                "class must be 2 (best effort) or 3 (idle), level 0-7",
            ));
        }
        if self.bwlimit_kbps == Some(0) {
            return Err(bad(
                "bwlimit_kbps",
                "must be positive (leave it unset for no limit)",
            ));
        }
        if self.paths.is_empty() {
            return Err(bad("paths", "is empty: nothing to back up"));
        }
        for p in &self.paths {
            let path = Path::new(p);
            if !path.is_absolute()
                || path.components().any(|c| matches!(c, Component::ParentDir))
                || p.contains(['\n', '\r', '\0'])
            {
                return Err(bad(
                    "paths",
                    format!("entry {p:?} must be a plain absolute path"),
                ));
            }
        }
        for e in &self.excludes {
            if e.is_empty() || e.contains(['\n', '\r', '\0']) {
                return Err(bad(
                    "excludes",
                    format!("entry {e:?} is not a valid pattern"),
                ));
            }
        }
        Ok(())
    }
}

impl PushConfig {
    /// Check what must exist on this server before anything is sent.
    pub(super) fn check_local(&self) -> Result<()> {
        for (what, p) in [
            ("private key", &self.key),
            ("known_hosts", &self.known_hosts),
        ] {
            fs::metadata(p).map_err(|e| Error::io_path(&format!("reading {what}"), p, e))?;
        }
        let missing: Vec<&str> = self
            .paths
            .iter()
            .filter(|p| fs::symlink_metadata(p).is_err())
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(Error::invalid_input(format!(
                "configured backup paths do not exist: {}; nothing was sent \
                 (fix pillar snap:client:paths, or restore the missing data)",
                missing.join(", ")
            )));
        }
        Ok(())
    }

    pub(super) fn destination(&self, path: &str) -> String {
        let host = if self.server_host.contains(':') && !self.server_host.starts_with('[') {
            format!("[{}]", self.server_host)
        } else {
            self.server_host.clone()
        };
        format!("{}@{host}:{path}", self.account)
    }

    /// The `-e` argument for rsync: ssh with this server's key only, the
    /// pinned host key only, no agent, no forwarding, no user config.
    pub fn ssh_command(&self) -> String {
        let q = |p: &Path| format!("\"{}\"", p.display());
        [
            self.ssh.clone(),
            "-F /dev/null".into(),
            format!("-i {}", q(&self.key)),
            format!("-p {}", self.server_port),
            "-o IdentitiesOnly=yes".into(),
            "-o IdentityAgent=none".into(),
            "-o BatchMode=yes".into(),
            "-o StrictHostKeyChecking=yes".into(),
            format!("-o UserKnownHostsFile={}", q(&self.known_hosts)),
            "-o GlobalKnownHostsFile=/dev/null".into(),
            "-o UpdateHostKeys=no".into(),
            "-o PasswordAuthentication=no".into(),
            "-o KbdInteractiveAuthentication=no".into(),
            "-o PreferredAuthentications=publickey".into(),
            "-o ForwardAgent=no".into(),
            "-o ForwardX11=no".into(),
            "-o ClearAllForwardings=yes".into(),
            "-o ControlMaster=no".into(),
            "-o ControlPath=none".into(),
            "-o RequestTTY=no".into(),
            format!("-o ConnectTimeout={}", self.connect_timeout),
            "-o ServerAliveInterval=15".into(),
            "-o ServerAliveCountMax=4".into(),
            "-o LogLevel=ERROR".into(),
        ]
        .join(" ")
    }

    /// rsync filter rules: excludes first, then each path and its parents,
    /// then nothing else (the source is `/`).
    pub fn filter_rules(&self) -> Vec<String> {
        let mut rules: Vec<String> = self.excludes.iter().map(|e| format!("- {e}")).collect();
        let mut parents = std::collections::BTreeSet::new();
        let mut includes = Vec::new();
        for p in &self.paths {
            let path = Path::new(p);
            let mut cur = PathBuf::from("/");
            let comps: Vec<_> = path.components().skip(1).collect();
            for c in &comps[..comps.len().saturating_sub(1)] {
                cur.push(c);
                parents.insert(format!("+ {}/", cur.display()));
            }
            let clean = p.trim_end_matches('/');
            if clean.is_empty() {
                includes.push("+ /***".to_string());
            } else if Path::new(clean).is_dir() {
                includes.push(format!("+ {clean}/***"));
            } else {
                includes.push(format!("+ {clean}"));
            }
        }
        rules.extend(parents);
        rules.extend(includes);
        rules.push("- *".into());
        rules
    }

    pub(super) fn niced(&self, program: &str) -> Command {
        let mut cmd = Command::new("nice");
        cmd.arg("-n")
            .arg(self.nice.to_string())
            .arg("ionice")
            .arg("-c")
            .arg(self.ionice_class.to_string());
        if self.ionice_class == 2 {
            cmd.arg("-n").arg(self.ionice_level.to_string());
        }
        cmd.arg(program);
        cmd
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::error::ErrorKind;

    /// A valid configuration for the tests.
    pub(crate) fn cfg() -> PushConfig {
        serde_json::from_value(serde_json::json!({
            "minion_id": "web1.example.com",
            "account": "snap-web1",
            "server_host": "backup1.example.com",
            "server_port": 2222,
            "key": "/etc/snap/id_ed25519",
            "known_hosts": "/etc/snap/known_hosts",
            "paths": ["/etc", "/var/www/html", "/srv/data/db.dump"],
            "excludes": ["*.tmp", "/var/www/html/cache/"],
            "state_dir": "/var/lib/snap",
        }))
        .unwrap()
    }

    #[test]
    fn defaults_are_gentle() {
        let c = cfg();
        c.check().unwrap();
        assert_eq!((c.nice, c.ionice_class, c.ionice_level), (19, 2, 7));
        assert_eq!(
            c.destination("data/"),
            "snap-web1@backup1.example.com:data/"
        );
    }

    #[test]
    fn filter_rules_include_paths_and_parents_only() {
        let rules = cfg().filter_rules();
        assert_eq!(rules[0], "- *.tmp");
        assert_eq!(rules[1], "- /var/www/html/cache/");
        assert!(rules.contains(&"+ /var/".to_string()));
        assert!(rules.contains(&"+ /var/www/".to_string()));
        assert!(rules.contains(&"+ /srv/data/".to_string()));
        assert!(rules.contains(&"+ /etc/***".to_string()));
        assert_eq!(rules.last().unwrap(), "- *");
    }

    #[test]
    fn ssh_pins_everything() {
        let s = cfg().ssh_command();
        for must in [
            "-i \"/etc/snap/id_ed25519\"",
            "-p 2222",
            "StrictHostKeyChecking=yes",
            "UserKnownHostsFile=\"/etc/snap/known_hosts\"",
            "GlobalKnownHostsFile=/dev/null",
            "IdentitiesOnly=yes",
            "BatchMode=yes",
            "-F /dev/null",
            "ForwardAgent=no",
        ] {
            assert!(s.contains(must), "{must} missing in {s}");
        }
    }

    #[test]
    fn bad_configuration_is_refused_naming_the_field() {
        let mut c = cfg();
        c.server_host = "-oProxyCommand=sh".into();
        assert!(c.check().unwrap_err().to_string().contains("server_host"));
        let mut c = cfg();
        c.paths = vec!["etc".into()];
        assert!(c.check().unwrap_err().to_string().contains("paths"));
        let mut c = cfg();
        c.paths = vec!["/etc/../root".into()];
        assert!(c.check().is_err());
        let mut c = cfg();
        c.key = PathBuf::from("/etc/\"x");
        assert!(c.check().unwrap_err().to_string().contains("key"));
        let mut c = cfg();
        c.ionice_class = 1;
        assert!(c.check().is_err());
        let e =
            serde_json::from_value::<PushConfig>(serde_json::json!({"minion_id": "x", "bogus": 1}))
                .unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn missing_paths_are_listed_before_sending() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg();
        let key = dir.path().join("k");
        fs::write(&key, "x").unwrap();
        c.key = key.clone();
        c.known_hosts = key;
        c.paths = vec![
            dir.path().display().to_string(),
            "/nonexistent/a".into(),
            "/nonexistent/b".into(),
        ];
        let e = c.check_local().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(
            e.to_string().contains("/nonexistent/a, /nonexistent/b"),
            "{e}"
        );
    }
}
