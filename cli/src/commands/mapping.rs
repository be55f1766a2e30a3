//! `connector mapping validate FILE` / `push FILE` / `show`.

use std::io::Write;
use std::path::Path;

use serde_json::json;
use shared::mapping::MappingDocument;
use shared::reference::Severity;

use super::doctor::{IfsReferenceCheck, reference_check};

use crate::context::Ctx;
use crate::error::CliError;
use crate::output::json_line;

fn read(file: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(file).map_err(|e| CliError::Input(format!("reading {}: {e}", file.display())))
}

/// What checking a document found: the parse result, then (when IFS is configured) the reference report.
/// Errors block a push; warnings (e.g. the next period is closed) are shown only.
struct Verdict {
    document: Option<MappingDocument>,
    problems: Vec<String>,
    warnings: Vec<String>,
    /// Why IFS reference data was not checked, if it was not.
    unchecked: Option<String>,
}

async fn check(ctx: &Ctx<'_>, text: &str) -> Verdict {
    let doc = match MappingDocument::parse(text) {
        Err(e) => return Verdict { document: None, problems: vec![e.to_string()], warnings: vec![], unchecked: None },
        Ok(doc) => doc,
    };
    match reference_check(ctx, &doc).await {
        IfsReferenceCheck::Unavailable(why) => {
            Verdict { document: Some(doc), problems: vec![], warnings: vec![], unchecked: Some(why) }
        }
        IfsReferenceCheck::Report(report) => {
            let (errors, warnings): (Vec<_>, Vec<_>) =
                report.findings.iter().partition(|f| f.severity == Severity::Error);
            let line = |f: &&shared::reference::Finding| format!("{} (company {}): {}", f.source, f.company, f.message);
            Verdict {
                document: Some(doc),
                problems: errors.iter().map(line).collect(),
                warnings: warnings.iter().map(line).collect(),
                unchecked: None,
            }
        }
    }
}

fn write_verdict(ctx: &Ctx<'_>, file: &Path, verdict: &Verdict, out: &mut dyn Write) -> Result<(), CliError> {
    if ctx.json {
        return Ok(());
    }
    match &verdict.document {
        Some(doc) if verdict.problems.is_empty() => {
            let against = match &verdict.unchecked {
                None => "checked against IFS reference data".to_owned(),
                Some(why) => format!("IFS reference data not checked: {why}"),
            };
            writeln!(
                out,
                "✓ {}: valid mapping document (company {}, {} rules; {against})",
                file.display(),
                doc.company,
                doc.rules.len()
            )?;
        }
        _ => {
            writeln!(out, "✗ {}:", file.display())?;
            for p in &verdict.problems {
                writeln!(out, "    {p}")?;
            }
        }
    }
    for w in &verdict.warnings {
        writeln!(out, "    warning: {w}")?;
    }
    Ok(())
}

pub async fn validate(ctx: &Ctx<'_>, file: &Path, out: &mut dyn Write) -> Result<i32, CliError> {
    let text = read(file)?;
    let verdict = check(ctx, &text).await;
    let ok = verdict.document.is_some() && verdict.problems.is_empty();
    if ctx.json {
        json_line(
            out,
            &json!({
                "file": file.display().to_string(),
                "valid": ok,
                "rules": verdict.document.as_ref().map(|d| d.rules.len()),
                "problems": verdict.problems,
                "warnings": verdict.warnings,
                "ifs_checked": verdict.unchecked.is_none(),
                "ifs_unchecked_reason": verdict.unchecked,
            }),
        )?;
    }
    write_verdict(ctx, file, &verdict, out)?;
    Ok(if ok { 0 } else { 1 })
}

pub async fn push(ctx: &Ctx<'_>, file: &Path, force: bool, out: &mut dyn Write) -> Result<i32, CliError> {
    let text = read(file)?;
    let verdict = check(ctx, &text).await;
    // A document the poster cannot parse is never stored; reference problems only with --force.
    if verdict.document.is_none() || (!verdict.problems.is_empty() && !force) {
        if ctx.json {
            json_line(out, &json!({ "pushed": false, "problems": verdict.problems }))?;
        }
        write_verdict(ctx, file, &verdict, out)?;
        if !ctx.json {
            writeln!(out, "not pushed")?;
        }
        return Ok(1);
    }
    let store = ctx.store()?;
    let current = store.load_mapping().await?;
    if let Some(current) = current.as_ref().filter(|c| c.document == text) {
        if ctx.json {
            json_line(out, &json!({ "pushed": false, "unchanged": true, "version": current.version }))?;
        } else {
            writeln!(out, "unchanged: the stored mapping (version {}) is this document", current.version)?;
        }
        return Ok(0);
    }
    let previous = current.map(|c| c.version);
    let version = store.store_mapping(&text, previous).await?;
    if ctx.json {
        json_line(
            out,
            &json!({ "pushed": true, "version": version, "previous": previous, "problems": verdict.problems }),
        )?;
    } else {
        write_verdict(ctx, file, &verdict, out)?;
        match previous {
            Some(p) => writeln!(out, "pushed mapping version {version} (was {p})")?,
            None => writeln!(out, "pushed mapping version {version} (first)")?,
        }
    }
    Ok(0)
}

pub async fn show(ctx: &Ctx<'_>, out: &mut dyn Write) -> Result<i32, CliError> {
    let store = ctx.store()?;
    let Some(stored) = store.load_mapping().await? else {
        if ctx.json {
            json_line(out, &json!({ "mapping": null }))?;
        } else {
            writeln!(out, "no mapping document stored (push one with `connector mapping push FILE`)")?;
        }
        return Ok(1);
    };
    if ctx.json {
        json_line(
            out,
            &json!({ "version": stored.version, "updated_at": stored.updated_at, "document": stored.document }),
        )?;
    } else {
        writeln!(out, "# mapping version {} (updated {})", stored.version, stored.updated_at)?;
        write!(out, "{}", stored.document)?;
        if !stored.document.ends_with('\n') {
            writeln!(out)?;
        }
    }
    Ok(0)
}
