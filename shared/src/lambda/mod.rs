//! Lambda entry points: turn the event Lambda delivers into a call on the services, and build those services
//! once per instance from the environment (contract §1). The binaries in `functions/` are a few lines each.
//!
//! The services are built on the first invocation, not during init: init then does no network I/O (a cold
//! start reaches the Runtime API's `next` as fast as a hello-world function), the reads it would have made
//! (secrets, mapping document) run concurrently inside the first invocation, and a secret that cannot be read
//! fails that invocation (retried) instead of crash-looping the init.

pub mod build;
pub mod poster;
pub mod webhook;
