//! A training run's whole state on disk: parameters, optimiser moments, the best weights
//! so far, what was measured, and the step reached. The data order and every random crop
//! follow from the seed, the epoch and the sample, so the step is all a resumed run needs
//! to read the batches an uninterrupted one would; the state is stored bit for bit, so it
//! goes on to the same result.
//!
//! The file is one JSON header (scalars, and the tensors' names and dims) and the tensors'
//! f32 values after it, written atomically. The header carries a fingerprint of the model,
//! the gate groups, the data and the options: a state saved by another run is refused.

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::exec::Params;
use crate::gates::GateGroup;
use crate::gates::train::{Evaluation, State, TrainData, TrainOptions};
use crate::ir::Model;

const FILE: &str = "training.state";
const MAGIC: &[u8] = b"onnx-shallow training state 2\n";

/// What identifies a run: a hash of the model, its groups, the data and the options.
pub(crate) fn fingerprint(
    model: &Model,
    groups: &[GateGroup],
    linear: &[usize],
    data: &TrainData,
    options: &TrainOptions,
    steps: usize,
) -> String {
    let mut hash = Fnv::default();
    match model.to_proto() {
        Ok(proto) => hash.add(&crate::onnx::encode_model(&proto)),
        Err(e) => hash.add(e.to_string().as_bytes()),
    }
    for group in groups {
        hash.add(group.nodes().collect::<Vec<_>>().join(",").as_bytes());
    }
    let described = serde_json::json!({
        "linear": linear,
        "options": options,
        "steps": steps,
        "train": [data.train.source(), data.train.len(), data.train.augments()],
        "held_out": [data.held_out.source(), data.held_out.len()],
    });
    hash.add(described.to_string().as_bytes());
    format!("{:016x}", hash.0)
}

/// FNV-1a, 64 bits: stable across platforms and versions.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn add(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    fingerprint: String,
    step: usize,
    alpha: Vec<f32>,
    crossed_at: Vec<Option<usize>>,
    alpha_moments: Vec<(f64, f64)>,
    gains: Vec<f64>,
    variances: Vec<f64>,
    epoch_losses: Vec<(f64, usize)>,
    evaluations: Vec<Evaluation>,
    best: Option<(Evaluation, Vec<f32>)>,
    /// Each tensor stored after the header, in order: its name and dims.
    tensors: Vec<(String, Vec<usize>)>,
}

fn file(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Saves `state` in `dir` (created if missing), replacing what was there at once.
pub(crate) fn save(dir: &Path, fingerprint: &str, state: &State) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tensors: Vec<(String, &ArrayD<f32>)> = Vec::new();
    for (name, weight) in &state.params.weights {
        tensors.push((format!("weight {name}"), weight));
    }
    for ((name, _), (m, v)) in state.params.weights.iter().zip(&state.weight_moments) {
        tensors.push((format!("m {name}"), m));
        tensors.push((format!("v {name}"), v));
    }
    if let Some((_, best)) = &state.best {
        for (name, weight) in &best.weights {
            tensors.push((format!("best {name}"), weight));
        }
    }
    let header = Header {
        fingerprint: fingerprint.to_string(),
        step: state.step,
        alpha: state.params.alpha.clone(),
        crossed_at: state.crossed_at.clone(),
        alpha_moments: state.alpha_moments.clone(),
        gains: state.gains.clone(),
        variances: state.variances.clone(),
        epoch_losses: state.epoch_losses.clone(),
        evaluations: state.evaluations.clone(),
        best: state
            .best
            .as_ref()
            .map(|(evaluation, params)| (evaluation.clone(), params.alpha.clone())),
        tensors: tensors
            .iter()
            .map(|(name, t)| (name.clone(), t.shape().to_vec()))
            .collect(),
    };
    let json = serde_json::to_vec(&header).expect("the header serialises");
    let mut bytes = MAGIC.to_vec();
    bytes.extend((json.len() as u64).to_le_bytes());
    bytes.extend(json);
    for (_, tensor) in &tensors {
        bytes.extend(tensor.iter().flat_map(|v| v.to_le_bytes()));
    }
    crate::onnx::write_atomically(&file(dir), &bytes)
}

/// The state saved in `dir`, if any; an error when it was saved by another run or is
/// damaged.
pub(crate) fn load(dir: &Path, fingerprint: &str) -> Result<Option<State>> {
    let path = file(dir);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let damaged = |reason: &str| Error::Data {
        path: path.clone(),
        reason: format!("not a training state of this version: {reason}"),
    };
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| damaged("bad magic"))?;
    let (length, rest) = rest
        .split_at_checked(8)
        .ok_or_else(|| damaged("truncated"))?;
    let length = u64::from_le_bytes(length.try_into().expect("8 bytes")) as usize;
    let (json, mut blob) = rest
        .split_at_checked(length)
        .ok_or_else(|| damaged("truncated"))?;
    let header: Header =
        serde_json::from_slice(json).map_err(|e| damaged(&format!("header: {e}")))?;
    if header.fingerprint != fingerprint {
        return Err(Error::Usage(format!(
            "{}: this training state was saved by another run (another model, data or options); remove it or keep this run's state in another folder",
            dir.display()
        )));
    }
    let mut tensors = std::collections::BTreeMap::new();
    for (name, dims) in &header.tensors {
        let count: usize = dims.iter().product();
        let (values, after) = blob
            .split_at_checked(count * 4)
            .ok_or_else(|| damaged("truncated tensors"))?;
        blob = after;
        let values: Vec<f32> = values
            .as_chunks::<4>()
            .0
            .iter()
            .map(|b| f32::from_le_bytes(*b))
            .collect();
        let array = ArrayD::from_shape_vec(IxDyn(dims), values).expect("dims match the count");
        tensors.insert(name.clone(), array);
    }
    Ok(Some(state_of(header, tensors)))
}

fn state_of(header: Header, mut tensors: std::collections::BTreeMap<String, ArrayD<f32>>) -> State {
    let mut take = |prefix: &str| -> std::collections::BTreeMap<String, ArrayD<f32>> {
        let names: Vec<String> = tensors
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        names
            .into_iter()
            .map(|k| {
                let tensor = tensors.remove(&k).expect("listed");
                (k[prefix.len()..].to_string(), tensor)
            })
            .collect()
    };
    let weights = take("weight ");
    let (m, v) = (take("m "), take("v "));
    let best_weights = take("best ");
    let weight_moments = m.into_values().zip(v.into_values()).collect();
    State {
        step: header.step,
        params: Params {
            alpha: header.alpha,
            weights,
        },
        crossed_at: header.crossed_at,
        alpha_moments: header.alpha_moments,
        weight_moments,
        gains: header.gains,
        variances: header.variances,
        epoch_losses: header.epoch_losses,
        evaluations: header.evaluations,
        best: header.best.map(|(evaluation, alpha)| {
            (
                evaluation,
                Params {
                    alpha,
                    weights: best_weights,
                },
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_another_version_saved_is_refused_naming_the_file_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(dir.path());
        let older = b"onnx-shallow training state 1\n\x02\0\0\0\0\0\0\0{}".to_vec();
        std::fs::write(&path, &older).unwrap();
        let error = match load(dir.path(), "0123456789abcdef") {
            Err(e) => e.to_string(),
            Ok(_) => panic!("an older state was read"),
        };
        assert!(
            error.contains("training.state")
                && error.contains("not a training state of this version: bad magic"),
            "{error}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), older);
    }
}
