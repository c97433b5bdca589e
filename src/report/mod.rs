//! What users read: terminal tables and JSON.
pub mod stats;
