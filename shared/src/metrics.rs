//! Metrics in CloudWatch's embedded metric format (EMF): each flush writes one JSON log line per set of
//! dimension values, and CloudWatch Logs turns the values into metrics — no API call, no agent, no extra
//! permission. The functions record while they work and flush once per invocation.
//!
//! Written here rather than taken from `metrics_cloudwatch_embedded`: that crate is a backend of the
//! process-global `metrics` facade, so every recorder in a process shares one `Function` dimension and one
//! flush — but the local run and the end-to-end tests host the webhook, the poller and the poster in one
//! process, and their counts must not mix. The format needs a few dozen lines of `serde_json`.
//!
//! Every metric is published under `[Function]` and under `[Function, X]` for each extra dimension `X` it was
//! recorded with, so alarms read the function-wide figure and the dashboard breaks it down. The template's
//! dashboard and alarms may name only [`Metric::ALL`] (`tests/tests/metrics_e2e.rs` holds them to it).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

/// The namespace when `METRICS_NAMESPACE` is not set.
pub const DEFAULT_NAMESPACE: &str = "BrexIfsConnector";

/// EMF allows at most 100 values of one metric in one line.
const MAX_VALUES_PER_LINE: usize = 100;

/// Every metric the connector emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    /// Poster: vouchers created. Dimension `Company`.
    RecordsPosted,
    /// Poster: found in IFS already, posted through the other source, or completed before. `Company`.
    RecordsAlreadyPosted,
    /// Poster: failed for the record's own sake and reported to Brex. `ReasonClass`: `mapping`,
    /// `ifs_refusal` (IFS refused it on its merits) or `brex_record` (Brex does not know it, or it cannot be read).
    RecordsFailed,
    /// Poster: held because the deployment or the tenant is at fault, or for a person's decision on a record
    /// changed after export. `ReasonClass`: `ifs`, `brex`, `mapping_document` or `changed_after_export`.
    RecordsHeld,
    /// Poster: given back to the queue after a passing fault.
    RecordsRetried,
    /// Poster: nothing to post (no longer ready for export, voided).
    RecordsSkipped,
    /// Poster: Brex `updated_at` → voucher created, milliseconds.
    PostLatency,
    /// IFS requests sent, token requests included. `Kind`: `token`, `read`, `write`, `batch`.
    IfsRequests,
    /// IFS answers 412 (a stale ETag), `$batch` change sets included.
    Ifs412,
    /// IFS answers 429.
    Ifs429,
    /// IFS access tokens fetched.
    IfsTokenFetches,
    /// Poster: 1 for each batch posted through `$batch`, 0 step by step (the average is the share on `$batch`).
    IfsBatchFlow,
    /// Brex API requests sent (token refreshes not counted: they are rare and leased).
    BrexRequests,
    /// Brex answers 429.
    Brex429,
    /// Webhook deliveries. `Outcome`: `accepted` or `refused`; `Status`: the HTTP status answered.
    WebhookDeliveries,
    /// Poller: ids put on the queue. `Source`: the feed (`accounting_records:CARD`, `…:REIMBURSEMENT`,
    /// `…:BILL`, `expenses`).
    PollerEnqueued,
    /// Poller: seconds from the time up to which the feed is read completely (its last completed paging) to
    /// the end of the run. `Source`.
    PollerLag,
    /// Poller: warnings of the latest IFS reference refresh (the mapping against IFS's reference data).
    ReferenceWarnings,
    /// Poller, once a day: differences between Brex, the table and IFS the reconciliation found (0 included).
    /// `Kind`: `missing_voucher`, `extra_voucher`, `amount_mismatch`.
    ReconcileDifferences,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
    Seconds,
    None,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::Milliseconds => "Milliseconds",
            Self::Seconds => "Seconds",
            Self::None => "None",
        }
    }
}

/// How values of one metric in one flush combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aggregate {
    /// Counters: one summed value per line.
    Sum,
    /// Latencies, lags, the flow in use: every value, so CloudWatch computes percentiles and averages.
    Each,
}

