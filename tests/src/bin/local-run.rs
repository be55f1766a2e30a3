//! The whole pipeline on this machine (the README's first command, via `infra/scripts/local-run.sh`):
//! moto with the resources of template.yaml, the Brex and IFS Cloud simulators, the webhook handler behind
//! a local HTTP front (API Gateway v2 events), the poster behind an SQS event-source loop, the example
//! mapping — then a day of a mid-market company's Brex spend, delivered as signed webhooks, and a summary.
//!
//! The same runner targets a real Brex and/or a real IFS Cloud by configuration alone (see [`Targets`]):
//! the functions are then configured with those URLs and credentials, exactly as a deployment would be, and
//! only the AWS side stays local.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use shared::domain::{BrexCredentials, IfsCredentials};
use shared::poller::Poller;
use shared::poster::BatchReport;
use sims::aws::{Moto, Stack, StackSpec, TemplateResources};
use sims::brex::ExportOutcome;
use sims::brex::generator::{GeneratorOptions, RecordGenerator};
use sims::brex::model::AccountingRecord;
use sims::brex::webhook::WebhookDelivery;
use sims::pipeline::{EXAMPLE_MAPPING, IFS_SECRET, Pipeline, PipelineOptions, invoke_webhook};

const TEMPLATE: &str = include_str!("../../../template.yaml");

