//! Helpers for the crate's own tests: numeric equivalence of two models in tract.

use crate::calib::random::{Rng, normal_array};
use crate::ir::Model;
use crate::runtime::Session;
use crate::runtime::compare;

/// Relative error of `candidate` against `reference` (`runtime::compare::relative_error`),
/// their shapes checked first.
pub(crate) fn relative_error(
    reference: &ndarray::ArrayD<f32>,
    candidate: &ndarray::ArrayD<f32>,
) -> f64 {
    assert_eq!(reference.shape(), candidate.shape(), "output shapes differ");
    compare::relative_error(reference.view(), candidate.view())
}

/// Runs both models in tract on the same signed random inputs of the given dims and
/// returns the largest relative error over their outputs (NaN when one is NaN).
pub(crate) fn max_relative_error(
    reference: &Model,
    candidate: &Model,
    input_dims: &[Vec<usize>],
    seed: u64,
) -> f64 {
    let mut rng = Rng::new(seed);
    let inputs: Vec<_> = input_dims
        .iter()
        .map(|d| normal_array(d, &mut rng))
        .collect();
    let expected = Session::new(reference, input_dims)
        .expect("reference loads in tract")
        .run(&inputs)
        .expect("reference runs");
    let actual = Session::new(candidate, input_dims)
        .expect("candidate loads in tract")
        .run(&inputs)
        .expect("candidate runs");
    expected
        .iter()
        .zip(&actual)
        .map(|(r, c)| relative_error(r, c))
        .fold(0.0, |max, e| if e.is_nan() || e > max { e } else { max })
}
