//! Calibration data for learning which activations can go: samples for every input of a
//! model, from an `.npz`/`.npy` file, a folder of images, or standard-normal noise; a
//! seeded split into a training part and a held-out part that keeps each `group` on one
//! side; shuffled, optionally augmented batches for training.
//!
//! Arrays are preprocessed once, when loaded, and held in memory; a folder of images is
//! decoded batch by batch. Splitting shares the samples: the parts only list rows.
//!
//! ```no_run
//! use onnx_shallow::calib::{ArraySelection, CalibSpec, Dataset};
//! let model = onnx_shallow::load("digits.onnx".as_ref())?;
//! let spec = CalibSpec {
//!     path: Some("digits_split.npz".into()),
//!     select: ArraySelection { key: Some("x".into()), index: Some("train_idx".into()) },
//!     ..CalibSpec::default()
//! };
//! let data = Dataset::load(&spec, &model, &Default::default())?;
//! let (train, held_out) = data.split(0.2, 0)?;
//! for batch in train.epoch(64, 1)? {
//!     let inputs = batch?; // one array per model input, [64, 1, 8, 8]
//! }
//! let check = held_out.all()?; // for verification with tract
//! # Ok::<(), onnx_shallow::Error>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::{ArrayD, Axis};

use crate::calib::augment::augment;
use crate::calib::images::ImageFolder;
use crate::calib::random::{Rng, shuffle};
use crate::calib::{
    ArraySelection, ModelInputs, Preprocess, apply_preprocess, data_error, fits, input_types,
    random_inputs, read_stored, sample_dims,
};
use crate::error::{Error, Result};
use crate::ir::Model;
use crate::ir::shape::{PinnedShapes, ValueType};

/// Where calibration data comes from and how to read it.
#[derive(Clone, Debug, Default)]
pub struct CalibSpec {
    /// An `.npz` (arrays keyed by input name, or one array), an `.npy`, or a folder of
    /// PNG/JPEG images.
    pub path: Option<PathBuf>,
    /// Which array of an `.npz`, and which of its rows.
    pub select: ArraySelection,
    /// How stored data becomes model inputs; by default none, which only fits data whose
    /// dims already match the model's inputs. A folder of images needs one.
    pub preprocess: Option<Preprocess>,
    /// Instead of a path: this many standard-normal samples (decisions made on them say
    /// little about real data).
    pub synthetic: Option<usize>,
    /// The seed of the synthetic samples.
    pub seed: u64,
    /// Augment training batches (image inputs only).
    pub augment: bool,
}

/// Samples for every runtime input of a model, in its input order.
#[derive(Clone)]
pub struct Dataset {
    samples: Arc<Samples>,
    /// The rows of `samples` this dataset holds.
    rows: Vec<usize>,
    input_names: Vec<String>,
    source: String,
    synthetic: bool,
    augment: bool,
}

/// Samples as read, before they become a [`Dataset`].
struct Loaded {
    samples: Samples,
    source: String,
}

enum Samples {
    /// Model-ready arrays, one per input, and an optional group per row.
    Arrays {
        arrays: Vec<ArrayD<f32>>,
        groups: Option<Vec<i64>>,
    },
    /// The images of a folder, decoded per batch, for a one-input model.
    Images(ImageFolder),
}

impl Samples {
    fn len(&self) -> usize {
        match self {
            Samples::Arrays { arrays, .. } => arrays[0].len_of(Axis(0)),
            Samples::Images(folder) => folder.len(),
        }
    }

    fn batch(&self, rows: &[usize]) -> Result<Vec<ArrayD<f32>>> {
        match self {
            Samples::Arrays { arrays, .. } => Ok(arrays
                .iter()
                .map(|array| array.select(Axis(0), rows))
                .collect()),
            Samples::Images(folder) => Ok(vec![folder.batch(rows)?]),
        }
    }

    fn sample_dims(&self) -> Vec<Vec<usize>> {
        match self {
            Samples::Arrays { arrays, .. } => arrays
                .iter()
                .map(|array| array.shape()[1..].to_vec())
                .collect(),
            Samples::Images(folder) => vec![folder.dims().to_vec()],
        }
    }

    fn groups(&self) -> Option<&[i64]> {
        match self {
            Samples::Arrays { groups, .. } => groups.as_deref(),
            Samples::Images(_) => None,
        }
    }
}

