//! `reflexio-bridge`: serves Reflexio metrics to Prometheus and OpenTelemetry collectors.
//!
//! For now it prints the exposition of an empty recorder: every contract metric at its
//! starting value.

use opentelemetry::metrics::MeterProvider;
use reflexio_otel::{PrometheusPipeline, Recorder};

fn main() -> anyhow::Result<()> {
    let pipeline = PrometheusPipeline::new()?;
    let recorder = Recorder::builder().without_upkeep_thread().build();
    recorder.register(&pipeline.provider.meter("reflexio-bridge"));
    print!("{}", pipeline.encode()?);
    Ok(())
}
