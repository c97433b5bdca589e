//! Calibration data for learning which activations can go: samples for every input of a
//! model, from `.npz`/`.npy` files (one, or several shards), a folder of images, or
//! standard-normal noise; a seeded split into a training part and a held-out part that
//! keeps each `group` on one side; batches for training, randomly cropped when asked.
//!
//! Nothing is loaded whole: arrays are memory-mapped and a folder's images decoded as they
//! are needed, and every sample is preprocessed when it is read, so memory is set by the
//! batch, not by the number of samples. Splitting shares the samples: the parts only list
//! rows. What a training sample's random crop is depends on the seed, the epoch and the
//! sample alone, so batches come out the same in any thread order and after a resume.
//!
//! ```no_run
//! use onnx_shallow::calib::{ArraySelection, CalibSpec, Dataset};
//! let model = onnx_shallow::load("digits.onnx".as_ref())?;
//! let spec = CalibSpec {
//!     paths: vec!["digits_split.npz".into()],
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
use rayon::prelude::*;

use crate::calib::augment::CropRange;
use crate::calib::images::{ImageFolder, has_one_channel};
use crate::calib::npy::{Dtype, MappedArray, Npz};
use crate::calib::random::{Rng, shuffle};
use crate::calib::{
    ArraySelection, GROUP_KEY, ModelInputs, Preprocess, data_error, fits, input_keys, input_types,
    integers, random_inputs, row_index, sample_dims,
};
use crate::error::{Error, Result};
use crate::ir::Model;
use crate::ir::shape::{PinnedShapes, ValueType};

/// Where calibration data comes from and how to read it.
#[derive(Clone, Debug, Default)]
pub struct CalibSpec {
    /// `.npz` files (arrays keyed by input name, or one array) or `.npy` files, read as
    /// one data set in order; or one folder of PNG/JPEG images.
    pub paths: Vec<PathBuf>,
    /// Which array of each `.npz`, and which of its rows.
    pub select: ArraySelection,
    /// How stored data becomes model inputs; by default none, which only fits data whose
    /// dims already match the model's inputs. A folder of images needs one.
    pub preprocess: Option<Preprocess>,
    /// Instead of paths: this many standard-normal samples (decisions made on them say
    /// little about real data).
    pub synthetic: Option<usize>,
    /// The seed of the synthetic samples and of the training crops.
    pub seed: u64,
    /// Randomly crop and mirror training samples (image inputs only).
    pub augment: bool,
    /// The windows random crops draw.
    pub crop: CropRange,
    /// Read labels: the integer array of this name in each `.npz`, or, for a folder of
    /// images, the class sub-folders (the name is then not used).
    pub labels: Option<String>,
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
    crop: CropRange,
    seed: u64,
}

/// Stored samples, how each input's are preprocessed, and what each row carries.
struct Samples {
    store: Store,
    /// Per input, checked on the first sample when loaded.
    preprocess: Vec<Preprocess>,
    /// Per input: the height and width of an image input, what random crops resample to.
    image_sizes: Vec<Option<(usize, usize)>>,
    /// The dims of one preprocessed sample of each input (after the sample dim).
    dims: Vec<Vec<usize>>,
    groups: Option<Vec<i64>>,
    labels: Option<Vec<i64>>,
}

enum Store {
    /// Arrays, one per input, in shards read one after the other.
    Arrays(Vec<Shard>),
    /// The images of a folder, for a one-input model.
    Images(ImageFolder),
}

/// One file's arrays and the rows of them in use.
struct Shard {
    path: PathBuf,
    /// Per input: the key it is stored under, and its rows.
    inputs: Vec<(String, Rows)>,
    /// The rows an index array selects, in its order; all rows without one.
    index: Option<Vec<usize>>,
    len: usize,
}

enum Rows {
    Mapped(MappedArray),
    /// Made in memory (synthetic samples).
    Held(ArrayD<f32>),
}

impl Rows {
    fn read(&self, row: usize) -> ArrayD<f32> {
        match self {
            Rows::Mapped(array) => array.read_rows(&[row]),
            Rows::Held(array) => array.select(Axis(0), &[row]),
        }
    }

