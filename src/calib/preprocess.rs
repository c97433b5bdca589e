//! Turning stored data into what a model reads: layout, channel order, resize, centre
//! crop, scale and per-channel normalisation.
//!
//! A SPEC is comma-separated items: `key=value`, where a list value continues over the
//! following items that have no `=`, and the flag `bgr`. It may start with a preset:
//! `imagenet` (uint8 NHWC pixels → NCHW, ×1/255, ImageNet mean and std) or `none`; later
//! items override it, so `imagenet,resize=256,crop=224` is torchvision's evaluation
//! pipeline.
//!
//! | item | meaning |
//! |---|---|
//! | `layout=nhwc` | the data is NHWC: transpose to NCHW (default `nchw`) |
//! | `bgr` | reverse the channel order |
//! | `resize=N` | bilinear resize, short side to N |
//! | `crop=N` | centre crop N×N |
//! | `scale=S` | multiply by S |
//! | `mean=M,…` / `std=S,…` | subtract M and divide by S, per channel (one value: every channel) |
//!
//! They apply in the order of that table, whatever their order in the SPEC; `mean` and
//! `std` are given in the channel order the model reads (after `bgr`).
//!
//! ```
//! use onnx_shallow::calib::Preprocess;
//! let spec = Preprocess::parse("scale=0.00392156862745098,mean=0.5,0.5,0.5,std=0.5,0.5,0.5,layout=nhwc")?;
//! let images = ndarray::ArrayD::from_elem(vec![2, 8, 8, 3], 255.0);
//! let batch = spec.apply(images)?;
//! assert_eq!(batch.shape(), &[2, 3, 8, 8]);
//! assert!(batch.iter().all(|&v| (v - 1.0).abs() < 1e-6));
//! # Ok::<(), onnx_shallow::Error>(())
//! ```

use ndarray::{ArrayD, Axis, Slice};

use crate::calib::augment::Window;
use crate::calib::npy::Dtype;
use crate::error::{Error, Result};

const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// torchvision's evaluation crop: the centre 224 of an image resized to 256.
const EVAL_CROP_FRACTION: f64 = 0.875;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Layout {
    #[default]
    Nchw,
    Nhwc,
}

/// A parsed preprocessing SPEC; the default does nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    layout: Layout,
    bgr: bool,
    resize: Option<usize>,
    crop: Option<usize>,
    scale: f32,
    mean: Vec<f32>,
    std: Vec<f32>,
    /// The `imagenet` preset's scale of 1/255 assumes 0–255 pixels: float data is refused
    /// rather than scaled a second time. An explicit `scale=` lifts this.
    expects_uint8: bool,
}

impl Default for Preprocess {
    fn default() -> Preprocess {
        Preprocess {
            layout: Layout::Nchw,
            bgr: false,
            resize: None,
            crop: None,
            scale: 1.0,
            mean: Vec::new(),
            std: Vec::new(),
            expects_uint8: false,
        }
    }
}

/// One SPEC item: a key and the values that followed it.
struct Item<'a> {
    key: &'a str,
    values: Vec<&'a str>,
}

impl Item<'_> {
    fn error(&self, reason: impl std::fmt::Display) -> Error {
        let text = match self.values.is_empty() {
            true => self.key.to_string(),
            false => format!("{}={}", self.key, self.values.join(",")),
        };
        Error::Usage(format!("preprocess SPEC item '{text}': {reason}"))
    }

    fn single(&self) -> Result<&str> {
        match self.values[..] {
            [value] => Ok(value),
            _ => Err(self.error(format!("{} takes one value", self.key))),
        }
    }

    fn number(&self, text: &str) -> Result<f32> {
        text.parse::<f32>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| self.error(format!("bad number '{text}'")))
    }

    fn numbers(&self) -> Result<Vec<f32>> {
        self.values.iter().map(|text| self.number(text)).collect()
    }

    fn size(&self) -> Result<usize> {
        let text = self.single()?;
        text.parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| self.error(format!("expected a positive integer, got '{text}'")))
    }
}

const FLAGS: [&str; 3] = ["imagenet", "none", "bgr"];

