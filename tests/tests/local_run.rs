//! The local runner targets a "real" Brex and IFS by configuration alone: here the real systems are the
//! simulator binaries running as separate processes, reached only through the URLs and credentials given in
//! the environment — the way a real Brex account and IFS tenant would be.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use sims::aws::Moto;

/// A child process killed when the test ends, whatever happens.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a simulator binary and reads the JSON line it prints once it serves.
fn start(bin: &str, args: &[&str]) -> (Running, serde_json::Value) {
    let mut child = Command::new(bin).args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    (running, serde_json::from_str(&line).unwrap_or_else(|e| panic!("{bin}: {e}: {line:?}")))
}

#[tokio::test]
async fn the_local_run_posts_to_the_brex_and_ifs_it_is_configured_with() {
    let moto = Moto::get();
    let (_brex, brex) =
        start(env!("CARGO_BIN_EXE_brex-sim"), &["--records", "8", "--seed", "5", "--user-token", "bxt_external"]);
    let (_ifs, ifs) = start(env!("CARGO_BIN_EXE_ifs-sim"), &[]);
    let brex_url = brex["base_url"].as_str().unwrap().to_owned();
    let ifs_url = ifs["ifs_url"].as_str().unwrap().to_owned();
    let ifs_secret = serde_json::json!({"client_id": ifs["client_id"], "client_secret": ifs["client_secret"]});
    let ifs_realm = ifs["realm"].as_str().unwrap().to_owned();
    let vouchers_url = format!("{ifs_url}/_sim/vouchers");

    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_local-run"))
            .args(["--duration", "120"])
            .env("AWS_ENDPOINT_URL", moto.endpoint())
            .env("BREX_API_URL", &brex_url)
            .env("BREX_SECRET_JSON", r#"{"token":"bxt_external"}"#)
            .env("IFS_URL", &ifs_url)
            .env("IFS_REALM", &ifs_realm)
            .env("IFS_SECRET_JSON", ifs_secret.to_string())
            .env_remove("DRY_RUN")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("(real; credentials from BREX_SECRET_JSON)") && stdout.contains("(real)"), "{stdout}");

    // The runner's own count, and what the external IFS holds.
    let totals = stdout.lines().find(|l| l.starts_with("posted ")).unwrap_or_else(|| panic!("{stdout}"));
    // "posted 7 · already posted 0 · failed 1 · skipped 0 · still retrying 0"
    let counts: std::collections::HashMap<String, usize> = totals
        .split('·')
        .map(|part| {
            let (label, n) = part.trim().rsplit_once(' ').unwrap();
            (label.to_owned(), n.parse().unwrap())
        })
        .collect();
    let (posted, failed) = (counts["posted"], counts["failed"]);
    assert_eq!(counts["still retrying"], 0, "{stdout}");
    let vouchers: serde_json::Value = reqwest::get(&vouchers_url).await.unwrap().json().await.unwrap();
    assert_eq!(vouchers.as_array().map(Vec::len), Some(posted), "{stdout}");
    assert!(posted >= 6 && posted + failed == 8, "all 8 records settled: {totals}");
}
