//! The chaos run: N records reach the real connector at once by webhook (each event delivered 1–3
//! times, out of order, some re-sent under a new webhook id, some never sent) and by the poller, while several
//! poster loops drain one queue and faults strike every boundary. At the end it counts what IFS and Brex hold
//! and prints one table: records, vouchers, duplicates, lost, DLQ entries with their reasons, faults by kind.
//!
//! Everything runs in one process on moto and the two simulators, through the same service builders the
//! Lambda binaries use. Time is compressed the same way for every setting (see [`ChaosOptions`]), except the
//! SQS visibility timeout, which is deliberately shorter than the poster's invocation timeout so that slow
//! batches are redelivered to another poster while they still run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::SqsEvent;
use chrono::Utc;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use shared::aws::DynamoStore;
use shared::config::{PollerConfig, PosterConfig, WebhookConfig};
use shared::domain::WorkItem;
use shared::lambda::build;
use shared::poster::{BatchReport, Message, Poster};
use shared::webhook::WebhookService;
use tokio::task::JoinHandle;

use crate::aws::{Moto, ReceivedBatch, SqsEventSource, Stack, StackSpec};
use crate::brex::generator::{GeneratorOptions, RecordGenerator};
use crate::brex::webhook::{TransportFuture, WebhookDelivery};
use crate::brex::{BrexSim, BrexSimConfig, ExportOutcome, Faults, OAuthClient, ReviewStatus};
use crate::ifs::{IfsFaults, IfsSim, IfsSimConfig};
use crate::pipeline::{EXAMPLE_MAPPING, IFS_SECRET, invoke_webhook};

/// The poster's answer when `Begin` finds another invocation's unexpired claim (a conditional-write race).
const IN_PROGRESS_REASON: &str = "another invocation is posting it";

/// Knobs of one run. Defaults are the CI run's shape; `n` and `seed` are what the script varies.
///
/// Timing: the poster keeps the template's 60 s timeout (and the product's 30 s lease margin, so a dead
/// invocation's claims last 90 s), but the visibility timeout is 8 s instead of 360 s, so any batch slower
/// than that is received again by another poster while it still runs. Production's DLQ comes after 5 × 360 s
/// = 30 min, many dead leases; with 8 s visibility the same margin needs more receives, hence
/// `max_receive_count` 20 (160 s, still beyond any lease). The batch size is the template's `PosterBatchSize`
/// set to 4, so a batch of poller messages (50 ids each) fits the timeout on moto.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    pub n: usize,
    pub seed: u64,
    /// Concurrent poster loops (each its own Poster: own clients, token caches, mapping cache).
    pub posters: usize,
    /// Messages per poster invocation (the template's `PosterBatchSize`, 1..=10).
    pub batch_size: i32,
    /// Share of records stripped of every GL coding: they must end as failures reported to Brex.
    pub unmappable_rate: f64,
    /// Share of records whose webhook never comes: only the poller can find them.
    pub webhook_miss_rate: f64,
    /// Share of webhook events Brex sends a second time under a new webhook id.
    pub resend_rate: f64,
    /// Ids per webhook event: 1..=this.
    pub max_event_ids: usize,
    /// Webhook deliveries in flight at once.
    pub webhook_concurrency: usize,
    pub visibility_timeout: u32,
    pub max_receive_count: u32,
    /// The poster Lambda's timeout: an invocation still running then is cut off, as Lambda does.
    pub invocation_timeout: Duration,
    pub poll_interval: Duration,
    /// Posters aborted while a batch is in flight (a new cold instance takes each one's place).
    pub kills: usize,
    /// Mean time between chaos events (storms, bursts, token expiries, kills) …
    pub event_interval: Duration,
    /// … and how many there are: a bounded phase, so the bursts cannot outpace the posters for ever.
    pub events: usize,
    /// Safety limit for the whole run; reaching it is reported, never a pass.
    pub time_limit: Duration,
    /// Brex and IFS faults that are on for the whole run (storms come on top).
    pub ifs_faults: IfsFaults,
    pub brex_faults: Faults,
    /// IFS access token lifetime (the client renews at 80 %; expiries mid-run come on top).
    pub ifs_token_ttl: Duration,
    /// How often a progress line goes to stderr (a run at N = 10 000 takes the better part of an hour).
    pub progress_every: Duration,
}

impl Default for ChaosOptions {
    fn default() -> Self {
        Self {
            n: 1000,
            seed: 7,
            posters: 4,
            batch_size: 4,
            unmappable_rate: 0.01,
            webhook_miss_rate: 0.05,
            resend_rate: 0.1,
            max_event_ids: 25,
            webhook_concurrency: 4,
            visibility_timeout: 8,
            max_receive_count: 20,
            invocation_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_secs(3),
            kills: 2,
            event_interval: Duration::from_millis(1500),
            events: 40,
            time_limit: Duration::from_secs(1200),
            progress_every: Duration::from_secs(30),
            ifs_faults: IfsFaults {
                concurrent_modification_rate: 0.05,
                status_5xx_rate: 0.02,
                status_5xx_codes: vec![502, 503, 504],
                mi_modified_rate: 0.005,
                commit_then_drop_rate: 0.01,
                // Past the IFS client's 30 s request timeout.
                stall_rate: 0.001,
                stall_ms: 31_000,
                ..IfsFaults::default()
            },
            brex_faults: Faults {
                error_rate: 0.02,
                error_statuses: vec![500, 502, 503],
                post_commit_error_rate: 0.01,
                ..Faults::default()
            },
            ifs_token_ttl: Duration::from_secs(20),
        }
    }
}

