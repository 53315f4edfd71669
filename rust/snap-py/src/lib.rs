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

#[pymodule]
fn _rust(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
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