    fn len(&self) -> usize {
        match self {
            Rows::Mapped(array) => array.rows(),
            Rows::Held(array) => array.len_of(Axis(0)),
        }
    }

    fn dtype(&self) -> Dtype {
        match self {
            Rows::Mapped(array) => array.dtype,
            Rows::Held(_) => Dtype::F32,
        }
    }
}

impl Store {
    /// How input `input` is stored.
    fn dtype(&self, input: usize) -> Dtype {
        match self {
            Store::Arrays(shards) => shards[0].inputs[input].1.dtype(),
            Store::Images(_) => Dtype::U8,
        }
    }

    fn len(&self) -> usize {
        match self {
            Store::Arrays(shards) => shards.iter().map(|s| s.len).sum(),
            Store::Images(folder) => folder.len(),
        }
    }

    /// The shard holding `row`, and the row within it.
    fn shard_of(shards: &[Shard], mut row: usize) -> (&Shard, usize) {
        for shard in shards {
            if row < shard.len {
                return (shard, shard.index.as_ref().map_or(row, |index| index[row]));
            }
            row -= shard.len;
        }
        unreachable!("rows are checked against the length")
    }

    /// The file row `row` comes from.
    fn path_of(&self, row: usize) -> &Path {
        match self {
            Store::Arrays(shards) => &Store::shard_of(shards, row).0.path,
            Store::Images(folder) => folder.file(row),
        }
    }

    /// Row `row` of every input as stored, each `[1, …]`, with what it is, for errors.
    fn raw(&self, row: usize) -> Result<Vec<(String, ArrayD<f32>)>> {
        match self {
            Store::Arrays(shards) => {
                let (shard, stored) = Store::shard_of(shards, row);
                Ok(shard
                    .inputs
                    .iter()
                    .map(|(key, rows)| (format!("array '{key}'"), rows.read(stored)))
                    .collect())
            }
            Store::Images(folder) => Ok(vec![("the image".into(), folder.decode(row)?)]),
        }
    }
}

impl Samples {
    /// Sample `row` of every input, preprocessed, each `[1, …]`; randomly cropped with
    /// `crop` when given.
    fn sample(&self, row: usize, crop: Option<(&CropRange, Rng)>) -> Result<Vec<ArrayD<f32>>> {
        let path = self.store.path_of(row);
        self.store
            .raw(row)?
            .into_iter()
            .zip(&self.preprocess)
            .zip(&self.image_sizes)
            .map(|(((what, values), preprocess), size)| {
                let processed = match (&crop, size) {
                    (Some((range, rng)), Some(size)) => {
                        let mut rng = rng.clone();
                        preprocess.apply_cropped(values, |hw| range.draw(hw, &mut rng), *size)
                    }
                    _ => preprocess.apply(values),
                };
                processed.map_err(|e| data_error(path, format!("{what}: {e}")))
            })
            .collect()
    }

    /// The samples of `rows`, stacked per input; each must come out the size of the first.
    fn batch(
        &self,
        rows: &[usize],
        crop: impl Fn(usize) -> Option<(CropRange, Rng)> + Sync,
    ) -> Result<Vec<ArrayD<f32>>> {
        let samples: Vec<Vec<ArrayD<f32>>> = rows
            .par_iter()
            .map(|&row| {
                let crop = crop(row);
                let sample = self.sample(row, crop.as_ref().map(|(r, g)| (r, g.clone())))?;
                self.check_size(row, &sample)?;
                Ok(sample)
            })
            .collect::<Result<_>>()?;
        (0..self.dims.len())
            .map(|input| {
                let views: Vec<_> = samples.iter().map(|s| s[input].view()).collect();
                ndarray::concatenate(Axis(0), &views)
                    .map_err(|e| Error::graph(format!("samples do not stack: {e}")))
            })
            .collect()
    }