/// Splits a SPEC into items; a part without `=` is a flag or preset, or else continues
/// the previous item's list.
fn items(spec: &str) -> Result<Vec<Item<'_>>> {
    let mut items: Vec<Item> = Vec::new();
    for part in spec.split(',').map(str::trim) {
        match (part.split_once('='), items.last_mut()) {
            _ if part.is_empty() => {
                return Err(Error::Usage(format!(
                    "preprocess SPEC '{spec}': empty item"
                )));
            }
            (Some((key, value)), _) => items.push(Item {
                key: key.trim(),
                values: vec![value.trim()],
            }),
            (None, _) if FLAGS.contains(&part) => items.push(Item {
                key: part,
                values: Vec::new(),
            }),
            (None, Some(previous)) if !previous.values.is_empty() => previous.values.push(part),
            (None, _) => {
                return Err(Item {
                    key: part,
                    values: Vec::new(),
                }
                .error("unknown flag (expected key=value, bgr, or a preset: imagenet, none)"));
            }
        }
    }
    Ok(items)
}

impl Preprocess {
    /// Parses a SPEC (see the module docs); the error names the offending item.
    pub fn parse(spec: &str) -> Result<Preprocess> {
        let mut preprocess = Preprocess::default();
        for (position, item) in items(spec)?.iter().enumerate() {
            preprocess.set(item, position == 0)?;
        }
        Ok(preprocess)
    }

    fn imagenet() -> Preprocess {
        Preprocess {
            layout: Layout::Nhwc,
            scale: 1.0 / 255.0,
            mean: IMAGENET_MEAN.to_vec(),
            std: IMAGENET_STD.to_vec(),
            expects_uint8: true,
            ..Preprocess::default()
        }
    }

    fn set(&mut self, item: &Item, first: bool) -> Result<()> {
        if FLAGS.contains(&item.key) && !item.values.is_empty() {
            return Err(item.error(format!("{} takes no value", item.key)));
        }
        match item.key {
            "imagenet" | "none" if !first => return Err(item.error("a preset must come first")),
            "imagenet" => *self = Preprocess::imagenet(),
            "none" => *self = Preprocess::default(),
            "bgr" => self.bgr = true,
            "layout" => {
                self.layout = match item.single()? {
                    "nchw" => Layout::Nchw,
                    "nhwc" => Layout::Nhwc,
                    other => {
                        return Err(item.error(format!("unknown layout '{other}' (nchw or nhwc)")));
                    }
                }
            }
            "resize" => self.resize = Some(item.size()?),
            "crop" => self.crop = Some(item.size()?),
            "scale" => {
                self.scale = item.number(item.single()?)?;
                self.expects_uint8 = false;
            }
            "mean" => self.mean = item.numbers()?,
            "std" => {
                self.std = item.numbers()?;
                if self.std.contains(&0.0) {
                    return Err(item.error("std must not be zero"));
                }
            }
            other => {
                return Err(item.error(format!(
                    "unknown key '{other}' (layout, bgr, resize, crop, scale, mean, std)"
                )));
            }
        }
        Ok(())
    }

    /// Refuses data this SPEC was not written for (float data under the `imagenet` preset).
    pub(crate) fn check_source(&self, dtype: Dtype) -> Result<()> {
        if self.expects_uint8 && dtype != Dtype::U8 {
            return Err(Error::Usage(format!(
                "the imagenet preset expects uint8 pixels, the data is {dtype:?}; give an explicit SPEC (scale=…,mean=…,std=…,layout=…)"
            )));
        }
        Ok(())
    }

    /// Applies the SPEC to a batch whose leading dim is the sample dim; the result is NCHW
    /// when the SPEC involves images. An error names the step that cannot apply.
    pub fn apply(&self, batch: ArrayD<f32>) -> Result<ArrayD<f32>> {
        let mut batch = self.reorder(batch)?;
        if let Some(side) = self.resize {
            require_images("resize", &batch)?;
            batch = resize_short_side(&batch, side)?;
        }
        if let Some(side) = self.crop {
            require_images("crop", &batch)?;
            centre_crop(&mut batch, side)?;
        }
        self.finish(batch)
    }

    /// Applies the SPEC with a window drawn by `draw` in place of its resize and crop: the window of the
    /// (reordered) image, resampled to `to` (height, width) and maybe mirrored. For one
    /// sample, `[1, …]`.
    pub(crate) fn apply_cropped(
        &self,
        sample: ArrayD<f32>,
        draw: impl FnOnce((usize, usize)) -> Window,
        to: (usize, usize),
    ) -> Result<ArrayD<f32>> {
        let image = self.reorder(sample)?;
        require_images("a random crop", &image)?;
        let window = draw((image.len_of(Axis(2)), image.len_of(Axis(3))));
        self.finish(window.cut(&image, to))
    }

    /// Layout and channel order: the steps before any resampling.
    fn reorder(&self, mut batch: ArrayD<f32>) -> Result<ArrayD<f32>> {
        if self.layout == Layout::Nhwc {
            require_images("layout=nhwc", &batch)?;
            batch = batch.permuted_axes(vec![0, 3, 1, 2]);
        }
        if self.bgr {
            require_channels("bgr", &batch)?;
            batch.invert_axis(Axis(1));
        }
        Ok(batch)
    }