impl Metric {
    pub const ALL: [Metric; 19] = [
        Self::RecordsPosted,
        Self::RecordsAlreadyPosted,
        Self::RecordsFailed,
        Self::RecordsHeld,
        Self::RecordsRetried,
        Self::RecordsSkipped,
        Self::PostLatency,
        Self::IfsRequests,
        Self::Ifs412,
        Self::Ifs429,
        Self::IfsTokenFetches,
        Self::IfsBatchFlow,
        Self::BrexRequests,
        Self::Brex429,
        Self::WebhookDeliveries,
        Self::PollerEnqueued,
        Self::PollerLag,
        Self::ReferenceWarnings,
        Self::ReconcileDifferences,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::RecordsPosted => "RecordsPosted",
            Self::RecordsAlreadyPosted => "RecordsAlreadyPosted",
            Self::RecordsFailed => "RecordsFailed",
            Self::RecordsHeld => "RecordsHeld",
            Self::RecordsRetried => "RecordsRetried",
            Self::RecordsSkipped => "RecordsSkipped",
            Self::PostLatency => "PostLatency",
            Self::IfsRequests => "IfsRequests",
            Self::Ifs412 => "Ifs412",
            Self::Ifs429 => "Ifs429",
            Self::IfsTokenFetches => "IfsTokenFetches",
            Self::IfsBatchFlow => "IfsBatchFlow",
            Self::BrexRequests => "BrexRequests",
            Self::Brex429 => "Brex429",
            Self::WebhookDeliveries => "WebhookDeliveries",
            Self::PollerEnqueued => "PollerEnqueued",
            Self::PollerLag => "PollerLag",
            Self::ReferenceWarnings => "ReferenceWarnings",
            Self::ReconcileDifferences => "ReconcileDifferences",
        }
    }

    pub fn unit(self) -> Unit {
        match self {
            Self::PostLatency => Unit::Milliseconds,
            Self::PollerLag => Unit::Seconds,
            Self::IfsBatchFlow => Unit::None,
            _ => Unit::Count,
        }
    }

    fn aggregate(self) -> Aggregate {
        match self {
            Self::PostLatency | Self::PollerLag | Self::IfsBatchFlow => Aggregate::Each,
            _ => Aggregate::Sum,
        }
    }
}

/// Extra dimensions of one recording, beside `Function`: few, and with few values each.
pub type Dimensions = Vec<(&'static str, String)>;

/// Where flushed lines go: where the logs go (stdout in Lambda, which hands it to CloudWatch Logs), or a
/// test's capture.
type Sink = Box<dyn Fn(&str) + Send + Sync>;

static SINK: OnceLock<Sink> = OnceLock::new();

/// Sends every flushed line to `sink`; the first call wins. [`crate::telemetry`] sets it beside the log
/// writer; until something does, flushed lines are dropped (a test binary without a log capture).
pub fn set_sink(sink: impl Fn(&str) + Send + Sync + 'static) {
    let _ = SINK.set(Box::new(sink));
}

fn write_line(line: &str) {
    if let Some(sink) = SINK.get() {
        sink(line);
    }
}

/// One function's recorder. Clones share it (the services and the clients they use record into the same
/// one); [`Metrics::default`] records nothing (the operator CLI, unit tests).
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    namespace: String,
    function: &'static str,
    values: Mutex<BTreeMap<(Dimensions, Metric), Vec<f64>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Some(inner) => write!(f, "Metrics({}/{})", inner.namespace, inner.function),
            None => f.write_str("Metrics(off)"),
        }
    }
}

impl Metrics {
    pub fn new(namespace: impl Into<String>, function: &'static str) -> Self {
        Self { inner: Some(Arc::new(Inner { namespace: namespace.into(), function, values: Mutex::default() })) }
    }

    /// Adds `n` to a counter.
    pub fn count(&self, metric: Metric, n: u64, dimensions: Dimensions) {
        if n > 0 {
            self.record(metric, n as f64, dimensions);
        }
    }

    /// Records one value (a counter adds it, a latency keeps it).
    pub fn record(&self, metric: Metric, value: f64, mut dimensions: Dimensions) {
        let Some(inner) = &self.inner else { return };
        if !value.is_finite() {
            return;
        }
        dimensions.sort();
        let mut values = inner.values.lock().unwrap_or_else(|e| e.into_inner());
        values.entry((dimensions, metric)).or_default().push(value);
    }

    /// Writes what was recorded since the last flush, one line per set of dimension values, and forgets it.
    pub fn flush(&self) {
        for line in self.take_lines(Utc::now()) {
            write_line(&line);
        }
    }

    /// The EMF lines of what was recorded since the last flush, stamped `now`; recorded values are forgotten.
    pub fn take_lines(&self, now: DateTime<Utc>) -> Vec<String> {
        let Some(inner) = &self.inner else { return Vec::new() };
        let values = std::mem::take(&mut *inner.values.lock().unwrap_or_else(|e| e.into_inner()));
        let mut lines: BTreeMap<Dimensions, Vec<(Metric, Vec<f64>)>> = BTreeMap::new();
        for ((dimensions, metric), values) in values {
            let values = match metric.aggregate() {
                Aggregate::Sum => vec![values.iter().sum()],
                Aggregate::Each => values,
            };
            lines.entry(dimensions).or_default().push((metric, values));
        }
        let mut out = Vec::new();
        for (dimensions, metrics) in lines {
            // A metric with more values than one line takes goes on in further lines.
            let mut round = 0;
            loop {
                let chunk: Vec<(Metric, &[f64])> = metrics
                    .iter()
                    .filter_map(|(m, v)| {
                        let start = round * MAX_VALUES_PER_LINE;
                        (start < v.len()).then(|| (*m, &v[start..v.len().min(start + MAX_VALUES_PER_LINE)]))
                    })
                    .collect();
                if chunk.is_empty() {
                    break;
                }
                out.push(inner.line(now, &dimensions, &chunk));
                round += 1;
            }
        }
        out
    }
}

