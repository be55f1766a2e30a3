//! Secrets never reach the logs. The whole test binary logs through the production JSON
//! subscriber (as `shared::telemetry` sets it up) into a buffer; a full local pipeline runs with Brex OAuth
//! (rotating refresh tokens), IFS client credentials and webhook signing secrets including a rotation, plus
//! the failure paths that log errors (forged signatures, an expired Brex access token → 401, a wrong IFS
//! client secret → IFS 401, a revoked Brex refresh token). Then no secret value collected from the
//! simulators and the secret store may appear in what was logged. `Debug` of every credential type is
//! checked separately.

use std::time::Duration;

use base64::Engine as _;
use shared::config::PosterConfig;
use shared::domain::{BrexCredentials, IfsCredentials, Origin, Secret, WebhookId};
use shared::lambda::build;
use sims::aws::{Moto, Stack, StackSpec};
use sims::brex::webhook::{HeaderFamily, WebhookDelivery};
use sims::brex::{BrexSimConfig, OAuthClient};
use sims::ifs::IfsSimConfig;
use sims::logs::{captured, install_capture};
use sims::pipeline::{Pipeline, PipelineOptions, invoke_webhook};

fn free_port() -> std::net::SocketAddr {
    // The Brex token URL goes into the secret before the simulator starts, so its port is chosen first.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("address")
}

