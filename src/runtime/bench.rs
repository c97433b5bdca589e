//! Latency in an engine. Two models are timed interleaved — A B, B A, A B … — so that
//! whatever the machine is doing meanwhile (another process, frequency scaling, a noisy
//! neighbour) falls on both alike, and neither always runs first (on caches the other
//! warmed); their ratio is the median of the per-pair ratios, which a few slow outliers
//! cannot move.

use std::time::Instant;

use ndarray::ArrayD;
use serde::Serialize;

use crate::calib::random::{Rng, normal_array};
use crate::error::{Error, Result};
use crate::ir::Model;
use crate::ir::shape::{self, PinnedShapes};
use crate::ir::stats::ModelStats;
use crate::progress::{Progress, Silent, Stage};
use crate::runtime::engine::{Engine, EngineInfo, EngineInputs, EngineSession};
use crate::runtime::memory::{HeapGrowth, heap_growth};

/// The seed of the standard-normal inputs every benchmark runs on.
pub const INPUT_SEED: u64 = 0;

/// Distribution of run times, in seconds.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Timing {
    pub median: f64,
    pub p10: f64,
    pub p90: f64,
    /// The standard error of the median, from the samples ranked around it: half the
    /// distance between the samples ranked n/2 ± √n/2 (the binomial rank's standard
    /// deviation). That is 1.2533·σ/√n for normal samples, and it holds for any
    /// distribution: the few runs a busy machine delays by a whole time slice widen
    /// p10–p90 many times over, but barely move the samples next to the median.
    pub median_standard_error: f64,
}

impl Timing {
    fn of(mut samples: Vec<f64>) -> Timing {
        samples.sort_by(f64::total_cmp);
        let last = samples.len() - 1;
        let at = |q: f64| samples[(last as f64 * q).round() as usize];
        let rank = |r: f64| samples[(r.round().max(0.0) as usize).min(last)];
        let (centre, spread) = (last as f64 / 2.0, (samples.len() as f64).sqrt() / 2.0);
        Timing {
            median: at(0.5),
            p10: at(0.1),
            p90: at(0.9),
            median_standard_error: (rank(centre + spread) - rank(centre - spread)) / 2.0,
        }
    }
}

/// Two models timed against each other.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct PairTiming {
    pub a: Timing,
    pub b: Timing,
    /// Per-pair ratio b / a: its median, p10 and p90.
    pub ratio: Timing,
    pub pairs: usize,
}

impl PairTiming {
    /// The standard error of the median ratio, from the ratios ranked around it (see
    /// [`Timing::median_standard_error`]).
    pub fn ratio_standard_error(&self) -> f64 {
        self.ratio.median_standard_error
    }
}

/// How many runs.
#[derive(Clone, Copy, Debug)]
pub struct BenchOptions {
    pub warmup: usize,
    pub runs: usize,
    /// Time at least this long: more rounds than `runs` for models that run fast, as
    /// many as the warm-up rounds' pace says fit (up to [`MAX_ROUNDS`]).
    pub min_seconds: f64,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            warmup: 5,
            runs: 30,
            min_seconds: 0.0,
        }
    }
}

/// The most rounds `min_seconds` asks for.
pub const MAX_ROUNDS: usize = 20_000;

impl BenchOptions {
    /// The rounds to time when one round takes `round_seconds`.
    fn rounds(&self, round_seconds: f64) -> usize {
        let for_min_time = (self.min_seconds / round_seconds.max(1e-9)).ceil() as usize;
        self.runs.max(for_min_time.min(MAX_ROUNDS)).max(1)
    }
}

