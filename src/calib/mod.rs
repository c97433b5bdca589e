//! Calibration and verification data: `.npy`/`.npz` files, folders of images, image
//! preprocessing, and seeded random inputs.
//!
//! Verification reads [`ModelInputs`]: one array per runtime input of a model, in the
//! model's input order, all sharing the leading sample dim. Learning reads a [`Dataset`]:
//! the same, plus a group-aware training/held-out split and shuffled, augmented batches.
//!
//! ```no_run
//! use onnx_shallow::calib::{self, Preprocess};
//! let model = onnx_shallow::load("model.onnx".as_ref())?;
//! let names = calib::input_names(&model);
//! let photos = calib::load_inputs("photos.npz".as_ref(), &names, &Preprocess::parse("imagenet")?)?;
//! let noise = calib::random_inputs(&calib::sample_dims(&model, &Default::default())?, 64, 0)?;
//! assert_eq!(noise.samples(), 64);
//! # Ok::<(), onnx_shallow::Error>(())
//! ```

mod augment;
mod dataset;
mod images;
pub mod npy;
pub mod preprocess;
pub mod random;

use std::ops::Range;
use std::path::Path;

use ndarray::{ArrayD, Axis, Slice};

pub use augment::CropRange;
pub use dataset::{CalibSpec, Dataset, HeldOut};
pub use npy::{Dtype, NpyArray, Npz};
pub use preprocess::Preprocess;

use crate::error::{Error, Result};
use crate::ir::Model;
use crate::ir::shape::{self, PinnedShapes, ValueType};

/// The arrays for each runtime input of a model, in the model's input order; every
/// array's leading dim is the sample dim, and all have the same number of samples.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInputs {
    arrays: Vec<ArrayD<f32>>,
    samples: usize,
    source: String,
    /// Which group (photo, clip) each sample came from, when the data says.
    groups: Option<Vec<i64>>,
}

impl ModelInputs {
    /// Checks the arrays agree on a non-zero sample count. `source` says where they come
    /// from, for reports and errors.
    pub fn new(arrays: Vec<ArrayD<f32>>, source: impl Into<String>) -> Result<ModelInputs> {
        let source = source.into();
        let samples = sample_count(arrays.iter().map(ArrayD::shape))
            .map_err(|reason| Error::Usage(format!("inputs from {source}: {reason}")))?;
        Ok(ModelInputs {
            arrays,
            samples,
            source,
            groups: None,
        })
    }

    /// The same samples, each in the group `groups` gives (one id per sample).
    pub fn with_groups(self, groups: Vec<i64>) -> Result<ModelInputs> {
        if groups.len() != self.samples {
            return Err(Error::Usage(format!(
                "inputs from {}: {} group ids for {} samples",
                self.source,
                groups.len(),
                self.samples
            )));
        }
        Ok(ModelInputs {
            groups: Some(groups),
            ..self
        })
    }

    /// Which group each sample came from, when the data says.
    pub fn groups(&self) -> Option<&[i64]> {
        self.groups.as_deref()
    }

    pub fn arrays(&self) -> &[ArrayD<f32>] {
        &self.arrays
    }

    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Where the data came from: a file path, or `random N seed S`.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The samples in `range`, for every input.
    pub fn batch(&self, range: Range<usize>) -> Vec<ArrayD<f32>> {
        self.arrays
            .iter()
            .map(|array| {
                array
                    .slice_axis(Axis(0), Slice::from(range.clone()))
                    .to_owned()
            })
            .collect()
    }
}

fn sample_count<'a>(shapes: impl IntoIterator<Item = &'a [usize]>) -> Result<usize, String> {
    let counts: Vec<usize> = shapes
        .into_iter()
        .enumerate()
        .map(|(i, shape)| {
            shape
                .first()
                .copied()
                .ok_or_else(|| format!("input {i} is a scalar, with no sample dim"))
        })
        .collect::<Result<_, _>>()?;
    match counts[..] {
        [] => Err("no arrays".into()),
        [0, ..] => Err("no samples".into()),
        [first, ..] => match counts.iter().position(|&count| count != first) {
            Some(i) => Err(format!(
                "input {i} has {} samples, input 0 has {first}",
                counts[i]
            )),
            None => Ok(first),
        },
    }
}

/// The names of a model's runtime inputs, in order.
pub fn input_names(model: &Model) -> Vec<String> {
    model
        .graph
        .runtime_inputs()
        .map(|input| model.graph.value(input).name.clone())
        .collect()
}

