//! The integration tests, one binary (one link of tract instead of one per file).

#[path = "../common/mod.rs"]
mod common;

mod bench_cli;
mod calib_data;
mod canonical;
mod cli_errors;
mod determinism;
mod dynamic_shapes;
mod exec_gradients;
mod exec_models;
mod exec_node_tests;
mod fold;
mod fold_gemm;
mod fuzz_corpus;
mod gated_training;
mod gates_candidates;
mod gates_learn;
mod hostile_models;
mod inspect;
mod large_model;
mod linearize;
mod optimize_calib;
mod optimize_exact;
mod plot_render;
mod report_json;
mod roundtrip;
mod save;
mod verify_inputs;