/// A message that ended in the DLQ, with what we saw happen to it.
#[derive(Debug, Clone, Default)]
pub struct DlqEntry {
    pub message_id: String,
    pub receives: u32,
    pub ids: Vec<String>,
    /// Why the poster handed it back, by reason, with counts.
    pub reasons: BTreeMap<String, u32>,
    /// Of its records: posted (by this or another delivery), failed as expected, neither.
    pub posted: usize,
    pub failed: usize,
    pub lost: usize,
}

impl DlqEntry {
    /// Explained = we saw why it was retried, and none of its records is missing.
    pub fn explained(&self) -> bool {
        !self.reasons.is_empty() && self.lost == 0
    }
}

#[derive(Debug, Clone, Default)]
pub struct ChaosReport {
    pub n: usize,
    pub seed: u64,
    pub posters: usize,
    pub elapsed: Duration,
    /// The safety limit was reached before the run settled.
    pub timed_out: bool,
    pub unmappable: BTreeSet<String>,
    /// Vouchers IFS holds (all of them).
    pub vouchers: usize,
    /// Records that should have been posted and have exactly one voucher.
    pub posted_once: usize,
    /// Reference → number of vouchers, where more than one.
    pub duplicates: BTreeMap<String, usize>,
    /// Postable records with no voucher.
    pub lost: Vec<String>,
    /// Virtual vouchers left in IFS at the end (rows or `CreateVoucher` failed and nothing removed them).
    pub abandoned_virtual_vouchers: usize,
    /// Virtual vouchers the posters removed after such a failure.
    pub virtual_vouchers_removed: u64,
    /// Unmappable records that got a voucher anyway, or vouchers for ids we never created.
    pub unexpected_vouchers: Vec<String>,
    /// Records reported to Brex as failed: id → message.
    pub failures: BTreeMap<String, String>,
    /// Postable records with a voucher that Brex does not show EXPORTED.
    pub not_exported: Vec<String>,
    pub dlq: Vec<DlqEntry>,
    /// Injected faults and chaos events by kind.
    pub faults: BTreeMap<String, u64>,
    /// What the machinery did: deliveries, receives, invocations, races absorbed.
    pub activity: BTreeMap<String, u64>,
    /// Harness errors (SQS calls that failed etc.), for the record.
    pub harness_errors: Vec<String>,
}

impl ChaosReport {
    pub fn duplicate_count(&self) -> usize {
        self.duplicates.values().map(|n| n - 1).sum()
    }

    /// Exactly one voucher per postable record, none lost, no virtual voucher left behind, nothing unexpected, only the unmappable ones
    /// failed (and each was reported), every DLQ entry explained.
    pub fn is_clean(&self) -> bool {
        !self.timed_out
            && self.duplicates.is_empty()
            && self.lost.is_empty()
            && self.abandoned_virtual_vouchers == 0
            && self.unexpected_vouchers.is_empty()
            && self.posted_once == self.n - self.unmappable.len()
            && self.failures.keys().eq(self.unmappable.iter())
            && self.dlq.iter().all(DlqEntry::explained)
    }

