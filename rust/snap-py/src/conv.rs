//! Conversions shared by the binding modules.

use pyo3::prelude::*;
use serde::Serialize;

/// A serde value as plain Python objects (dicts, lists, str, int, float, None),
/// through `json.loads`: records are small, and this keeps one conversion rule.
pub fn to_python<'py, T: Serialize>(py: Python<'py>, value: &T) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value).map_err(|e| {
        crate::errors::to_py(snap_core::Error::internal(format!(
            "encoding a record: {e}"
        )))
    })?;
    py.import("json")?.call_method1("loads", (text,))
}
