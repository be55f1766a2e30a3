//! What `template.yaml`'s dashboard and alarms read: every metric they name, so tests can hold them to the
//! catalogue the functions emit (`shared::metrics::Metric`). A widget or alarm naming a metric nobody emits
//! shows an empty graph or never fires, and nothing else would notice.
//!
//! CloudFormation tags (`!Sub`, `!Ref`, …) stay tagged values in `serde_yaml`; `!Sub` strings are rendered
//! here with stand-in values (a `Number` parameter becomes its default, so the dashboard body stays JSON).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;
use shared::metrics::Metric;

/// The repository's template.
pub const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml");

/// The functions' `Function` dimension values.
pub const FUNCTIONS: [&str; 3] = ["webhook", "poller", "poster"];

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template.yaml: {0}")]
    Read(#[from] std::io::Error),
    #[error("template.yaml is not YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("the dashboard body is not JSON after substitution: {0}")]
    Json(#[from] serde_json::Error),
    #[error("template.yaml: {0}")]
    Shape(String),
}

/// Reads and parses the repository's template.
pub fn load() -> Result<Yaml, TemplateError> {
    Ok(serde_yaml::from_str(&std::fs::read_to_string(PATH)?)?)
}

/// One metric read by a dashboard widget or an alarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricUse {
    pub namespace: String,
    pub name: String,
    pub dimensions: BTreeMap<String, String>,
    /// The widget title or the alarm's logical id.
    pub used_by: String,
}

