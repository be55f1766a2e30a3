//! IFS Cloud simulator (being written).