/// Run times of each plan, after `options.warmup` untimed rounds; within a round the
/// plans run in turn, in reverse order every other round.
fn time_interleaved(plans: &[Plan], options: BenchOptions, stage: &Stage) -> Result<Vec<Vec<f64>>> {
    let warming = Instant::now();
    for _ in 0..options.warmup {
        for plan in plans {
            plan.run()?;
        }
    }
    let round_seconds = warming.elapsed().as_secs_f64() / options.warmup.max(1) as f64;
    let rounds = options.rounds(round_seconds);
    let mut samples = vec![Vec::with_capacity(rounds); plans.len()];
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..plans.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let start = Instant::now();
            plans[i].run()?;
            samples[i].push(start.elapsed().as_secs_f64());
        }
        stage.advance(1);
    }
    Ok(samples)
}

/// Per-pair ratios b / a.
fn ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .map(|(x, y)| y / x.max(f64::MIN_POSITIVE))
        .collect()
}

/// Loads both models in `engine` at `dims` (one per input) and times them interleaved on
/// the same seeded standard-normal inputs.
pub fn time_models(
    engine: &Engine,
    a: &Model,
    b: &Model,
    dims: &[Vec<usize>],
    options: BenchOptions,
) -> Result<PairTiming> {
    let plans = [Plan::load(engine, a, dims)?, Plan::load(engine, b, dims)?];
    let timing = benchmark(&plans, options, &Silent)?;
    Ok(timing.pair().expect("two models were timed"))
}

/// A model loaded in an engine with seeded standard-normal inputs, run once already.
pub struct Plan {
    session: EngineSession,
    inputs: EngineInputs,
    engine: EngineInfo,
    /// Each runtime input's name and dims.
    dims: Vec<InputDims>,
    /// What building the plan and running it once took.
    heap: Option<HeapGrowth>,
}

/// A runtime input and the dims it runs at.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct InputDims {
    pub name: String,
    pub dims: Vec<usize>,
}

impl Plan {
    /// Loads `model` in `engine` for inputs of `dims` (one per runtime input, in order)
    /// and runs it once, counting the heap that takes.
    pub fn load(engine: &Engine, model: &Model, dims: &[Vec<usize>]) -> Result<Plan> {
        let mut rng = Rng::new(INPUT_SEED);
        let arrays: Vec<ArrayD<f32>> = dims.iter().map(|d| normal_array(d, &mut rng)).collect();
        let info = engine.info()?;
        let (loaded, heap) = heap_growth(|| -> Result<(EngineSession, EngineInputs)> {
            let session = engine.load(model, dims)?;
            let inputs = session.prepare(&arrays)?;
            session.run_prepared(&inputs)?;
            Ok((session, inputs))
        });
        let (session, inputs) = loaded?;
        let names = model
            .graph
            .runtime_inputs()
            .map(|v| model.graph.value(v).name.clone());
        Ok(Plan {
            session,
            inputs,
            engine: info,
            dims: names
                .zip(dims)
                .map(|(name, dims)| InputDims {
                    name,
                    dims: dims.clone(),
                })
                .collect(),
            heap,
        })
    }

    fn run(&self) -> Result<()> {
        self.session.run_prepared(&self.inputs)
    }
}

/// Each runtime input's dims as a benchmark runs it: as pinned, else as declared with a
/// free leading (batch) dim set to 1. Any other free dim is an error naming the input.
pub fn runtime_input_dims(model: &Model, pinned: &PinnedShapes) -> Result<Vec<Vec<usize>>> {
    let graph = &model.graph;
    let declared = shape::infer(graph, &PinnedShapes::default())?;
    let pins = ModelStats::analysis_pins(graph, &declared, pinned);
    let shapes = shape::infer(graph, &pins)?;
    graph
        .runtime_inputs()
        .map(|input| {
            shapes
                .get(input)
                .static_dims()
                .ok_or_else(|| Error::DynamicInput {
                    input: graph.value(input).name.clone(),
                    declared: declared.get(input).to_string(),
                    needs: "dims other than the batch must be fixed to run it",
                })
        })
        .collect()
}

/// One model's figures in a [`Benchmark`].
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ModelLatency {
    /// Seconds per run.
    pub latency: Timing,
    /// Heap taken to build the plan and run it once (`None` when not counted: see
    /// [`crate::runtime::memory`]).
    pub heap: Option<HeapGrowth>,
    pub inputs: Vec<InputDims>,
}