/// Each runtime input's name and type, with pinned dims as pinned.
fn input_types(model: &Model, pinned: &PinnedShapes) -> Result<Vec<(String, ValueType)>> {
    let shapes = shape::infer(&model.graph, pinned)?;
    Ok(model
        .graph
        .runtime_inputs()
        .map(|input| {
            (
                model.graph.value(input).name.clone(),
                shapes.get(input).clone(),
            )
        })
        .collect())
}

/// The dims of each runtime input after its leading sample dim: pinned ones as pinned,
/// others as declared; an error when one of them is not fixed.
pub fn sample_dims(model: &Model, pinned: &PinnedShapes) -> Result<Vec<Vec<usize>>> {
    input_types(model, pinned)?
        .into_iter()
        .map(|(name, declared)| {
            let dims = declared.dims.as_deref().unwrap_or_default();
            let fixed: Option<Vec<usize>> = dims.iter().skip(1).map(|dim| dim.known()).collect();
            match fixed {
                Some(fixed) if !dims.is_empty() => Ok(fixed),
                _ => Err(Error::DynamicInput {
                    input: name,
                    declared: declared.to_string(),
                    needs: "every dim after the first must be fixed to make data for it",
                }),
            }
        })
        .collect()
}

/// Whether samples of `dims` (without the sample dim) fit an input declared as `declared`:
/// same rank, and equal wherever the declaration fixes a dim.
fn fits(declared: &ValueType, dims: &[usize]) -> bool {
    match &declared.dims {
        None => true,
        Some(declared) => {
            declared.len() == dims.len() + 1
                && declared[1..]
                    .iter()
                    .zip(dims)
                    .all(|(want, &have)| want.known().is_none_or(|want| want == have))
        }
    }
}

/// `samples` standard-normal samples for inputs of the given per-sample dims. Signed
/// on purpose: uniform [0, 1) inputs would hide a removed ReLU.
pub fn random_inputs(sample_dims: &[Vec<usize>], samples: usize, seed: u64) -> Result<ModelInputs> {
    let mut rng = random::Rng::new(seed);
    let arrays = sample_dims
        .iter()
        .map(|dims| random::normal_array(&[&[samples], &dims[..]].concat(), &mut rng))
        .collect();
    ModelInputs::new(arrays, format!("random {samples} seed {seed}"))
}

/// Which arrays of a file to read and which of their rows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ArraySelection {
    /// For a one-input model: the array to read (by default the array named after the
    /// input, or the archive's only array).
    pub key: Option<String>,
    /// An integer array in the same `.npz` listing the rows to keep, in its order.
    pub index: Option<String>,
}

/// Reads the inputs of a model from a file and preprocesses them: an `.npz` with one
/// array per input name, or with a single array for a one-input model; or a `.npy` for
/// a one-input model.
pub fn load_inputs(
    path: &Path,
    input_names: &[String],
    preprocess: &Preprocess,
) -> Result<ModelInputs> {
    load_selected_inputs(path, input_names, &ArraySelection::default(), preprocess)
}

/// [`load_inputs`], reading the arrays and rows that `selection` names.
pub fn load_selected_inputs(
    path: &Path,
    input_names: &[String],
    selection: &ArraySelection,
    preprocess: &Preprocess,
) -> Result<ModelInputs> {
    let arrays = read_stored(path, input_names, selection)?
        .into_iter()
        .map(|(key, stored)| apply_preprocess(path, &key, stored, preprocess))
        .collect::<Result<Vec<_>>>()?;
    let samples = sample_count(arrays.iter().map(ArrayD::shape))
        .map_err(|reason| data_error(path, reason))?;
    Ok(ModelInputs {
        arrays,
        samples,
        source: path.display().to_string(),
        groups: selected_groups(path, selection, samples)?,
    })
}

/// One integer per selected row, from the `.npz` array named `group` (which photo a crop
/// came from), when there is one.
fn selected_groups(
    path: &Path,
    selection: &ArraySelection,
    samples: usize,
) -> Result<Option<Vec<i64>>> {
    if !path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npz"))
    {
        return Ok(None);
    }
    let mut npz = Npz::open(path)?;
    if !npz.names().iter().any(|name| name == GROUP_KEY) {
        return Ok(None);
    }
    let groups = integers(path, GROUP_KEY, npz.array(GROUP_KEY)?, usize::MAX)?;
    let rows = match &selection.index {
        Some(key) => {
            let index = integers(path, key, npz.array(key)?, usize::MAX)?;
            row_index(path, key, &index, groups.len())?
        }
        None => (0..groups.len()).collect(),
    };
    if rows.len() != samples {
        return Err(data_error(
            path,
            format!(
                "array '{GROUP_KEY}' has {} values, one per row of the {samples} rows expected",
                groups.len()
            ),
        ));
    }
    Ok(Some(rows.into_iter().map(|row| groups[row]).collect()))
}

