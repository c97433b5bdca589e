//! The cost model: is a folded layer faster than the layers it replaces, *on the
//! runtime*? Both are cut out as small models at their real shapes (batch 1) and timed
//! in the engine the model will run in, interleaved, median of the pairwise ratios.
//! Measurements are cached by the engine (name, version, threads, settings) and a
//! signature of operators, attributes and shapes (not weight values, which do not change
//! the time), so repeated layers are measured once; the cache can be kept in a file
//! between runs. [`Cost::Macs`] counts multiply-accumulates instead — quick, and only an
//! estimate.
//!
//! A measured ratio is trusted only as far as its noise allows: a fold pays when the
//! ratio's upper bound, [`NOISE_MARGIN`] standard errors above it, still saves the gain
//! asked for. A fold whose gain is a few percent of a layer that is a few percent of
//! the network can pass that test on its cut-out and still be lost in the whole model's
//! noise, so the folds judged this way are confirmed on the whole model too
//! ([`CostModel::judge_whole`], [`Confirmation`]).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ir::Model;
use crate::ir::stats::ModelStats;
use crate::runtime::bench::{BenchOptions, PairTiming, time_models};
use crate::runtime::engine::Engine;

/// What the cost model concluded of a fold: the latency (or its estimate) of the
/// original layers and of their fold, and how far the measurement's noise may have moved
/// their ratio.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Verdict {
    /// Seconds, or MACs when `estimate`.
    pub original: f64,
    pub folded: f64,
    /// True when counted in MACs rather than measured.
    pub estimate: bool,
    /// The standard error of the ratio (see
    /// [`PairTiming::ratio_standard_error`](crate::runtime::bench::PairTiming::ratio_standard_error)):
    /// 0 for MAC estimates, exact verdicts, and cached verdicts written without it.
    #[serde(default)]
    pub standard_error: f64,
}

/// Standard errors added to a measured ratio before it is trusted: its upper bound, one
/// sided, at about 98 % confidence.
pub const NOISE_MARGIN: f64 = 2.0;

impl Verdict {
    /// `original` against `folded` in seconds, taken as exact: no standard error (set
    /// `estimate` for counts such as MACs).
    pub fn exact(original: f64, folded: f64) -> Verdict {
        Verdict {
            original,
            folded,
            estimate: false,
            standard_error: 0.0,
        }
    }

    /// folded / original: below 1 the fold is faster.
    pub fn ratio(&self) -> f64 {
        self.folded / self.original.max(f64::MIN_POSITIVE)
    }

    /// The ratio [`NOISE_MARGIN`] standard errors up: what it may well be.
    pub fn upper_ratio(&self) -> f64 {
        self.ratio() + NOISE_MARGIN * self.standard_error
    }

    /// What the fold saves: seconds, or MACs for an estimate.
    pub fn gain(&self) -> f64 {
        self.original - self.folded
    }

    /// The fold gains at least `min_gain` (a fraction of the original's cost), even at
    /// the ratio's upper bound.
    pub fn pays(&self, min_gain: f64) -> bool {
        self.upper_ratio() <= 1.0 - min_gain
    }

