//! Export: the contract's OpenTelemetry instruments, read from snapshots, and the Prometheus
//! wiring that names them as the contract says and encodes them.
//!
//! - `instruments`: the observable instruments and the histogram replay, on a user's `Meter`;
//! - `prometheus`: the provider wired to a Prometheus registry, and the one text encoder.

pub(crate) mod instruments;
pub(crate) mod prometheus;