/// Preprocesses the array stored under `key`; an error names the file and the array.
fn apply_preprocess(
    path: &Path,
    key: &str,
    stored: NpyArray,
    preprocess: &Preprocess,
) -> Result<ArrayD<f32>> {
    preprocess
        .check_source(stored.dtype)
        .and_then(|()| preprocess.apply(stored.values))
        .map_err(|e| data_error(path, format!("array '{key}': {e}")))
}

/// The arrays of a file for a model's inputs, with the rows a selection keeps: for each
/// input, the key it is stored under, and the array.
type Stored = Vec<(String, NpyArray)>;

const GROUP_KEY: &str = "group";

fn read_stored(path: &Path, input_names: &[String], selection: &ArraySelection) -> Result<Stored> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match (extension.as_deref(), input_names) {
        (Some("npz"), _) => read_npz(path, input_names, selection),
        (Some("npy"), _) if selection != &ArraySelection::default() => Err(data_error(
            path,
            "a .npy file holds one array: a key or an index array needs an .npz".into(),
        )),
        (Some("npy"), [name]) => Ok(vec![(name.clone(), npy::read_npy(path)?)]),
        (Some("npy"), _) => Err(data_error(
            path,
            format!(
                "a .npy file holds one array, the model has {} inputs ({}): use an .npz keyed by input name",
                input_names.len(),
                input_names.join(", ")
            ),
        )),
        _ => Err(data_error(path, "expected a .npy or .npz file".into())),
    }
}

fn read_npz(path: &Path, input_names: &[String], selection: &ArraySelection) -> Result<Stored> {
    let mut npz = Npz::open(path)?;
    let keys = input_keys(path, &npz.names(), input_names, selection)?;
    let mut inputs = keys
        .into_iter()
        .map(|key| Ok((key.clone(), npz.array(&key)?)))
        .collect::<Result<Vec<_>>>()?;
    let rows = sample_count(inputs.iter().map(|(_, stored)| stored.values.shape()))
        .map_err(|reason| data_error(path, reason))?;
    if let Some(key) = &selection.index {
        let index = integers(path, key, npz.array(key)?, usize::MAX)?;
        let index = row_index(path, key, &index, rows)?;
        for (_, stored) in &mut inputs {
            stored.values = stored.values.select(Axis(0), &index);
        }
    }
    Ok(inputs)
}

/// The key of each input's array: the selection's key, else the input's own name, else
/// the archive's only array.
fn input_keys(
    path: &Path,
    stored: &[String],
    input_names: &[String],
    selection: &ArraySelection,
) -> Result<Vec<String>> {
    match (&selection.key, input_names, stored) {
        (Some(key), [_], _) => Ok(vec![key.clone()]),
        (Some(key), _, _) => Err(data_error(
            path,
            format!(
                "key '{key}' picks the array of a one-input model; this one has {} inputs ({}): store one array per input name",
                input_names.len(),
                input_names.join(", ")
            ),
        )),
        _ if input_names.iter().all(|name| stored.contains(name)) => Ok(input_names.to_vec()),
        (None, [_], _) if data_arrays(stored).count() == 1 => {
            Ok(data_arrays(stored).cloned().collect())
        }
        (None, [input], _) => Err(Error::UnnamedArray {
            path: path.to_path_buf(),
            input: input.clone(),
            held: stored.to_vec(),
        }),
        _ => {
            let missing: Vec<&str> = input_names
                .iter()
                .filter(|name| !stored.contains(name))
                .map(String::as_str)
                .collect();
            Err(data_error(
                path,
                format!(
                    "no array for input {} (the archive holds: {}); store one array per input name",
                    missing.join(", "),
                    stored.join(", ")
                ),
            ))
        }
    }
}

/// The arrays of an archive other than its `group` array.
fn data_arrays(stored: &[String]) -> impl Iterator<Item = &String> {
    stored.iter().filter(|name| *name != GROUP_KEY)
}

