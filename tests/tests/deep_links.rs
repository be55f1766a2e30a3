//! Deep links end to end on moto: with `[ifs] voucher_link` in the mapping, every record the poster exports
//! reaches Brex with the address of its own voucher in IFS; without one, no link is sent.

use std::time::Duration;

use shared::domain::{Origin, WebhookId};
use sims::brex::ExportOutcome;
use sims::brex::generator::{GeneratorOptions, RecordGenerator};
use sims::ifs::IfsSimConfig;
use sims::pipeline::{EXAMPLE_MAPPING, Pipeline, PipelineOptions};

const LINK: &str = "https://acme.ifs.cloud/main/ifsapplications/web/page/Voucher/Form;$filter=Company eq '{company}' and AccountingYear eq {year} and VoucherType eq '{voucher_type}' and VoucherNo eq {voucher_no}";

fn with_link(mapping: &str) -> String {
    assert!(mapping.contains("\n[ifs]\n"), "the example mapping has an [ifs] table");
    mapping.replacen("\n[ifs]\n", &format!("\n[ifs]\nvoucher_link = \"{LINK}\"\n"), 1)
}

/// Posts `n` clean records through the pipeline; returns it and the ids.
async fn run(name: &str, mapping: String, n: usize) -> (Pipeline, Vec<String>) {
    let w = Pipeline::start(PipelineOptions {
        name: name.into(),
        ifs: IfsSimConfig::default(),
        mapping: Some(mapping),
        ..PipelineOptions::default()
    })
    .await
    .expect("pipeline");
    let options = GeneratorOptions { count: n, missing_gl_rate: 0.0, ..GeneratorOptions::default() };
    let records = RecordGenerator::with_options(11, options).batch();
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    w.brex.insert_records(records);
    w.enqueue(&ids, &Origin::Webhook { webhook_id: WebhookId::parse("msg_links").unwrap() }).await.unwrap();
    w.drain(Duration::from_secs(60)).await.unwrap();
    (w, ids)
}

#[tokio::test]
async fn every_exported_record_links_to_its_own_voucher() {
    let (w, ids) = run("deep-links", with_link(EXAMPLE_MAPPING), 25).await;
    let by_ref = w.vouchers_by_reference();
    assert_eq!(by_ref.len(), ids.len(), "one voucher per record");
    let mut links = std::collections::BTreeSet::new();
    for id in &ids {
        let voucher = &by_ref[id][0];
        let result = w.brex.export_result(id).unwrap_or_else(|| panic!("{id} reported"));
        let ExportOutcome::Success { reference_id, deep_link_url } = result.outcome else {
            panic!("{id} exported: {:?}", result.outcome)
        };
        let key =
            format!("{}-{}-{}-{}", voucher.company, voucher.accounting_year, voucher.voucher_type, voucher.voucher_no);
        assert_eq!(reference_id.as_deref(), Some(key.as_str()), "{id}");
        let expected = format!(
            "https://acme.ifs.cloud/main/ifsapplications/web/page/Voucher/Form;$filter=Company eq '{}' and AccountingYear eq {} and VoucherType eq '{}' and VoucherNo eq {}",
            voucher.company, voucher.accounting_year, voucher.voucher_type, voucher.voucher_no
        );
        assert_eq!(deep_link_url.as_deref(), Some(expected.as_str()), "{id}");
        links.insert(expected);
    }
    assert_eq!(links.len(), ids.len(), "each record links to a different voucher");
}

#[tokio::test]
async fn without_a_template_no_link_is_sent() {
    let (w, ids) = run("deep-links-none", EXAMPLE_MAPPING.to_owned(), 10).await;
    assert_eq!(w.vouchers_by_reference().len(), ids.len());
    for id in &ids {
        let result = w.brex.export_result(id).unwrap_or_else(|| panic!("{id} reported"));
        let ExportOutcome::Success { reference_id, deep_link_url } = result.outcome else {
            panic!("{id} exported: {:?}", result.outcome)
        };
        assert!(reference_id.is_some(), "{id}");
        assert_eq!(deep_link_url, None, "{id}: no template, no link");
    }
}

#[test]
fn a_template_with_an_unknown_placeholder_is_refused_naming_the_key() {
    let bad = EXAMPLE_MAPPING.replacen("\n[ifs]\n", "\n[ifs]\nvoucher_link = \"https://x/{voucher}\"\n", 1);
    let err = shared::mapping::MappingDocument::parse(&bad).unwrap_err().to_string();
    assert!(err.contains("voucher_link") && err.contains("{voucher}"), "{err}");
}
