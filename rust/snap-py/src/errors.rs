//! The one place where snap's errors become Python exceptions.
//!
//! Every `snap_core::Error` carries a kind; the kind names a class in the
//! pure-Python module `snap_core.errors` (so the classes can inherit from both
//! `snap_core.errors.Error` and the matching builtin, e.g. `ValueError` or
//! `OSError`). Nothing else in the binding creates exceptions.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// Convert a core error into the matching `snap_core.errors` exception.
pub fn to_py(err: snap_core::Error) -> PyErr {
    Python::attach(|py| {
        let message = err.to_string();
        let made = py
            .import("snap_core.errors")
            .and_then(|module| module.getattr(err.kind().name()))
            .and_then(|class| class.call1((message.clone(),)));
        match made {
            Ok(instance) => PyErr::from_value(instance),
            Err(import_failed) => {
                let e = PyRuntimeError::new_err(format!("{:?}: {message}", err.kind()));
                e.set_cause(py, Some(import_failed));
                e
            }
        }
    })
}

/// `.py()` on a core result: map the error through [`to_py`].
pub trait IntoPy<T> {
    fn py(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for snap_core::Result<T> {
    fn py(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}