fn random(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// Every secret value seen during the run.
#[derive(Default)]
struct Collected(Vec<(String, String)>);

impl Collected {
    fn add(&mut self, what: &str, value: impl Into<String>) {
        let value = value.into();
        if !value.is_empty() {
            self.0.push((what.to_owned(), value));
        }
    }

    /// A webhook secret is also a key in its base64 form without the prefix.
    fn add_webhook_secret(&mut self, value: &str) {
        self.add("webhook secret", value);
        self.add("webhook secret key", value.trim_start_matches("whsec_"));
    }

    /// What the secret store holds now: the current refresh token and the shared access token.
    async fn add_stored_brex(&mut self, stack: &Stack) {
        let sm = aws_sdk_secretsmanager::Client::new(&stack.sdk);
        let text = sm
            .get_secret_value()
            .secret_id(&stack.brex_secret_id)
            .send()
            .await
            .expect("brex secret")
            .secret_string
            .unwrap_or_default();
        match serde_json::from_str::<BrexCredentials>(&text).expect("brex credentials") {
            BrexCredentials::OAuth { refresh_token, access_token, .. } => {
                self.add("stored refresh token", refresh_token.expose());
                if let Some(token) = access_token {
                    self.add("stored access token", token.expose());
                }
            }
            BrexCredentials::UserToken { .. } => panic!("the run must use OAuth"),
        }
    }
}

#[tokio::test]
async fn a_full_run_with_failures_logs_no_secret() {
    install_capture("info,shared=debug");
    let mut seen = Collected::default();

    // ---- credentials: Brex OAuth (rotating refresh token), IFS client credentials
    let brex_addr = free_port();
    let brex_client_secret = random("bcs_");
    let first_refresh = random("bxrt_first");
    let ifs_client_secret = random("ifs_cs_");
    seen.add("brex client secret", &brex_client_secret);
    seen.add("first refresh token", &first_refresh);
    seen.add("ifs client secret", &ifs_client_secret);
    let oauth = OAuthClient {
        client_id: "brex-connector-client".into(),
        client_secret: brex_client_secret.clone(),
        refresh_token: first_refresh.clone(),
    };
    let brex_secret = serde_json::to_string(&BrexCredentials::OAuth {
        client_id: oauth.client_id.clone(),
        client_secret: Secret::new(brex_client_secret.clone()),
        refresh_token: Secret::new(first_refresh.clone()),
        token_url: format!("http://{brex_addr}{}", sims::brex::TOKEN_PATH),
        access_token: None,
        access_token_expires_at: None,
    })
    .unwrap();
    let ifs_secret =
        serde_json::json!({ "client_id": "brex-connector", "client_secret": ifs_client_secret }).to_string();
    let stack = Stack::create(
        &Moto::get(),
        StackSpec {
            name: "secrets-logs",
            brex_secret: &brex_secret,
            ifs_secret: &ifs_secret,
            visibility_timeout: 1,
            ..StackSpec::default()
        },
    )
    .await
    .expect("stack");
    let brex = BrexSimConfig {
        user_tokens: Vec::new(),
        oauth: Some(oauth),
        bind: Some(brex_addr),
        webhook_secret: Some(format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(random("k")))),
        ..BrexSimConfig::default()
    };
    let ifs =
        IfsSimConfig { clients: vec![("brex-connector".into(), ifs_client_secret.clone())], ..IfsSimConfig::default() };
    let p = Pipeline::start_on(stack, PipelineOptions { name: "secrets-logs".into(), brex, ifs, ..Default::default() })
        .await
        .expect("pipeline");
    let webhook_secrets_at_start = p.brex.webhook_secret_strings();
    for s in &webhook_secrets_at_start {
        seen.add_webhook_secret(s);
    }

    // ---- the happy path: signed webhook → queue → poster → IFS vouchers → export results to Brex
    let t = |d: WebhookDelivery| {
        let service = p.webhook.clone();
        Box::pin(async move { invoke_webhook(&service, d).await })
            as std::pin::Pin<Box<dyn Future<Output = u16> + Send>>
    };
    let ids = p.brex.generate_records(6);
    let report = p.brex.webhook_sender().time_scale(0.0).send(&t, p.brex.ready_for_export_body(&ids[..3])).await;
    assert!(report.delivered, "{report:?}");
    p.drain(Duration::from_secs(60)).await.expect("drained");
    seen.add_stored_brex(&p.stack).await;
    assert!(p.brex.counters().token_fetches >= 1, "the Brex side really used OAuth");
    assert!(p.ifs.voucher_count() >= 1, "the run posted to IFS");

    // ---- failure paths that log
    // A finished webhook secret rotation: only the new secret signs, the handler re-fetches the list once.
    let rotated = p.brex.rotate_webhook_secret();
    seen.add_webhook_secret(&rotated);
    p.brex.finish_rotation();
    let report = p.brex.webhook_sender().time_scale(0.0).send(&t, p.brex.ready_for_export_body(&ids[3..4])).await;
    assert!(report.delivered, "{report:?}");
    // Forged signatures (the handler logs the rejection).
    let forged = WebhookDelivery::new(
        "msg_forged",
        chrono::Utc::now().timestamp(),
        p.brex.ready_for_export_body(&ids[3..4]),
        &[format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode([9u8; 32]))],
        HeaderFamily::Webhook,
    );
    assert_eq!(p.deliver_webhook(forged).await, 401);
    // Brex 401: every access token expires; the poster's next Brex call is refused and refreshes (rotating
    // the refresh token again).
    p.brex.expire_access_tokens();
    p.enqueue(&ids[4..], &Origin::Webhook { webhook_id: WebhookId::parse("msg_direct").unwrap() }).await.unwrap();
    p.drain(Duration::from_secs(60)).await.expect("drained after the Brex 401");
    assert!(p.brex.counters().unauthorized >= 1, "Brex answered 401 at least once");
    assert!(p.brex.counters().token_fetches >= 2, "a second OAuth refresh happened");
    seen.add_stored_brex(&p.stack).await;
    if let Some(current) = p.brex.current_refresh_token() {
        seen.add("current refresh token", current);
    }

    // IFS 401: a poster whose IFS secret holds a wrong client secret is refused by the token endpoint.
    let wrong_ifs_secret = random("ifs_wrong_");
    seen.add("wrong ifs client secret", &wrong_ifs_secret);
    let sm = aws_sdk_secretsmanager::Client::new(&p.stack.sdk);
    let wrong_id = sm
        .create_secret()
        .name(random("secrets-logs-wrong-ifs-"))
        .secret_string(
            serde_json::json!({ "client_id": "brex-connector", "client_secret": wrong_ifs_secret }).to_string(),
        )
        .send()
        .await
        .expect("wrong IFS secret")
        .arn
        .expect("arn");
    let env: std::collections::HashMap<String, String> = [
        ("TABLE_NAME", p.stack.table_name.clone()),
        ("BREX_SECRET_ID", p.stack.brex_secret_id.clone()),
        ("BREX_API_URL", p.brex.base_url()),
        ("QUEUE_URL", p.stack.queue_url.clone()),
        ("IFS_SECRET_ID", wrong_id),
        ("IFS_URL", p.ifs.base_url().to_owned()),
        ("IFS_REALM", p.ifs.realm().to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let broken = build::poster(&PosterConfig::from_env(&env).unwrap(), &p.stack.sdk).await.expect("poster");
    let more = p.brex.generate_records(1);
    p.enqueue(&more, &Origin::Webhook { webhook_id: WebhookId::parse("msg_ifs401").unwrap() }).await.unwrap();
    let mut batch = None;
    for _ in 0..20 {
        batch = p.source.receive(10, 1).await.unwrap();
        if batch.is_some() {
            break;
        }
    }
    let batch = batch.expect("the work item comes back from SQS");
    let event: aws_lambda_events::event::sqs::SqsEvent = serde_json::from_value(batch.event.clone()).unwrap();
    let response =
        shared::lambda::poster::handle_sqs_event(&broken, event, chrono::Utc::now() + chrono::Duration::seconds(30))
            .await;
    assert_eq!(response.batch_item_failures.len(), 1, "the IFS 401 is a retryable failure");
    assert!(p.ifs.counters().status_401 >= 1, "IFS answered 401");

    // A revoked Brex refresh token: the token endpoint answers invalid_grant.
    seen.add_stored_brex(&p.stack).await;
    let sm_value = serde_json::to_string(&BrexCredentials::OAuth {
        client_id: "brex-connector-client".into(),
        client_secret: Secret::new(brex_client_secret.clone()),
        refresh_token: Secret::new(random("bxrt_revoked")),
        token_url: p.brex.token_url(),
        access_token: None,
        access_token_expires_at: None,
    })
    .unwrap();
    let revoked = match serde_json::from_str::<BrexCredentials>(&sm_value).unwrap() {
        BrexCredentials::OAuth { refresh_token, .. } => refresh_token.expose().to_owned(),
        BrexCredentials::UserToken { .. } => unreachable!(),
    };
    seen.add("revoked refresh token", revoked);
    sm.put_secret_value().secret_id(&p.stack.brex_secret_id).secret_string(sm_value).send().await.unwrap();
    let common = shared::config::WebhookConfig::from_env(&env).unwrap();
    let svc = build::webhook_service(&common, &p.stack.sdk).await.expect("webhook service");
    let fresh_body = p.brex.ready_for_export_body(&more);
    let d = WebhookDelivery::new(
        "msg_revoked",
        chrono::Utc::now().timestamp(),
        fresh_body,
        &p.brex.webhook_secret_strings(),
        HeaderFamily::Webhook,
    );
    assert_eq!(invoke_webhook(&svc, d).await, 503, "no signing secrets without a Brex token");
    assert!(p.brex.counters().invalid_grants >= 1);

    // ---- the verdict
    let text = captured();
    for expected in ["webhook accepted", "refreshed the Brex access token", "webhook rejected"] {
        assert!(text.contains(expected), "the capture missed {expected:?}: the test would be blind");
    }
    let lines = text.lines().count();
    assert!(lines >= 20, "only {lines} log lines captured");
    for line in text.lines() {
        assert!(serde_json::from_str::<serde_json::Value>(line).is_ok(), "not a JSON log line: {line}");
    }
    assert!(seen.0.len() >= 10, "collected only {} secret values", seen.0.len());
    let leaks: Vec<String> =
        seen.0.iter().filter(|(_, value)| text.contains(value.as_str())).map(|(what, _)| what.clone()).collect();
    assert!(leaks.is_empty(), "secrets in the logs: {leaks:?}");
    // Tokens whose exact values the simulators keep to themselves, by shape: IFS access tokens are
    // `sim.` + 64 hex digits, Brex tokens `bxat_`/`bxrt_` + 40 characters.
    assert!(!text.contains("bxat_") && !text.contains("bxrt_"), "a Brex token in the logs");
    let ifs_token_like = text
        .match_indices("sim.")
        .any(|(i, _)| text[i + 4..].chars().take(64).filter(char::is_ascii_hexdigit).count() == 64);
    assert!(!ifs_token_like, "an IFS access token in the logs");
    assert!(!text.to_ascii_lowercase().contains("bearer "), "an Authorization header in the logs");
}

#[test]
fn debug_of_every_credential_type_is_redacted() {
    const VALUE: &str = "TOPSECRET";
    let oauth: BrexCredentials = serde_json::from_str(&format!(
        r#"{{"client_id":"cid","client_secret":"cs{VALUE}","refresh_token":"rt{VALUE}","token_url":"https://x/t",
            "access_token":"at{VALUE}","access_token_expires_at":"2026-01-01T00:00:00Z"}}"#
    ))
    .unwrap();
    let user: BrexCredentials = serde_json::from_str(&format!(r#"{{"token":"bxt_{VALUE}"}}"#)).unwrap();
    let ifs: IfsCredentials =
        serde_json::from_str(&format!(r#"{{"client_id":"c","client_secret":"ifs{VALUE}"}}"#)).unwrap();
    let secret = Secret::new(format!("plain{VALUE}"));
    let verifier = shared::webhook::WebhookVerifier::new(&[Secret::new(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(VALUE)
    ))])
    .unwrap();
    let auth = shared::brex::BrexAuth::user_token(Secret::new(format!("bxt_{VALUE}")));
    let ifs_config = shared::ifs::IfsClientConfig::new("https://ifs.test", "realm", ifs.clone());
    let shown = [
        format!("{oauth:?}"),
        format!("{oauth:#?}"),
        format!("{user:?}"),
        format!("{ifs:?}"),
        format!("{secret:?}"),
        format!("{verifier:?}"),
        format!("{auth:?}"),
        format!("{ifs_config:?}"),
        format!("{:?}", Some(&secret)),
        format!("{:?}", vec![secret.clone()]),
    ];
    for text in &shown {
        assert!(!text.contains(VALUE), "leaked: {text}");
        assert!(!text.contains(&base64::engine::general_purpose::STANDARD.encode(VALUE)), "leaked key: {text}");
    }
    assert!(shown[0].contains("cid"), "non-secret fields stay visible: {}", shown[0]);
    assert!(shown[4].contains("redacted"));
}
