//! Brex API simulator (being written).