    /// Scale and normalisation, in standard layout.
    fn finish(&self, mut batch: ArrayD<f32>) -> Result<ArrayD<f32>> {
        self.normalise(&mut batch)?;
        if !batch.is_standard_layout() {
            batch = batch.as_standard_layout().into_owned();
        }
        Ok(batch)
    }

    /// Reads images as what decoding gives, height × width × channels, whatever the SPEC
    /// said of the layout (a folder of image files has no other).
    pub(crate) fn for_image_files(mut self) -> Preprocess {
        self.layout = Layout::Nhwc;
        self
    }

    /// Whether the SPEC resizes or crops: without either, images of another size than
    /// the model's input are fitted to it (see [`Preprocess::fitted_to`]).
    pub(crate) fn sizes_images(&self) -> bool {
        self.resize.is_some() || self.crop.is_some()
    }

    /// The SPEC with torchvision's evaluation recipe for a square input of `side`: the
    /// short side resized to side / 0.875 (256 for 224), then the centre side × side.
    pub(crate) fn fitted_to(&self, side: usize) -> Preprocess {
        Preprocess {
            resize: Some((side as f64 / EVAL_CROP_FRACTION).round() as usize),
            crop: Some(side),
            ..self.clone()
        }
    }

    /// (x·scale − mean) / std, per channel.
    fn normalise(&self, batch: &mut ArrayD<f32>) -> Result<()> {
        let scale = self.scale;
        if self.mean.is_empty() && self.std.is_empty() {
            if scale != 1.0 {
                batch.mapv_inplace(|v| v * scale);
            }
            return Ok(());
        }
        require_channels("mean/std", batch)?;
        let channels = batch.len_of(Axis(1));
        let mean = per_channel("mean", &self.mean, channels, 0.0)?;
        let std = per_channel("std", &self.std, channels, 1.0)?;
        for (c, mut plane) in batch.axis_iter_mut(Axis(1)).enumerate() {
            plane.mapv_inplace(|v| (v * scale - mean[c]) / std[c]);
        }
        Ok(())
    }
}

/// `values` for each of `channels` channels: none gives `default`, one is broadcast.
fn per_channel(name: &str, values: &[f32], channels: usize, default: f32) -> Result<Vec<f32>> {
    match values {
        [] => Ok(vec![default; channels]),
        [value] => Ok(vec![*value; channels]),
        _ if values.len() == channels => Ok(values.to_vec()),
        _ => Err(Error::Usage(format!(
            "preprocess {name}: {} values for data of {channels} channels",
            values.len()
        ))),
    }
}

fn require_images(step: &str, batch: &ArrayD<f32>) -> Result<()> {
    match batch.ndim() {
        4 => Ok(()),
        _ => Err(Error::Usage(format!(
            "preprocess {step}: needs a batch of images (rank 4), the data is {:?}",
            batch.shape()
        ))),
    }
}

fn require_channels(step: &str, batch: &ArrayD<f32>) -> Result<()> {
    match batch.ndim() {
        0 | 1 => Err(Error::Usage(format!(
            "preprocess {step}: needs a channel axis, the data is {:?}",
            batch.shape()
        ))),
        _ => Ok(()),
    }
}

/// Resizes NCHW images so that the shorter side is `side`, keeping the aspect ratio
/// (the longer side rounded down, as torchvision does).
fn resize_short_side(batch: &ArrayD<f32>, side: usize) -> Result<ArrayD<f32>> {
    let (h, w) = (batch.len_of(Axis(2)), batch.len_of(Axis(3)));
    let (new_h, new_w) = match (h, w) {
        (0, _) | (_, 0) => {
            return Err(Error::Usage(format!(
                "preprocess resize: the images are {h}×{w}"
            )));
        }
        _ if h <= w => (side, w * side / h),
        _ => (h * side / w, side),
    };
    Ok(resample(&resample(batch, Axis(2), new_h), Axis(3), new_w))
}

/// Bilinear resampling along one axis.
pub(crate) fn resample(batch: &ArrayD<f32>, axis: Axis, to: usize) -> ArrayD<f32> {
    let mut shape = batch.shape().to_vec();
    shape[axis.index()] = to;
    let mut resampled = ArrayD::zeros(shape);
    for (mut lane, taps) in resampled
        .axis_iter_mut(axis)
        .zip(bilinear_taps(batch.len_of(axis), to))
    {
        for (source, weight) in taps {
            lane.scaled_add(weight, &batch.index_axis(axis, source));
        }
    }
    resampled
}

