//! IFS document management as the receipt attacher's [`AttachmentStore`]: a receipt becomes a document
//! connected to the voucher, in two requests on the `[ifs.api]` attachment projection
//! (`DocReferenceObjectAttachmentHandling.svc` by default):
//!
//! 1. `POST {attachment_set}` with the voucher's LU name and key ref (`ACCOUNTING_YEAR=2026^COMPANY=10^
//!    VOUCHER_NO=17^VOUCHER_TYPE=M^`: IFS writes the keys of a key ref in alphabetical order), the document
//!    class, title and file name: IFS creates the document revision, its connection to the voucher and the
//!    (empty) file entity, and answers with the entity and its ETag;
//! 2. `PUT {attachment_set}(DocClass=…,DocNo=…,DocSheet=…,DocRev=…,DocType=…)/FileData` with the file's
//!    bytes as the stream and `If-Match: <that ETag>`. A 412 (someone touched the entity) re-reads the ETag
//!    and sends again.
//!
//! The connector records what it attached (see [`crate::receipts`]), so it never lists IFS's documents.

use std::sync::Arc;

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{Value, json};

use super::error::IfsError;
use super::ledger::voucher::VoucherKey;
use super::transport::{Body, IfsTransport, Request, Resend, body_etag};
use super::{IfsApiNames, filter};
use crate::domain::ETag;
use crate::error::ExternalError;
use crate::ports::AttachmentStore;
use crate::receipts::ReceiptFile;

/// Times a stale ETag (412) on the file upload is re-read and the upload sent again.
const MAX_STALE_ETAG_RETRIES: u32 = 2;
/// The title column of a document revision is 250 characters.
const MAX_TITLE: usize = 250;

/// Receipts into IFS document management, over the client's transport.
#[derive(Debug, Clone)]
pub struct IfsAttachments {
    transport: IfsTransport,
}

impl IfsAttachments {
    pub fn new(transport: IfsTransport) -> Self {
        Self { transport }
    }

    /// The body of step 1.
    pub fn reference_body(api: &IfsApiNames, key: &VoucherKey, file: &ReceiptFile) -> Value {
        let title: String = format!("Brex receipt {} ({key})", file.receipt_id).chars().take(MAX_TITLE).collect();
        json!({
            "LuName": api.attachment_lu_name,
            "KeyRef": key.key_ref(),
            "DocClass": api.attachment_doc_class,
            "Title": title,
            "FileName": file.name,
        })
    }

    /// The created entity's path, from the keys IFS answered with.
    pub fn entity_path(api: &IfsApiNames, entity: &Value) -> Result<String, IfsError> {
        let text = |name: &str| {
            entity
                .get(name)
                .and_then(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .ok_or_else(|| IfsError::Decode(format!("{}: the created document has no {name}", api.attachment_set)))
        };
        let keys = ["DocClass", "DocNo", "DocSheet", "DocRev", "DocType"]
            .iter()
            .map(|k| Ok(format!("{k}={}", filter::key_literal(&text(k)?))))
            .collect::<Result<Vec<_>, IfsError>>()?;
        Ok(format!("{}/{}({})", api.attachment_projection, api.attachment_set, keys.join(",")))
    }

    async fn attach_file(&self, key: &VoucherKey, file: &ReceiptFile) -> Result<(), IfsError> {
        let api: Arc<IfsApiNames> = self.transport.api();
        let body = Self::reference_body(&api, key, file);
        // A lost answer may have created the document: not re-sent blindly (the retry of the whole
        // attachment would make a second, empty one at worst).
        let create = Request {
            method: Method::POST,
            url: self.transport.url(&format!("{}/{}", api.attachment_projection, api.attachment_set))?,
            body: Body::Json(&body),
            if_match: None,
            resend: Resend::Answered,
        };
        let resp = self.transport.execute(&create).await?;
        let entity: Value = resp.json(&api.attachment_set)?;
        let path = Self::entity_path(&api, &entity)?;
        let mut etag: ETag = resp
            .etag
            .clone()
            .or_else(|| body_etag(&entity))
            .ok_or_else(|| IfsError::Decode(format!("{}: the created document has no ETag", api.attachment_set)))?;
        let url = self.transport.url(&format!("{path}/FileData"))?;
        let mut rereads = 0;
        loop {
            let put = Request {
                method: Method::PUT,
                url: url.clone(),
                body: Body::Binary { content_type: &file.content_type, bytes: &file.bytes },
                if_match: Some(&etag),
                // Writing the same bytes again is harmless.
                resend: Resend::Always,
            };
            match self.transport.execute(&put).await {
                Ok(_) => return Ok(()),
                Err(IfsError::PreconditionFailed { .. }) if rereads < MAX_STALE_ETAG_RETRIES => {
                    rereads += 1;
                    etag = self.transport.read_etag(&path).await?;
                }
                Err(IfsError::PreconditionFailed { .. }) => {
                    return Err(IfsError::PreconditionFailed { attempts: rereads + 1 });
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[async_trait]
impl AttachmentStore for IfsAttachments {
    fn use_api(&self, api: &IfsApiNames) {
        self.transport.set_api(api);
    }

    async fn attach(&self, voucher: &str, file: &ReceiptFile) -> Result<(), ExternalError> {
        let key = VoucherKey::parse(voucher).ok_or_else(|| {
            ExternalError::new("IFS", format!("{voucher:?} is not a voucher key"), crate::error::Disposition::Permanent)
        })?;
        Ok(self.attach_file(&key, file).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CompanyCode, VoucherType};

    #[test]
    fn the_document_is_connected_to_the_voucher_by_lu_and_key_ref() {
        let api = IfsApiNames::default();
        let key = VoucherKey {
            company: CompanyCode::parse("10").unwrap(),
            accounting_year: 2026,
            voucher_type: VoucherType::parse("M").unwrap(),
            voucher_no: 1,
        };
        let file = ReceiptFile::new("rcpt_1", Some("application/pdf"), b"%PDF".to_vec());
        let body = IfsAttachments::reference_body(&api, &key, &file);
        assert_eq!(body["LuName"], "Voucher");
        assert_eq!(body["KeyRef"], "ACCOUNTING_YEAR=2026^COMPANY=10^VOUCHER_NO=1^VOUCHER_TYPE=M^");
        assert_eq!(body["FileName"], "brex-rcpt_1.pdf");
        let entity = json!({"DocClass": "BREXRCPT", "DocNo": "1000", "DocSheet": "1", "DocRev": "A1",
            "DocType": "ORIGINAL", "@odata.etag": "W/\"x\""});
        assert_eq!(
            IfsAttachments::entity_path(&api, &entity).unwrap(),
            "DocReferenceObjectAttachmentHandling.svc/EdmFileSet(DocClass='BREXRCPT',DocNo='1000',DocSheet='1',\
             DocRev='A1',DocType='ORIGINAL')"
        );
        assert!(IfsAttachments::entity_path(&api, &json!({"DocClass": "X"})).is_err());
    }
}