struct Args {
    keep: bool,
    seed: u64,
    card_expenses: usize,
    /// With a real Brex: how long to poll and post before the summary.
    duration: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { keep: false, seed: 2026, card_expenses: 24, duration: Duration::from_secs(120) };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--keep" => args.keep = true,
            "--seed" => args.seed = it.next().and_then(|v| v.parse().ok()).ok_or("--seed needs a number")?,
            "--card-expenses" => {
                args.card_expenses = it.next().and_then(|v| v.parse().ok()).ok_or("--card-expenses needs a number")?
            }
            "--duration" => {
                let secs: u64 = it.next().and_then(|v| v.parse().ok()).ok_or("--duration needs seconds")?;
                args.duration = Duration::from_secs(secs);
            }
            "-h" | "--help" => {
                println!("local-run [--keep] [--seed N] [--card-expenses N] [--duration SECS]");
                println!("{TARGETS_HELP}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(args)
}

const TARGETS_HELP: &str = "\
targets (environment; unset = the simulator):
  BREX_API_URL + BREX_SECRET_JSON          a real Brex: {\"token\": …} or the OAuth form of docs/contract.md §3
  IFS_URL + IFS_REALM + IFS_SECRET_JSON    a real IFS Cloud: {\"client_id\": …, \"client_secret\": …}
  MAPPING_FILE                             the mapping document (default infra/mapping.example.toml)
  DRY_RUN=true                             build and log proposals, post nothing (advised with a real IFS)
  POLL_SOURCES                             accounting_records (default), expenses, or both";

/// Where the functions send their Brex and IFS calls. Only AWS stays local (moto), as in a deployment whose
/// account is emulated.
struct Targets {
    /// (BREX_API_URL, credentials JSON)
    brex: Option<(String, String)>,
    /// (IFS_URL, IFS_REALM, credentials JSON)
    ifs: Option<(String, String, String)>,
    mapping: String,
    dry_run: bool,
    poll_sources: Option<String>,
}

impl Targets {
    fn from_env() -> Result<Self, String> {
        let var = |name: &str| std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let brex = match (var("BREX_API_URL"), var("BREX_SECRET_JSON")) {
            (Some(url), Some(secret)) => {
                // Checked here so a typo fails before anything starts, without echoing the secret.
                serde_json::from_str::<BrexCredentials>(&secret)
                    .map_err(|e| format!("BREX_SECRET_JSON is not Brex credentials (docs/contract.md §3): {e}"))?;
                Some((url, secret))
            }
            (None, None) => None,
            _ => return Err("a real Brex needs both BREX_API_URL and BREX_SECRET_JSON".into()),
        };
        let ifs = match (var("IFS_URL"), var("IFS_REALM"), var("IFS_SECRET_JSON")) {
            (Some(url), Some(realm), Some(secret)) => {
                serde_json::from_str::<IfsCredentials>(&secret)
                    .map_err(|e| format!("IFS_SECRET_JSON is not IFS credentials (docs/contract.md §3): {e}"))?;
                Some((url, realm, secret))
            }
            (None, None, None) => None,
            _ => return Err("a real IFS Cloud needs IFS_URL, IFS_REALM and IFS_SECRET_JSON".into()),
        };
        let mapping = match var("MAPPING_FILE") {
            Some(path) => std::fs::read_to_string(&path).map_err(|e| format!("MAPPING_FILE {path}: {e}"))?,
            None => EXAMPLE_MAPPING.to_owned(),
        };
        let dry_run = match var("DRY_RUN").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => return Err(format!("DRY_RUN must be true or false, not {other:?}")),
        };
        Ok(Self { brex, ifs, mapping, dry_run, poll_sources: var("POLL_SOURCES") })
    }

    /// Both simulators and real posting: the run plays a day of spend and checks every record end to end.
    fn all_simulated(&self) -> bool {
        self.brex.is_none() && self.ifs.is_none() && !self.dry_run
    }
}

fn step(start: Instant, text: &str) {
    println!("[{:>5.1}s] {text}", start.elapsed().as_secs_f64());
}

/// A realistic day: card spend across departments, plus one of each awkward case.
fn day_of_spend(seed: u64, card_expenses: usize) -> Vec<(&'static str, AccountingRecord)> {
    let base = GeneratorOptions {
        refund_rate: 0.0,
        reimbursement_rate: 0.0,
        foreign_rate: 0.0,
        missing_gl_rate: 0.0,
        ..GeneratorOptions::default()
    };
    let one = |seed: u64, options: GeneratorOptions| {
        RecordGenerator::with_options(seed, GeneratorOptions { count: 1, ..options }).batch()
    };
    let mut day: Vec<(&'static str, AccountingRecord)> =
        RecordGenerator::with_options(seed, GeneratorOptions { count: card_expenses, ..base.clone() })
            .batch()
            .into_iter()
            .map(|r| ("card expense", r))
            .collect();
    day.extend(one(seed + 1, GeneratorOptions { refund_rate: 1.0, ..base.clone() }).into_iter().map(|r| ("refund", r)));
    day.extend(
        one(seed + 2, GeneratorOptions { foreign_rate: 1.0, entity_rate: 0.0, ..base.clone() })
            .into_iter()
            .map(|r| ("foreign currency", r)),
    );
    day.extend(
        one(seed + 3, GeneratorOptions { reimbursement_rate: 1.0, ..base.clone() })
            .into_iter()
            .map(|r| ("reimbursement", r)),
    );
    day.extend(
        one(seed + 4, GeneratorOptions { missing_gl_rate: 1.0, ..base.clone() })
            .into_iter()
            .map(|r| ("no GL coding", r)),
    );
    // Exported in Brex, but the webhook never arrives: the poller's schedule must find these.
    day.extend(
        RecordGenerator::with_options(seed + 5, GeneratorOptions { count: 2, ..base })
            .batch()
            .into_iter()
            .map(|r| (WEBHOOK_MISSED, r)),
    );
    day
}

const WEBHOOK_MISSED: &str = "webhook missed";

/// The EventBridge schedule, compressed: one poller run every `every`.
async fn poller_timer(
    poller: Poller,
    every: Duration,
    stop: Arc<AtomicBool>,
    enqueued: Arc<AtomicU64>,
    runs: Arc<AtomicU64>,
) {
    while !stop.load(Ordering::Relaxed) {
        let report = shared::lambda::poller::run(&poller, chrono::Utc::now() + chrono::Duration::seconds(60)).await;
        runs.fetch_add(1, Ordering::Relaxed);
        enqueued.fetch_add(report.enqueued() as u64, Ordering::Relaxed);
        if report.has_errors() {
            eprintln!("poller: {report:?}");
        }
        tokio::time::sleep(every).await;
    }
}

#[derive(Clone)]
struct Front {
    pipeline: Arc<Pipeline>,
    deliveries: Arc<AtomicU64>,
}

async fn webhook_route(State(front): State<Front>, headers: HeaderMap, body: Bytes) -> StatusCode {
    front.deliveries.fetch_add(1, Ordering::Relaxed);
    let headers: Vec<(String, String)> =
        headers.iter().filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_owned(), v.to_owned()))).collect();
    let delivery = WebhookDelivery { msg_id: String::new(), timestamp: 0, headers, body: body.to_vec() };
    StatusCode::from_u16(invoke_webhook(&front.pipeline.webhook, delivery).await)
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Lambda's SQS event source for the poster: long-poll, invoke, delete what succeeded.
async fn sqs_loop(
    pipeline: Arc<Pipeline>,
    stop: Arc<AtomicBool>,
    invocations: Arc<AtomicU64>,
    reports: Arc<Mutex<Vec<BatchReport>>>,
) {
    while !stop.load(Ordering::Relaxed) {
        match pipeline.source.receive(10, 1).await {
            Ok(Some(batch)) => {
                invocations.fetch_add(1, Ordering::Relaxed);
                match pipeline.invoke_poster_reported(&batch.event).await {
                    Ok((failed, report)) => {
                        reports.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(report);
                        if let Err(e) = pipeline.source.settle(&batch, &failed).await {
                            eprintln!("sqs loop: {e}");
                        }
                    }
                    Err(e) => eprintln!("sqs loop: {e}"),
                }
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("sqs loop: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        println!("local run failed: {e} (logs: stderr)");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let args = parse_args()?;
    let targets = Targets::from_env()?;
    let start = Instant::now();
    shared::telemetry::init_json_logging_to_stderr();

    let moto = Moto::get();
    step(start, &format!("AWS stand-in: moto at {}", moto.endpoint()));
    let resources = TemplateResources::from_template(TEMPLATE)?;
    if resources.key_schema != ["pk", "sk"] || resources.ttl_attribute != "expires_at" {
        return Err(format!("template.yaml table differs from what the code expects: {resources:?}"));
    }
    let brex_secret = targets.brex.as_ref().map_or(r#"{"token":"bxt_sim_user_token"}"#, |(_, s)| s.as_str());
    let ifs_secret = targets.ifs.as_ref().map_or(IFS_SECRET, |(_, _, s)| s.as_str());
    let stack = Stack::create(
        &moto,
        StackSpec {
            name: "local",
            brex_secret,
            ifs_secret,
            visibility_timeout: resources.visibility_timeout,
            max_receive_count: resources.max_receive_count,
        },
    )
    .await?;
    step(
        start,
        &format!(
            "created from template.yaml: queue (visibility {} s, DLQ after {} receives), table (pk/sk, TTL {}), 2 secrets",
            resources.visibility_timeout, resources.max_receive_count, resources.ttl_attribute
        ),
    );

    let mut poster_env = Vec::new();
    if targets.dry_run {
        poster_env.push(("DRY_RUN".to_owned(), "true".to_owned()));
    }
    let options = PipelineOptions {
        name: "local".into(),
        mapping: Some(targets.mapping.clone()),
        brex_url: targets.brex.as_ref().map(|(url, _)| url.clone()),
        ifs_target: targets.ifs.as_ref().map(|(url, realm, _)| (url.clone(), realm.clone())),
        poster_env,
        ..PipelineOptions::default()
    };
    let pipeline = Arc::new(Pipeline::start_on(stack, options).await?);
    let brex_at = match &targets.brex {
        Some((url, _)) => format!("Brex: {url} (real; credentials from BREX_SECRET_JSON)"),
        None => format!("Brex simulator at {}", pipeline.brex.base_url()),
    };
    let ifs_at = match &targets.ifs {
        Some((url, realm, _)) => format!("IFS Cloud: {url}, realm {realm} (real)"),
        None => format!("IFS Cloud simulator at {}", pipeline.ifs.base_url()),
    };
    step(start, &format!("{brex_at}; {ifs_at}"));
    step(
        start,
        &format!(
            "mapping loaded (pk=config, sk=mapping){}",
            if targets.dry_run { "; DRY_RUN: nothing is posted" } else { "" }
        ),
    );

    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.map_err(|e| e.to_string())?;
    let webhook_url = format!("http://{}/webhooks/brex", listener.local_addr().map_err(|e| e.to_string())?);
    let front = Front { pipeline: pipeline.clone(), deliveries: Arc::default() };
    let app = Router::new().route("/webhooks/brex", post(webhook_route)).with_state(front.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let stop = Arc::new(AtomicBool::new(false));
    let invocations = Arc::new(AtomicU64::new(0));
    let reports: Arc<Mutex<Vec<BatchReport>>> = Arc::default();
    let poster_loop = tokio::spawn(sqs_loop(pipeline.clone(), stop.clone(), invocations.clone(), reports.clone()));
    step(start, &format!("webhook function behind {webhook_url}; poster function on the SQS event-source loop"));

    let (polled, poller_runs) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let start_poller = || {
        let (pipeline, stop, polled, runs) = (pipeline.clone(), stop.clone(), polled.clone(), poller_runs.clone());
        let sources = targets.poll_sources.clone();
        async move {
            let poller =
                pipeline.poller(&sources.as_deref().map(|s| vec![("POLL_SOURCES", s)]).unwrap_or_default()).await?;
            Ok::<_, String>(tokio::spawn(poller_timer(poller, Duration::from_secs(3), stop, polled, runs)))
        }
    };

    let mut day_ids = Vec::new();
    let mut kinds: BTreeMap<String, &'static str> = BTreeMap::new();
    let poller_task = if targets.brex.is_none() {
        let day = day_of_spend(args.seed, args.card_expenses);
        kinds = day.iter().map(|(k, r)| (r.id.clone(), *k)).collect();
        let records: Vec<AccountingRecord> = day.into_iter().map(|(_, r)| r).collect();
        day_ids = records.iter().map(|r| r.id.clone()).collect();
        let webhook_ids: Vec<String> =
            day_ids.iter().filter(|id| kinds.get(*id) != Some(&WEBHOOK_MISSED)).cloned().collect();
        pipeline.brex.insert_records(records);
        step(start, &format!("Brex: {} accounting records marked READY_FOR_EXPORT by the bookkeeper", day_ids.len()));

        // The bookkeeper exports three times a day: three signed webhooks, sent over HTTP like Brex does.
        for (i, chunk) in webhook_ids.chunks(webhook_ids.len().div_ceil(3)).enumerate() {
            let report = pipeline.brex.send_ready_for_export(&webhook_url, chunk, 0.01).await;
            step(
                start,
                &format!(
                    "webhook {} ({} ids): HTTP {} after {} attempt(s)",
                    i + 1,
                    chunk.len(),
                    report.final_status,
                    report.attempts.len()
                ),
            );
        }
        let task = start_poller().await?;
        step(
            start,
            &format!(
                "poller function on a 3 s timer (the EventBridge schedule); {} webhooks were missed",
                day_ids.len() - webhook_ids.len()
            ),
        );
        task
    } else {
        let task = start_poller().await?;
        step(
            start,
            &format!(
                "poller function on a 3 s timer, reading READY_FOR_EXPORT records from Brex; webhooks reach {webhook_url} \
                 only if you expose it and register it (connector webhook register)"
            ),
        );
        task
    };

    if targets.all_simulated() {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let reported = day_ids.iter().filter(|id| pipeline.brex.export_result(id).is_some()).count();
            if reported == day_ids.len() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("only {reported} of {} records were reported back to Brex in time", day_ids.len()));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        step(start, "every record posted or reported as failed");
    } else {
        // Nothing to check against: stop once a poll has run and the queue is empty, or after --duration.
        let deadline = Instant::now() + args.duration;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let idle = poller_runs.load(Ordering::Relaxed) > 0
                && pipeline.stack.queue_depth(&pipeline.stack.queue_url).await == 0;
            if idle || Instant::now() > deadline {
                break;
            }
        }
        step(start, "queue drained (or --duration reached)");
    }

    let intake = Intake {
        deliveries: front.deliveries.load(Ordering::Relaxed),
        poller_runs: poller_runs.load(Ordering::Relaxed),
        polled: polled.load(Ordering::Relaxed),
        invocations: invocations.load(Ordering::Relaxed),
    };
    if targets.all_simulated() {
        summary(&pipeline, &day_ids, &kinds, &intake);
    } else {
        let reports = reports.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        report_summary(&reports, &kinds, &intake, targets.dry_run);
    }

    if args.keep {
        println!();
        println!("--keep: still running. Poke it:");
        println!(
            "  webhook:      POST {webhook_url}   (signed with the secret from GET {}/v1/webhooks/secrets)",
            pipeline.brex.base_url()
        );
        println!(
            "  Brex sim:     curl {}/_sim/counters   (also /_sim/records, POST /_sim/generate {{\"count\":5}})",
            pipeline.brex.base_url()
        );
        println!("  IFS sim:      curl {}/_sim/vouchers   (also /_sim/counters)", pipeline.ifs.base_url());
        println!(
            "  AWS (moto):   AWS_ENDPOINT_URL={} aws sqs get-queue-attributes --queue-url {} --attribute-names All",
            pipeline.stack.sdk.endpoint_url().unwrap_or_default(),
            pipeline.stack.queue_url
        );
        println!("Ctrl-C to stop.");
        let _ = tokio::signal::ctrl_c().await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = poster_loop.await;
    let _ = poller_task.await;
    Ok(())
}

/// The summary when a real system is involved (or nothing is posted): what the poster did, from its reports.
fn report_summary(reports: &[BatchReport], kinds: &BTreeMap<String, &'static str>, intake: &Intake, dry_run: bool) {
    let mut outcome: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut proposals = 0;
    for report in reports {
        proposals += report.proposals.len();
        let rows = [
            ("posted", &report.posted),
            ("already posted", &report.already_posted),
            ("failed", &report.failed),
            ("skipped", &report.skipped),
            ("retrying", &report.retry),
        ];
        for (what, subjects) in rows {
            for (subject, detail) in subjects {
                // Later batches supersede earlier ones (a retry that later posted).
                outcome.insert(subject.to_string(), (what.to_owned(), detail.clone()));
            }
        }
    }
    println!();
    println!("=== summary ==========================================================================");
    println!(
        "webhook deliveries {}; poller runs {} enqueued {}; poster invocations {}",
        intake.deliveries, intake.poller_runs, intake.polled, intake.invocations
    );
    if dry_run {
        println!("DRY_RUN: {proposals} proposal(s) built and logged (JSON log), nothing posted or reported");
    }
    for (subject, (what, detail)) in &outcome {
        println!("{subject:<34} {:<17} {what:<15} {detail}", kinds.get(subject).copied().unwrap_or(""));
    }
    let count = |w: &str| outcome.values().filter(|(what, _)| what == w).count();
    println!();
    println!(
        "posted {} · already posted {} · failed {} · skipped {} · still retrying {}",
        count("posted"),
        count("already posted"),
        count("failed"),
        count("skipped"),
        count("retrying")
    );
    println!("======================================================================================");
}

struct Intake {
    deliveries: u64,
    poller_runs: u64,
    polled: u64,
    invocations: u64,
}

fn summary(pipeline: &Pipeline, ids: &[String], kinds: &BTreeMap<String, &'static str>, intake: &Intake) {
    let by_ref = pipeline.vouchers_by_reference();
    let ifs = pipeline.ifs.counters();
    let brex = pipeline.brex.counters();
    println!();
    println!("=== summary ==========================================================================");
    println!(
        "records received      {} ({} webhook deliveries; {} poller runs enqueued {}; {} poster invocations)",
        ids.len(),
        intake.deliveries,
        intake.poller_runs,
        intake.polled,
        intake.invocations
    );
    println!();
    println!(
        "{:<34} {:<17} {:>12}  {:<14} rows (account/cost centre debit|credit)",
        "Brex record", "kind", "amount", "IFS voucher"
    );
    let mut posted = 0;
    let mut failures = Vec::new();
    for id in ids {
        let record = pipeline.brex.record(id);
        let amount = record.as_ref().map(|r| format!("{} {}", r.amount.amount, r.amount.currency)).unwrap_or_default();
        match (by_ref.get(id).and_then(|v| v.first()), pipeline.brex.export_result(id).map(|r| r.outcome)) {
            (Some(v), _) => {
                posted += 1;
                let rows: Vec<String> = v
                    .rows
                    .iter()
                    .map(|r| {
                        let side = match (r.currency_debet_amount, r.currency_credit_amount) {
                            (Some(d), _) => format!("D {d}"),
                            (_, Some(c)) => format!("C {c}"),
                            _ => String::new(),
                        };
                        format!(
                            "{}{} {side}",
                            r.account,
                            r.code_b.as_deref().map(|b| format!("/{b}")).unwrap_or_default()
                        )
                    })
                    .collect();
                let key = format!("{}-{}-{}-{}", v.company, v.accounting_year, v.voucher_type, v.voucher_no);
                println!(
                    "{id:<34} {:<17} {amount:>12}  {key:<14} {}",
                    kinds.get(id).copied().unwrap_or(""),
                    rows.join(", ")
                );
            }
            (None, Some(ExportOutcome::Failure { error_message })) => failures.push((id.clone(), error_message)),
            (None, other) => failures.push((id.clone(), format!("not posted ({other:?})"))),
        }
    }
    println!();
    println!("proposals created in IFS   {posted} (vouchers awaiting approval in the hold table)");
    println!("failures                   {}", failures.len());
    for (id, why) in &failures {
        println!("  {id} ({}): {why}", kinds.get(id).copied().unwrap_or(""));
    }
    println!();
    println!(
        "IFS requests per record    {:.2} ({} requests, {} token fetches)",
        ifs.total_requests as f64 / ids.len() as f64,
        ifs.total_requests,
        ifs.token_fetches
    );
    println!("IFS 412 / 429              {} / {}", ifs.status_412, ifs.status_429);
    println!("IFS mutations w/o If-Match {}", ifs.mutations_without_if_match);
    println!("Brex requests              {} (429s: {})", brex.total_requests, brex.rate_limited);
    println!("======================================================================================");
}
