//! A progress sink that calls a Python callable with each report as a dict.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use snap_core::{ProgressEvent, ProgressSink};

pub struct PySink(Py<PyAny>);

impl ProgressSink for PySink {
    fn report(&self, event: &ProgressEvent) {
        Python::attach(|py| {
            let dict = PyDict::new(py);
            let _ = dict.set_item("stage", &event.stage);
            let _ = dict.set_item("done", event.done);
            let _ = dict.set_item("total", event.total);
            let _ = dict.set_item("elapsed", event.elapsed.as_secs_f64());
            let _ = dict.set_item("rate", event.rate);
            let _ = dict.set_item("eta", event.eta.map(|d| d.as_secs_f64()));
            let _ = dict.set_item("finished", event.finished);
            let _ = dict.set_item("text", event.to_string());
            if let Err(e) = self.0.call1(py, (dict,)) {
                // A broken callback must not abort the work it reports on.
                e.print(py);
            }
        });
    }
}

/// The sink for an optional Python callable.
pub fn sink(callback: Option<Py<PyAny>>) -> Option<Arc<dyn ProgressSink>> {
    callback.map(|cb| Arc::new(PySink(cb)) as Arc<dyn ProgressSink>)
}
