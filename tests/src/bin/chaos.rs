//! The chaos run from the command line: `chaos --n 10000 --seed 7 [--posters 4] [--kills 2]
//! [--unmappable-rate 0.01] [--time-limit-secs 3600]`. Needs moto: run it through `infra/scripts/chaos.sh`, or
//! export `AWS_ENDPOINT_URL` yourself. Prints the table; exits 1 unless the run is clean (exactly one voucher per
//! postable record, no duplicates, nothing lost, only the unmappable records failed, every DLQ entry explained).

use std::process::ExitCode;
use std::time::Duration;

use sims::chaos::{ChaosOptions, run};

fn usage() -> String {
    "usage: chaos [--n N] [--seed SEED] [--posters P] [--kills K] [--unmappable-rate R] [--time-limit-secs S] \
     [--batch-size B] [--visibility-timeout V] [--max-receive-count M] [--invocation-timeout-secs T] [--calm]"
        .into()
}

fn parse(args: &[String]) -> Result<ChaosOptions, String> {
    let mut options = ChaosOptions::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{flag} needs a value\n{}", usage()));
        let bad = |e: &dyn std::fmt::Display| format!("{flag}: {e}");
        match flag.as_str() {
            "--n" => options.n = value()?.parse().map_err(|e| bad(&e))?,
            "--seed" => options.seed = value()?.parse().map_err(|e| bad(&e))?,
            "--posters" => options.posters = value()?.parse().map_err(|e| bad(&e))?,
            "--kills" => options.kills = value()?.parse().map_err(|e| bad(&e))?,
            "--unmappable-rate" => options.unmappable_rate = value()?.parse().map_err(|e| bad(&e))?,
            "--time-limit-secs" => options.time_limit = Duration::from_secs(value()?.parse().map_err(|e| bad(&e))?),
            "--batch-size" => options.batch_size = value()?.parse().map_err(|e| bad(&e))?,
            "--visibility-timeout" => options.visibility_timeout = value()?.parse().map_err(|e| bad(&e))?,
            "--max-receive-count" => options.max_receive_count = value()?.parse().map_err(|e| bad(&e))?,
            "--invocation-timeout-secs" => {
                options.invocation_timeout = Duration::from_secs(value()?.parse().map_err(|e| bad(&e))?);
            }
            // No faults, storms or kills: the baseline the chaos is measured against.
            "--calm" => {
                options.ifs_faults = Default::default();
                options.brex_faults = Default::default();
                options.kills = 0;
                options.event_interval = Duration::from_secs(3600);
            }
            "-h" | "--help" => return Err(usage()),
            other => return Err(format!("unknown argument {other}\n{}", usage())),
        }
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // The functions' own logs only when asked for (RUST_LOG=info …): the table is the output.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    }
    match run(options).await {
        Ok(report) if report.is_clean() => ExitCode::SUCCESS,
        Ok(_) => {
            eprintln!("chaos run NOT clean: see the table above");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("chaos run could not start: {e}");
            ExitCode::FAILURE
        }
    }
}
