//! Fuzzing of the clipresc core: the harness (decoding and invariants) shared by the
//! cargo-fuzz targets, the stable driver and the core's corpus replay test.

pub mod harness;
