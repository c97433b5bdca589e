//! The folding math: tensors and attributes in, tensors and attributes out; and, in
//! `nodes`, its convolutions read from and written as graph nodes. Graph matching lives
//! in `passes/`.

pub(crate) mod affine;
pub mod conv;
pub mod conv_map;
pub mod gemm;
pub(crate) mod nodes;
