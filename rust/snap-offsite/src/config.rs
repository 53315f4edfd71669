//! Where the archives go and how to reach it. Names and paths only: the
//! credentials come from the AWS default chain.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_runtime::env_config::file::{
    EnvConfigFileKind as ProfileFileKind, EnvConfigFiles as ProfileFiles,
};
use snap_core::{Error, Result};

use crate::{DEFAULT_PART_SIZE, MAX_PART_SIZE, MIN_PART_SIZE};

/// Which API the target speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// S3 with Object Lock (the default).
    S3,
    /// A Glacier vault (the 2012 vault API; only for accounts that have vaults).
    GlacierVault,
}

impl TargetKind {
    pub fn parse(text: &str) -> Result<Self> {
        match text.to_ascii_lowercase().as_str() {
            "s3" => Ok(TargetKind::S3),
            "glacier" | "glacier-vault" | "vault" => Ok(TargetKind::GlacierVault),
            _ => Err(Error::invalid_input(format!(
                "unknown off-site target kind {text:?} (expected s3 or glacier)"
            ))),
        }
    }
}

/// An off-site target.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetConfig {
    pub kind: TargetKind,
    /// Bucket name (S3) or vault name (Glacier).
    pub bucket: String,
    /// AWS region; None: from the chain (`AWS_REGION`, profile, IMDS).
    pub region: Option<String>,
    /// Explicit endpoint, e.g. `http://127.0.0.1:5000` for a local emulator.
    pub endpoint_url: Option<String>,
    /// Profile of the shared config/credentials files (may assume a role).
    pub profile: Option<String>,
    /// Shared credentials file instead of `~/.aws/credentials` (a root-only
    /// file on the backup server). It is read by the SDK's profile provider.
    pub credentials_file: Option<PathBuf>,
    /// Shared config file instead of `~/.aws/config`.
    pub config_file: Option<PathBuf>,
    /// Path-style addressing (`endpoint/bucket/key`); on by default when an
    /// endpoint URL is given.
    pub force_path_style: Option<bool>,
    /// Part size of multipart uploads (S3: at least 5 MiB; vaults round it up
    /// to a power of two MiB).
    pub part_size: u64,
    /// Parts uploaded at once. Memory is about (this + 1) x part size.
    pub max_in_flight: usize,
    /// Attempts of each request inside the SDK (standard retry mode).
    pub sdk_max_attempts: u32,
    /// Further attempts of a whole part (or GET) after the SDK gave up on a
    /// transient error, with exponential backoff from `retry_backoff`.
    pub part_retries: u32,
    /// First backoff delay of both retry layers.
    pub retry_backoff: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// A download that gets no answer, or no byte of its body, for this
    /// long counts as dropped (and is retried from where it stopped, as a
    /// dropped connection is): a server that stalls cannot hang a restore.
    /// Uploads are not bounded this way (a part's answer comes only after
    /// its whole body went out).
    pub stall_timeout: Duration,
    /// Glacier account id (`-` means the credentials' own account).
    pub account_id: String,
}

impl TargetConfig {
    pub fn s3(bucket: impl Into<String>) -> Self {
        TargetConfig {
            kind: TargetKind::S3,
            bucket: bucket.into(),
            region: None,
            endpoint_url: None,
            profile: None,
            credentials_file: None,
            config_file: None,
            force_path_style: None,
            part_size: DEFAULT_PART_SIZE,
            max_in_flight: 2,
            sdk_max_attempts: 3,
            part_retries: 4,
            retry_backoff: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(300),
            account_id: "-".to_string(),
        }
    }

