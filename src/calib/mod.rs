//! Calibration and verification data: `.npy`/`.npz` files, image preprocessing, and
//! seeded random inputs.
//!
//! Whatever the source, the result is [`ModelInputs`]: one array per runtime input of a
//! model, in the model's input order, all sharing the leading sample dim.
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

pub mod npy;
pub mod preprocess;
pub mod random;

use std::ops::Range;
use std::path::Path;

use ndarray::{ArrayD, Axis, Slice};

pub use npy::{Dtype, NpyArray, Npz};
pub use preprocess::Preprocess;

use crate::error::{Error, Result};
use crate::ir::Model;
use crate::ir::shape::{self, PinnedShapes};

/// The arrays for each runtime input of a model, in the model's input order; every
/// array's leading dim is the sample dim, and all have the same number of samples.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInputs {
    arrays: Vec<ArrayD<f32>>,
    samples: usize,
    source: String,
}

impl ModelInputs {
    /// Checks the arrays agree on a non-zero sample count. `source` says where they come
    /// from, for reports and errors.
    pub fn new(arrays: Vec<ArrayD<f32>>, source: impl Into<String>) -> Result<ModelInputs> {
        let source = source.into();
        let samples = sample_count(&arrays)
            .map_err(|reason| Error::Usage(format!("inputs from {source}: {reason}")))?;
        Ok(ModelInputs {
            arrays,
            samples,
            source,
        })
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

fn sample_count(arrays: &[ArrayD<f32>]) -> Result<usize, String> {
    let counts: Vec<usize> = arrays
        .iter()
        .enumerate()
        .map(|(i, array)| {
            array
                .shape()
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

/// The dims of each runtime input after its leading sample dim: pinned ones as pinned,
/// others as declared; an error when one of them is not fixed.
pub fn sample_dims(model: &Model, pinned: &PinnedShapes) -> Result<Vec<Vec<usize>>> {
    let shapes = shape::infer(&model.graph, pinned)?;
    model
        .graph
        .runtime_inputs()
        .map(|input| {
            let declared = shapes.get(input);
            let dims = declared.dims.as_deref().unwrap_or_default();
            let fixed: Option<Vec<usize>> = dims.iter().skip(1).map(|dim| dim.known()).collect();
            match fixed {
                Some(fixed) if !dims.is_empty() => Ok(fixed),
                _ => Err(Error::tensor(
                    &model.graph.value(input).name,
                    format!(
                        "the input is {declared}: every dim after the first must be fixed to make data for it (pin it with --input-shape)"
                    ),
                )),
            }
        })
        .collect()
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

/// Reads the inputs of a model from a file and preprocesses them: an `.npz` with one
/// array per input name, or with a single array for a one-input model; or a `.npy` for
/// a one-input model.
pub fn load_inputs(
    path: &Path,
    input_names: &[String],
    preprocess: &Preprocess,
) -> Result<ModelInputs> {
    let arrays = read_arrays(path, input_names)?
        .into_iter()
        .map(|(name, stored)| {
            preprocess
                .check_source(stored.dtype)
                .and_then(|()| preprocess.apply(stored.values))
                .map_err(|e| data_error(path, format!("array '{name}': {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let samples = sample_count(&arrays).map_err(|reason| data_error(path, reason))?;
    Ok(ModelInputs {
        arrays,
        samples,
        source: path.display().to_string(),
    })
}

/// The stored array for each input, with the name it is stored under.
fn read_arrays(path: &Path, input_names: &[String]) -> Result<Vec<(String, NpyArray)>> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match (extension.as_deref(), input_names) {
        (Some("npz"), _) => read_npz_arrays(path, input_names),
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

fn read_npz_arrays(path: &Path, input_names: &[String]) -> Result<Vec<(String, NpyArray)>> {
    let mut npz = Npz::open(path)?;
    let stored = npz.names();
    let keys = match (input_names, &stored[..]) {
        _ if input_names.iter().all(|name| stored.contains(name)) => input_names.to_vec(),
        ([_], [only]) => vec![only.clone()],
        _ => {
            let missing: Vec<&str> = input_names
                .iter()
                .filter(|name| !stored.contains(name))
                .map(String::as_str)
                .collect();
            return Err(data_error(
                path,
                format!(
                    "no array for input {} (the archive holds: {})",
                    missing.join(", "),
                    stored.join(", ")
                ),
            ));
        }
    };
    keys.into_iter()
        .map(|key| Ok((key.clone(), npz.array(&key)?)))
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
        let err = load_inputs(&path, &names(&["input"]), &Preprocess::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("split.npz")
                && err.contains("no array for input input (the archive holds: x, y)"),
            "{err}"
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