    fn check_size(&self, row: usize, sample: &[ArrayD<f32>]) -> Result<()> {
        for (values, dims) in sample.iter().zip(&self.dims) {
            if values.shape()[1..] != dims[..] {
                return Err(data_error(
                    self.store.path_of(row),
                    format!(
                        "preprocessed to {:?}, the first sample to {dims:?}: every sample must come out the same size (add crop=…)",
                        &values.shape()[1..]
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Which samples a learned run measures its fidelity on.
#[derive(Clone)]
pub enum HeldOut {
    /// About this fraction of the data, whole groups when it has them.
    Fraction(f64),
    /// K folds, each held out in turn ([`Dataset::folds`]).
    Folds(usize),
    /// Separate data, never augmented.
    Data(Dataset),
}

impl Dataset {
    /// Opens the data `spec` names for `model` (dims pinned by `pinned`) and checks its
    /// first sample against the model's inputs, before any other work; errors name the
    /// file, array and input.
    pub fn load(spec: &CalibSpec, model: &Model, pinned: &PinnedShapes) -> Result<Dataset> {
        let inputs = input_types(model, pinned)?;
        spec.crop.check()?;
        let has_selection = spec.select != ArraySelection::default();
        let folder = spec.paths.iter().find(|p| p.is_dir());
        let (store, source) = match (&spec.paths[..], spec.synthetic) {
            ([_, ..], Some(_)) => {
                return Err(Error::Usage(
                    "calibration data: give paths or a synthetic sample count, not both".into(),
                ));
            }
            ([], None) => {
                return Err(Error::Usage(
                    "no calibration data: give a path (.npz, .npy, or a folder of images) or a synthetic sample count".into(),
                ));
            }
            ([_, _, ..], _) if folder.is_some() => {
                return Err(data_error(
                    folder.expect("found"),
                    "a folder of images is read alone, not with other paths".into(),
                ));
            }
            _ if has_selection && !spec.paths.iter().all(|p| is_npz(p)) => {
                return Err(Error::Usage(
                    "an array key or index applies to .npz files".into(),
                ));
            }
            ([], Some(count)) => synthetic(count, spec.seed, model, pinned)?,
            ([folder], None) if folder.is_dir() => open_folder(folder, &inputs)?,
            (paths, None) => open_shards(paths, spec, &inputs)?,
        };
        let samples = Samples::checked(store, spec, &inputs)?;
        let dataset = Dataset {
            rows: (0..samples.store.len()).collect(),
            samples: Arc::new(samples),
            input_names: inputs.into_iter().map(|(name, _)| name).collect(),
            source,
            synthetic: spec.synthetic.is_some(),
            augment: false,
            crop: spec.crop.clone(),
            seed: spec.seed,
        };
        dataset.with_augment(spec.augment)
    }

    /// Samples already in memory and model-ready, for `model`'s inputs in order.
    pub fn from_inputs(model: &Model, inputs: &ModelInputs) -> Result<Dataset> {
        let names = crate::calib::input_names(model);
        if names.len() != inputs.arrays().len() {
            return Err(Error::Usage(format!(
                "the model has {} inputs, the data {} arrays",
                names.len(),
                inputs.arrays().len()
            )));
        }
        let shard = Shard {
            path: PathBuf::from(inputs.source()),
            inputs: names
                .iter()
                .cloned()
                .zip(inputs.arrays())
                .map(|(name, array)| (name, Rows::Held(array.clone())))
                .collect(),
            index: None,
            len: inputs.samples(),
        };
        let spec = CalibSpec::default();
        let declared = input_types(model, &PinnedShapes::default())?;
        let samples = Samples::checked(Store::Arrays(vec![shard]), &spec, &declared)?;
        Ok(Dataset {
            rows: (0..inputs.samples()).collect(),
            samples: Arc::new(samples),
            input_names: names,
            source: inputs.source().to_string(),
            synthetic: false,
            augment: false,
            crop: spec.crop,
            seed: spec.seed,
        })
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

    /// Whether training batches are randomly cropped.
    pub fn augments(&self) -> bool {
        self.augment
    }

    pub fn input_names(&self) -> &[String] {
        &self.input_names
    }

    /// The dims of one sample of each input (after the sample dim).
    pub fn sample_dims(&self) -> Vec<Vec<usize>> {
        self.samples.dims.clone()
    }

    /// The group of each sample, when the data has `group` arrays.
    pub fn groups(&self) -> Option<Vec<i64>> {
        let groups = self.samples.groups.as_ref()?;
        Some(self.rows.iter().map(|&row| groups[row]).collect())
    }

    /// The label of each sample, when labels were read.
    pub fn labels(&self) -> Option<Vec<i64>> {
        let labels = self.samples.labels.as_ref()?;
        Some(self.rows.iter().map(|&row| labels[row]).collect())
    }

    /// The same samples, with random crops switched on or off; on needs image inputs.
    pub fn with_augment(&self, on: bool) -> Result<Dataset> {
        if on {
            let dims = self.sample_dims();
            if let Some((name, dims)) = self
                .input_names
                .iter()
                .zip(&dims)
                .zip(&self.samples.image_sizes)
                .find(|(_, size)| size.is_none())
                .map(|(named, _)| named)
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

    /// The samples at `positions` of this dataset, as a dataset of their own.
    pub fn subset(&self, positions: &[usize]) -> Result<Dataset> {
        Ok(Dataset {
            rows: self.stored_rows(positions)?,
            ..self.clone()
        })
    }

    /// Splits into (training, held-out) parts, with about `holdout` of the samples held
    /// out, chosen by `seed`. When the data has groups, each group goes whole to one side
    /// and both sides get at least one. The held-out part is never augmented.
    pub fn split(&self, holdout: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        if !(holdout > 0.0 && holdout < 1.0) {
            return Err(Error::invalid(
                "holdout",
                holdout,
                "a fraction strictly between 0 and 1",
            ));
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

    /// `k` (training, held-out) splits in which every sample is held out exactly once:
    /// whole groups dealt round-robin (largest first, in an order shuffled by `seed`)
    /// when the data has groups, samples otherwise. Held-out parts are never augmented.
    pub fn folds(&self, k: usize, seed: u64) -> Result<Vec<(Dataset, Dataset)>> {
        let mut rng = Rng::new(seed);
        let fold_of = match self.groups() {
            Some(groups) => group_folds(&groups, k, &mut rng)?,
            None => row_folds(self.len(), k, &mut rng)?,
        };
        let part = |keep: &dyn Fn(usize) -> bool, augment| Dataset {
            rows: (self.rows.iter().zip(&fold_of))
                .filter(|&(_, &f)| keep(f))
                .map(|(&row, _)| row)
                .collect(),
            augment,
            ..self.clone()
        };
        Ok((0..k)
            .map(|fold| {
                let train = part(&|f| f != fold, self.augment);
                (train, part(&|f| f == fold, false))
            })
            .collect())
    }

    /// The (training, held-out) splits `held_out` asks for: one, or one per fold.
    pub fn splits(self, held_out: HeldOut, seed: u64) -> Result<Vec<(Dataset, Dataset)>> {
        match held_out {
            HeldOut::Fraction(fraction) => Ok(vec![self.split(fraction, seed)?]),
            HeldOut::Folds(k) => self.folds(k, seed),
            HeldOut::Data(held_out) => Ok(vec![(self, held_out.with_augment(false)?)]),
        }
    }

    fn stored_rows(&self, positions: &[usize]) -> Result<Vec<usize>> {
        positions
            .iter()
            .map(|&position| {
                self.rows.get(position).copied().ok_or_else(|| {
                    Error::Usage(format!(
                        "sample {position} is outside the {} samples of {}",
                        self.len(),
                        self.source
                    ))
                })
            })
            .collect()
    }

    /// Model-ready arrays of the samples at `positions` of this dataset, one per input in
    /// the model's input order. Never augmented.
    pub fn batch(&self, positions: &[usize]) -> Result<Vec<ArrayD<f32>>> {
        self.samples.batch(&self.stored_rows(positions)?, |_| None)
    }

    /// [`Dataset::batch`] for training in `epoch`: randomly cropped when
    /// [`Dataset::augments`], each sample's crop drawn from the seed, the epoch and the
    /// sample.
    pub fn training_batch(&self, positions: &[usize], epoch: u64) -> Result<Vec<ArrayD<f32>>> {
        let rows = self.stored_rows(positions)?;
        let crop = |row: usize| {
            self.augment.then(|| {
                (
                    self.crop.clone(),
                    Rng::derived(self.seed, &[epoch, row as u64]),
                )
            })
        };
        self.samples.batch(&rows, crop)
    }

    /// The order of the samples in `epoch`, shuffled by `seed` and the epoch.
    pub fn epoch_order(&self, seed: u64, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        shuffle(&mut order, &mut Rng::derived(seed, &[epoch]));
        order
    }

    /// One pass over the samples in an order shuffled by `seed`, `batch` at a time (the
    /// last batch may be smaller); randomly cropped when [`Dataset::augments`].
    pub fn epoch(
        &self,
        batch: usize,
        seed: u64,
    ) -> Result<impl Iterator<Item = Result<Vec<ArrayD<f32>>>> + '_> {
        if batch == 0 {
            return Err(Error::Usage("the batch size must be at least 1".into()));
        }
        let order = self.epoch_order(seed, 0);
        let batches: Vec<Vec<usize>> = order.chunks(batch).map(<[usize]>::to_vec).collect();
        Ok(batches
            .into_iter()
            .map(move |positions| self.training_batch(&positions, seed)))
    }

    /// Every sample, unaugmented and with its group, in memory: for small data (verification
    /// with tract).
    pub fn all(&self) -> Result<ModelInputs> {
        let rows: Vec<usize> = (0..self.len()).collect();
        let inputs = ModelInputs::new(self.batch(&rows)?, self.source.clone())?;
        match self.groups() {
            Some(groups) => inputs.with_groups(groups),
            None => Ok(inputs),
        }
    }

    /// The samples in order, `size` at a time, never augmented: for measuring on data
    /// of any size.
    pub fn chunks(&self, size: usize) -> impl Iterator<Item = Result<ModelInputs>> + '_ {
        let size = size.max(1);
        (0..self.len()).step_by(size).map(move |start| {
            let positions: Vec<usize> = (start..(start + size).min(self.len())).collect();
            ModelInputs::new(self.batch(&positions)?, self.source.clone())
        })
    }
}

impl Samples {
    /// Settles each input's preprocessing on the first sample (fitting images to the
    /// model's size when the SPEC does not size them) and checks it fits the model.
    fn checked(store: Store, spec: &CalibSpec, inputs: &[(String, ValueType)]) -> Result<Samples> {
        let Annotations { groups, labels } = Annotations::of(&store, spec)?;
        let raw = store.raw(0)?;
        let path = store.path_of(0).to_path_buf();
        let images = matches!(store, Store::Images(_));
        let mut preprocess = Vec::new();
        let mut dims = Vec::new();
        let mut image_sizes = Vec::new();
        for (i, ((what, values), (input, declared))) in raw.into_iter().zip(inputs).enumerate() {
            let chosen = choose_preprocess(spec, images, &path, &what, &values, input, declared)?;
            chosen
                .check_source(store.dtype(i))
                .map_err(|e| data_error(&path, format!("{what}: {e}")))?;
            let sample = chosen
                .apply(values.clone())
                .map_err(|e| data_error(&path, format!("{what}: {e}")))?;
            let (chosen, sample) = match image_size(declared) {
                Some((h, w))
                    if sample.ndim() == 4
                        && !fits(declared, &sample.shape()[1..])
                        && !chosen.sizes_images()
                        && h == w =>
                {
                    let fitted = chosen.fitted_to(h);
                    let sample = fitted
                        .apply(values)
                        .map_err(|e| data_error(&path, format!("{what}: {e}")))?;
                    (fitted, sample)
                }
                _ => (chosen, sample),
            };
            check_fits(&path, &what, input, declared, &sample.shape()[1..])?;
            image_sizes.push(image_size(declared).filter(|_| sample.ndim() == 4));
            dims.push(sample.shape()[1..].to_vec());
            preprocess.push(chosen);
        }
        Ok(Samples {
            store,
            preprocess,
            image_sizes,
            dims,
            groups,
            labels,
        })
    }
}

/// The SPEC for one input: the user's (for image files, read as height × width ×
/// channels whatever it says), or none when the stored samples already fit.
fn choose_preprocess(
    spec: &CalibSpec,
    images: bool,
    path: &Path,
    what: &str,
    values: &ArrayD<f32>,
    input: &str,
    declared: &ValueType,
) -> Result<Preprocess> {
    match (&spec.preprocess, images) {
        (Some(preprocess), true) => Ok(preprocess.clone().for_image_files()),
        (Some(preprocess), false) => Ok(preprocess.clone()),
        (None, true) => Err(data_error(
            path,
            "a folder of images needs a preprocessing SPEC (e.g. imagenet)".into(),
        )),
        (None, false) if fits(declared, &values.shape()[1..]) => Ok(Preprocess::default()),
        (None, false) => Err(data_error(
            path,
            format!(
                "{what} holds samples of {:?}, input '{input}' is {declared}: give a preprocessing SPEC (e.g. imagenet)",
                &values.shape()[1..]
            ),
        )),
    }
}

/// The height and width of an NCHW image input whose are fixed.
fn image_size(declared: &ValueType) -> Option<(usize, usize)> {
    match declared.rank() {
        Some(4) => Some((declared.dim(2)?, declared.dim(3)?)),
        _ => None,
    }
}

/// Each stored row's group and label, when the data has them.
struct Annotations {
    groups: Option<Vec<i64>>,
    labels: Option<Vec<i64>>,
}

impl Annotations {
    fn of(store: &Store, spec: &CalibSpec) -> Result<Annotations> {
        match store {
            Store::Images(folder) => Ok(Annotations {
                groups: None,
                labels: spec.labels.as_ref().map(|_| folder.classes()).transpose()?,
            }),
            Store::Arrays(shards) => {
                let mut groups: Vec<Option<Vec<i64>>> = Vec::new();
                let mut labels = Vec::new();
                for shard in shards {
                    groups.push(shard.small_array(GROUP_KEY, false)?);
                    if let Some(key) = &spec.labels {
                        labels.extend(shard.small_array(key, true)?.expect("required"));
                    }
                }
                Ok(Annotations {
                    groups: shard_groups(shards, groups),
                    labels: spec.labels.as_ref().map(|_| labels),
                })
            }
        }
    }
}

/// Groups numbered across shards (a group of one shard is not the same-numbered group of
/// another); when only some shards have groups, each row of the others is its own.
fn shard_groups(shards: &[Shard], groups: Vec<Option<Vec<i64>>>) -> Option<Vec<i64>> {
    if groups.iter().all(Option::is_none) {
        return None;
    }
    let mut ids: BTreeMap<(usize, i64, usize), i64> = BTreeMap::new();
    let mut numbered = Vec::new();
    for (s, (shard, groups)) in shards.iter().zip(groups).enumerate() {
        for row in 0..shard.len {
            let key = match &groups {
                Some(groups) => (s, groups[row], 0),
                None => (s, 0, row + 1),
            };
            let next = ids.len() as i64;
            numbered.push(*ids.entry(key).or_insert(next));
        }
    }
    Some(numbered)
}

impl Shard {
    /// A 1-D integer array of the shard's `.npz`, one value per row in use; an error when
    /// `required` and absent.
    fn small_array(&self, key: &str, required: bool) -> Result<Option<Vec<i64>>> {
        if !is_npz(&self.path) {
            return match required {
                true => Err(data_error(
                    &self.path,
                    format!("labels '{key}' need an .npz holding them"),
                )),
                false => Ok(None),
            };
        }
        let mut npz = Npz::open(&self.path)?;
        if !npz.names().iter().any(|name| name == key) {
            return match required {
                true => Err(data_error(
                    &self.path,
                    format!(
                        "no labels array '{key}' (the archive holds: {})",
                        npz.names().join(", ")
                    ),
                )),
                false => Ok(None),
            };
        }
        let rows = self.inputs[0].1.len();
        let values = integers(&self.path, key, npz.array(key)?, rows)?;
        Ok(Some(match &self.index {
            Some(index) => index.iter().map(|&row| values[row]).collect(),
            None => values,
        }))
    }
}

fn synthetic(
    count: usize,
    seed: u64,
    model: &Model,
    pinned: &PinnedShapes,
) -> Result<(Store, String)> {
    let noise = random_inputs(&sample_dims(model, pinned)?, count, seed)?;
    let names = crate::calib::input_names(model);
    let shard = Shard {
        path: PathBuf::from("synthetic"),
        inputs: names
            .into_iter()
            .zip(noise.arrays())
            .map(|(name, array)| (name, Rows::Held(array.clone())))
            .collect(),
        index: None,
        len: count,
    };
    Ok((
        Store::Arrays(vec![shard]),
        format!("synthetic: {count} standard-normal samples, seed {seed}"),
    ))
}

fn is_npz(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npz"))
}

/// The arrays of each file, mapped, with the rows a selection keeps.
fn open_shards(
    paths: &[PathBuf],
    spec: &CalibSpec,
    inputs: &[(String, ValueType)],
) -> Result<(Store, String)> {
    let names: Vec<String> = inputs.iter().map(|(name, _)| name.clone()).collect();
    let shards = paths
        .iter()
        .map(|path| open_shard(path, &names, &spec.select))
        .collect::<Result<Vec<_>>>()?;
    let source = match paths {
        [path] => describe_selection(path, &spec.select),
        [first, ..] => format!(
            "{} shards ({} …)",
            paths.len(),
            describe_selection(first, &spec.select)
        ),
        [] => unreachable!("at least one path"),
    };
    Ok((Store::Arrays(shards), source))
}

fn open_shard(path: &Path, names: &[String], select: &ArraySelection) -> Result<Shard> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let (inputs, index) = match (extension.as_deref(), names) {
        (Some("npz"), _) => {
            let mut npz = Npz::open(path)?;
            let keys = input_keys(path, &npz.names(), names, select)?;
            let inputs = keys
                .into_iter()
                .map(|key| Ok((key.clone(), Rows::Mapped(npz.mapped(&key)?))))
                .collect::<Result<Vec<_>>>()?;
            let index = match &select.index {
                Some(key) => {
                    let index = integers(path, key, npz.array(key)?, usize::MAX)?;
                    Some(row_index(path, key, &index, inputs[0].1.len())?)
                }
                None => None,
            };
            (inputs, index)
        }
        (Some("npy"), [name]) => (
            vec![(name.clone(), Rows::Mapped(MappedArray::open_npy(path)?))],
            None,
        ),
        (Some("npy"), _) => {
            return Err(data_error(
                path,
                format!(
                    "a .npy file holds one array, the model has {} inputs ({}): use an .npz keyed by input name",
                    names.len(),
                    names.join(", ")
                ),
            ));
        }
        _ => {
            return Err(data_error(
                path,
                "expected a .npy or .npz file, or a folder of images".into(),
            ));
        }
    };
    check_rows(path, &inputs)?;
    let len = index.as_ref().map_or(inputs[0].1.len(), Vec::len);
    if len == 0 {
        return Err(data_error(path, "no samples".into()));
    }
    Ok(Shard {
        path: path.to_path_buf(),
        inputs,
        index,
        len,
    })
}

/// Every input's array has the same number of rows, and a source dtype its SPEC takes.
fn check_rows(path: &Path, inputs: &[(String, Rows)]) -> Result<()> {
    let first = inputs[0].1.len();
    match inputs.iter().position(|(_, rows)| rows.len() != first) {
        Some(i) => Err(data_error(
            path,
            format!(
                "input {i} has {} samples, input 0 has {first}",
                inputs[i].1.len()
            ),
        )),
        None => Ok(()),
    }
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

fn open_folder(folder: &Path, inputs: &[(String, ValueType)]) -> Result<(Store, String)> {
    let [(_, declared)] = inputs else {
        return Err(data_error(
            folder,
            format!(
                "a folder of images feeds a one-input model; this one has {} inputs",
                inputs.len()
            ),
        ));
    };
    let folder = ImageFolder::open(folder, has_one_channel(declared))?;
    let source = folder.describe();
    Ok((Store::Images(folder), source))
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

/// Each of `n` samples' fold of `k`, the folds' sizes differing by one at most.
fn row_folds(n: usize, k: usize, rng: &mut Rng) -> Result<Vec<usize>> {
    if k < 2 || k > n {
        return Err(Error::Usage(format!(
            "cannot deal {n} sample(s) into {k} folds: expected 2 to {n} folds"
        )));
    }
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, rng);
    let mut fold_of = vec![0; n];
    for (i, &row) in order.iter().enumerate() {
        fold_of[row] = i % k;
    }
    Ok(fold_of)
}

/// Each sample's fold of `k`, groups kept whole: the groups, shuffled by `rng` then
/// largest first, each go to the fold with the fewest samples so far.
fn group_folds(groups: &[i64], k: usize, rng: &mut Rng) -> Result<Vec<usize>> {
    let mut sizes: BTreeMap<i64, usize> = BTreeMap::new();
    for &group in groups {
        *sizes.entry(group).or_default() += 1;
    }
    if k < 2 || k > sizes.len() {
        return Err(Error::Usage(format!(
            "cannot deal {} group(s) of samples into {k} folds, each group whole: expected 2 to {} folds",
            sizes.len(),
            sizes.len()
        )));
    }
    let mut order: Vec<(i64, usize)> = sizes.into_iter().collect();
    shuffle(&mut order, rng);
    order.sort_by_key(|&(_, size)| std::cmp::Reverse(size));
    let mut filled = vec![0usize; k];
    let mut fold_of_group = BTreeMap::new();
    for (group, size) in order {
        let emptiest = (0..k).min_by_key(|&f| filled[f]).expect("k ≥ 2");
        filled[emptiest] += size;
        fold_of_group.insert(group, emptiest);
    }
    Ok(groups.iter().map(|g| fold_of_group[g]).collect())
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

    #[test]
    fn folds_hold_every_sample_out_once_and_keep_groups_whole() {
        let groups: Vec<i64> = (0..50).map(|i| (i * 7) % 10).collect();
        let fold_of = group_folds(&groups, 3, &mut Rng::new(1)).unwrap();
        let mut sizes = [0; 3];
        for (group, fold) in groups.iter().zip(&fold_of) {
            sizes[*fold] += 1;
            let mut same_group = groups.iter().zip(&fold_of).filter(|(g, _)| *g == group);
            assert!(same_group.all(|(_, f)| f == fold), "group {group} split");
        }
        assert_eq!(sizes.iter().sum::<usize>(), 50);
        assert!(sizes.iter().all(|&s| (15..=20).contains(&s)), "{sizes:?}");
        let rows = row_folds(10, 4, &mut Rng::new(2)).unwrap();
        let mut per_fold = [0; 4];
        rows.iter().for_each(|&f| per_fold[f] += 1);
        assert_eq!(
            per_fold.iter().max().unwrap() - per_fold.iter().min().unwrap(),
            1
        );
    }

    #[test]
    fn folds_refuse_more_folds_than_groups_or_samples() {
        let err = group_folds(&[1, 1, 2, 2], 3, &mut Rng::new(0)).unwrap_err();
        assert!(
            err.to_string()
                .contains("2 group(s) of samples into 3 folds"),
            "{err}"
        );
        assert!(row_folds(5, 1, &mut Rng::new(0)).is_err());
        assert!(row_folds(5, 6, &mut Rng::new(0)).is_err());
    }
}