    /// The folded side is faster, even at the ratio's upper bound.
    pub fn is_faster(&self) -> bool {
        self.upper_ratio() < 1.0
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
    /// a test's fixed decision. It is asked of regions cut out of the graph, and of the
    /// whole model without and with the folds it judged ([`CostModel::judge_whole`]); its
    /// verdicts' standard errors are read as given ([`Verdict::exact`] has none).
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
#[derive(Debug)]
pub struct CostModel {
    pub cost: Cost,
    /// Where latency is measured.
    pub engine: Engine,
    /// What was measured (and what a cache file held).
    pub cache: CostCache,
    /// How a region and its fold are timed.
    pub options: BenchOptions,
    /// How the whole model with the judged folds is timed against the model without them.
    pub whole_model: BenchOptions,
}

/// Pairs the whole model with the judged folds is timed over against the model without
/// them, at least: as many as `bench` is read at to resolve a few percent...
pub const WHOLE_MODEL_PAIRS: usize = 100;
/// ...and seconds at least, so that a model that runs in a millisecond gets thousands of
/// pairs: a fold worth 1 % of it is then resolved too.
pub const WHOLE_MODEL_SECONDS: f64 = 5.0;
/// Sessions those pairs are split into, each loading both models afresh: repeated
/// `bench` runs differ by more than the pairs of one run show (MobileNetV2 on an idle
/// machine: medians 0.973–1.032, each ± 0.006), so the spread between sessions is
/// counted in the standard error too.
pub const WHOLE_MODEL_SESSIONS: usize = 5;

impl Default for CostModel {
    /// Measured in the default engine (tract), nothing cached.
    fn default() -> CostModel {
        CostModel {
            cost: Cost::default(),
            engine: Engine::default(),
            cache: CostCache::default(),
            options: BenchOptions::default(),
            whole_model: BenchOptions {
                runs: WHOLE_MODEL_PAIRS,
                min_seconds: WHOLE_MODEL_SECONDS,
                ..BenchOptions::default()
            },
        }
    }
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
            ..CostModel::default()
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
                let (dims, options) = ([input_dims.to_vec()], self.options);
                self.cached(key, |engine| {
                    let timing = time_models(engine, original, folded, &dims, options)?;
                    Ok(verdict_of(&timing))
                })
            }
            Cost::Macs => {
                let macs = |m: &Model| -> Result<f64> {
                    Ok(ModelStats::of(&m.graph, &Default::default())?.macs as f64)
                };
                Ok(Verdict {
                    estimate: true,
                    ..Verdict::exact(macs(original)?, macs(folded)?)
                })
            }
            Cost::Custom(decide) => Ok(decide(original, folded)),
        }
    }

    /// The whole model `with` the folds judged by measurement against the same model
    /// `without` them, fed `dims` (one per runtime input), timed as
    /// [`whole_model`](CostModel::whole_model) says in [`WHOLE_MODEL_SESSIONS`]
    /// sessions; `None` for MAC estimates, which are not measured.
    pub fn judge_whole(
        &mut self,
        without: &Model,
        with: &Model,
        dims: &[Vec<usize>],
    ) -> Result<Option<Verdict>> {
        match &self.cost {
            Cost::Measured => {
                let options = self.whole_model;
                let key = format!(
                    "{}|whole model, {WHOLE_MODEL_SESSIONS} sessions, {} pairs, {} s|{}=>{}",
                    self.engine.info()?,
                    options.runs,
                    options.min_seconds,
                    signature(without, dims),
                    signature(with, dims)
                );
                let verdict = self.cached(key, |engine| {
                    time_in_sessions(engine, (without, with), dims, options)
                })?;
                Ok(Some(verdict))
            }
            Cost::Macs => Ok(None),
            Cost::Custom(decide) => Ok(Some(decide(without, with))),
        }
    }

    /// The verdict cached under `key`, or what `measure` finds in the engine (then
    /// cached).
    fn cached(
        &mut self,
        key: String,
        measure: impl FnOnce(&Engine) -> Result<Verdict>,
    ) -> Result<Verdict> {
        if let Some(verdict) = self.cache.entries.get(&key) {
            return Ok(*verdict);
        }
        let verdict = measure(&self.engine)?;
        self.cache.entries.insert(key, verdict);
        Ok(verdict)
    }
}

/// `original` against `folded` in [`WHOLE_MODEL_SESSIONS`] sessions, `options` shared
/// between them, each loading both models afresh; the sessions pooled.
fn time_in_sessions(
    engine: &Engine,
    (original, folded): (&Model, &Model),
    dims: &[Vec<usize>],
    options: BenchOptions,
) -> Result<Verdict> {
    let per_session = BenchOptions {
        runs: options.runs.div_ceil(WHOLE_MODEL_SESSIONS),
        min_seconds: options.min_seconds / WHOLE_MODEL_SESSIONS as f64,
        ..options
    };
    let sessions = (0..WHOLE_MODEL_SESSIONS)
        .map(|_| time_models(engine, original, folded, dims, per_session).map(|t| verdict_of(&t)))
        .collect::<Result<Vec<_>>>()?;
    Ok(pooled(&sessions))
}

/// Verdicts on the same two models in separate sessions as one: the mean of their
/// ratios, with the larger of two standard errors of it — from the pairs within the
/// sessions, and from the spread of the sessions' ratios.
fn pooled(sessions: &[Verdict]) -> Verdict {
    let k = sessions.len() as f64;
    let mean = |values: &mut dyn Iterator<Item = f64>| values.sum::<f64>() / k;
    let ratio = mean(&mut sessions.iter().map(Verdict::ratio));
    let variance = sessions
        .iter()
        .map(|s| (s.ratio() - ratio).powi(2))
        .sum::<f64>()
        / (k - 1.0).max(1.0);
    let between = (variance / k).sqrt();
    let within = mean(&mut sessions.iter().map(|s| s.standard_error.powi(2))).sqrt() / k.sqrt();
    let original = mean(&mut sessions.iter().map(|s| s.original));
    Verdict {
        standard_error: within.max(between),
        ..Verdict::exact(original, original * ratio)
    }
}