    pub fn glacier(vault: impl Into<String>) -> Self {
        TargetConfig {
            kind: TargetKind::GlacierVault,
            ..TargetConfig::s3(vault)
        }
    }

    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    pub fn with_endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }

    pub fn with_profile(mut self, profile: impl Into<String>) -> Self {
        self.profile = Some(profile.into());
        self
    }

    pub fn with_credentials_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.credentials_file = Some(path.into());
        self
    }

    pub fn with_part_size(mut self, bytes: u64) -> Self {
        self.part_size = bytes;
        self
    }

    pub fn with_max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    pub fn with_retries(
        mut self,
        sdk_max_attempts: u32,
        part_retries: u32,
        backoff: Duration,
    ) -> Self {
        self.sdk_max_attempts = sdk_max_attempts;
        self.part_retries = part_retries;
        self.retry_backoff = backoff;
        self
    }

    /// Check the values that cannot work, before any request.
    pub fn validate(&self) -> Result<()> {
        if self.bucket.is_empty() {
            return Err(Error::invalid_input(
                "off-site target has no bucket/vault name",
            ));
        }
        if self.kind == TargetKind::S3 && self.part_size < MIN_PART_SIZE {
            return Err(Error::invalid_input(format!(
                "part size {} is below S3's minimum of 5 MiB",
                self.part_size
            )));
        }
        if self.part_size > MAX_PART_SIZE {
            return Err(Error::invalid_input(format!(
                "part size {} is above the maximum of 5 GiB",
                self.part_size
            )));
        }
        if self.stall_timeout < Duration::from_secs(1) {
            return Err(Error::invalid_input(format!(
                "stall_timeout must be at least 1 second, not {:?}",
                self.stall_timeout
            )));
        }
        if self.max_in_flight == 0 || self.max_in_flight > 64 {
            return Err(Error::invalid_input(format!(
                "parts in flight must be 1..=64, not {}",
                self.max_in_flight
            )));
        }
        if self.sdk_max_attempts == 0 {
            return Err(Error::invalid_input("sdk_max_attempts must be at least 1"));
        }
        if let Some(url) = &self.endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(Error::invalid_input(format!(
                "endpoint URL {url:?} must start with http:// or https://"
            )));
        }
        Ok(())
    }

    pub(crate) fn path_style(&self) -> bool {
        self.force_path_style.unwrap_or(self.endpoint_url.is_some())
    }

    /// "region, endpoint" for messages.
    pub(crate) fn where_(&self) -> String {
        let mut parts = Vec::new();
        if let Some(r) = &self.region {
            parts.push(r.clone());
        }
        if let Some(e) = &self.endpoint_url {
            parts.push(e.clone());
        }
        if let Some(p) = &self.profile {
            parts.push(format!("profile {p}"));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        }
    }
}

/// The runtime and shared SDK configuration of one target.
pub(crate) struct Shared {
    pub rt: Arc<tokio::runtime::Runtime>,
    pub sdk: SdkConfig,
}

pub(crate) fn load(config: &TargetConfig) -> Result<Shared> {
    config.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("snap-offsite")
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the off-site I/O runtime", e))?;
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(config.sdk_max_attempts)
                .with_initial_backoff(config.retry_backoff),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(config.connect_timeout)
                .build(),
        );
    if let Some(region) = &config.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &config.profile {
        loader = loader.profile_name(profile);
    }
    if config.credentials_file.is_some() || config.config_file.is_some() {
        for path in config
            .credentials_file
            .iter()
            .chain(config.config_file.iter())
        {
            if !path.is_file() {
                return Err(Error::new(
                    snap_core::ErrorKind::NotFound,
                    format!(
                        "AWS shared config/credentials file {} does not exist",
                        path.display()
                    ),
                ));
            }
        }
        let mut files = ProfileFiles::builder();
        match &config.credentials_file {
            Some(p) => files = files.with_file(ProfileFileKind::Credentials, p),
            None => files = files.include_default_credentials_file(true),
        }
        match &config.config_file {
            Some(p) => files = files.with_file(ProfileFileKind::Config, p),
            None => files = files.include_default_config_file(true),
        }
        loader = loader.profile_files(files.build());
    }
    if let Some(url) = &config.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let sdk = rt.block_on(loader.load());
    Ok(Shared {
        rt: Arc::new(rt),
        sdk,
    })
}

