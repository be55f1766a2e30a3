//! Brex: the record model and the HTTP client.

pub mod model;
