//! The cost model: is a folded layer faster than the layers it replaces, *on the
//! runtime*? Both are cut out as small models at their real shapes (batch 1) and timed
//! in the engine the model will run in, interleaved, median of the pairwise ratios.
//! Measurements are cached by the engine (name, version, threads, settings) and a
//! signature of operators, attributes and shapes (not weight values, which do not change
//! the time), so repeated layers are measured once; the cache can be kept in a file
//! between runs. [`Cost::Macs`] counts multiply-accumulates instead — quick, and only an
//! estimate.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

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

/// How folds are judged.
#[derive(Clone, Default)]
pub enum Cost {
    /// Timed in the run's engine.
    #[default]
    Measured,
    /// Counted in multiply-accumulates: quick, an estimate.
    Macs,
    /// Whatever the function says of (original, folded): an embedder's own cost model, or
    /// a test's fixed decision.
    Custom(CostFunction),
}

/// A cost model given as a function of (original, folded).
pub type CostFunction = Arc<dyn Fn(&Model, &Model) -> Verdict + Send + Sync>;

impl fmt::Display for Cost {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Cost::Measured => "measured",
            Cost::Macs => "macs",
            Cost::Custom(_) => "custom",
        })
    }
}

impl fmt::Debug for Cost {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `measured` or `macs` (a function cannot be written as text).
impl FromStr for Cost {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "measured" => Ok(Cost::Measured),
            "macs" => Ok(Cost::Macs),
            _ => Err(format!("{s}: expected measured or macs")),
        }
    }
}

impl Serialize for Cost {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A [`Cost`] at work: it judges folds and keeps what it measured.
#[derive(Debug, Default)]
pub struct CostModel {
    pub cost: Cost,
    /// Where latency is measured.
    pub engine: Engine,
    /// What was measured (and what a cache file held).
    pub cache: CostCache,
    pub options: BenchOptions,
}

impl From<Cost> for CostModel {
    /// In the default engine (tract), nothing cached.
    fn from(cost: Cost) -> CostModel {
        CostModel {
            cost,
            ..CostModel::default()
        }
    }
}

impl CostModel {
    pub fn new(cost: Cost, engine: Engine, cache: CostCache) -> CostModel {
        CostModel {
            cost,
            engine,
            cache,
            options: BenchOptions::default(),
        }
    }

    /// The engine latency is measured in; `None` when it is estimated (MACs).
    pub fn engine(&self) -> Option<&Engine> {
        match self.cost {
            Cost::Macs => None,
            Cost::Measured | Cost::Custom(_) => Some(&self.engine),
        }
    }

    /// The cost of `original` and of `folded`, both single-input models fed `input_dims`.
    pub fn judge(
        &mut self,
        original: &Model,
        folded: &Model,
        input_dims: &[usize],
    ) -> Result<Verdict> {
        match &self.cost {
            Cost::Measured => {
                let key = format!(
                    "{}|{}=>{}",
                    self.engine.info()?,
                    signature(original, input_dims),
                    signature(folded, input_dims)
                );
                if let Some(verdict) = self.cache.entries.get(&key) {
                    return Ok(*verdict);
                }
                let verdict = measure(&self.engine, original, folded, input_dims, self.options)?;
                self.cache.entries.insert(key, verdict);
                Ok(verdict)
            }
            Cost::Macs => {
                let macs = |m: &Model| -> Result<f64> {
                    Ok(ModelStats::of(&m.graph, &Default::default())?.macs as f64)
                };
                Ok(Verdict {
                    original: macs(original)?,
                    folded: macs(folded)?,
                    estimate: true,
                })
            }
            Cost::Custom(decide) => Ok(decide(original, folded)),
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
