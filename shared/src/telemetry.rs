//! JSON logs through `tracing` (CloudWatch reads one JSON object per line). Level from `RUST_LOG`, default info.

use tracing_subscriber::EnvFilter;

pub fn init_json_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A second init (tests, local runner hosting several handlers) is harmless: keep the first subscriber.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .flatten_event(true)
        .with_current_span(false)
        .with_ansi(false)
        .try_init();
}