    /// The table the issue asks for.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let expected = self.n - self.unmappable.len();
        let _ = writeln!(
            t,
            "chaos run: N = {}, seed = {}, {} posters, {:.1} s",
            self.n,
            self.seed,
            self.posters,
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(t, "{:-<78}", "");
        let row = |t: &mut String, k: &str, v: String| {
            let _ = writeln!(t, "{k:<44} {v}");
        };
        row(&mut t, "records", self.n.to_string());
        row(&mut t, "  deliberately unmappable", self.unmappable.len().to_string());
        row(&mut t, "vouchers in IFS", format!("{} (expected {expected})", self.vouchers));
        row(&mut t, "  postable records with exactly one voucher", self.posted_once.to_string());
        row(&mut t, "duplicates", self.duplicate_count().to_string());
        row(&mut t, "lost", self.lost.len().to_string());
        row(
            &mut t,
            "abandoned virtual vouchers in IFS",
            format!(
                "{} (goal 0; {} removed after a failure)",
                self.abandoned_virtual_vouchers, self.virtual_vouchers_removed
            ),
        );
        row(&mut t, "unexpected vouchers", self.unexpected_vouchers.len().to_string());
        let unmappable_reported = self.unmappable.iter().filter(|id| self.failures.contains_key(*id)).count();
        row(
            &mut t,
            "failures reported to Brex",
            format!("{} (unmappable: {unmappable_reported}/{})", self.failures.len(), self.unmappable.len()),
        );
        row(&mut t, "posted but not EXPORTED in Brex", self.not_exported.len().to_string());
        row(&mut t, "DLQ", self.dlq.len().to_string());
        for entry in &self.dlq {
            let reasons: Vec<String> = entry.reasons.iter().map(|(r, n)| format!("{r} ×{n}")).collect();
            let _ = writeln!(
                t,
                "  {} ({} receives, {} ids: {} posted, {} failed, {} lost): {}",
                entry.message_id,
                entry.receives,
                entry.ids.len(),
                entry.posted,
                entry.failed,
                entry.lost,
                if reasons.is_empty() { "no retry seen".to_owned() } else { reasons.join("; ") }
            );
        }
        if self.timed_out {
            row(&mut t, "SAFETY LIMIT REACHED", "the run did not settle".into());
        }
        let _ = writeln!(t, "faults injected, by kind");
        for (kind, count) in &self.faults {
            let _ = writeln!(t, "  {kind:<42} {count}");
        }
        let _ = writeln!(t, "activity");
        for (kind, count) in &self.activity {
            let _ = writeln!(t, "  {kind:<42} {count}");
        }
        for (id, why) in self.failures.iter().take(3) {
            let _ = writeln!(t, "failure {id}: {}", shorten(why, 160));
        }
        if !self.harness_errors.is_empty() {
            let _ = writeln!(t, "harness errors: {} (first: {})", self.harness_errors.len(), self.harness_errors[0]);
        }
        t
    }
}

fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// Strips what the example mapping could derive an account from: the GL field and the category.
fn make_unmappable(record: &mut crate::brex::AccountingRecord) {
    for line in &mut record.line_items {
        line.accounting_field_values
            .retain(|f| !matches!(f.field_name.as_deref(), Some("GL Account") | Some("Category")));
    }
}

// ---------------------------------------------------------------------------------------------------------
// Shared run state

#[derive(Default)]
struct MessageTrace {
    receives: u32,
    reasons: BTreeMap<String, u32>,
}

#[derive(Default)]
struct Book {
    activity: BTreeMap<String, u64>,
    messages: HashMap<String, MessageTrace>,
    /// Message ids in an invocation right now → how many invocations hold them.
    in_flight: HashMap<String, u32>,
    errors: Vec<String>,
    /// (started, enqueued, complete without errors) of every poller run.
    polls: Vec<(Instant, usize, bool)>,
}

struct Ctx {
    stack: Stack,
    source: SqsEventSource,
    poster_config: PosterConfig,
    invocation_timeout: Duration,
    batch_size: i32,
    stop: AtomicBool,
    book: Mutex<Book>,
    instances: AtomicU64,
}

impl Ctx {
    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, what: &str, n: u64) {
        *self.book().activity.entry(what.to_owned()).or_default() += n;
    }

    fn error(&self, e: String) {
        let mut book = self.book();
        *book.activity.entry("harness errors".into()).or_default() += 1;
        if book.errors.len() < 20 {
            book.errors.push(e);
        }
    }

    fn note(&self, message_ids: &[String], reason: &str) {
        let mut book = self.book();
        for id in message_ids {
            *book.messages.entry(id.clone()).or_default().reasons.entry(reason.to_owned()).or_default() += 1;
        }
    }
}

