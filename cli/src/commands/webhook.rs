//! `connector webhook register URL` / `list`: the Brex subscription for ACCOUNTING_RECORD_READY_FOR_EXPORT.

use std::io::Write;

use serde_json::json;
use shared::brex::{BrexClient, BrexError, WebhookSubscription};

use crate::context::Ctx;
use crate::error::CliError;
use crate::output::{Table, json_line};

pub const EVENT_TYPE: &str = "ACCOUNTING_RECORD_READY_FOR_EXPORT";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Unchanged,
    Updated,
    Created,
}

/// Makes sure `url` has an ACTIVE subscription that includes our event: nothing when it has, a PUT when a
/// subscription for the URL exists but is inactive or lacks the event, else a POST (whose idempotency key
/// is derived from the body, so a retried registration is the same request).
pub async fn ensure_subscription(brex: &BrexClient, url: &str) -> Result<(Action, WebhookSubscription), BrexError> {
    let existing = brex.list_webhooks().await?.into_iter().find(|s| s.url == url);
    match existing {
        Some(sub) if sub.status.as_deref() == Some("ACTIVE") && sub.event_types.iter().any(|t| t == EVENT_TYPE) => {
            Ok((Action::Unchanged, sub))
        }
        Some(sub) => {
            let mut events = sub.event_types.clone();
            if !events.iter().any(|t| t == EVENT_TYPE) {
                events.push(EVENT_TYPE.to_owned());
            }
            let updated = brex.update_webhook(&sub.id, url, &events, "ACTIVE").await?;
            Ok((Action::Updated, updated))
        }
        None => Ok((Action::Created, brex.register_webhook(url, &[EVENT_TYPE.to_owned()]).await?)),
    }
}

pub async fn register(ctx: &Ctx<'_>, url: &str, out: &mut dyn Write) -> Result<i32, CliError> {
    let store = ctx.store()?;
    let brex = ctx.brex(&store).await?;
    let (action, sub) = ensure_subscription(&brex, url).await?;
    if ctx.json {
        json_line(out, &json!({ "action": action, "subscription": sub }))?;
        return Ok(0);
    }
    let what = match action {
        Action::Unchanged => "already registered",
        Action::Updated => "re-activated",
        Action::Created => "registered",
    };
    writeln!(
        out,
        "{what}: {} → {} [{}] {}",
        sub.id,
        sub.url,
        sub.event_types.join(", "),
        sub.status.as_deref().unwrap_or("?")
    )?;
    Ok(0)
}

pub async fn list(ctx: &Ctx<'_>, out: &mut dyn Write) -> Result<i32, CliError> {
    let store = ctx.store()?;
    let brex = ctx.brex(&store).await?;
    let subs = brex.list_webhooks().await?;
    if ctx.json {
        json_line(out, &json!({ "subscriptions": subs }))?;
        return Ok(0);
    }
    let mut table = Table::new(&["ID", "STATUS", "URL", "EVENTS"]);
    for s in &subs {
        table.row(vec![s.id.clone(), s.status.clone().unwrap_or_default(), s.url.clone(), s.event_types.join(",")]);
    }
    if table.is_empty() {
        writeln!(out, "no webhook subscriptions")?;
    } else {
        table.write(out, "")?;
    }
    Ok(0)
}