impl Dataset {
    /// Reads the data `spec` names for `model` (dims pinned by `pinned`), checking every
    /// sample fits the model's inputs; errors name the file, array and input.
    pub fn load(spec: &CalibSpec, model: &Model, pinned: &PinnedShapes) -> Result<Dataset> {
        let inputs = input_types(model, pinned)?;
        let has_selection = spec.select != ArraySelection::default();
        let Loaded { samples, source } = match (&spec.path, spec.synthetic) {
            (Some(_), Some(_)) => {
                return Err(Error::Usage(
                    "calibration data: give a path or a synthetic sample count, not both".into(),
                ));
            }
            (None, None) => {
                return Err(Error::Usage(
                    "no calibration data: give a path (.npz, .npy, or a folder of images) or a synthetic sample count".into(),
                ));
            }
            _ if has_selection && !is_npz(spec.path.as_deref()) => {
                return Err(Error::Usage(
                    "an array key or index applies to an .npz file".into(),
                ));
            }
            (None, Some(count)) => synthetic(count, spec.seed, model, pinned)?,
            (Some(folder), None) if folder.is_dir() => open_folder(folder, spec, &inputs)?,
            (Some(path), None) => read_arrays(path, spec, &inputs)?,
        };
        let dataset = Dataset {
            rows: (0..samples.len()).collect(),
            samples: Arc::new(samples),
            input_names: inputs.into_iter().map(|(name, _)| name).collect(),
            source,
            synthetic: spec.synthetic.is_some(),
            augment: false,
        };
        dataset.with_augment(spec.augment)
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Where the samples come from, for reports.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Standard-normal noise rather than real data: what is learnt from it is weak.
    pub fn is_synthetic(&self) -> bool {
        self.synthetic
    }

    /// Whether [`Dataset::epoch`] augments its batches.
    pub fn augments(&self) -> bool {
        self.augment
    }

    pub fn input_names(&self) -> &[String] {
        &self.input_names
    }

    /// The dims of one sample of each input (after the sample dim).
    pub fn sample_dims(&self) -> Vec<Vec<usize>> {
        self.samples.sample_dims()
    }

    /// The group of each sample, when the data has a `group` array.
    pub fn groups(&self) -> Option<Vec<i64>> {
        let groups = self.samples.groups()?;
        Some(self.rows.iter().map(|&row| groups[row]).collect())
    }

    /// The same samples, with augmentation switched on or off; on needs image inputs.
    pub fn with_augment(&self, on: bool) -> Result<Dataset> {
        if on {
            let dims = self.sample_dims();
            if let Some((name, dims)) = self
                .input_names
                .iter()
                .zip(&dims)
                .find(|(_, d)| d.len() != 3)
            {
                return Err(Error::Usage(format!(
                    "augmentation needs image inputs ([N, C, H, W]); input '{name}' has samples of {dims:?}"
                )));
            }
        }
        Ok(Dataset {
            augment: on,
            ..self.clone()
        })
    }

    /// Splits into (training, held-out) parts, with about `holdout` of the samples held
    /// out, chosen by `seed`. When the data has groups, each group goes whole to one side
    /// and both sides get at least one. The held-out part is never augmented.
    pub fn split(&self, holdout: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        if !(holdout > 0.0 && holdout < 1.0) {
            return Err(Error::Usage(format!(
                "holdout {holdout}: expected a fraction strictly between 0 and 1"
            )));
        }
        let mut rng = Rng::new(seed);
        let held = match self.groups() {
            Some(groups) => held_out_groups(&groups, holdout, &mut rng)?,
            None => held_out_rows(self.len(), holdout, &mut rng)?,
        };
        let (held_rows, train_rows): (Vec<_>, Vec<_>) =
            self.rows.iter().zip(&held).partition(|&(_, &held)| held);
        let part = |rows: Vec<(&usize, &bool)>, augment| Dataset {
            rows: rows.into_iter().map(|(&row, _)| row).collect(),
            augment,
            ..self.clone()
        };
        Ok((part(train_rows, self.augment), part(held_rows, false)))
    }

    /// Model-ready arrays of the given samples (positions in this dataset), one per input
    /// in the model's input order. Never augmented.
    pub fn batch(&self, rows: &[usize]) -> Result<Vec<ArrayD<f32>>> {
        let rows = rows
            .iter()
            .map(|&row| {
                self.rows.get(row).copied().ok_or_else(|| {
                    Error::Usage(format!(
                        "sample {row} is outside the {} samples of {}",
                        self.len(),
                        self.source
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.samples.batch(&rows)
    }

    /// One pass over the samples in an order shuffled by `seed`, `batch` at a time (the
    /// last batch may be smaller); augmented when [`Dataset::augments`].
    pub fn epoch(
        &self,
        batch: usize,
        seed: u64,
    ) -> Result<impl Iterator<Item = Result<Vec<ArrayD<f32>>>> + '_> {
        if batch == 0 {
            return Err(Error::Usage("the batch size must be at least 1".into()));
        }
        let mut rng = Rng::new(seed);
        let mut order: Vec<usize> = (0..self.len()).collect();
        shuffle(&mut order, &mut rng);
        let batches: Vec<Vec<usize>> = order.chunks(batch).map(<[usize]>::to_vec).collect();
        Ok(batches.into_iter().map(move |rows| {
            let mut arrays = self.batch(&rows)?;
            if self.augment {
                augment(&mut arrays, &mut rng);
            }
            Ok(arrays)
        }))
    }

    /// Every sample, unaugmented and with its group, for verification with tract.
    pub fn all(&self) -> Result<ModelInputs> {
        let rows: Vec<usize> = (0..self.len()).collect();
        let inputs = ModelInputs::new(self.batch(&rows)?, self.source.clone())?;
        match self.groups() {
            Some(groups) => inputs.with_groups(groups),
            None => Ok(inputs),
        }
    }
}

fn synthetic(count: usize, seed: u64, model: &Model, pinned: &PinnedShapes) -> Result<Loaded> {
    let noise = random_inputs(&sample_dims(model, pinned)?, count, seed)?;
    Ok(Loaded {
        samples: Samples::Arrays {
            arrays: noise.arrays().to_vec(),
            groups: None,
        },
        source: format!("synthetic: {count} standard-normal samples, seed {seed}"),
    })
}

fn is_npz(path: Option<&Path>) -> bool {
    path.and_then(Path::extension)
        .is_some_and(|e| e.eq_ignore_ascii_case("npz"))
}

/// The arrays of a file, preprocessed and checked against the inputs.
fn read_arrays(path: &Path, spec: &CalibSpec, inputs: &[(String, ValueType)]) -> Result<Loaded> {
    let names: Vec<String> = inputs.iter().map(|(name, _)| name.clone()).collect();
    let mut stored = read_stored(path, &names, &spec.select)?;
    let arrays = std::mem::take(&mut stored.inputs)
        .into_iter()
        .zip(inputs)
        .map(|((key, array), (input, declared))| {
            let preprocess = match &spec.preprocess {
                Some(preprocess) => preprocess.clone(),
                None if fits(declared, &array.values.shape()[1..]) => Preprocess::default(),
                None => {
                    return Err(data_error(
                        path,
                        format!(
                            "array '{key}' holds {:?} {:?}, input '{input}' is {declared}: give a preprocessing SPEC (e.g. imagenet)",
                            array.dtype,
                            array.values.shape()
                        ),
                    ));
                }
            };
            let values = apply_preprocess(path, &key, array, &preprocess)?;
            check_fits(path, &format!("array '{key}'"), input, declared, &values.shape()[1..])?;
            Ok(values)
        })
        .collect::<Result<Vec<_>>>()?;
    let groups = stored.groups()?;
    Ok(Loaded {
        samples: Samples::Arrays { arrays, groups },
        source: describe_selection(path, &spec.select),
    })
}

fn describe_selection(path: &Path, select: &ArraySelection) -> String {
    let mut source = path.display().to_string();
    if let Some(key) = &select.key {
        source += &format!(" array '{key}'");
    }
    if let Some(index) = &select.index {
        source += &format!(" rows '{index}'");
    }
    source
}

fn open_folder(folder: &Path, spec: &CalibSpec, inputs: &[(String, ValueType)]) -> Result<Loaded> {
    let [(input, declared)] = inputs else {
        return Err(data_error(
            folder,
            format!(
                "a folder of images feeds a one-input model; this one has {} inputs",
                inputs.len()
            ),
        ));
    };
    let Some(preprocess) = &spec.preprocess else {
        return Err(data_error(
            folder,
            "a folder of images needs a preprocessing SPEC (e.g. imagenet,resize=256,crop=224)"
                .into(),
        ));
    };
    let folder = ImageFolder::open(folder, preprocess.clone(), declared, |file, dims| {
        check_fits(file, "the image", input, declared, dims)
    })?;
    Ok(Loaded {
        source: folder.describe(),
        samples: Samples::Images(folder),
    })
}

fn check_fits(
    path: &Path,
    what: &str,
    input: &str,
    declared: &ValueType,
    dims: &[usize],
) -> Result<()> {
    match fits(declared, dims) {
        true => Ok(()),
        false => Err(data_error(
            path,
            format!("{what} gives samples of {dims:?}, input '{input}' is {declared}"),
        )),
    }
}

/// Holds out `round(holdout·n)` random samples, at least one, leaving at least one.
fn held_out_rows(n: usize, holdout: f64, rng: &mut Rng) -> Result<Vec<bool>> {
    if n < 2 {
        return Err(Error::Usage(format!(
            "cannot split {n} sample(s) into a training and a held-out part"
        )));
    }
    let count = ((holdout * n as f64).round() as usize).clamp(1, n - 1);
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, rng);
    let mut held = vec![false; n];
    for &row in &order[..count] {
        held[row] = true;
    }
    Ok(held)
}

/// Holds out whole groups, in an order shuffled by `rng`, taking each one that brings the
/// held-out count closer to `holdout·n`; at least one group, never all.
fn held_out_groups(groups: &[i64], holdout: f64, rng: &mut Rng) -> Result<Vec<bool>> {
    let mut sizes: BTreeMap<i64, usize> = BTreeMap::new();
    for &group in groups {
        *sizes.entry(group).or_default() += 1;
    }
    if sizes.len() < 2 {
        return Err(Error::Usage(format!(
            "cannot split by group: all {} samples are in one group",
            groups.len()
        )));
    }
    let mut order: Vec<(i64, usize)> = sizes.into_iter().collect();
    shuffle(&mut order, rng);
    let target = holdout * groups.len() as f64;
    let mut held_groups = BTreeSet::new();
    let mut held = 0usize;
    for &(group, size) in &order[..order.len() - 1] {
        let closer = ((held + size) as f64 - target).abs() < (held as f64 - target).abs();
        if held_groups.is_empty() || closer {
            held_groups.insert(group);
            held += size;
        }
    }
    Ok(groups.iter().map(|g| held_groups.contains(g)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_split_holds_out_the_rounded_fraction_and_never_a_whole_side() {
        let count = |n, holdout| {
            held_out_rows(n, holdout, &mut Rng::new(0))
                .unwrap()
                .iter()
                .filter(|&&h| h)
                .count()
        };
        assert_eq!(count(10, 0.2), 2);
        assert_eq!(count(10, 0.01), 1);
        assert_eq!(count(10, 0.99), 9);
        assert!(held_out_rows(1, 0.5, &mut Rng::new(0)).is_err());
    }

    #[test]
    fn a_group_split_keeps_groups_whole_and_both_sides_non_empty() {
        let groups: Vec<i64> = (0..40).map(|i| i % 4).collect();
        for (holdout, held_groups) in [(0.25, 1), (0.5, 2), (0.01, 1), (0.99, 3)] {
            let held = held_out_groups(&groups, holdout, &mut Rng::new(5)).unwrap();
            let mut taken: Vec<i64> = groups
                .iter()
                .zip(&held)
                .filter(|(_, h)| **h)
                .map(|(g, _)| *g)
                .collect();
            taken.sort();
            taken.dedup();
            assert_eq!(taken.len(), held_groups, "holdout {holdout}");
            for (group, h) in groups.iter().zip(&held) {
                assert_eq!(*h, taken.contains(group));
            }
        }
        let err = held_out_groups(&[3, 3, 3], 0.5, &mut Rng::new(0)).unwrap_err();
        assert!(
            err.to_string().contains("all 3 samples are in one group"),
            "{err}"
        );
    }
}
