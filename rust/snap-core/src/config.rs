//! JSON configuration files written by Salt states: read, parse, check.

use std::fs;
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// A configuration that comes as JSON and checks itself.
pub trait JsonConfig: DeserializeOwned {
    /// What it is, for messages ("push configuration").
    const WHAT: &'static str;

    /// Everything that can be checked without side effects.
    fn check(&self) -> Result<()>;

    /// Parse and check JSON text.
    fn from_json(text: &str) -> Result<Self> {
        let cfg: Self = serde_json::from_str(text)
            .map_err(|e| Error::invalid_input(format!("not a valid {}: {e}", Self::WHAT)))?;
        cfg.check()?;
        Ok(cfg)
    }

    /// Read, parse and check a file; errors name the file.
    fn load(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path).map_err(|e| Error::io_path("reading", path, e))?;
        Self::from_json(&text).map_err(|e| e.context(path.display()))
    }
}
