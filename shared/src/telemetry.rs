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

/// Lambda: logs and metrics (embedded metric format lines, see [`crate::metrics`]) on stdout.
pub fn init_json_logging() {
    init(std::io::stdout);
    crate::metrics::set_sink(|line| write_whole_line(std::io::stdout().lock(), line));
}

/// The same JSON logs and metrics on stderr, for programs whose stdout is for people (the local run).
pub fn init_json_logging_to_stderr() {
    init(std::io::stderr);
    crate::metrics::set_sink(|line| write_whole_line(std::io::stderr().lock(), line));
}

/// One write of the whole line, so it never interleaves with a log line.
fn write_whole_line(mut out: impl std::io::Write, line: &str) {
    let _ = out.write_all(format!("{line}\n").as_bytes());
}
