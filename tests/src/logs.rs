//! What the functions log, captured for assertions: the production subscriber's shape (`shared::telemetry`:
//! JSON, flattened events, no ANSI) writing into one buffer per test binary.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::EnvFilter;

fn buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber with `filter` (an `EnvFilter` directive such as `info`) as the test
/// binary's only subscriber; later calls do nothing, whatever their filter.
pub fn install_capture(filter: &str) {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let logs = buffer().clone();
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(EnvFilter::new(filter))
            .flatten_event(true)
            .with_current_span(false)
            .with_ansi(false)
            .with_writer(move || Capture(logs.clone()))
            .try_init()
            .expect("the only subscriber of this test binary");
        // The functions' metrics (embedded metric format lines) go where their logs go.
        let metrics = buffer().clone();
        shared::metrics::set_sink(move |line| {
            let mut logs = metrics.lock().unwrap_or_else(|e| e.into_inner());
            logs.extend_from_slice(line.as_bytes());
            logs.push(b'\n');
        });
    });
}

/// Everything logged so far.
pub fn captured() -> String {
    String::from_utf8_lossy(&buffer().lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

/// Every line logged so far that parses as JSON.
pub fn captured_lines() -> Vec<serde_json::Value> {
    captured().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}
