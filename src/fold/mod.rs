//! The folding math: tensors and attributes in, tensors and attributes out. Graph
//! matching lives in `passes/`; this module only knows the algebra.

pub(crate) mod affine;
pub mod conv;
pub mod conv_map;
pub mod gemm;