/// A pair timing as a verdict: the ratio's median is the robust figure, and the folded
/// time is expressed through it.
fn verdict_of(timing: &PairTiming) -> Verdict {
    Verdict {
        standard_error: timing.ratio_standard_error(),
        ..Verdict::exact(timing.a.median, timing.a.median * timing.ratio.median)
    }
}

/// The judged folds confirmed, or not, on the whole model: the model with them timed
/// against the model without them in the run's engine.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Confirmation {
    /// The judged folds, by the layers they made.
    pub folds: Vec<String>,
    /// The whole model with the folds / without them (median of the pairs' ratios).
    pub ratio: f64,
    /// The ratio's standard error.
    pub standard_error: f64,
    /// The folds were kept: the model with them is faster at the ratio's upper bound
    /// ([`Verdict::is_faster`]).
    pub kept: bool,
}

impl Confirmation {
    /// What `verdict` (without the folds → with them) says of the judged `folds`.
    pub fn of(folds: Vec<String>, verdict: &Verdict) -> Confirmation {
        Confirmation {
            folds,
            ratio: verdict.ratio(),
            standard_error: verdict.standard_error,
            kept: verdict.is_faster(),
        }
    }

    /// The ratio's upper bound, as the decision read it.
    pub fn upper_ratio(&self) -> f64 {
        self.ratio + NOISE_MARGIN * self.standard_error
    }
}

/// What determines a model's run time: its operators, their attributes, the dims of
/// every constant, and the input dims.
fn signature(model: &Model, input_dims: impl fmt::Debug) -> String {
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

/// The layout of the cost cache files this version reads and writes: 2 added each
/// ratio's standard error and the whole-model confirmations. Files without a format
/// are older (1).
const CACHE_FORMAT: u32 = 2;

/// Measured verdicts by engine and signature; kept in a JSON file between runs when
/// asked.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CostCache {
    format: u32,
    pub entries: BTreeMap<String, Verdict>,
    #[serde(skip)]
    path: Option<PathBuf>,
    /// Why the file's entries were left out, when it was in another format.
    #[serde(skip)]
    left_out: Option<String>,
}

impl Default for CostCache {
    fn default() -> CostCache {
        CostCache {
            format: CACHE_FORMAT,
            entries: BTreeMap::new(),
            path: None,
            left_out: None,
        }
    }
}

/// What a cost cache file says before its entries are read.
#[derive(Deserialize)]
struct CacheHeader {
    format: Option<u32>,
    #[serde(default)]
    entries: BTreeMap<String, serde::de::IgnoredAny>,
}

