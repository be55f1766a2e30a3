//! The command line (clap's builder API: no derive macros to compile).

use std::path::PathBuf;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use clap::{Arg, ArgAction, ArgMatches};

/// Flags that override an environment variable of the same meaning: (flag, variable, help).
pub const SETTING_FLAGS: [(&str, &str, &str); 10] = [
    ("table", "TABLE_NAME", "DynamoDB table"),
    ("queue-url", "QUEUE_URL", "SQS work queue URL"),
    ("dlq-url", "DLQ_URL", "dead-letter queue URL (default: the work queue's redrive target)"),
    ("brex-secret-id", "BREX_SECRET_ID", "Secrets Manager id of the Brex credentials"),
    ("brex-api-url", "BREX_API_URL", "Brex API base URL"),
    ("ifs-secret-id", "IFS_SECRET_ID", "Secrets Manager id of the IFS credentials"),
    ("ifs-url", "IFS_URL", "IFS Cloud base URL"),
    ("ifs-realm", "IFS_REALM", "IFS IAM realm"),
    ("webhook-url", "WEBHOOK_URL", "the connector's webhook URL (API Gateway)"),
    ("ifs-requests-per-minute", "IFS_REQUESTS_PER_MINUTE", "IFS request budget"),
];

/// `connector status` looks this far back unless told otherwise.
pub const DEFAULT_STATUS_WINDOW: &str = "24h";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Doctor {
        records: usize,
        lookback_days: i64,
        probe_writes: bool,
    },
    MappingValidate {
        file: PathBuf,
    },
    MappingPush {
        file: PathBuf,
        force: bool,
    },
    MappingShow,
    DryRun {
        since: Option<DateTime<Utc>>,
        ids: Vec<String>,
        csv: bool,
    },
    Backfill {
        since: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
    },
    Failures,
    /// `window` is the operator's text for `since` (e.g. `24h`), for the heading.
    Status {
        since: DateTime<Utc>,
        window: String,
    },
    Replay {
        all: bool,
        ids: Vec<String>,
        completed: bool,
    },
    Trace {
        id: String,
    },
    WebhookRegister {
        url: String,
    },
    WebhookList,
    FieldsSync {
        dry_run: bool,
    },
    Reconcile {
        since: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub command: Command,
    pub json: bool,
    /// (variable, value) from flags; they win over the environment.
    pub settings: Vec<(&'static str, String)>,
}

pub enum ParseOutcome {
    Help(String),
    Error(String),
}

fn time_arg(name: &'static str, help: &'static str) -> Arg {
    Arg::new(name).long(name).value_name("TIME").help(help)
}

fn cli() -> clap::Command {
    let mut root = clap::Command::new("connector")
        .about("Operate the Brex → IFS Cloud connector")
        .subcommand_required(true)
        .arg(Arg::new("json").long("json").global(true).action(ArgAction::SetTrue).help("machine-readable output"));
    for (flag, var, help) in SETTING_FLAGS {
        root = root.arg(Arg::new(flag).long(flag).global(true).value_name(var).help(help));
    }
    let file = || Arg::new("file").value_name("FILE").required(true).value_parser(clap::value_parser!(PathBuf));
    root.subcommand(
        clap::Command::new("doctor")
            .about("Check credentials, webhook subscription, IFS access and the mapping; one report")
            .arg(
                Arg::new("records")
                    .long("records")
                    .default_value("50")
                    .value_parser(clap::value_parser!(usize))
                    .help("how many of the newest READY_FOR_EXPORT records to map"),
            )
            .arg(
                Arg::new("lookback-days")
                    .long("lookback-days")
                    .default_value("30")
                    .value_parser(clap::value_parser!(i64))
                    .help("how far back to look for READY_FOR_EXPORT records"),
            )
            .arg(Arg::new("probe-writes").long("probe-writes").action(ArgAction::SetTrue).help(
                "also probe ETag references in $batch: one virtual voucher created and removed, nothing committed",
            )),
    )
    .subcommand(
        clap::Command::new("mapping")
            .about("The mapping document")
            .subcommand_required(true)
            .subcommand(clap::Command::new("validate").about("Check a mapping file").arg(file()))
            .subcommand(
                clap::Command::new("push").about("Validate, then store as the next version").arg(file()).arg(
                    Arg::new("force")
                        .long("force")
                        .action(ArgAction::SetTrue)
                        .help("store even when IFS reference data disagrees"),
                ),
            )
            .subcommand(clap::Command::new("show").about("Print the stored document and its version")),
    )
    .subcommand(
        clap::Command::new("dry-run")
            .about("The proposals that would be posted; posts nothing")
            .arg(time_arg("since", "READY_FOR_EXPORT records updated after (date, RFC 3339, or 7d/12h); default 7d"))
            .arg(Arg::new("ids").long("ids").value_delimiter(',').num_args(1..).help("these record ids"))
            .arg(Arg::new("csv").long("csv").action(ArgAction::SetTrue).help("CSV, one line per voucher row")),
    )
    .subcommand(
        clap::Command::new("backfill")
            .about("Enqueue the READY_FOR_EXPORT records of a date range (safe to re-run)")
            .arg(time_arg("since", "updated after (date, RFC 3339, or 7d/12h)").required(true))
            .arg(time_arg("until", "updated at or before")),
    )
    .subcommand(clap::Command::new("failures").about("Failed and held records (table) and dead-lettered messages"))
    .subcommand(
        clap::Command::new("status")
            .about("Is spend flowing: posted/failed/held/in flight, queue depth, poller lag, IFS flow, top reasons")
            .arg(time_arg("since", "window for posted and failed (date, RFC 3339, or 90m/24h/7d); default 24h")),
    )
    .subcommand(
        clap::Command::new("replay")
            .about("Retry failed and held records (after the mapping or the deployment is fixed)")
            .arg(
                Arg::new("all").long("all").action(ArgAction::SetTrue).help("every failed and held record and the DLQ"),
            )
            .arg(Arg::new("ids").value_name("ID").num_args(0..).help("record ids (failed, held or dead-lettered)"))
            .arg(
                Arg::new("completed")
                    .long("completed")
                    .action(ArgAction::SetTrue)
                    .requires("ids")
                    .conflicts_with("all")
                    .help("also these completed records, whose voucher `connector reconcile` found missing in IFS"),
            )
            .group(clap::ArgGroup::new("what").args(["all", "ids"]).required(true)),
    )
    .subcommand(
        clap::Command::new("trace")
            .about("The audit trail of one record")
            .arg(Arg::new("id").value_name("RECORD_ID").required(true)),
    )
    .subcommand(
        clap::Command::new("webhook")
            .about("Brex webhook subscription")
            .subcommand_required(true)
            .subcommand(
                clap::Command::new("register")
                    .about("Subscribe URL to ACCOUNTING_RECORD_READY_FOR_EXPORT (idempotent)")
                    .arg(Arg::new("url").value_name("URL").required(true)),
            )
            .subcommand(clap::Command::new("list").about("Every subscription of this Brex account")),
    )
    .subcommand(
        clap::Command::new("fields")
            .about("Brex fields filled from IFS reference data ([passthrough] in the mapping)")
            .subcommand_required(true)
            .subcommand(
                clap::Command::new("sync")
                    .about("Publish IFS accounts and code parts into Brex fields now (idempotent)")
                    .arg(
                        Arg::new("dry-run")
                            .long("dry-run")
                            .action(ArgAction::SetTrue)
                            .help("print the diff; write nothing to Brex"),
                    ),
            ),
    )
    .subcommand(
        clap::Command::new("reconcile")
            .about("Compare Brex's exported records with IFS's vouchers (read-only); differences with their fix")
            .arg(time_arg("since", "records completed after (date, RFC 3339, or 30d/12h); default 30d")),
    )
}

/// `2026-06-01`, RFC 3339, or a span back from now (`7d`, `12h`, `30m`).
pub fn parse_time(input: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let input = input.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(input) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(input, "%Y-%m-%d")
        && let Some(t) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(t.and_utc());
    }
    let (number, unit) = input.split_at(input.len().saturating_sub(1));
    let span = number.parse::<i64>().ok().and_then(|n| match unit {
        "d" => Duration::try_days(n),
        "h" => Duration::try_hours(n),
        "m" => Duration::try_minutes(n),
        _ => None,
    });
    match span {
        Some(span) if span >= Duration::zero() => Ok(now - span),
        _ => Err(format!("{input:?} is not a date (2026-06-01), an RFC 3339 time or a span like 7d / 12h")),
    }
}

