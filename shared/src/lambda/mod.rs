//! Lambda entry points: each function's service started once per instance ([`start::Lazy`], from the
//! environment read by `crate::config`), and the event Lambda delivers turned into a call on it. The binaries
//! in `functions/` are a few lines each.

pub mod build;
pub mod poller;
pub mod poster;
pub mod start;
pub mod webhook;