/// Renders a `!Sub` template with stand-ins: pseudo parameters get fixed values, a `Number` parameter its
/// default, any other parameter or resource its own name; `${!X}` is the literal `${X}`.
pub fn substitute(t: &Yaml, text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = &after[..end];
        match name.strip_prefix('!') {
            Some(literal) => {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            }
            None => out.push_str(&stand_in(t, name)),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

fn stand_in(t: &Yaml, name: &str) -> String {
    match name {
        "AWS::StackName" => "stack".into(),
        "AWS::Region" => "eu-west-1".into(),
        "AWS::AccountId" => "123456789012".into(),
        "AWS::Partition" => "aws".into(),
        "AWS::URLSuffix" => "amazonaws.com".into(),
        _ => {
            let parameter = &t["Parameters"][name];
            match (parameter["Type"].as_str(), &parameter["Default"]) {
                (Some("Number"), Yaml::Number(n)) => n.to_string(),
                (Some("Number"), Yaml::String(n)) => n.clone(),
                _ => name.replace('.', "-"),
            }
        }
    }
}

/// A plain string, or a `!Sub` / `Fn::Sub` string rendered with [`substitute`].
pub fn text_of(t: &Yaml, v: &Yaml) -> Option<String> {
    let rendered = |arg: &Yaml| match arg {
        Yaml::String(s) => Some(substitute(t, s)),
        // The list form: the template first, then its own variables (rendered as stand-ins too).
        Yaml::Sequence(parts) => parts.first().and_then(Yaml::as_str).map(|s| substitute(t, s)),
        _ => None,
    };
    match v {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Tagged(tagged) if tagged.tag == "Sub" => rendered(&tagged.value),
        Yaml::Mapping(m) if m.len() == 1 => m.get("Fn::Sub").and_then(rendered),
        _ => None,
    }
}

/// `(logical id, resource)` of every resource of one type.
pub fn resources_of<'a>(t: &'a Yaml, kind: &str) -> Vec<(String, &'a Yaml)> {
    t["Resources"]
        .as_mapping()
        .into_iter()
        .flatten()
        .filter(|(_, r)| r["Type"].as_str() == Some(kind))
        .filter_map(|(k, r)| Some((k.as_str()?.to_owned(), r)))
        .collect()
}

/// The namespace the functions emit into (their `METRICS_NAMESPACE`, rendered); every function must agree.
pub fn own_namespace(t: &Yaml) -> Result<String, TemplateError> {
    let mut seen = BTreeSet::new();
    for (name, f) in resources_of(t, "AWS::Serverless::Function") {
        let value = &f["Properties"]["Environment"]["Variables"]["METRICS_NAMESPACE"];
        let ns = text_of(t, value).ok_or_else(|| TemplateError::Shape(format!("{name}: no METRICS_NAMESPACE")))?;
        seen.insert(ns);
    }
    match seen.len() {
        1 => Ok(seen.into_iter().next().unwrap_or_default()),
        _ => Err(TemplateError::Shape(format!("the functions disagree on METRICS_NAMESPACE: {seen:?}"))),
    }
}

/// The dashboard's body, rendered and parsed; the template holds exactly one dashboard.
pub fn dashboard_body(t: &Yaml) -> Result<Json, TemplateError> {
    let dashboards = resources_of(t, "AWS::CloudWatch::Dashboard");
    let [(name, dashboard)] = dashboards.as_slice() else {
        return Err(TemplateError::Shape(format!("{} dashboards, expected one", dashboards.len())));
    };
    let body = text_of(t, &dashboard["Properties"]["DashboardBody"])
        .ok_or_else(|| TemplateError::Shape(format!("{name}: DashboardBody is neither a string nor !Sub")))?;
    Ok(serde_json::from_str(&body)?)
}

/// Every metric the dashboard's widgets graph. Rows may use `"."` for "as in the row above"; expression rows
/// name no metric themselves, and a `SEARCH` is refused (the names it matches cannot be checked here).
pub fn dashboard_metrics(body: &Json) -> Result<Vec<MetricUse>, String> {
    let widgets = body["widgets"].as_array().ok_or("the body has no widgets array")?;
    let mut out = Vec::new();
    for (i, widget) in widgets.iter().enumerate() {
        let title = widget["properties"]["title"].as_str().map_or_else(|| format!("widget {i}"), str::to_owned);
        let Some(rows) = widget["properties"]["metrics"].as_array() else { continue };
        let mut previous: Vec<String> = Vec::new();
        for row in rows {
            let items = row.as_array().ok_or_else(|| format!("{title}: a metrics row is not an array"))?;
            let (names, options) = match items.last() {
                Some(Json::Object(options)) => (&items[..items.len() - 1], Some(options)),
                _ => (&items[..], None),
            };
            if names.is_empty() {
                let expression = options.and_then(|o| o.get("expression")).and_then(Json::as_str);
                match expression {
                    Some(e) if e.to_uppercase().contains("SEARCH(") => {
                        return Err(format!("{title}: SEARCH expressions name metrics this check cannot see"));
                    }
                    Some(_) => continue,
                    None => return Err(format!("{title}: a row with neither a metric nor an expression")),
                }
            }
            let mut parts = Vec::with_capacity(names.len());
            for (k, item) in names.iter().enumerate() {
                let part = item.as_str().ok_or_else(|| format!("{title}: {item} in a metrics row"))?;
                parts.push(match part {
                    "." => previous.get(k).cloned().ok_or_else(|| format!("{title}: \".\" with nothing above"))?,
                    "..." => return Err(format!("{title}: \"...\" rows are not supported by this check")),
                    other => other.to_owned(),
                });
            }
            if parts.len() < 2 || parts.len() % 2 != 0 {
                return Err(format!("{title}: row {parts:?} is not namespace, name, then dimension pairs"));
            }
            let dimensions = parts[2..].chunks(2).map(|kv| (kv[0].clone(), kv[1].clone())).collect();
            out.push(MetricUse {
                namespace: parts[0].clone(),
                name: parts[1].clone(),
                dimensions,
                used_by: title.clone(),
            });
            previous = parts;
        }
    }
    Ok(out)
}

/// Every metric an alarm reads: the single metric of a plain alarm, each `MetricStat` of a metric-math one.
pub fn alarm_metrics(t: &Yaml) -> Result<Vec<MetricUse>, TemplateError> {
    let mut out = Vec::new();
    for (name, alarm) in resources_of(t, "AWS::CloudWatch::Alarm") {
        let p = &alarm["Properties"];
        let metrics: Vec<&Yaml> = match p["Metrics"].as_sequence() {
            Some(list) => {
                list.iter().filter(|m| !m["MetricStat"].is_null()).map(|m| &m["MetricStat"]["Metric"]).collect()
            }
            None => vec![p],
        };
        if metrics.is_empty() {
            return Err(TemplateError::Shape(format!("{name}: an alarm that reads no metric")));
        }
        for m in metrics {
            let text = |key: &str| {
                text_of(t, &m[key]).ok_or_else(|| TemplateError::Shape(format!("{name}: {key} is not a string")))
            };
            let dimensions = m["Dimensions"]
                .as_sequence()
                .into_iter()
                .flatten()
                .map(|d| {
                    let value = text_of(t, &d["Value"])
                        .unwrap_or_else(|| serde_yaml::to_string(&d["Value"]).unwrap_or_default().trim().to_owned());
                    (d["Name"].as_str().unwrap_or_default().to_owned(), value)
                })
                .collect();
            out.push(MetricUse {
                namespace: text("Namespace")?,
                name: text("MetricName")?,
                dimensions,
                used_by: name.clone(),
            });
        }
    }
    Ok(out)
}

/// What is wrong with these uses: a name in the connector's namespace that is not in [`Metric::ALL`], a
/// namespace that is neither the connector's nor AWS's, or a dimension set the functions never publish
/// (`[Function]` or `[Function, X]`, with `Function` one of [`FUNCTIONS`]).
pub fn catalogue_problems(uses: &[MetricUse], own_namespace: &str) -> Vec<String> {
    let known: BTreeSet<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
    let mut problems = Vec::new();
    for u in uses {
        let at = format!("{} ({}/{})", u.used_by, u.namespace, u.name);
        if u.namespace.starts_with("AWS/") {
            continue;
        }
        if u.namespace != own_namespace {
            problems.push(format!("{at}: namespace is neither AWS/… nor the functions' {own_namespace}"));
            continue;
        }
        if !known.contains(u.name.as_str()) {
            problems.push(format!("{at}: no function emits a metric of that name"));
        }
        match u.dimensions.get("Function") {
            Some(f) if FUNCTIONS.contains(&f.as_str()) => {}
            Some(f) => problems.push(format!("{at}: Function={f} is not one of {FUNCTIONS:?}")),
            None => problems.push(format!("{at}: every metric is published with a Function dimension")),
        }
        if u.dimensions.len() > 2 {
            problems.push(format!("{at}: dimensions {:?} are never published together", u.dimensions));
        }
    }
    problems
}

/// Every metric name in the connector's own namespace named by the dashboard or by an alarm.
///
/// Panics when the repository's template cannot be read or has no dashboard: it is this repository's own
/// file, and every caller is a test.
pub fn custom_metrics_referenced() -> BTreeSet<String> {
    let t = load().unwrap_or_else(|e| panic!("{e}"));
    let namespace = own_namespace(&t).unwrap_or_else(|e| panic!("{e}"));
    let body = dashboard_body(&t).unwrap_or_else(|e| panic!("{e}"));
    let mut uses = dashboard_metrics(&body).unwrap_or_else(|e| panic!("dashboard: {e}"));
    uses.extend(alarm_metrics(&t).unwrap_or_else(|e| panic!("{e}")));
    uses.into_iter().filter(|u| u.namespace == namespace).map(|u| u.name).collect()
}