/// The values of a 1-D integer array of `len` elements (any length when `usize::MAX`).
fn integers(path: &Path, key: &str, stored: NpyArray, len: usize) -> Result<Vec<i64>> {
    let integer = matches!(
        stored.dtype,
        Dtype::U8 | Dtype::I8 | Dtype::I16 | Dtype::I32 | Dtype::I64
    );
    let shape = stored.values.shape();
    let reason = match (integer, shape) {
        (false, _) => format!("is {:?}, expected integers", stored.dtype),
        (true, [n]) if len == usize::MAX || *n == len => {
            return Ok(stored.values.iter().map(|&v| v as i64).collect());
        }
        (true, [n]) => format!("has {n} values, one per row of the {len} rows expected"),
        (true, _) => format!("is {shape:?}, expected one dim"),
    };
    Err(data_error(path, format!("array '{key}' {reason}")))
}

/// Checks an index array's values are rows of a `rows`-row array.
fn row_index(path: &Path, key: &str, index: &[i64], rows: usize) -> Result<Vec<usize>> {
    index
        .iter()
        .map(|&row| {
            usize::try_from(row)
                .ok()
                .filter(|&row| row < rows)
                .ok_or_else(|| {
                    data_error(
                        path,
                        format!("index array '{key}': row {row} is outside the {rows} rows"),
                    )
                })
        })
        .collect()
}

