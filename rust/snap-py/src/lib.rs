//! The thin PyO3 layer: argument conversion, GIL release, error mapping.
//! All logic lives in the plain-Rust crates; nothing here decides anything.

use pyo3::prelude::*;

mod archive;
mod backup;
mod chain;
mod conv;
mod core_api;
mod crypt;
mod errors;
mod offsite;
mod pack;
mod progress;
mod restore;
mod status;

/// The API snap's Salt loader modules are written against, `(major, minor)`
/// (see `snap_core.api`): bump the minor when adding something they may call,
/// the major when changing or removing something they call.
const API_VERSION: (u32, u32) = (2, 5);

#[pymodule]
fn _rust(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("API_VERSION", API_VERSION)?;
    core_api::register(m)?;
    backup::register(m)?;
    archive::register(m)?;
    status::register(m)?;
    restore::register(m)?;
    pack::register(m)?;
    chain::register(m)?;
    crypt::register(m)?;
    offsite::register(m)?;
    Ok(())
}