/// One or two models timed; with two, interleaved.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Benchmark {
    /// What they were timed in.
    pub engine: EngineInfo,
    pub models: Vec<ModelLatency>,
    /// Per-round ratio second / first (with two models).
    pub ratio: Option<Timing>,
    /// Timed rounds (pairs, with two models).
    pub rounds: usize,
}

impl Benchmark {
    /// The first model against the second, when two were timed.
    pub fn pair(&self) -> Option<PairTiming> {
        match (&self.models[..], self.ratio) {
            ([a, b], Some(ratio)) => Some(PairTiming {
                a: a.latency,
                b: b.latency,
                ratio,
                pairs: self.rounds,
            }),
            _ => None,
        }
    }
}

/// Times the plans (one or two, loaded in the same engine) interleaved, showing the
/// rounds on `progress`.
pub fn benchmark(
    plans: &[Plan],
    options: BenchOptions,
    progress: &dyn Progress,
) -> Result<Benchmark> {
    let Some(engine) = plans.first().map(|plan| plan.engine.clone()) else {
        return Err(Error::Usage("no model to time".into()));
    };
    if plans.iter().any(|plan| plan.engine != engine) {
        return Err(Error::Usage(
            "models timed against each other must run in the same engine".into(),
        ));
    }
    let label = format!("timing in {}", engine.name);
    let stage = Stage::begin(progress, &label, Some(options.runs.max(1) as u64));
    let samples = time_interleaved(plans, options, &stage)?;
    Ok(Benchmark {
        engine,
        ratio: (samples.len() == 2).then(|| Timing::of(ratios(&samples[0], &samples[1]))),
        rounds: samples[0].len(),
        models: samples
            .into_iter()
            .zip(plans)
            .map(|(times, plan)| ModelLatency {
                latency: Timing::of(times),
                heap: plan.heap,
                inputs: plan.dims.clone(),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_sorted_samples() {
        let t = Timing::of(vec![
            5.0, 1.0, 3.0, 2.0, 4.0, 100.0, 0.5, 2.5, 3.5, 1.5, 4.5,
        ]);
        assert_eq!((t.p10, t.median, t.p90), (1.0, 3.0, 5.0));
        // Ranked 5 ± √11/2: the samples 2.0 and 4.0.
        assert_eq!(t.median_standard_error, 1.0);
    }

    #[test]
    fn the_median_error_of_normal_samples_is_the_textbook_one_and_tails_do_not_widen_it() {
        let mut rng = Rng::new(1);
        let normal: Vec<f64> = (0..4000).map(|_| rng.normal()).collect();
        let expected = 1.2533 / (normal.len() as f64).sqrt();
        let error = Timing::of(normal.clone()).median_standard_error;
        // The estimate is itself a spacing of √n samples: within a few of its 13 %.
        assert!(
            (error / expected - 1.0).abs() < 0.3,
            "{error} against {expected}"
        );
        // One run in five delayed by a time slice: p10–p90 blows up, while the median's
        // error grows only as the density at the median falls (by a third).
        let delayed: Vec<f64> = normal
            .iter()
            .enumerate()
            .map(|(i, x)| if i % 5 == 0 { x + 50.0 } else { *x })
            .collect();
        let tailed = Timing::of(delayed);
        assert!(tailed.p90 > 40.0);
        assert!(tailed.median_standard_error < 2.0 * expected, "{tailed:?}");
    }

    #[test]
    fn fast_models_are_timed_for_at_least_the_minimum_time() {
        let options = BenchOptions {
            runs: 100,
            min_seconds: 2.0,
            ..BenchOptions::default()
        };
        assert_eq!(options.rounds(0.05), 100);
        assert_eq!(options.rounds(0.001), 2000);
        assert_eq!(options.rounds(1e-7), MAX_ROUNDS);
        assert_eq!(BenchOptions::default().rounds(1e-7), 30);
    }
}
