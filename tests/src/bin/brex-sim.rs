//! Standalone Brex API simulator for local runs.
//!
//! `brex-sim --port 0 --seed 42 --records 50` starts the simulator on 127.0.0.1, seeds generated records
//! (and their expenses), prints ONE JSON line `{"base_url","token_url","user_token","webhook_secrets",
//! "company_id"}` to stdout, then serves until Ctrl-C / SIGTERM. Admin routes live under `/_sim/`.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use sims::brex::{BrexSim, BrexSimConfig, OAuthClient};

const USAGE: &str = "usage: brex-sim [--port N] [--seed N] [--records N] [--user-token T]... \
[--client-id ID --client-secret S --refresh-token R] [--rate-limit N]";

fn parse_args(args: impl Iterator<Item = String>) -> Result<(BrexSimConfig, usize), String> {
    let mut config = BrexSimConfig::default();
    let mut port: u16 = 0;
    let mut records = 0usize;
    let mut user_tokens = Vec::new();
    let (mut client_id, mut client_secret, mut refresh_token) = (None, None, None);
    let mut args = args;
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        let num = |v: String| v.parse::<u64>().map_err(|_| format!("{flag}: not a number: {v}"));
        match flag.as_str() {
            "--port" => port = u16::try_from(num(value()?)?).map_err(|_| "--port out of range".to_owned())?,
            "--seed" => config.seed = num(value()?)?,
            "--records" => records = usize::try_from(num(value()?)?).map_err(|_| "--records too large".to_owned())?,
            "--rate-limit" => {
                config.rate_limit_per_window =
                    u32::try_from(num(value()?)?).map_err(|_| "--rate-limit too large".to_owned())?
            }
            "--user-token" => user_tokens.push(value()?),
            "--client-id" => client_id = Some(value()?),
            "--client-secret" => client_secret = Some(value()?),
            "--refresh-token" => refresh_token = Some(value()?),
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if !user_tokens.is_empty() {
        config.user_tokens = user_tokens;
    }
    config.oauth = match (client_id, client_secret, refresh_token) {
        (Some(client_id), Some(client_secret), Some(refresh_token)) => {
            Some(OAuthClient { client_id, client_secret, refresh_token })
        }
        (None, None, None) => None,
        _ => return Err("--client-id, --client-secret and --refresh-token go together".to_owned()),
    };
    config.bind = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    Ok((config, records))
}

async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let (config, records) = match parse_args(std::env::args().skip(1)) {
        Ok(v) => v,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let sim = match BrexSim::start(config).await {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("brex-sim: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    if records > 0 {
        sim.generate_records(records);
    }
    let line = serde_json::json!({
        "base_url": sim.base_url(),
        "token_url": sim.token_url(),
        "user_token": sim.user_token(),
        "webhook_secrets": sim.webhook_secret_strings(),
        "company_id": sim.company_id(),
    });
    println!("{line}");
    tracing::info!(base_url = %sim.base_url(), records, "brex-sim serving; Ctrl-C to stop");
    wait_for_stop().await;
    sim.shutdown().await;
    ExitCode::SUCCESS
}
