//! JSON logs through `tracing` (CloudWatch reads one JSON object per line). Level from `RUST_LOG`, default info;
//! release builds compile out debug and trace (the workspace manifest), so there `RUST_LOG=debug` shows only info
//! and up.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

fn init<W>(writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A second init (tests, a runner hosting several handlers) is harmless: the first subscriber stays.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .flatten_event(true)
        .with_current_span(false)
        .with_ansi(false)
        .with_writer(writer)
        .try_init();
}

/// Lambda: logs on stdout.
pub fn init_json_logging() {
    init(std::io::stdout);
}

/// The same JSON logs on stderr, for programs whose stdout is for people (the local run).
pub fn init_json_logging_to_stderr() {
    init(std::io::stderr);
}