impl Inner {
    fn line(&self, now: DateTime<Utc>, dimensions: &Dimensions, metrics: &[(Metric, &[f64])]) -> String {
        let mut sets = vec![vec!["Function"]];
        sets.extend(dimensions.iter().map(|(key, _)| vec!["Function", *key]));
        let definitions: Vec<Value> =
            metrics.iter().map(|(m, _)| json!({"Name": m.name(), "Unit": m.unit().as_str()})).collect();
        let mut root = Map::new();
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": now.timestamp_millis(),
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": sets,
                    "Metrics": definitions,
                }],
            }),
        );
        root.insert("Function".into(), json!(self.function));
        for (key, value) in dimensions {
            root.insert((*key).into(), json!(value));
        }
        for (metric, values) in metrics {
            let value = match values {
                [one] => json!(one),
                many => json!(many),
            };
            root.insert(metric.name().into(), value);
        }
        Value::Object(root).to_string()
    }
}

/// One dimension, for [`Metrics::record`].
pub fn dim(key: &'static str, value: impl Into<String>) -> Dimensions {
    vec![(key, value.into())]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Value {
        serde_json::from_str(line).unwrap_or(Value::Null)
    }

    #[test]
    fn counters_sum_and_each_dimension_value_gets_its_line() {
        let metrics = Metrics::new("NS", "poster");
        metrics.count(Metric::RecordsPosted, 2, dim("Company", "10"));
        metrics.count(Metric::RecordsPosted, 3, dim("Company", "10"));
        metrics.count(Metric::RecordsPosted, 1, dim("Company", "20"));
        metrics.count(Metric::RecordsRetried, 4, Vec::new());
        metrics.count(Metric::RecordsSkipped, 0, Vec::new());
        let now = DateTime::from_timestamp_millis(1_700_000_000_000).unwrap_or_default();
        let lines: Vec<Value> = metrics.take_lines(now).iter().map(|l| parse(l)).collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        let plain = &lines[0];
        assert_eq!(plain["RecordsRetried"], json!(4.0));
        assert_eq!(plain["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([["Function"]]));
        assert!(plain.get("RecordsSkipped").is_none(), "a zero count is not written");
        let ten = lines.iter().find(|l| l["Company"] == "10").cloned().unwrap_or_default();
        assert_eq!(ten["RecordsPosted"], json!(5.0));
        assert_eq!(ten["Function"], "poster");
        assert_eq!(ten["_aws"]["Timestamp"], json!(1_700_000_000_000i64));
        assert_eq!(ten["_aws"]["CloudWatchMetrics"][0]["Namespace"], "NS");
        assert_eq!(ten["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([["Function"], ["Function", "Company"]]));
        assert_eq!(ten["_aws"]["CloudWatchMetrics"][0]["Metrics"], json!([{"Name": "RecordsPosted", "Unit": "Count"}]));
        assert!(metrics.take_lines(now).is_empty(), "a flush forgets what it wrote");
    }

    #[test]
    fn latencies_keep_every_value_in_lines_of_at_most_100() {
        let metrics = Metrics::new("NS", "poster");
        for ms in 0..150 {
            metrics.record(Metric::PostLatency, f64::from(ms), Vec::new());
        }
        metrics.record(Metric::IfsBatchFlow, 1.0, Vec::new());
        let lines: Vec<Value> = metrics.take_lines(Utc::now()).iter().map(|l| parse(l)).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["PostLatency"].as_array().map(Vec::len), Some(100));
        assert_eq!(lines[1]["PostLatency"].as_array().map(Vec::len), Some(50));
        assert_eq!(lines[0]["IfsBatchFlow"], json!(1.0));
        assert!(lines[1].get("IfsBatchFlow").is_none());
        let units = &lines[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"];
        assert!(units.as_array().is_some_and(|u| u.contains(&json!({"Name": "PostLatency", "Unit": "Milliseconds"}))));
    }

    #[test]
    fn the_default_recorder_records_nothing() {
        let metrics = Metrics::default();
        metrics.count(Metric::RecordsPosted, 1, Vec::new());
        assert!(metrics.take_lines(Utc::now()).is_empty());
    }

    #[test]
    fn names_are_unique() {
        let names: std::collections::BTreeSet<_> = Metric::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(names.len(), Metric::ALL.len());
    }
}
