//! Stand-ins for the outside world: the Brex and IFS Cloud simulators and the AWS emulator (moto) harness.
//!
//! The simulators are product, not test scaffolding: the README's local run uses them, and they count what
//! matters (requests, 412s, 429s, token fetches) so tests can assert on it.

pub mod apigw;
pub mod aws;
pub mod brex;
pub mod chaos;
pub mod fixtures;
pub mod ifs;
pub mod logs;
pub mod operator;
pub mod pipeline;
pub mod template;
