//! Lambda entry points: turn the event Lambda delivers into a call on the services, and build those services
//! once per cold start from the environment (contract §1). The binaries in `functions/` are three lines each.

pub mod build;
pub mod poster;
pub mod webhook;
