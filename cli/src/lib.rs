//! The operator's CLI (`connector`), built on the same `shared` code as the Lambdas and configured the same
//! way: the functions' environment variables (docs/contract.md §1) plus `DLQ_URL` and `WEBHOOK_URL`, each
//! overridable by a flag, and AWS through the standard chain (`AWS_ENDPOINT_URL` points it at an emulator).
//!
//! Output is for people by default and JSON with `--json`. Exit codes: 0 all well, 1 something failed or a
//! check found a problem, 2 bad usage or configuration.

mod args;
mod commands;
mod context;
mod error;
mod evaluate;
mod output;
mod ready;

use std::io::Write;

use aws_config::{BehaviorVersion, SdkConfig};
use shared::config::{Lookup, ProcessEnv};

pub use args::{Command, Invocation};
pub use error::CliError;

/// Where the CLI takes its settings from: environment variables and the AWS configuration. Tests hand in a
/// map and an emulator's `SdkConfig`; the binary the process environment and `aws_config::load_defaults`.
pub struct Env {
    pub vars: Box<dyn Lookup>,
    /// `None`: load the standard AWS configuration on first use.
    pub sdk: Option<SdkConfig>,
}

impl Env {
    pub fn process() -> Self {
        Self { vars: Box::new(ProcessEnv), sdk: None }
    }
}

/// Runs one command line (without the program name) against the process environment; progress goes to
/// stderr. Returns the exit code.
pub async fn run(args: impl IntoIterator<Item = String>, out: &mut dyn Write) -> i32 {
    let mut err = std::io::stderr();
    run_with(&Env::process(), args, out, &mut err).await
}

/// Like [`run`] with explicit settings and a stream for progress and diagnostics.
pub async fn run_with(
    env: &Env,
    args: impl IntoIterator<Item = String>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let invocation = match args::parse(args) {
        Ok(invocation) => invocation,
        Err(args::ParseOutcome::Help(text)) => {
            let _ = write!(out, "{text}");
            return 0;
        }
        Err(args::ParseOutcome::Error(text)) => {
            let _ = write!(err, "{text}");
            return 2;
        }
    };
    let sdk = match &env.sdk {
        Some(sdk) => sdk.clone(),
        None => aws_config::load_defaults(BehaviorVersion::latest()).await,
    };
    let ctx = context::Ctx::new(env.vars.as_ref(), &invocation, sdk);
    match commands::dispatch(&ctx, &invocation.command, out, err).await {
        Ok(code) => code,
        Err(e) => {
            if invocation.json {
                let body = serde_json::json!({ "error": e.to_string() });
                let _ = writeln!(out, "{body}");
            }
            let _ = writeln!(err, "error: {e}");
            e.exit_code()
        }
    }
}
