//! IFS Cloud: the OData client (being written) and the projection names it uses.

pub mod api_names;

pub use api_names::IfsApiNames;
