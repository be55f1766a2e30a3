//! Domain, ports and adapters of the Brex → IFS Cloud connector. The Lambda binaries in `functions/` only
//! build clients once and call in here.

pub mod audit;
pub mod aws;
pub mod brex;
pub mod config;
pub mod domain;
pub mod error;
pub mod fault;
pub mod ifs;
pub mod lambda;
pub mod mapping;
pub mod memory;
pub mod metrics;
pub mod poller;
pub mod ports;
pub mod poster;
pub mod proposal;
pub mod receipts;
pub mod reconcile;
pub mod reference;
pub mod retry;
pub mod revision;
pub mod sync;
pub mod telemetry;
pub mod webhook;
