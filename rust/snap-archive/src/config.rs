//! The backup server's archive configuration (what state `snap.archive_config`
//! writes as JSON), checked before any work.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use snap_core::config::JsonConfig;
use snap_core::{Error, Result};
use snap_crypt::{KeySource, Recipient};
use snap_offsite::TargetSettings;
use snap_pack::Compressor;

/// A recipient public key: a file, or armored text (from pillar).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientSpec {
    pub file: Option<PathBuf>,
    pub text: Option<String>,
    /// What to call it in messages (default: the file, or "recipients[i]").
    pub label: Option<String>,
}

/// Packing settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PackSettings {
    pub compressor: String,
    pub level: Option<u32>,
    pub block_size: u32,
    pub threads: Option<usize>,
}

impl Default for PackSettings {
    fn default() -> Self {
        PackSettings {
            compressor: "zstd".into(),
            level: None,
            block_size: 128 * 1024,
            threads: None,
        }
    }
}

/// The backup server's archive configuration (state `snap.archive_config`
/// writes it as JSON).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// The backup server's minion id (in keys and the manifest).
    pub minion_id: String,
    /// rsnapshot's snapshot root.
    pub history_dir: PathBuf,
    /// Only these servers (minion ids) from every snapshot; None: everything.
    #[serde(default)]
    pub servers: Option<Vec<String>>,
    /// Parent of the run's root-only temporary directory (the image lives there).
    pub work_dir: PathBuf,
    /// Lock and records (root-only).
    pub state_dir: PathBuf,
    pub recipients: Vec<RecipientSpec>,
    /// Off-site target (see `snap_offsite::TargetSettings`).
    pub target: serde_json::Value,
    /// Key prefix (default `snap/<minion_id>`).
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default = "d_storage_class")]
    pub storage_class: String,
    #[serde(default = "d_manifest_class")]
    pub manifest_storage_class: String,
    /// Days of COMPLIANCE retention: at least 90.
    #[serde(default = "d_retain")]
    pub retain_days: u32,
    #[serde(default)]
    pub pack: PackSettings,
    /// Incremental archives (pillar `snap:archive:chain`).
    #[serde(default)]
    pub chain: crate::chain::ChainSettings,
    /// USD per GiB-month per storage class, over the list prices.
    #[serde(default)]
    pub prices: BTreeMap<String, f64>,
}

impl JsonConfig for ArchiveConfig {
    const WHAT: &'static str = "archive configuration";

    /// Everything that can be checked without reading history or keys.
    fn check(&self) -> Result<()> {
        snap_core::account::validate_minion_id(&self.minion_id)?;
        for p in [&self.history_dir, &self.work_dir, &self.state_dir] {
            if !p.is_absolute() {
                return Err(Error::invalid_input(format!(
                    "archive configuration: {} must be an absolute path",
                    p.display()
                )));
            }
        }
        if self.work_dir.starts_with(&self.history_dir) {
            return Err(Error::invalid_input(format!(
                "archive configuration: work_dir {} must not be inside the history {}",
                self.work_dir.display(),
                self.history_dir.display()
            )));
        }
        if self.recipients.is_empty() {
            return Err(Error::invalid_key(
                "archive configuration: no recipients; archives are encrypted to at least one public key",
            ));
        }
        for (i, r) in self.recipients.iter().enumerate() {
            if r.file.is_some() == r.text.is_some() {
                return Err(Error::invalid_input(format!(
                    "archive configuration: recipients[{i}] needs exactly one of file or text"
                )));
            }
        }
        if let Some(servers) = &self.servers {
            for s in servers {
                snap_core::account::validate_minion_id(s)?;
            }
        }
        snap_offsite::retain_until(SystemTime::now(), self.retain_days)?;
        snap_offsite::s3::storage_class(&self.storage_class)?;
        snap_offsite::s3::storage_class(&self.manifest_storage_class)?;
        self.compressor()?;
        self.chain.check(self.retain_days)?;
        crate::cost::prices(&self.prices)?;
        TargetSettings::from_value(self.target.clone())?.to_config()?;
        Ok(())
    }
}

fn d_storage_class() -> String {
    "GLACIER".into()
}
fn d_manifest_class() -> String {
    "STANDARD".into()
}
fn d_retain() -> u32 {
    snap_offsite::MIN_RETAIN_DAYS
}

impl ArchiveConfig {
    pub fn prefix(&self) -> String {
        self.prefix
            .clone()
            .unwrap_or_else(|| format!("snap/{}", self.minion_id))
    }

    /// How this configuration packs history (every server, or only `servers`).
    pub(crate) fn pack_options(&self) -> Result<snap_pack::PackOptions> {
        Ok(snap_pack::PackOptions {
            compressor: self.compressor()?,
            level: self.pack.level,
            block_size: self.pack.block_size,
            threads: self.pack.threads,
            selection: self.servers.as_ref().map(|s| snap_pack::Selection {
                depth: 2,
                names: s.iter().map(Into::into).collect(),
            }),
            ..snap_pack::PackOptions::default()
        })
    }

    pub(crate) fn compressor(&self) -> Result<Compressor> {
        Compressor::from_str(&self.pack.compressor)
    }

    /// Read and check the recipient keys (secret key material is refused).
    pub fn load_recipients(&self) -> Result<Vec<Recipient>> {
        let mut sources = Vec::new();
        for (i, r) in self.recipients.iter().enumerate() {
            let source = match (&r.file, &r.text) {
                (Some(file), _) => KeySource::from_file(file)?,
                (None, Some(text)) => KeySource::new(
                    r.label
                        .clone()
                        .unwrap_or_else(|| format!("recipients[{i}]")),
                    text.as_bytes().to_vec(),
                ),
                (None, None) => unreachable!("checked"),
            };
            sources.push(source);
        }
        snap_crypt::load_recipients(&sources)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(dir: &Path) -> serde_json::Value {
        serde_json::json!({
            "minion_id": "backup1",
            "history_dir": dir.join("history"),
            "work_dir": dir.join("work"),
            "state_dir": dir.join("state"),
            "recipients": [{"text": "-----BEGIN PGP PUBLIC KEY BLOCK-----"}],
            "target": {"bucket": "b", "endpoint_url": "http://127.0.0.1:1"},
        })
    }

    #[test]
    fn configuration_is_checked_naming_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let ok = cfg(dir.path());
        ArchiveConfig::from_json(&ok.to_string()).unwrap();
        let bad = |change: &dyn Fn(&mut serde_json::Value), needle: &str| {
            let mut v = ok.clone();
            change(&mut v);
            let e = ArchiveConfig::from_json(&v.to_string()).unwrap_err();
            assert!(e.to_string().contains(needle), "{e} lacks {needle}");
        };
        bad(&|v| v["retain_days"] = 30.into(), "below the minimum of 90");
        bad(
            &|v| v["recipients"] = serde_json::json!([]),
            "no recipients",
        );
        bad(
            &|v| v["target"]["secret_access_key"] = "x".into(),
            "AWS chain",
        );
        bad(
            &|v| v["pack"] = serde_json::json!({"compressor": "lzo"}),
            "lzo",
        );
        bad(
            &|v| v["work_dir"] = v["history_dir"].clone(),
            "must not be inside the history",
        );
        bad(&|v| v["storage_class"] = "COLD".into(), "COLD");
        bad(
            &|v| v["recipients"] = serde_json::json!([{"file": "/x", "text": "y"}]),
            "exactly one",
        );
        bad(
            &|v| v["servers"] = serde_json::json!(["../etc"]),
            "cannot be used",
        );
    }
}