/// Marks a batch's messages in flight; dropping it (batch done, timed out or the task aborted) clears them.
struct InFlight<'a> {
    ctx: &'a Ctx,
    ids: Vec<String>,
    busy: Arc<AtomicBool>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.busy.store(false, Ordering::SeqCst);
        let mut book = self.ctx.book();
        for id in &self.ids {
            if let Some(n) = book.in_flight.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    book.in_flight.remove(id);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Poster loops: Lambda's SQS event source, several concurrent instances

struct Slot {
    busy: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

async fn spawn_poster(ctx: &Arc<Ctx>) -> Result<Slot, String> {
    let poster = build::poster(&ctx.poster_config, &ctx.stack.sdk).await.map_err(|e| format!("poster: {e}"))?;
    ctx.instances.fetch_add(1, Ordering::SeqCst);
    let busy = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(poster_loop(ctx.clone(), poster, busy.clone()));
    Ok(Slot { busy, task })
}

async fn poster_loop(ctx: Arc<Ctx>, poster: Poster, busy: Arc<AtomicBool>) {
    while !ctx.stop.load(Ordering::SeqCst) {
        match ctx.source.receive(ctx.batch_size, 1).await {
            Ok(Some(batch)) => invoke(&ctx, &poster, &batch, busy.clone()).await,
            Ok(None) => {}
            Err(e) => {
                ctx.error(e);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// One invocation as Lambda runs it: the SQS event in, cut off at the timeout, delete what succeeded.
///
/// `Poster::process` is what the Lambda handler (`shared::lambda::poster::handle_sqs_event`) calls; calling it
/// directly keeps the batch report, whose retry reasons explain every redelivery.
async fn invoke(ctx: &Ctx, poster: &Poster, batch: &ReceivedBatch, busy: Arc<AtomicBool>) {
    let event: SqsEvent = match serde_json::from_value(batch.event.clone()) {
        Ok(event) => event,
        Err(e) => return ctx.error(format!("SqsEvent: {e}")),
    };
    let mut messages = Vec::new();
    {
        let mut book = ctx.book();
        for record in event.records {
            let (Some(message_id), Some(body)) = (record.message_id, record.body) else { continue };
            let receives: u32 =
                record.attributes.get("ApproximateReceiveCount").and_then(|v| v.parse().ok()).unwrap_or(1);
            let trace = book.messages.entry(message_id.clone()).or_default();
            trace.receives = trace.receives.max(receives);
            let redelivered_while_running = book.in_flight.contains_key(&message_id);
            *book.in_flight.entry(message_id.clone()).or_default() += 1;
            *book.activity.entry("SQS messages received".into()).or_default() += 1;
            if receives > 1 {
                *book.activity.entry("SQS redeliveries (receive count > 1)".into()).or_default() += 1;
            }
            if redelivered_while_running {
                *book.activity.entry("SQS redeliveries while the first batch still ran".into()).or_default() += 1;
            }
            messages.push(Message { message_id, body });
        }
        *book.activity.entry("poster invocations".into()).or_default() += 1;
    }
    busy.store(true, Ordering::SeqCst);
    let _in_flight = InFlight { ctx, ids: messages.iter().map(|m| m.message_id.clone()).collect(), busy };
    let deadline = Utc::now() + chrono::Duration::from_std(ctx.invocation_timeout).unwrap_or_default();
    let report = match tokio::time::timeout(ctx.invocation_timeout, poster.process(&messages, deadline)).await {
        Ok(report) => report,
        Err(_) => {
            // Lambda ends a timed-out invocation: nothing is deleted, the whole batch comes back.
            ctx.count("poster invocations timed out", 1);
            let ids: Vec<String> = messages.iter().map(|m| m.message_id.clone()).collect();
            ctx.note(&ids, "invocation timed out");
            return;
        }
    };
    account(ctx, &messages, &report);
    match ctx.source.settle(batch, &report.failed_messages).await {
        Ok(_) => {}
        // A receipt handle from before a redelivery no longer deletes: the copy comes back, finds the work done.
        Err(e) => ctx.error(format!("settle: {}", shorten(&e, 200))),
    }
}

fn account(ctx: &Ctx, messages: &[Message], report: &BatchReport) {
    let conflicts = report.retry.values().filter(|r| r.as_str() == IN_PROGRESS_REASON).count();
    ctx.count("records posted (new vouchers)", report.posted.len() as u64);
    ctx.count("records already posted (dedup or completed)", report.already_posted.len() as u64);
    ctx.count("records failed (permanent)", report.failed.len() as u64);
    ctx.count("records handed back for retry", report.retry.len() as u64);
    ctx.count("DynamoDB claim conflicts (in progress elsewhere)", conflicts as u64);
    if report.failed_messages.is_empty() {
        return;
    }
    for message in messages.iter().filter(|m| report.failed_messages.contains(&m.message_id)) {
        let ids: BTreeSet<String> = ids_of(&message.body).into_iter().collect();
        let mut reasons: BTreeSet<String> = report
            .retry
            .iter()
            .filter(|(subject, _)| ids.contains(&subject.to_string()))
            .map(|(_, why)| shorten(why, 90))
            .collect();
        if reasons.is_empty() {
            reasons.insert("handed back (no subject reason)".into());
        }
        for reason in reasons {
            ctx.note(std::slice::from_ref(&message.message_id), &reason);
        }
    }
}

fn ids_of(body: &str) -> Vec<String> {
    match serde_json::from_str::<WorkItem>(body) {
        Ok(WorkItem::AccountingRecords { ids, .. }) => ids.iter().map(ToString::to_string).collect(),
        Ok(WorkItem::Expenses { ids, .. }) => ids.iter().map(ToString::to_string).collect(),
        Err(_) => Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------------------
// The run

fn env(pairs: &[(&str, String)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

/// Runs the chaos and prints the table. Errors are setup failures (moto, a simulator, a config).
pub async fn run(options: ChaosOptions) -> Result<ChaosReport, String> {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(options.seed);

    // Brex with OAuth (access tokens that expire mid-run, refresh tokens that rotate) and the IFS simulator.
    let brex = BrexSim::start(BrexSimConfig {
        oauth: Some(OAuthClient {
            client_id: "chaos-client".into(),
            client_secret: "chaos-secret".into(),
            refresh_token: "rt-chaos-0".into(),
        }),
        // Every instance has its own 1000/min client budget; the run measures faults, not Brex's limit.
        rate_limit_per_window: 1_000_000,
        seed: options.seed,
        faults: options.brex_faults.clone(),
        ..BrexSimConfig::default()
    })
    .await
    .map_err(|e| format!("brex sim: {e}"))?;
    let ifs = IfsSim::start(IfsSimConfig {
        token_ttl: options.ifs_token_ttl,
        requests_per_minute: 10_000_000,
        seed: options.seed,
        faults: options.ifs_faults.clone(),
        ..IfsSimConfig::default()
    })
    .await
    .map(Arc::new)
    .map_err(|e| format!("ifs sim: {e}"))?;
    let brex_secret = serde_json::json!({
        "client_id": "chaos-client",
        "client_secret": "chaos-secret",
        "refresh_token": "rt-chaos-0",
        "token_url": brex.token_url(),
    })
    .to_string();
    let stack = Stack::create(
        &Moto::get(),
        StackSpec {
            name: "chaos",
            brex_secret: &brex_secret,
            ifs_secret: IFS_SECRET,
            visibility_timeout: options.visibility_timeout,
            max_receive_count: options.max_receive_count,
        },
    )
    .await?;
    DynamoStore::new(aws_sdk_dynamodb::Client::new(&stack.sdk), &stack.table_name)
        .store_mapping(EXAMPLE_MAPPING, None)
        .await
        .map_err(|e| format!("storing the mapping: {e}"))?;

    // The records: clean ones, and a few stripped of everything an account could come from.
    let generator = GeneratorOptions { count: options.n, missing_gl_rate: 0.0, ..GeneratorOptions::default() };
    let mut records = RecordGenerator::with_options(options.seed, generator).batch();
    let mut unmappable = BTreeSet::new();
    for record in &mut records {
        if !record.record_type.ends_with("_REFUND") && rng.random_bool(options.unmappable_rate.clamp(0.0, 1.0)) {
            make_unmappable(record);
            unmappable.insert(record.id.clone());
        }
    }
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    brex.insert_records(records);

    let common = vec![
        ("TABLE_NAME", stack.table_name.clone()),
        ("BREX_SECRET_ID", stack.brex_secret_id.clone()),
        ("BREX_API_URL", brex.base_url()),
        ("QUEUE_URL", stack.queue_url.clone()),
    ];
    let mut with_ifs = common.clone();
    with_ifs.extend([
        ("IFS_SECRET_ID", stack.ifs_secret_id.clone()),
        ("IFS_URL", ifs.base_url().to_owned()),
        ("IFS_REALM", ifs.realm().to_owned()),
        ("IFS_REQUESTS_PER_MINUTE", "1000000".to_owned()),
        ("POSTER_MAX_CONCURRENCY", options.posters.max(1).to_string()),
    ]);
    let webhook_config = WebhookConfig::from_env(&env(&common)).map_err(|e| e.to_string())?;
    let poster_config = PosterConfig::from_env(&env(&with_ifs)).map_err(|e| e.to_string())?;
    let poller_config = PollerConfig::from_env(&env(&with_ifs)).map_err(|e| e.to_string())?;

    let ctx = Arc::new(Ctx {
        source: SqsEventSource::new(&stack.sdk, &stack.queue_url),
        stack: stack.clone(),
        poster_config,
        invocation_timeout: options.invocation_timeout,
        batch_size: options.batch_size.clamp(1, 10),
        stop: AtomicBool::new(false),
        book: Mutex::new(Book::default()),
        instances: AtomicU64::new(0),
    });

    // Two webhook instances behind "API Gateway"; the webhook id dedup must hold across them.
    let webhooks = [
        Arc::new(build::webhook_service(&webhook_config, &stack.sdk).await.map_err(|e| e.to_string())?),
        Arc::new(build::webhook_service(&webhook_config, &stack.sdk).await.map_err(|e| e.to_string())?),
    ];
    let mut slots = Vec::new();
    for _ in 0..options.posters.max(1) {
        slots.push(spawn_poster(&ctx).await?);
    }
    let slots = Arc::new(tokio::sync::Mutex::new(slots));
    let poller = tokio::spawn(poll_loop(ctx.clone(), poller_config, options.poll_interval));
    let progress = tokio::spawn(report_progress(
        ctx.clone(),
        ifs.clone(),
        ids.len() - unmappable.len(),
        options.progress_every,
        started,
    ));
    let deliveries = tokio::spawn(deliver_webhooks(
        ctx.clone(),
        brex.handle(),
        webhooks,
        plan_webhooks(&ids, &options, &mut rng),
        options.webhook_concurrency.max(1),
    ));
    let chaos_over = Arc::new(AtomicBool::new(false));
    let events = tokio::spawn(conduct(
        ctx.clone(),
        Conductor {
            brex: brex.handle(),
            ifs: ifs.clone(),
            ifs_faults: options.ifs_faults.clone(),
            kills: options.kills,
            interval: options.event_interval,
            events: options.events,
            rng: StdRng::seed_from_u64(options.seed ^ 0xc4a0_5eed),
        },
        slots.clone(),
        chaos_over.clone(),
    ));

    // Settle: all webhooks delivered (or given up on), the chaos events over, then the queue empty with every
    // poster idle, and a poller run begun after that which completed cleanly and enqueued nothing.
    let limit = options.time_limit;
    let mut timed_out = tokio::time::timeout(limit.saturating_sub(started.elapsed()), deliveries).await.is_err();
    // The chaos lasts for its events, or until the queue runs dry with every poster idle, whichever is first.
    while !timed_out
        && !events.is_finished()
        && (stack.queue_depth(&stack.queue_url).await != 0 || any_busy(&slots).await)
    {
        timed_out = started.elapsed() > limit;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    chaos_over.store(true, Ordering::SeqCst);
    let events_faults = match tokio::time::timeout(Duration::from_secs(30), events).await {
        Ok(Ok(counts)) => counts,
        _ => BTreeMap::new(),
    };
    // Storms end with the chaos phase; the steady fault rates stay on until the end.
    ifs.set_faults(IfsFaults { burst_429_next: 0, ..options.ifs_faults.clone() });
    brex.set_faults(Faults { burst_429: 0, ..options.brex_faults.clone() });
    let mut quiet_since: Option<Instant> = None;
    while !timed_out {
        if started.elapsed() > limit {
            timed_out = true;
            break;
        }
        let depth = stack.queue_depth(&stack.queue_url).await;
        if depth == 0 && !any_busy(&slots).await {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            let settled = ctx.book().polls.iter().any(|(at, enqueued, clean)| *at > since && *enqueued == 0 && *clean);
            if settled {
                break;
            }
        } else {
            quiet_since = None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ctx.stop.store(true, Ordering::SeqCst);
    for slot in slots.lock().await.drain(..) {
        let abort = slot.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), slot.task).await.is_err() {
            // Only after the safety limit can one still be mid-batch; nothing may post while we count.
            abort.abort();
            ctx.error("a poster was still running at the end".into());
        }
    }
    poller.abort();
    progress.abort();

    let mut report = tally(&ctx, &brex, &ifs, &ids, unmappable, events_faults).await;
    report.n = options.n;
    report.seed = options.seed;
    report.posters = options.posters.max(1);
    report.timed_out = timed_out;
    report.elapsed = started.elapsed();
    println!("{}", report.table());
    Ok(report)
}

async fn report_progress(ctx: Arc<Ctx>, ifs: Arc<IfsSim>, postable: usize, every: Duration, started: Instant) {
    loop {
        tokio::time::sleep(every).await;
        let depth = ctx.stack.queue_depth(&ctx.stack.queue_url).await;
        let vouchers = ifs.vouchers().len();
        let secs = started.elapsed().as_secs();
        eprintln!("chaos: {secs:>5} s  {vouchers:>6} vouchers for {postable} postable records  queue depth {depth}");
    }
}

async fn any_busy(slots: &tokio::sync::Mutex<Vec<Slot>>) -> bool {
    slots.lock().await.iter().any(|s| s.busy.load(Ordering::SeqCst))
}

// ---------------------------------------------------------------------------------------------------------
// Webhooks

struct Event {
    webhook_id: String,
    ids: Vec<String>,
}

/// Events of 1..=max ids over the shuffled records (minus the missed ones), each to be delivered 1–3 times,
/// some re-sent under a new id; all deliveries shuffled.
fn plan_webhooks(ids: &[String], options: &ChaosOptions, rng: &mut StdRng) -> Vec<Arc<Event>> {
    let mut shuffled: Vec<String> =
        ids.iter().filter(|_| !rng.random_bool(options.webhook_miss_rate.clamp(0.0, 1.0))).cloned().collect();
    shuffled.shuffle(rng);
    let mut plan = Vec::new();
    let mut rest = shuffled.as_slice();
    let mut seq = 0u64;
    let mut new_id = |rng: &mut StdRng| {
        seq += 1;
        format!("msg_chaos{seq:06}{:08x}", rng.random::<u32>())
    };
    while !rest.is_empty() {
        let take = rng.random_range(1..=options.max_event_ids.max(1)).min(rest.len());
        let (chunk, tail) = rest.split_at(take);
        rest = tail;
        let event = Arc::new(Event { webhook_id: new_id(rng), ids: chunk.to_vec() });
        for _ in 0..rng.random_range(1..=3) {
            plan.push(event.clone());
        }
        if rng.random_bool(options.resend_rate.clamp(0.0, 1.0)) {
            plan.push(Arc::new(Event { webhook_id: new_id(rng), ids: chunk.to_vec() }));
        }
    }
    plan.shuffle(rng);
    plan
}

async fn deliver_webhooks(
    ctx: Arc<Ctx>,
    brex: crate::brex::BrexSimHandle,
    services: [Arc<WebhookService>; 2],
    plan: Vec<Arc<Event>>,
    concurrency: usize,
) {
    ctx.count("webhook deliveries planned", plan.len() as u64);
    let queue = Arc::new(Mutex::new(plan.into_iter().enumerate().collect::<Vec<_>>()));
    let statuses = Arc::new(Mutex::new(BTreeMap::<u16, u64>::new()));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (queue, statuses, brex, services, ctx) =
            (queue.clone(), statuses.clone(), brex.clone(), services.clone(), ctx.clone());
        workers.push(tokio::spawn(async move {
            // Svix's schedule at 1/500 speed: 5 s → 10 ms, 5 min → 0.6 s, 30 min → 3.6 s.
            let sender = brex.webhook_sender().time_scale(0.002);
            loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                let Some((i, event)) = next else { break };
                let service = services[i % 2].clone();
                let seen = statuses.clone();
                let transport = move |delivery: WebhookDelivery| -> TransportFuture<'static> {
                    let (service, seen) = (service.clone(), seen.clone());
                    Box::pin(async move {
                        let status = invoke_webhook(&service, delivery).await;
                        *seen.lock().unwrap_or_else(|e| e.into_inner()).entry(status).or_default() += 1;
                        status
                    })
                };
                let body = brex.ready_for_export_body(&event.ids);
                let report = sender.send_with_id(&transport, &event.webhook_id, body).await;
                if !report.delivered {
                    ctx.count("webhook events given up by Brex", 1);
                }
            }
        }));
    }
    for worker in workers {
        if let Err(e) = worker.await {
            ctx.error(format!("webhook worker: {e}"));
        }
    }
    for (status, count) in statuses.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        ctx.count(&format!("webhook answers {status}"), *count);
    }
}

// ---------------------------------------------------------------------------------------------------------
// The poller, on a short timer standing in for the EventBridge schedule

async fn poll_loop(ctx: Arc<Ctx>, config: PollerConfig, interval: Duration) {
    let poller = match build::poller(&config, &ctx.stack.sdk).await {
        Ok(p) => p,
        Err(e) => return ctx.error(format!("poller: {e}")),
    };
    while !ctx.stop.load(Ordering::SeqCst) {
        let at = Instant::now();
        let report = poller.run(Utc::now() + chrono::Duration::seconds(60)).await;
        let clean = report.is_complete() && !report.has_errors();
        ctx.count("poller runs", 1);
        ctx.count("poller enqueued", report.enqueued() as u64);
        if report.has_errors() {
            ctx.count("poller runs with errors (retried next run)", 1);
        }
        ctx.book().polls.push((at, report.enqueued(), clean));
        tokio::time::sleep(interval).await;
    }
}

// ---------------------------------------------------------------------------------------------------------
// Chaos events

struct Conductor {
    brex: crate::brex::BrexSimHandle,
    ifs: Arc<IfsSim>,
    ifs_faults: IfsFaults,
    kills: usize,
    interval: Duration,
    events: usize,
    rng: StdRng,
}

/// Storms, bursts, token expiries and kills at random moments until `over`; returns what it did, by kind.
async fn conduct(
    ctx: Arc<Ctx>,
    mut c: Conductor,
    slots: Arc<tokio::sync::Mutex<Vec<Slot>>>,
    over: Arc<AtomicBool>,
) -> BTreeMap<String, u64> {
    let mut done: BTreeMap<String, u64> = BTreeMap::new();
    let mut kills = 0;
    for _ in 0..c.events {
        let wait = c.interval.mul_f64(c.rng.random_range(0.5..1.5));
        tokio::time::sleep(wait).await;
        if over.load(Ordering::SeqCst) {
            break;
        }
        if kills < c.kills && c.rng.random_bool(0.25) {
            let mut slots = slots.lock().await;
            if let Some(i) = slots.iter().position(|s| s.busy.load(Ordering::SeqCst)) {
                // Mid-batch: its claims stay until their lease ends, its messages come back after the
                // visibility timeout. A cold instance takes its place, as Lambda would start one.
                slots[i].task.abort();
                kills += 1;
                *done.entry("poster killed mid-batch".into()).or_default() += 1;
                match spawn_poster(&ctx).await {
                    Ok(slot) => slots[i] = slot,
                    Err(e) => ctx.error(e),
                }
                continue;
            }
        }
        let kind = match c.rng.random_range(0..5) {
            0 => {
                let mut f = c.ifs.faults();
                f.concurrent_modification_rate = 0.6;
                c.ifs.set_faults(f);
                tokio::time::sleep(Duration::from_secs(2)).await;
                let mut f = c.ifs.faults();
                f.concurrent_modification_rate = c.ifs_faults.concurrent_modification_rate;
                c.ifs.set_faults(f);
                "IFS 412 storm (60 % stale ETags for 2 s)"
            }
            1 => {
                let mut f = c.ifs.faults();
                f.burst_429_next += 25;
                c.ifs.set_faults(f);
                "IFS 429 burst (next 25 requests)"
            }
            2 => {
                let mut f = c.brex.faults();
                f.burst_429 += 10;
                c.brex.set_faults(f);
                "Brex 429 burst (next 10 requests)"
            }
            3 => {
                c.ifs.expire_tokens();
                "IFS token expiry mid-run (every token revoked)"
            }
            _ => {
                c.brex.expire_access_tokens();
                "Brex token expiry mid-run (every access token expired)"
            }
        };
        *done.entry(kind.into()).or_default() += 1;
    }
    done
}

// ---------------------------------------------------------------------------------------------------------
// The count

async fn read_dlq(stack: &Stack) -> Result<Vec<(String, u32, Vec<String>)>, String> {
    let dlq = SqsEventSource::new(&stack.sdk, &stack.dlq_url);
    let mut out = Vec::new();
    let mut empty = 0;
    while empty < 2 {
        let Some(batch) = dlq.receive(10, 0).await? else {
            empty += 1;
            continue;
        };
        let event: SqsEvent = serde_json::from_value(batch.event.clone()).map_err(|e| format!("DLQ event: {e}"))?;
        for record in event.records {
            let receives = record.attributes.get("ApproximateReceiveCount").and_then(|v| v.parse().ok()).unwrap_or(0);
            let ids = record.body.as_deref().map(ids_of).unwrap_or_default();
            out.push((record.message_id.unwrap_or_default(), receives, ids));
        }
        dlq.settle(&batch, &[]).await?;
    }
    Ok(out)
}

async fn tally(
    ctx: &Ctx,
    brex: &BrexSim,
    ifs: &IfsSim,
    ids: &[String],
    unmappable: BTreeSet<String>,
    events: BTreeMap<String, u64>,
) -> ChaosReport {
    let mut report = ChaosReport::default();
    let all: BTreeSet<&String> = ids.iter().collect();
    let vouchers = ifs.vouchers();
    report.vouchers = vouchers.len();
    report.abandoned_virtual_vouchers = ifs.pending_virtual_count();
    report.virtual_vouchers_removed = ifs.counters().virtual_vouchers_removed;
    let mut by_ref: BTreeMap<String, usize> = BTreeMap::new();
    for v in &vouchers {
        let reference = v.rows.first().and_then(|r| r.reference_number.clone()).unwrap_or_default();
        *by_ref.entry(reference).or_default() += 1;
    }
    for (reference, count) in &by_ref {
        if *count > 1 {
            report.duplicates.insert(reference.clone(), *count);
        }
        if !all.contains(reference) || unmappable.contains(reference) {
            report.unexpected_vouchers.push(reference.clone());
        }
    }
    for id in ids {
        if let Some(ExportOutcome::Failure { error_message }) = brex.export_result(id).map(|r| r.outcome) {
            report.failures.insert(id.clone(), error_message);
        }
        if unmappable.contains(id) {
            continue;
        }
        match by_ref.get(id) {
            None => report.lost.push(id.clone()),
            Some(count) => {
                if *count == 1 {
                    report.posted_once += 1;
                }
                if brex.record(id).map(|r| r.review_status) != Some(ReviewStatus::Exported) {
                    report.not_exported.push(id.clone());
                }
            }
        }
    }
    match read_dlq(&ctx.stack).await {
        Ok(entries) => {
            let book = ctx.book();
            for (message_id, receives, message_ids) in entries {
                let trace = book.messages.get(&message_id);
                let mut entry = DlqEntry {
                    // Reading the DLQ counts as a receive too: our own count is the one that matters.
                    receives: trace.map_or(receives, |t| t.receives),
                    reasons: trace.map(|t| t.reasons.clone()).unwrap_or_default(),
                    message_id,
                    ids: message_ids,
                    ..DlqEntry::default()
                };
                for id in &entry.ids {
                    if by_ref.contains_key(id) {
                        entry.posted += 1;
                    } else if report.failures.contains_key(id) {
                        entry.failed += 1;
                    } else {
                        entry.lost += 1;
                    }
                }
                report.dlq.push(entry);
            }
        }
        Err(e) => ctx.error(format!("reading the DLQ: {e}")),
    }

    let ic = ifs.counters();
    for (kind, count) in &ic.faults {
        report.faults.insert(format!("IFS {kind}"), *count);
    }
    report.faults.insert("IFS 401 answered (expired or revoked token)".into(), ic.status_401);
    let bc = brex.counters();
    report.faults.insert("Brex 429 injected".into(), bc.injected_429);
    report.faults.insert("Brex 5xx injected (before or after the change)".into(), bc.injected_5xx);
    report.faults.insert("Brex 401 answered (expired token)".into(), bc.unauthorized);
    report.faults.extend(events);

    let book = ctx.book();
    report.activity = book.activity.clone();
    report.activity.insert("poster instances started".into(), ctx.instances.load(Ordering::SeqCst));
    report.activity.insert("IFS requests".into(), ic.total_requests);
    report.activity.insert("IFS 412 answered".into(), ic.status_412);
    report.activity.insert("IFS 429 answered".into(), ic.status_429);
    report.activity.insert("IFS token fetches".into(), ic.token_fetches);
    report.activity.insert("Brex requests".into(), bc.total_requests);
    report.activity.insert("Brex token refreshes".into(), bc.token_fetches);
    report.activity.insert("Brex refresh tokens refused (invalid_grant)".into(), bc.invalid_grants);
    report.activity.insert("Brex export-results replayed (idempotency key)".into(), bc.idempotent_replays);
    report.harness_errors = book.errors.clone();
    report.unmappable = unmappable;
    report
}