impl CostCache {
    /// The cache kept in `path` (empty when the file does not exist yet, or when it is in
    /// another format: [`CostCache::note`] then says so).
    pub fn open(path: &Path) -> Result<CostCache> {
        let mut cache = match std::fs::read(path) {
            Ok(bytes) => CostCache::read(path, &bytes).map_err(|e| Error::Data {
                path: path.to_path_buf(),
                reason: format!("not a cost cache: {e}"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CostCache::default(),
            Err(e) => return Err(Error::io(path, e)),
        };
        cache.path = Some(path.to_path_buf());
        Ok(cache)
    }

    /// The entries of a file in this version's format; none from a file in another.
    fn read(path: &Path, bytes: &[u8]) -> serde_json::Result<CostCache> {
        let header: CacheHeader = serde_json::from_slice(bytes)?;
        let format = header.format.unwrap_or(1);
        if format == CACHE_FORMAT {
            return serde_json::from_slice(bytes);
        }
        let measurements = match header.entries.len() {
            1 => "its 1 measurement is".to_string(),
            n => format!("its {n} measurements are"),
        };
        let left_out = format!(
            "the cost cache {} is in format {format}, from another version (this one reads \
             format {CACHE_FORMAT}, which keeps each measurement's noise): {measurements} \
             left out, measured again as needed, and the file rewritten",
            path.display(),
        );
        Ok(CostCache {
            left_out: Some(left_out),
            ..CostCache::default()
        })
    }

    /// What the user should know about the file: why its entries were left out.
    pub fn note(&self) -> Option<&str> {
        self.left_out.as_deref()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(ratio: f64, standard_error: f64) -> Verdict {
        Verdict {
            standard_error,
            ..Verdict::exact(1.0, ratio)
        }
    }

    #[test]
    fn a_fold_faster_by_its_median_but_not_at_its_upper_bound_does_not_pay() {
        let noisy = measured(0.97, 0.02);
        assert!(noisy.ratio() < 1.0);
        assert!((noisy.upper_ratio() - 1.01).abs() < 1e-12);
        assert!(!noisy.pays(0.0) && !noisy.pays(0.02) && !noisy.is_faster());

        let steady = measured(0.97, 0.004);
        assert!(steady.pays(0.02) && steady.is_faster());
        assert!(
            !steady.pays(0.03),
            "the upper bound 0.978 saves less than 3 %"
        );
    }

    #[test]
    fn an_exact_verdict_is_judged_by_its_ratio_alone() {
        let exact = Verdict::exact(10.0, 9.9);
        assert_eq!(exact.standard_error, 0.0);
        assert!(exact.pays(0.01) && !exact.pays(0.02));
        assert_eq!(exact.gain(), 10.0 - 9.9);
    }

    #[test]
    fn the_judged_folds_are_kept_only_when_the_whole_model_is_faster_at_its_upper_bound() {
        let folds = vec!["c.folded".to_string()];
        let kept = Confirmation::of(folds.clone(), &measured(0.95, 0.01));
        assert!(kept.kept && (kept.upper_ratio() - 0.97).abs() < 1e-12);
        let within_noise = Confirmation::of(folds.clone(), &measured(0.99, 0.006));
        assert!(!within_noise.kept, "0.99 + 2 × 0.006 reaches 1");
        assert!(!Confirmation::of(folds, &measured(1.0, 0.0)).kept);
    }

    #[test]
    fn sessions_pool_into_their_mean_ratio_with_the_larger_standard_error() {
        let steady = [
            measured(0.95, 0.01),
            measured(0.96, 0.01),
            measured(0.94, 0.01),
        ];
        let pooled_steady = pooled(&steady);
        assert!((pooled_steady.ratio() - 0.95).abs() < 1e-12);
        // Within: 0.01 / √3 ≈ 0.0058; between: sd 0.01 / √3, the same.
        assert!((pooled_steady.standard_error - 0.01 / 3f64.sqrt()).abs() < 1e-9);

        // Each session sure of itself, the sessions far apart: the spread decides.
        let scattered = [
            measured(0.95, 0.002),
            measured(1.05, 0.002),
            measured(0.97, 0.002),
        ];
        let pooled_scattered = pooled(&scattered);
        let sd = (((0.95f64 - 0.99).powi(2) + 0.06f64.powi(2) + 0.02f64.powi(2)) / 2.0).sqrt();
        assert!((pooled_scattered.standard_error - sd / 3f64.sqrt()).abs() < 1e-9);
        assert!(
            !pooled_scattered.is_faster(),
            "0.99 ± 0.03 may well be slower"
        );
    }

    #[test]
    fn a_cache_file_of_the_older_format_is_left_out_with_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("costs.json");
        let older = r#"{"entries": {"tract 0.21|a=>b": {"original": 2.0, "folded": 1.0, "estimate": false}}}"#;
        std::fs::write(&path, older).unwrap();
        let cache = CostCache::open(&path).unwrap();
        assert!(cache.entries.is_empty());
        let note = cache.note().expect("a note says why");
        assert!(
            note.contains("format 1") && note.contains("1 measurement"),
            "{note}"
        );

        cache.persist().unwrap();
        let rewritten = CostCache::open(&path).unwrap();
        assert_eq!((rewritten.note(), rewritten.format), (None, CACHE_FORMAT));
    }

    #[test]
    fn a_cached_verdict_written_without_its_standard_error_is_taken_as_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("costs.json");
        let current = r#"{"format": 2, "entries": {"k": {"original": 2.0, "folded": 1.0, "estimate": false}}}"#;
        std::fs::write(&path, current).unwrap();
        let cache = CostCache::open(&path).unwrap();
        assert_eq!(cache.note(), None);
        assert_eq!(cache.entries["k"].standard_error, 0.0);
        assert_eq!(cache.entries["k"].ratio(), 0.5);
    }
}
