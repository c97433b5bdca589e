//! Training augmentation of images, ImageNet style: per sample, a random window of the
//! stored image — its area a random fraction of the image's, its aspect ratio random around
//! square — resampled to the model's input size, and mirrored half of the time. A few
//! hundred large photos so yield as many distinct training crops as a run needs.
//! Held-out samples are never augmented.

use ndarray::{ArrayD, Axis, Slice};

use crate::calib::preprocess::resample;
use crate::calib::random::Rng;
use crate::error::{Error, Result};

/// The windows drawn: their area as a fraction of the image's, and their aspect ratio
/// (width / height), each uniform (the ratio on a log scale), as torchvision's
/// `RandomResizedCrop` draws them.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CropRange {
    pub scale: (f64, f64),
    pub ratio: (f64, f64),
}

impl Default for CropRange {
    fn default() -> CropRange {
        CropRange {
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
        }
    }
}

/// Tries at a window that fits before falling back to the centre.
const ATTEMPTS: usize = 10;

impl CropRange {
    /// Refuses ranges no window can be drawn from, naming the option.
    pub fn check(&self) -> Result<()> {
        let (s0, s1) = self.scale;
        let (r0, r1) = self.ratio;
        if !(s0 > 0.0 && s0 <= s1 && s1 <= 1.0) {
            return Err(Error::invalid(
                "crop.scale",
                format!("{s0},{s1}"),
                "MIN,MAX with 0 < MIN ≤ MAX ≤ 1",
            ));
        }
        if !(r0 > 0.0 && r0 <= r1 && r1.is_finite()) {
            return Err(Error::invalid(
                "crop.ratio",
                format!("{r0},{r1}"),
                "MIN,MAX with 0 < MIN ≤ MAX",
            ));
        }
        Ok(())
    }

    /// A window of an image of `height` × `width`.
    pub(crate) fn draw(&self, (height, width): (usize, usize), rng: &mut Rng) -> Window {
        let area = (height * width) as f64;
        let (log_r0, log_r1) = (self.ratio.0.ln(), self.ratio.1.ln());
        let between = |rng: &mut Rng, (a, b): (f64, f64)| a + (b - a) * rng.uniform();
        let offset = |rng: &mut Rng, room: usize| (rng.next_u64() % (room as u64 + 1)) as usize;
        for _ in 0..ATTEMPTS {
            let target = area * between(rng, self.scale);
            let aspect = between(rng, (log_r0, log_r1)).exp();
            let w = (target * aspect).sqrt().round() as usize;
            let h = (target / aspect).sqrt().round() as usize;
            if (1..=width).contains(&w) && (1..=height).contains(&h) {
                let (top, left) = (offset(rng, height - h), offset(rng, width - w));
                return Window::new(top, left, h, w, rng.uniform() <= 0.5);
            }
        }
        let flip = rng.uniform() <= 0.5;
        self.centre((height, width), flip)
    }

    /// The whole image, narrowed to the ratio range when it is outside it, centred.
    fn centre(&self, (height, width): (usize, usize), flip: bool) -> Window {
        let ratio = width as f64 / height as f64;
        let (h, w) = if ratio < self.ratio.0 {
            ((width as f64 / self.ratio.0).round() as usize, width)
        } else if ratio > self.ratio.1 {
            (height, (height as f64 * self.ratio.1).round() as usize)
        } else {
            (height, width)
        };
        let (h, w) = (h.clamp(1, height), w.clamp(1, width));
        Window::new((height - h) / 2, (width - w) / 2, h, w, flip)
    }
}

/// A window of an image, and whether to mirror it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Window {
    top: usize,
    left: usize,
    height: usize,
    width: usize,
    flip: bool,
}

impl Window {
    fn new(top: usize, left: usize, height: usize, width: usize, flip: bool) -> Window {
        Window {
            top,
            left,
            height,
            width,
            flip,
        }
    }

    /// The window of NCHW `images`, resampled to `to` (height, width), mirrored if drawn so.
    pub(crate) fn cut(&self, images: &ArrayD<f32>, to: (usize, usize)) -> ArrayD<f32> {
        let mut window = images.view();
        window.slice_axis_inplace(Axis(2), Slice::from(self.top..self.top + self.height));
        window.slice_axis_inplace(Axis(3), Slice::from(self.left..self.left + self.width));
        let mut result = window.to_owned();
        for (axis, len) in [(Axis(2), to.0), (Axis(3), to.1)] {
            if result.len_of(axis) != len {
                result = resample(&result, axis, len);
            }
        }
        if self.flip {
            result.invert_axis(Axis(3));
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(shape: &[usize]) -> ArrayD<f32> {
        ArrayD::from_shape_fn(shape.to_vec(), |index| index[3] as f32)
    }

    #[test]
    fn the_whole_window_unflipped_is_the_identity_and_flipped_mirrors() {
        let image = ramp(&[1, 2, 3, 4]);
        let whole = Window::new(0, 0, 3, 4, false);
        assert_eq!(whole.cut(&image, (3, 4)), image);
        let mirrored = Window::new(0, 0, 3, 4, true).cut(&image, (3, 4));
        assert_eq!(mirrored[[0, 1, 2, 0]], 3.0);
        assert_eq!(mirrored[[0, 0, 0, 3]], 0.0);
    }

    #[test]
    fn a_window_is_cut_and_resampled_to_the_input_size() {
        let image = ramp(&[1, 1, 10, 20]);
        let zoomed = Window::new(2, 10, 5, 10, false).cut(&image, (8, 8));
        assert_eq!(zoomed.shape(), &[1, 1, 8, 8]);
        // Columns 10..20, stretched over 8 columns, in order.
        assert!(zoomed[[0, 0, 0, 0]] >= 10.0 && zoomed[[0, 0, 0, 7]] <= 19.0);
        assert!(zoomed[[0, 0, 0, 0]] < zoomed[[0, 0, 0, 7]]);
    }

    #[test]
    fn drawn_windows_fit_the_image_and_their_ranges() {
        let range = CropRange::default();
        let mut rng = Rng::new(1);
        let (height, width) = (640, 1024);
        let windows: Vec<Window> = (0..2000)
            .map(|_| range.draw((height, width), &mut rng))
            .collect();
        for w in &windows {
            assert!(
                w.top + w.height <= height && w.left + w.width <= width,
                "{w:?}"
            );
            let area = (w.height * w.width) as f64 / (height * width) as f64;
            let ratio = w.width as f64 / w.height as f64;
            assert!((0.07..=1.0).contains(&area), "{w:?}");
            assert!((0.74..=1.34).contains(&ratio), "{w:?}");
        }
        let flipped = windows.iter().filter(|w| w.flip).count();
        assert!((900..1100).contains(&flipped), "{flipped}");
        let small = windows
            .iter()
            .filter(|w| w.height * w.width < height * width / 4)
            .count();
        assert!(
            small > 500,
            "areas spread over the range: {small} below a quarter"
        );
    }

    #[test]
    fn a_range_no_window_fits_falls_back_to_the_centre_and_bad_ranges_are_refused() {
        let wide = CropRange {
            scale: (1.0, 1.0),
            ratio: (1.0, 1.0),
        };
        let w = wide.draw((100, 300), &mut Rng::new(0));
        assert_eq!((w.top, w.left, w.height, w.width), (0, 100, 100, 100));
        let bad = CropRange {
            scale: (0.5, 0.2),
            ..CropRange::default()
        };
        assert!(bad.check().unwrap_err().to_string().contains("crop.scale"));
        assert!(CropRange::default().check().is_ok());
    }
}
