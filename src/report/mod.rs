//! What users read: terminal tables and JSON.