fn time(m: &ArgMatches, name: &str, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, ParseOutcome> {
    m.get_one::<String>(name)
        .map(|v| parse_time(v, now).map_err(|e| ParseOutcome::Error(format!("error: --{name}: {e}\n"))))
        .transpose()
}

fn strings(m: &ArgMatches, name: &str) -> Vec<String> {
    m.get_many::<String>(name).map(|v| v.cloned().collect()).unwrap_or_default()
}

pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Invocation, ParseOutcome> {
    let argv = std::iter::once("connector".to_owned()).chain(args);
    let matches = cli().try_get_matches_from(argv).map_err(|e| match e.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
            ParseOutcome::Help(e.to_string())
        }
        clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => ParseOutcome::Error(e.to_string()),
        _ => ParseOutcome::Error(e.to_string()),
    })?;
    let now = Utc::now();
    let json = matches.get_flag("json");
    let mut settings = Vec::new();
    for (flag, var, _) in SETTING_FLAGS {
        if let Some(value) = matches.get_one::<String>(flag) {
            settings.push((var, value.clone()));
        }
    }
    let missing = || ParseOutcome::Error("error: a subcommand is required\n".into());
    let command = match matches.subcommand().ok_or_else(missing)? {
        ("doctor", m) => Command::Doctor {
            records: m.get_one::<usize>("records").copied().unwrap_or(50),
            lookback_days: m.get_one::<i64>("lookback-days").copied().unwrap_or(30),
            probe_writes: m.get_flag("probe-writes"),
        },
        ("mapping", m) => match m.subcommand().ok_or_else(missing)? {
            ("validate", m) => {
                Command::MappingValidate { file: m.get_one::<PathBuf>("file").cloned().unwrap_or_default() }
            }
            ("push", m) => Command::MappingPush {
                file: m.get_one::<PathBuf>("file").cloned().unwrap_or_default(),
                force: m.get_flag("force"),
            },
            _ => Command::MappingShow,
        },
        ("dry-run", m) => {
            Command::DryRun { since: time(m, "since", now)?, ids: strings(m, "ids"), csv: m.get_flag("csv") }
        }
        ("backfill", m) => Command::Backfill {
            since: time(m, "since", now)?.ok_or_else(|| ParseOutcome::Error("error: --since is required\n".into()))?,
            until: time(m, "until", now)?,
        },
        ("failures", _) => Command::Failures,
        ("status", m) => {
            let window = m.get_one::<String>("since").cloned().unwrap_or_else(|| DEFAULT_STATUS_WINDOW.to_owned());
            let since = parse_time(&window, now).map_err(|e| ParseOutcome::Error(format!("error: --since: {e}\n")))?;
            Command::Status { since, window }
        }
        ("replay", m) => {
            Command::Replay { all: m.get_flag("all"), ids: strings(m, "ids"), completed: m.get_flag("completed") }
        }
        ("trace", m) => Command::Trace { id: m.get_one::<String>("id").cloned().unwrap_or_default() },
        ("webhook", m) => match m.subcommand().ok_or_else(missing)? {
            ("register", m) => {
                Command::WebhookRegister { url: m.get_one::<String>("url").cloned().unwrap_or_default() }
            }
            _ => Command::WebhookList,
        },
        ("fields", m) => match m.subcommand().ok_or_else(missing)? {
            ("sync", m) => Command::FieldsSync { dry_run: m.get_flag("dry-run") },
            _ => return Err(missing()),
        },
        ("reconcile", m) => Command::Reconcile {
            since: time(m, "since", now)?
                .unwrap_or(now - Duration::days(shared::reconcile::DailyReconcile::DEFAULT_WINDOW_DAYS)),
        },
        _ => return Err(missing()),
    };
    Ok(Invocation { command, json, settings })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn commands_and_global_flags_parse() {
        let inv =
            parse(args("backfill --since 2026-06-01 --until 2026-06-30T12:00:00Z --json --table t")).ok().unwrap();
        assert!(inv.json);
        assert_eq!(inv.settings, vec![("TABLE_NAME", "t".to_owned())]);
        match inv.command {
            Command::Backfill { since, until } => {
                assert_eq!(since.to_rfc3339(), "2026-06-01T00:00:00+00:00");
                assert_eq!(until.map(|u| u.to_rfc3339()).as_deref(), Some("2026-06-30T12:00:00+00:00"));
            }
            other => panic!("{other:?}"),
        }
        let inv = parse(args("replay accr_1 accr_2")).ok().unwrap();
        assert_eq!(
            inv.command,
            Command::Replay { all: false, ids: vec!["accr_1".into(), "accr_2".into()], completed: false }
        );
        let inv = parse(args("dry-run --ids accr_1,accr_2 --csv")).ok().unwrap();
        assert!(matches!(inv.command, Command::DryRun { csv: true, ref ids, since: None } if ids.len() == 2));
        assert_eq!(parse(args("fields sync --dry-run")).ok().unwrap().command, Command::FieldsSync { dry_run: true });
        assert_eq!(parse(args("fields sync")).ok().unwrap().command, Command::FieldsSync { dry_run: false });
        let Command::Reconcile { since } = parse(args("reconcile --since 2026-06-01 --json")).ok().unwrap().command
        else {
            panic!("reconcile")
        };
        assert_eq!(since.to_rfc3339(), "2026-06-01T00:00:00+00:00");
        assert!(matches!(parse(args("reconcile")).ok().unwrap().command, Command::Reconcile { .. }));
        assert!(matches!(parse(args("fields")), Err(ParseOutcome::Error(_))));
        let before = Utc::now();
        match parse(args("status")).ok().unwrap().command {
            Command::Status { since, window } => {
                assert_eq!(window, "24h");
                let back = before - since;
                assert!(back <= Duration::hours(24) && back > Duration::hours(24) - Duration::minutes(1), "{back}");
            }
            other => panic!("{other:?}"),
        }
        match parse(args("status --since 90m --json")).ok().unwrap().command {
            Command::Status { since, window } => {
                assert_eq!(window, "90m");
                assert!(Utc::now() - since >= Duration::minutes(90) && Utc::now() - since < Duration::minutes(91));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse(args("status --since 7d")).ok().unwrap().command, Command::Status { .. }));
        assert!(matches!(parse(args("status --since soon")), Err(ParseOutcome::Error(_))));
    }

    #[test]
    fn bad_lines_are_errors_and_help_is_help() {
        assert!(matches!(parse(args("replay")), Err(ParseOutcome::Error(_))), "replay needs --all or ids");
        assert!(matches!(parse(args("backfill")), Err(ParseOutcome::Error(_))));
        assert!(matches!(parse(args("backfill --since yesterday")), Err(ParseOutcome::Error(_))));
        assert!(matches!(parse(args("frobnicate")), Err(ParseOutcome::Error(_))));
        assert!(matches!(parse(args("--help")), Err(ParseOutcome::Help(_))));
    }

    #[test]
    fn spans_count_back_from_now() {
        let now = DateTime::parse_from_rfc3339("2026-06-11T12:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_time("7d", now).unwrap().to_rfc3339(), "2026-06-04T12:00:00+00:00");
        assert_eq!(parse_time("12h", now).unwrap().to_rfc3339(), "2026-06-11T00:00:00+00:00");
        assert!(parse_time("-3d", now).is_err());
        assert!(parse_time("d", now).is_err());
    }
}