/// For each output position, the source positions and weights of a bilinear resize from
/// `from` to `to` samples, computed as PIL and torchvision do: pixel centres aligned, a
/// triangle filter widened by the downscale factor (so downscaling averages instead of
/// aliasing), weights renormalised where the filter overhangs the border.
fn bilinear_taps(from: usize, to: usize) -> Vec<Vec<(usize, f32)>> {
    let scale = from as f64 / to as f64;
    let support = scale.max(1.0);
    (0..to)
        .map(|i| {
            let centre = (i as f64 + 0.5) * scale;
            let first = (centre - support).floor().max(0.0) as usize;
            let end = ((centre + support).ceil() as usize).min(from);
            let taps: Vec<(usize, f64)> = (first..end)
                .map(|j| (j, 1.0 - ((j as f64 + 0.5 - centre) / support).abs()))
                .filter(|&(_, weight)| weight > 0.0)
                .collect();
            let total: f64 = taps.iter().map(|&(_, weight)| weight).sum();
            taps.into_iter()
                .map(|(j, weight)| (j, (weight / total) as f32))
                .collect()
        })
        .collect()
}

/// Keeps the central `side`×`side` window of NCHW images (offsets rounded down).
fn centre_crop(batch: &mut ArrayD<f32>, side: usize) -> Result<()> {
    let (h, w) = (batch.len_of(Axis(2)), batch.len_of(Axis(3)));
    if h < side || w < side {
        return Err(Error::Usage(format!(
            "preprocess crop={side}: larger than the {h}×{w} images"
        )));
    }
    for (axis, len) in [(Axis(2), h), (Axis(3), w)] {
        let start = (len - side) / 2;
        batch.slice_axis_inplace(axis, Slice::from(start..start + side));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    fn array(shape: &[usize], values: impl IntoIterator<Item = f32>) -> ArrayD<f32> {
        ArrayD::from_shape_vec(IxDyn(shape), values.into_iter().collect()).unwrap()
    }

    fn error_of(spec: &str) -> String {
        Preprocess::parse(spec).unwrap_err().to_string()
    }

    #[test]
    fn parses_the_documented_example() {
        let spec = Preprocess::parse(
            "scale=0.00392156862745098,mean=0.5,0.5,0.5,std=0.5,0.5,0.5,layout=nhwc",
        )
        .unwrap();
        let expected = Preprocess {
            layout: Layout::Nhwc,
            scale: 1.0 / 255.0,
            mean: vec![0.5; 3],
            std: vec![0.5; 3],
            ..Preprocess::default()
        };
        assert_eq!(spec, expected);
    }

    #[test]
    fn parses_presets_flags_and_overrides() {
        assert_eq!(Preprocess::parse("none").unwrap(), Preprocess::default());
        let imagenet = Preprocess::parse("imagenet").unwrap();
        assert_eq!(
            (
                imagenet.layout,
                imagenet.mean.as_slice(),
                imagenet.expects_uint8
            ),
            (Layout::Nhwc, &IMAGENET_MEAN[..], true)
        );
        let pipeline = Preprocess::parse("imagenet, resize=256, crop=224, bgr").unwrap();
        assert_eq!(
            (pipeline.resize, pipeline.crop, pipeline.bgr, pipeline.scale),
            (Some(256), Some(224), true, 1.0 / 255.0)
        );
        let flag_after_list = Preprocess::parse("mean=1,2,3,bgr").unwrap();
        assert_eq!(
            (flag_after_list.mean, flag_after_list.bgr),
            (vec![1.0, 2.0, 3.0], true)
        );
        assert!(!Preprocess::parse("imagenet,scale=1").unwrap().expects_uint8);
    }

    #[test]
    fn each_spec_error_names_its_item() {
        let cases = [
            ("colour=rgb", "'colour=rgb': unknown key 'colour'"),
            ("mean=0.5,x", "'mean=0.5,x': bad number 'x'"),
            ("scale=inf", "'scale=inf': bad number 'inf'"),
            ("scale=1,2", "'scale=1,2': scale takes one value"),
            ("resize=0", "'resize=0': expected a positive integer"),
            ("crop=-3", "'crop=-3': expected a positive integer"),
            ("layout=hwc", "'layout=hwc': unknown layout 'hwc'"),
            ("std=1,0,1", "'std=1,0,1': std must not be zero"),
            ("bgr=1", "'bgr=1': bgr takes no value"),
            ("crop=4,imagenet", "'imagenet': a preset must come first"),
            ("rgb", "'rgb': unknown flag"),
            ("scale=1,,crop=2", "empty item"),
        ];
        for (spec, expected) in cases {
            let err = error_of(spec);
            assert!(err.contains(expected), "{spec}: {err}");
        }
    }

    #[test]
    fn nhwc_becomes_nchw() {
        let nhwc = array(&[1, 2, 2, 3], (0..12).map(|v| v as f32));
        let nchw = Preprocess::parse("layout=nhwc")
            .unwrap()
            .apply(nhwc.clone())
            .unwrap();
        assert_eq!(nchw.shape(), &[1, 3, 2, 2]);
        assert!(nchw.is_standard_layout());
        for (h, w, c) in [(0, 0, 0), (0, 1, 2), (1, 0, 1), (1, 1, 2)] {
            assert_eq!(nchw[[0, c, h, w]], nhwc[[0, h, w, c]]);
        }
    }

    #[test]
    fn scale_mean_and_std_apply_per_channel_in_order() {
        let batch = array(&[1, 2, 1, 1], [10.0, 20.0]);
        let normalised = Preprocess::parse("scale=2,mean=2,4,std=2,4")
            .unwrap()
            .apply(batch.clone())
            .unwrap();
        assert_eq!(normalised.as_slice().unwrap(), &[9.0, 9.0]);
        let broadcast = Preprocess::parse("mean=10")
            .unwrap()
            .apply(batch.clone())
            .unwrap();
        assert_eq!(broadcast.as_slice().unwrap(), &[0.0, 10.0]);
        let err = Preprocess::parse("mean=1,2,3")
            .unwrap()
            .apply(batch)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mean: 3 values for data of 2 channels"),
            "{err}"
        );
    }

    #[test]
    fn bgr_reverses_the_channels() {
        let rgb = array(&[1, 3, 1, 1], [1.0, 2.0, 3.0]);
        let bgr = Preprocess::parse("bgr").unwrap().apply(rgb).unwrap();
        assert_eq!(bgr.as_slice().unwrap(), &[3.0, 2.0, 1.0]);
    }

    #[test]
    fn centre_crop_keeps_the_middle() {
        let image = array(&[1, 1, 4, 5], (0..20).map(|v| v as f32));
        let cropped = Preprocess::parse("crop=2").unwrap().apply(image).unwrap();
        assert_eq!(cropped.as_slice().unwrap(), &[6.0, 7.0, 11.0, 12.0]);
        let err = Preprocess::parse("crop=6")
            .unwrap()
            .apply(array(&[1, 1, 4, 5], [0.0; 20]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("crop=6: larger than the 4×5 images"), "{err}");
    }

    #[test]
    fn bilinear_resize_of_a_ramp_matches_pil() {
        let ramp = array(&[1, 1, 2, 4], [0.0, 1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0]);
        let up = Preprocess::parse("resize=4").unwrap().apply(ramp).unwrap();
        assert_eq!(up.shape(), &[1, 1, 4, 8]);
        let row = [0.0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0];
        for h in 0..4 {
            let got: Vec<f32> = (0..8).map(|w| up[[0, 0, h, w]]).collect();
            assert!(
                got.iter().zip(&row).all(|(a, b)| (a - b).abs() < 1e-6),
                "row {h}: {got:?}"
            );
        }
        // Downscaling by 2 averages with a triangle of support 2: interior sample i is 2i + 0.5.
        let down = Preprocess::parse("resize=1")
            .unwrap()
            .apply(array(&[1, 1, 2, 8], (0..16).map(|v| (v % 8) as f32)))
            .unwrap();
        assert_eq!(down.shape(), &[1, 1, 1, 4]);
        assert!(
            (down[[0, 0, 0, 1]] - 2.5).abs() < 1e-6 && (down[[0, 0, 0, 2]] - 4.5).abs() < 1e-6,
            "{down:?}"
        );
    }

    #[test]
    fn image_steps_refuse_data_that_is_not_images() {
        let err = Preprocess::parse("resize=4")
            .unwrap()
            .apply(array(&[2, 3], [0.0; 6]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("resize: needs a batch of images"), "{err}");
        let empty = ArrayD::zeros(vec![1, 3, 0, 4]);
        let err = Preprocess::parse("resize=4")
            .unwrap()
            .apply(empty)
            .unwrap_err()
            .to_string();
        assert!(err.contains("resize: the images are 0×4"), "{err}");
        assert!(
            Preprocess::parse("imagenet")
                .unwrap()
                .check_source(Dtype::F32)
                .is_err()
        );
        assert!(
            Preprocess::parse("imagenet")
                .unwrap()
                .check_source(Dtype::U8)
                .is_ok()
        );
    }
}
