//! The cost model: is a folded layer faster than the layers it replaces, *on the
//! runtime*? Both are cut out as small models at their real shapes (batch 1) and timed
//! in the engine the model will run in, interleaved, median of the pairwise ratios.
//! Measurements are cached by the engine (name, version, threads, settings) and a
//! signature of operators, attributes and shapes (not weight values, which do not change
//! the time), so repeated layers are measured once; the cache can be kept in a file
//! between runs. `Macs` counts multiply-accumulates instead — quick, and only an estimate.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ir::Model;
use crate::ir::stats::ModelStats;
use crate::runtime::bench::{BenchOptions, time_models};
use crate::runtime::engine::Engine;

/// Latency (or its estimate) of the original layers and of their fold.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Verdict {
    /// Seconds, or MACs when `estimate`.
    pub original: f64,
    pub folded: f64,
    /// True when counted in MACs rather than measured.
    pub estimate: bool,
}

impl Verdict {
    /// folded / original: below 1 the fold is faster.
    pub fn ratio(&self) -> f64 {
        self.folded / self.original.max(f64::MIN_POSITIVE)
    }

    /// The fold gains at least `min_gain` (a fraction of the original's cost).
    pub fn pays(&self, min_gain: f64) -> bool {
        self.ratio() <= 1.0 - min_gain
    }
}

/// A cost model given as a function of (original, folded).
pub type CostFunction = Box<dyn FnMut(&Model, &Model) -> Verdict>;

/// Judges a fold by its cost.
pub enum CostModel {
    /// Timed in `engine`; `cache` holds what was measured (and what a cache file held).
    Measured {
        cache: CostCache,
        options: BenchOptions,
        engine: Engine,
    },
    /// Multiply-accumulates: an estimate.
    Macs,
    /// Whatever the function says (tests inject decisions this way).
    Fixed(CostFunction),
}

impl Default for CostModel {
    fn default() -> Self {
        CostModel::measured(CostCache::default(), Engine::Tract)
    }
}

impl std::fmt::Debug for CostModel {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            CostModel::Measured { cache, .. } => {
                write!(f, "Measured({} cached)", cache.entries.len())
            }
            CostModel::Macs => write!(f, "Macs"),
            CostModel::Fixed(_) => write!(f, "Fixed"),
        }
    }
}

impl CostModel {
    pub fn measured(cache: CostCache, engine: Engine) -> CostModel {
        CostModel::Measured {
            cache,
            options: BenchOptions::default(),
            engine,
        }
    }

    /// The engine latency is measured in; `None` when it is estimated (MACs).
    pub fn engine(&self) -> Option<&Engine> {
        match self {
            CostModel::Measured { engine, .. } => Some(engine),
            CostModel::Macs => None,
            CostModel::Fixed(_) => Some(&Engine::Tract),
        }
    }

    /// The cost of `original` and of `folded`, both single-input models fed `input_dims`.
    pub fn judge(
        &mut self,
        original: &Model,
        folded: &Model,
        input_dims: &[usize],
    ) -> Result<Verdict> {
        match self {
            CostModel::Measured {
                cache,
                options,
                engine,
            } => {
                let key = format!(
                    "{}|{}=>{}",
                    engine.info()?,
                    signature(original, input_dims),
                    signature(folded, input_dims)
                );
                if let Some(verdict) = cache.entries.get(&key) {
                    return Ok(*verdict);
                }
                let verdict = measure(engine, original, folded, input_dims, *options)?;
                cache.entries.insert(key, verdict);
                Ok(verdict)
            }
            CostModel::Macs => {
                let macs = |m: &Model| -> Result<f64> {
                    Ok(ModelStats::of(&m.graph, &Default::default())?.macs as f64)
                };
                Ok(Verdict {
                    original: macs(original)?,
                    folded: macs(folded)?,
                    estimate: true,
                })
            }
            CostModel::Fixed(decide) => Ok(decide(original, folded)),
        }
    }

    pub fn cache(&self) -> Option<&CostCache> {
        match self {
            CostModel::Measured { cache, .. } => Some(cache),
            _ => None,
        }
    }
}

fn measure(
    engine: &Engine,
    original: &Model,
    folded: &Model,
    input_dims: &[usize],
    options: BenchOptions,
) -> Result<Verdict> {
    let timing = time_models(engine, original, folded, &[input_dims.to_vec()], options)?;
    // The ratio's median is the robust figure; the folded time is expressed through it.
    Ok(Verdict {
        original: timing.a.median,
        folded: timing.a.median * timing.ratio.median,
        estimate: false,
    })
}

/// What determines a model's run time: its operators, their attributes, the dims of
/// every constant, and the input dims.
fn signature(model: &Model, input_dims: &[usize]) -> String {
    let graph = &model.graph;
    let mut text = format!("{input_dims:?}");
    for id in graph.topological_order().unwrap_or_default() {
        let node = graph.node(id);
        let _ = write!(text, "|{}", node.op());
        for a in &node.attributes.0 {
            let _ = write!(
                text,
                ",{}={:?}{:?}{:?}{:?}",
                a.name(),
                a.i,
                a.f,
                a.ints,
                a.floats
            );
        }
        for input in node.inputs.iter().flatten() {
            match graph.constant(*input) {
                Some(t) => {
                    let _ = write!(text, ";c{:?}", t.dims());
                }
                None => text.push_str(";v"),
            }
        }
    }
    format!("{:016x}", fnv1a(text.as_bytes()))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Measured verdicts by engine and signature; kept in a JSON file between runs when asked.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CostCache {
    pub entries: BTreeMap<String, Verdict>,
    #[serde(skip)]
    path: Option<PathBuf>,
}

impl CostCache {
    /// The cache kept in `path` (empty when the file does not exist yet).
    pub fn open(path: &Path) -> Result<CostCache> {
        let mut cache = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice::<CostCache>(&bytes).map_err(|e| Error::Data {
                path: path.to_path_buf(),
                reason: format!("not a cost cache: {e}"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CostCache::default(),
            Err(e) => return Err(Error::io(path, e)),
        };
        cache.path = Some(path.to_path_buf());
        Ok(cache)
    }

    /// Writes the cache back to its file (atomically), if it has one.
    pub fn persist(&self) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let json = serde_json::to_vec_pretty(self).expect("a cost cache serialises");
        crate::onnx::write_atomically(path, &json)
    }
}