/// Off-site target settings as they appear in configuration (JSON, pillar,
/// a Python dict): every field optional but the bucket (or vault). Unknown
/// keys are refused; anything that looks like a secret gets told that
/// credentials come only from the AWS chain.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSettings {
    pub kind: Option<String>,
    pub bucket: Option<String>,
    pub vault: Option<String>,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub profile: Option<String>,
    pub credentials_file: Option<PathBuf>,
    pub config_file: Option<PathBuf>,
    pub force_path_style: Option<bool>,
    pub part_size: Option<u64>,
    pub max_in_flight: Option<usize>,
    pub sdk_max_attempts: Option<u32>,
    pub part_retries: Option<u32>,
    /// Seconds.
    pub retry_backoff: Option<f64>,
    /// Seconds (at least 1).
    pub stall_timeout: Option<f64>,
    pub account_id: Option<String>,
}

/// The keys [`TargetSettings`] accepts.
pub const TARGET_SETTING_KEYS: &[&str] = &[
    "kind",
    "bucket",
    "vault",
    "region",
    "endpoint_url",
    "profile",
    "credentials_file",
    "config_file",
    "force_path_style",
    "part_size",
    "max_in_flight",
    "sdk_max_attempts",
    "part_retries",
    "retry_backoff",
    "stall_timeout",
    "account_id",
];

impl TargetSettings {
    /// Parse settings from a JSON value, naming any unknown key.
    pub fn from_value(value: serde_json::Value) -> Result<Self> {
        if let Some(map) = value.as_object() {
            for key in map.keys() {
                if !TARGET_SETTING_KEYS.contains(&key.as_str()) {
                    let hint = if key.contains("secret")
                        || key.contains("access_key")
                        || key.contains("token")
                    {
                        ": credentials come only from the AWS chain (environment, profile, role, instance metadata)"
                    } else {
                        ""
                    };
                    return Err(Error::invalid_input(format!(
                        "unknown off-site target setting {key:?}{hint}"
                    )));
                }
            }
        }
        serde_json::from_value(value)
            .map_err(|e| Error::invalid_input(format!("off-site target settings: {e}")))
    }

    /// The target configuration these settings describe (defaults for the rest).
    pub fn to_config(&self) -> Result<TargetConfig> {
        let kind = match &self.kind {
            Some(k) => TargetKind::parse(k)?,
            None => TargetKind::S3,
        };
        let name = self
            .bucket
            .clone()
            .or_else(|| self.vault.clone())
            .ok_or_else(|| Error::invalid_input("off-site target needs a bucket (or vault)"))?;
        let mut c = match kind {
            TargetKind::S3 => TargetConfig::s3(name),
            TargetKind::GlacierVault => TargetConfig::glacier(name),
        };
        c.region = self.region.clone();
        c.endpoint_url = self.endpoint_url.clone();
        c.profile = self.profile.clone();
        c.credentials_file = self.credentials_file.clone();
        c.config_file = self.config_file.clone();
        c.force_path_style = self.force_path_style.or(c.force_path_style);
        if let Some(v) = self.part_size {
            c.part_size = v;
        }
        if let Some(v) = self.max_in_flight {
            c.max_in_flight = v;
        }
        if let Some(v) = self.sdk_max_attempts {
            c.sdk_max_attempts = v;
        }
        if let Some(v) = self.part_retries {
            c.part_retries = v;
        }
        if let Some(v) = self.retry_backoff {
            c.retry_backoff = Duration::from_secs_f64(v.max(0.0));
        }
        if let Some(v) = self.stall_timeout {
            if !(v.is_finite() && v >= 1.0) {
                return Err(Error::invalid_input(format!(
                    "off-site target stall_timeout must be at least 1 second, not {v}"
                )));
            }
            c.stall_timeout = Duration::from_secs_f64(v.min(86_400.0));
        }
        if let Some(v) = &self.account_id {
            c.account_id = v.clone();
        }
        Ok(c)
    }
}
