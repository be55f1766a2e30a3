//! Runs the IFS Cloud simulator until Ctrl-C.
//!
//! ```text
//! ifs-sim [--port 0] [--host 127.0.0.1] [--realm ifs] [--client-id brex-connector] [--client-secret sim-secret]
//!         [--token-ttl 3600] [--rpm 1000] [--time-scale 1.0] [--seed 42] [--page-size 1000] [--max-page-size 5000]
//!         [--batch full|no_etag_references|absent] [--missing-projection NAME.svc]…
//! ```
//!
//! `--batch` and `--missing-projection` (repeatable) set the tenant profile (see `sims::ifs::IfsTenant`).
//!
//! Prints one JSON line `{"ifs_url","realm","client_id","client_secret"}` once it listens. Admin routes:
//! `/_sim/counters`, `/_sim/vouchers`, `/_sim/faults`, `/_sim/reference`, `/_sim/tenant`.

use sims::ifs::{IfsSim, IfsSimConfig};
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

const USAGE: &str = "usage: ifs-sim [--port N] [--host IP] [--realm R] [--client-id ID] [--client-secret S] \
[--token-ttl SECS] [--rpm N] [--time-scale F] [--seed N] [--page-size N] [--max-page-size N] \
[--batch full|no_etag_references|absent] [--missing-projection NAME.svc]...";

fn value<T: FromStr>(args: &mut impl Iterator<Item = String>, flag: &str) -> Result<T, String> {
    let raw = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
    raw.parse().map_err(|_| format!("invalid value for {flag}: {raw}"))
}

fn parse_args() -> Result<IfsSimConfig, String> {
    let mut config = IfsSimConfig::default();
    let mut host: IpAddr = IpAddr::from([127, 0, 0, 1]);
    let mut port: u16 = 0;
    let (mut client_id, mut client_secret) = config.clients.first().cloned().unwrap_or_default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--port" => port = value(&mut args, &flag)?,
            "--host" => host = value(&mut args, &flag)?,
            "--realm" => config.realm = value(&mut args, &flag)?,
            "--client-id" => client_id = value(&mut args, &flag)?,
            "--client-secret" => client_secret = value(&mut args, &flag)?,
            "--token-ttl" => config.token_ttl = Duration::from_secs(value(&mut args, &flag)?),
            "--rpm" => config.requests_per_minute = value(&mut args, &flag)?,
            "--time-scale" => config.time_scale = value(&mut args, &flag)?,
            "--seed" => config.seed = value(&mut args, &flag)?,
            "--page-size" => config.default_page_size = value(&mut args, &flag)?,
            "--max-page-size" => config.max_page_size = value(&mut args, &flag)?,
            "--batch" => {
                let raw: String = value(&mut args, &flag)?;
                config.tenant.batch = raw.parse().map_err(|e| format!("--batch: {e}"))?;
            }
            "--missing-projection" => config.tenant.missing_projections.push(value(&mut args, &flag)?),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    config.bind = SocketAddr::new(host, port);
    config.clients = vec![(client_id, client_secret)];
    Ok(config)
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let (client_id, client_secret) = config.clients.first().cloned().unwrap_or_default();
    let sim = match IfsSim::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ifs-sim: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The secret is printed on purpose: it is the simulator's own throwaway credential, and the local run
    // reads it from this line to configure the connector.
    println!(
        "{}",
        serde_json::json!({
            "ifs_url": sim.base_url(),
            "realm": sim.realm(),
            "client_id": client_id,
            "client_secret": client_secret,
        })
    );
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("ifs-sim: cannot wait for Ctrl-C: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
