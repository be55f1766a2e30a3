//! Retries and rate limits for both outside systems (Brex and IFS Cloud): one retry policy (bounded
//! attempts, capped exponential backoff with full jitter, `Retry-After` honoured up to a limit), one
//! `Retry-After` parser, and one client-side token bucket. Each system's defaults are a named constructor.

mod bucket;
mod policy;
mod retry_after;

pub use bucket::TokenBucket;
pub use policy::RetryPolicy;
pub use retry_after::parse_retry_after;
