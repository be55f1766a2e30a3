//! The operator's `connector` CLI run in-process against a pipeline's stack (moto and the simulators), configured
//! by the same variables a deployed stack gives it; every run is echoed to stderr as the operator would see it.

use std::collections::HashMap;

use connector::Env;

use crate::pipeline::Pipeline;

/// What one `connector` command did.
pub struct Run {
    pub code: i32,
    pub out: String,
    pub err: String,
}

impl Run {
    /// The output as JSON (for `--json`).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.out).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.out))
    }

    /// The one output line starting with `label`.
    pub fn line(&self, label: &str) -> &str {
        let found: Vec<&str> = self.out.lines().filter(|l| l.starts_with(label)).collect();
        assert_eq!(found.len(), 1, "one line starting {label:?}:\n{}", self.out);
        found[0]
    }
}

/// `connector LINE…` with the pipeline's operator environment.
pub async fn cli(p: &Pipeline, line: &[&str]) -> Run {
    cli_with(p, p.operator_env(), line).await
}

/// `connector LINE…` with `vars` as its environment.
pub async fn cli_with(p: &Pipeline, vars: HashMap<String, String>, line: &[&str]) -> Run {
    let env = Env { vars: Box::new(vars), sdk: Some(p.stack.sdk.clone()) };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = connector::run_with(&env, line.iter().map(|s| (*s).to_owned()), &mut out, &mut err).await;
    let run =
        Run { code, out: String::from_utf8_lossy(&out).into_owned(), err: String::from_utf8_lossy(&err).into_owned() };
    eprintln!("$ connector {}\n{}{}(exit {})", line.join(" "), run.out, run.err, run.code);
    run
}
