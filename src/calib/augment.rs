//! Light, seeded augmentation of NCHW image batches for training: per sample, a random
//! window of 80–100 % of each side, rescaled back to the full size (zoom and shift), and
//! a horizontal flip half of the time. Every input of a sample gets the same transform,
//! so inputs that are views of one scene stay aligned.

use ndarray::{ArrayD, Axis, Slice};

use crate::calib::preprocess::resample;
use crate::calib::random::Rng;

const MIN_SIDE: f64 = 0.8;

/// One sample's transform: the window's side as a fraction of the image's, its offset as
/// a fraction of the room left, and whether to flip.
struct Transform {
    side: f64,
    offset: (f64, f64),
    flip: bool,
}

impl Transform {
    fn draw(rng: &mut Rng) -> Transform {
        Transform {
            side: MIN_SIDE + (1.0 - MIN_SIDE) * rng.uniform(),
            offset: (rng.uniform(), rng.uniform()),
            flip: rng.uniform() <= 0.5,
        }
    }

    /// Applies the transform to one [C, H, W] image.
    fn apply(&self, image: &ArrayD<f32>) -> ArrayD<f32> {
        let mut window = image.view();
        for (axis, offset) in [(Axis(1), self.offset.0), (Axis(2), self.offset.1)] {
            let len = image.len_of(axis);
            let side = ((len as f64 * self.side).round() as usize).clamp(1, len);
            let start = ((len - side) as f64 * offset).floor() as usize;
            window.slice_axis_inplace(axis, Slice::from(start..start + side));
        }
        let mut result = window.to_owned();
        for axis in [Axis(1), Axis(2)] {
            if result.len_of(axis) != image.len_of(axis) {
                result = resample(&result, axis, image.len_of(axis));
            }
        }
        if self.flip {
            result.invert_axis(Axis(2));
        }
        result
    }
}

/// Augments a batch in place: one array per input, each [N, C, H, W].
pub(crate) fn augment(batch: &mut [ArrayD<f32>], rng: &mut Rng) {
    let samples = batch.first().map_or(0, |array| array.len_of(Axis(0)));
    for sample in 0..samples {
        let transform = Transform::draw(rng);
        for array in batch.iter_mut() {
            let augmented = transform.apply(&array.index_axis(Axis(0), sample).to_owned());
            array.index_axis_mut(Axis(0), sample).assign(&augmented);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(shape: &[usize]) -> ArrayD<f32> {
        ArrayD::from_shape_fn(shape.to_vec(), |index| index[3] as f32)
    }

    #[test]
    fn the_full_window_unflipped_is_the_identity_and_flipped_mirrors() {
        let image = ramp(&[1, 2, 3, 4]).index_axis(Axis(0), 0).to_owned();
        let mut transform = Transform {
            side: 1.0,
            offset: (0.7, 0.2),
            flip: false,
        };
        assert_eq!(transform.apply(&image), image);
        transform.flip = true;
        let flipped = transform.apply(&image);
        assert_eq!(flipped[[1, 2, 0]], 3.0);
        assert_eq!(flipped[[0, 0, 3]], 0.0);
    }

    #[test]
    fn a_smaller_window_zooms_in_and_keeps_the_size() {
        let image = ramp(&[1, 1, 10, 10]).index_axis(Axis(0), 0).to_owned();
        let transform = Transform {
            side: 0.8,
            offset: (1.0, 1.0),
            flip: false,
        };
        let zoomed = transform.apply(&image);
        assert_eq!(zoomed.shape(), &[1, 10, 10]);
        // The window is columns 2..10, stretched over 10 columns.
        assert!(
            zoomed[[0, 0, 0]] >= 2.0 && zoomed[[0, 0, 9]] <= 9.0,
            "{zoomed:?}"
        );
        assert!(zoomed[[0, 0, 0]] < zoomed[[0, 0, 9]]);
    }

    #[test]
    fn every_input_of_a_sample_gets_the_same_transform_and_the_seed_fixes_it() {
        let run = |seed| {
            let mut batch = vec![ramp(&[4, 1, 6, 6]), ramp(&[4, 1, 6, 6])];
            augment(&mut batch, &mut Rng::new(seed));
            batch
        };
        let batch = run(3);
        assert_eq!(batch[0], batch[1]);
        assert_eq!(batch, run(3));
        assert_ne!(batch, run(4));
        assert_ne!(batch[0], ramp(&[4, 1, 6, 6]));
    }
}