fn data_error(path: &Path, reason: String) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calib::npy::tests::{f32_npy, npy_bytes, write_npz};

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn npz_arrays_are_matched_to_inputs_by_name_in_model_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("two.npz");
        write_npz(
            &path,
            &[
                ("b", f32_npy("(2, 1)", &[3.0, 4.0])),
                ("a", f32_npy("(2,)", &[1.0, 2.0])),
            ],
            true,
        );
        let inputs = load_inputs(&path, &names(&["a", "b"]), &Preprocess::default()).unwrap();
        assert_eq!(inputs.samples(), 2);
        assert_eq!(inputs.arrays()[0].as_slice().unwrap(), &[1.0, 2.0]);
        assert_eq!(inputs.batch(1..2)[1].as_slice().unwrap(), &[4.0]);
        assert_eq!(inputs.source(), path.display().to_string());
    }

    #[test]
    fn a_single_array_feeds_a_one_input_model_whatever_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let (npz, npy) = (dir.path().join("one.npz"), dir.path().join("one.npy"));
        write_npz(&npz, &[("x", f32_npy("(3,)", &[1.0, 2.0, 3.0]))], false);
        std::fs::write(&npy, f32_npy("(3,)", &[1.0, 2.0, 3.0])).unwrap();
        for path in [npz, npy] {
            assert_eq!(
                load_inputs(&path, &names(&["input"]), &Preprocess::default())
                    .unwrap()
                    .samples(),
                3
            );
        }
    }

    #[test]
    fn an_npz_without_a_matching_array_lists_what_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("split.npz");
        write_npz(
            &path,
            &[
                ("x", f32_npy("(1,)", &[1.0])),
                ("y", f32_npy("(1,)", &[0.0])),
            ],
            true,
        );
        let err = |inputs: &[&str]| {
            load_inputs(&path, &names(inputs), &Preprocess::default())
                .unwrap_err()
                .to_string()
        };
        let one_input = err(&["input"]);
        assert!(
            one_input.contains("split.npz")
                && one_input.contains(
                    "no array for input input (the archive holds: x, y); name the one to read"
                ),
            "{one_input}"
        );
        let two_inputs = err(&["x", "mask"]);
        assert!(
            two_inputs.contains(
                "no array for input mask (the archive holds: x, y); store one array per input name"
            ),
            "{two_inputs}"
        );
    }

    #[test]
    fn refuses_inputs_that_do_not_fit_the_model_or_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let (npy, npz, txt) = (
            dir.path().join("a.npy"),
            dir.path().join("ab.npz"),
            dir.path().join("a.txt"),
        );
        std::fs::write(&npy, f32_npy("(2,)", &[1.0, 2.0])).unwrap();
        write_npz(
            &npz,
            &[
                ("a", f32_npy("(2,)", &[1.0, 2.0])),
                ("b", f32_npy("(3,)", &[1.0, 2.0, 3.0])),
            ],
            true,
        );
        let none = Preprocess::default();
        let cases = [
            (
                load_inputs(&npy, &names(&["a", "b"]), &none),
                "a .npy file holds one array, the model has 2 inputs (a, b)",
            ),
            (
                load_inputs(&npz, &names(&["a", "b"]), &none),
                "input 1 has 3 samples, input 0 has 2",
            ),
            (
                load_inputs(&txt, &names(&["a"]), &none),
                "expected a .npy or .npz file",
            ),
            (
                load_inputs(
                    &npy,
                    &names(&["a"]),
                    &Preprocess::parse("imagenet").unwrap(),
                ),
                "array 'a': the imagenet preset expects uint8",
            ),
            (
                load_inputs(&npy, &names(&["a"]), &Preprocess::parse("crop=2").unwrap()),
                "array 'a': preprocess crop: needs a batch of images",
            ),
        ];
        for (result, expected) in cases {
            let err = result.unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
    }

    fn i64_npy(values: &[i64]) -> Vec<u8> {
        let header = format!(
            "{{'descr': '<i8', 'fortran_order': False, 'shape': ({},), }}",
            values.len()
        );
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        npy_bytes(1, &header, &data)
    }

    #[test]
    fn an_index_array_selects_rows_in_its_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grouped.npz");
        write_npz(
            &path,
            &[
                ("x", f32_npy("(4, 1)", &[10.0, 11.0, 12.0, 13.0])),
                ("group", i64_npy(&[0, 0, 1, 2])),
                ("pick", i64_npy(&[3, 0])),
                ("far", i64_npy(&[4])),
            ],
            true,
        );
        let select = |key: &str, index: &str| ArraySelection {
            key: Some(key.into()),
            index: Some(index.into()),
        };
        let stored = read_stored(&path, &names(&["in"]), &select("x", "pick")).unwrap();
        assert_eq!(stored[0].1.values.as_slice().unwrap(), &[13.0, 10.0]);
        let selected = load_selected_inputs(
            &path,
            &names(&["in"]),
            &select("x", "pick"),
            &Preprocess::default(),
        )
        .unwrap();
        assert_eq!(selected.arrays()[0].as_slice().unwrap(), &[13.0, 10.0]);

        let npy = dir.path().join("x.npy");
        std::fs::write(&npy, f32_npy("(1,)", &[1.0])).unwrap();
        let cases = [
            (
                &path,
                names(&["in"]),
                select("x", "far"),
                "index array 'far': row 4 is outside the 4 rows",
            ),
            (
                &path,
                names(&["a", "b"]),
                select("x", "pick"),
                "key 'x' picks the array of a one-input model; this one has 2 inputs (a, b)",
            ),
            (
                &npy,
                names(&["in"]),
                select("x", "pick"),
                "a key or an index array needs an .npz",
            ),
        ];
        for (file, inputs, selection, expected) in cases {
            let err = read_stored(file, &inputs, &selection)
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn uint8_images_are_preprocessed_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pixels.npy");
        let header = "{'descr': '|u1', 'fortran_order': False, 'shape': (1, 1, 2, 3), }";
        std::fs::write(&path, npy_bytes(1, header, &[0, 0, 0, 255, 255, 255])).unwrap();
        let batch = load_inputs(
            &path,
            &names(&["image"]),
            &Preprocess::parse("imagenet").unwrap(),
        )
        .unwrap();
        let image = &batch.arrays()[0];
        assert_eq!(image.shape(), &[1, 3, 1, 2]);
        assert!(
            (image[[0, 0, 0, 0]] + 0.485 / 0.229).abs() < 1e-5
                && (image[[0, 2, 0, 1]] - 0.594 / 0.225).abs() < 1e-5,
            "{image:?}"
        );
    }

    #[test]
    fn sample_dims_are_the_declared_dims_after_the_batch_dim() {
        use crate::ir::builder::ModelBuilder;
        let model = |dims: &[i64]| {
            let proto = ModelBuilder::new(13)
                .input("x", dims)
                .node("Relu", &["x"], &["y"], Default::default())
                .output("y")
                .build();
            Model::from_proto(proto).unwrap()
        };
        assert_eq!(
            sample_dims(&model(&[-1, 3, 4]), &Default::default()).unwrap(),
            [vec![3, 4]]
        );
        assert_eq!(input_names(&model(&[-1, 3, 4])), ["x"]);
        let err = sample_dims(&model(&[-1, -1]), &Default::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'x'") && err.contains("must be fixed"),
            "{err}"
        );
    }

    #[test]
    fn random_inputs_are_signed_seeded_and_batched() {
        let inputs = random_inputs(&[vec![3], vec![2, 2]], 50, 9).unwrap();
        assert_eq!(
            (inputs.arrays()[0].shape(), inputs.arrays()[1].shape()),
            (&[50, 3][..], &[50, 2, 2][..])
        );
        assert!(inputs.arrays()[0].iter().any(|&v| v < 0.0));
        assert_eq!(
            inputs,
            random_inputs(&[vec![3], vec![2, 2]], 50, 9).unwrap()
        );
        assert_eq!(inputs.source(), "random 50 seed 9");
        assert!(
            random_inputs(&[vec![3]], 0, 9)
                .unwrap_err()
                .to_string()
                .contains("no samples")
        );
    }
}
