//! What users read: terminal tables and JSON.
pub mod stats;
pub mod verify;
