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

/// The same JSON logs on stderr, for programs whose stdout is for people (the local run, the operator CLI).
pub fn init_json_logging_to_stderr() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .flatten_event(true)
        .with_current_span(false)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
}
