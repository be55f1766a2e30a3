//! The webhook path: signature verification and the handler that turns a verified Brex event into work on
//! the queue.

pub mod handler;
pub mod verify;

pub use handler::{PayloadError, Unavailable, WebhookOptions, WebhookOutcome, WebhookService};
pub use verify::{SignedHeaders, VerifiedHeaders, VerifyError, WebhookVerifier, sign};
