//! The `onnx-shallow` command line: a thin layer over the library.

mod terminal;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use onnx_shallow::calib::{self, CalibSpec, CropRange, Dataset, HeldOut, ModelInputs, Preprocess};
use onnx_shallow::error::ORT_WHEEL;
use onnx_shallow::gates;
use onnx_shallow::gates::{
    Budget, Checkpointing, LearnData, LearnOptions, TrainOptions, parse_output_kind,
};
use onnx_shallow::ir::shape::PinnedShapes;
use onnx_shallow::passes::FoldOptions;
use onnx_shallow::progress::{Progress, Silent, Stage};
use onnx_shallow::report::bench::BenchRun;
use onnx_shallow::report::gated::gates_table;
use onnx_shallow::report::json;
use onnx_shallow::report::optimize::OptimizeRun;
use onnx_shallow::report::plot;
use onnx_shallow::report::stats::{self, ModelStats};
use onnx_shallow::report::verify::Verification;
use onnx_shallow::report::walk::{
    basis, few_groups_warning, fine_tuning_line, nothing_fits, walk_table,
};
use onnx_shallow::runtime::bench::{self, BenchOptions, Benchmark, Plan};
use onnx_shallow::runtime::compare::{self, Comparison, Tolerance};
use onnx_shallow::runtime::interval::{Resampling, check_confidence};
use onnx_shallow::runtime::memory::CountingAllocator;
use onnx_shallow::runtime::{Engine, OrtOptLevel, OrtOptions};
use onnx_shallow::{Cost, Error, Model, Options, Report, Result, SaveOptions, Verified};
use serde::Serialize;
use terminal::Bars;

/// Counts heap use, for the peak memory `bench` reports.
#[global_allocator]
static HEAP: CountingAllocator = CountingAllocator;

/// Makes pre-trained ONNX networks shallower and faster, verified with tract.
#[derive(Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    /// No progress bars (they are drawn on stderr only when it is a terminal).
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Operator counts, parameters, MACs, depth and activations of a model.
    #[command(after_help = "Example:\n  onnx-shallow inspect model.onnx --json > stats.json")]
    Inspect(InspectArgs),
    /// Rewrites a model and writes it once tract has verified it against the input.
    #[command(
        after_help = "Example:\n  onnx-shallow optimize model.onnx model.shallow.onnx --exact"
    )]
    Optimize(Box<OptimizeArgs>),
    /// Gates the activations worth removing, for training in another engine (PyTorch):
    /// y = act(x) + α·(x − act(x)), α = 0. Fold the trained model with `optimize --from-gates`.
    #[command(
        after_help = "Example:\n  onnx-shallow gate model.onnx model.gated.onnx --manifest gates.json\n  \
                      (train model.gated.onnx, e.g. with examples/train_gated.py)\n  \
                      onnx-shallow optimize trained.onnx model.shallow.onnx --from-gates"
    )]
    Gate(Box<GateArgs>),
    /// Runs two models on the same inputs with tract and compares their outputs.
    #[command(
        after_help = "Example:\n  onnx-shallow verify model.onnx model.shallow.onnx --inputs images.npz --preprocess imagenet\n\n\
                            Exit codes: 0 within tolerance, 1 outside it, 2 on any error."
    )]
    Verify(VerifyArgs),
    /// Times one model, or two interleaved, in tract; with --max-ratio, a CI latency gate.
    #[command(
        after_help = "Example:\n  onnx-shallow bench model.onnx model.shallow.onnx --max-ratio 0.9\n\n\
                            Exit codes: 0 within --max-ratio (or without one), 1 above it, 2 on any error."
    )]
    Bench(BenchArgs),
}

#[derive(Args, Serialize)]
struct ShapeArgs {
    /// Pin an input's dims for analysis, e.g. `input:1,3,224,224` (repeatable). The
    /// written model keeps its declared dims.
    #[arg(long = "input-shape", value_name = "NAME:DIMS")]
    input_shapes: Vec<String>,
}

impl ShapeArgs {
    fn pinned(&self) -> Result<PinnedShapes> {
        self.input_shapes
            .iter()
            .map(|s| onnx_shallow::parse_input_shape(s))
            .collect()
    }
}

#[derive(Args)]
struct InspectArgs {
    model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    shapes: ShapeArgs,
}

#[derive(Args, Serialize)]
struct OptimizeArgs {
    input: PathBuf,
    output: PathBuf,
    /// Exact rewrites only: no calibration data, no learning.
    #[arg(long)]
    exact: bool,
    #[command(flatten)]
    #[serde(flatten)]
    written: OutputArgs,
    /// Run only these passes (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    passes: Option<Vec<String>>,
    /// Leave these passes out (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    skip_passes: Vec<String>,
    /// Stop after this many rewrites (to find a bad one by bisection).
    #[arg(long, value_name = "N")]
    max_patches: Option<usize>,
    /// Replace the activations whose node names match this glob by identity, then fold
    /// the layers around them (repeatable; `*` matches any run of characters, `/` too).
    #[arg(long, value_name = "PATTERN")]
    linearize: Vec<String>,
    /// Read a model trained with gates (written by `gate`, trained elsewhere): remove the
    /// activations whose gate is at or past --threshold, fold, and keep the others as
    /// trained; with --calib, the result must hold --max-drop / --max-error against it.
    #[arg(long, conflicts_with_all = ["exact", "linearize", "synthetic", "finetune"])]
    from_gates: bool,
    /// Random standard-normal samples used to verify the output.
    #[arg(long, default_value_t = 8, value_name = "N")]
    verify_samples: usize,
    /// Write a JSON report of the run (see docs/report.schema.json).
    #[arg(long, value_name = "FILE.json")]
    report: Option<PathBuf>,
    /// Draw the selection walk (fidelity against latency, the choice marked) as SVG;
    /// needs --calib.
    #[arg(long, value_name = "FILE.svg", conflicts_with = "from_gates")]
    plot: Option<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    fold: FoldArgs,
    #[command(flatten)]
    #[serde(flatten)]
    shapes: ShapeArgs,
    #[command(flatten)]
    #[serde(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    #[serde(flatten)]
    learn: LearnArgs,
}

/// How the output file is written, for the commands that write a model.
#[derive(Args, Serialize)]
struct OutputArgs {
    /// Allow the output path to be the input file.
    #[arg(long)]
    force: bool,
    /// Store tensors in `<output>.data` beside the model.
    #[arg(long)]
    external_data: bool,
}

impl OutputArgs {
    fn save_options(&self) -> SaveOptions {
        SaveOptions {
            external_data: self.external_data,
            ..SaveOptions::default()
        }
    }
}

/// How folds are judged, for the commands that fold.
#[derive(Args, Serialize)]
struct FoldArgs {
    /// Also fold padded layers after mixing ones, exact only away from the border (the
    /// measured error is reported).
    #[arg(long)]
    allow_approx_borders: bool,
    /// How folds are judged: `measured` in tract, or `macs` (a quick estimate).
    #[arg(long, default_value_t = Cost::Measured, value_parser = cost_parser())]
    cost: Cost,
    /// Keep latency measurements in this file between runs (same cache and options give
    /// the same output).
    #[arg(long, value_name = "FILE")]
    cost_cache: Option<PathBuf>,
    /// A fold must save at least this fraction of the latency of what it replaces.
    #[arg(long, default_value_t = 0.02, value_name = "F")]
    min_gain: f64,
}

/// `--cost`'s values, listed in the help.
fn cost_parser() -> impl TypedValueParser<Value = Cost> {
    PossibleValuesParser::new(["measured", "macs"]).map(|name| name.parse().expect("a listed cost"))
}

impl FoldArgs {
    fn options(&self) -> FoldOptions {
        FoldOptions {
            min_gain: self.min_gain,
            allow_approx_borders: self.allow_approx_borders,
            ..FoldOptions::default()
        }
    }
}

#[derive(Args, Serialize)]
struct GateArgs {
    input: PathBuf,
    output: PathBuf,
    /// Also write the manifest (each gate, its activations, its gain, the penalty) here.
    #[arg(long, value_name = "FILE.json")]
    manifest: Option<PathBuf>,
    /// The gate value past which training counts an activation as removed (recorded in
    /// the manifest).
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
    threshold: f64,
    #[command(flatten)]
    #[serde(flatten)]
    written: OutputArgs,
    #[command(flatten)]
    #[serde(flatten)]
    fold: FoldArgs,
    #[command(flatten)]
    #[serde(flatten)]
    shapes: ShapeArgs,
    #[command(flatten)]
    #[serde(flatten)]
    engine: EngineArgs,
}

/// Learning which activations can go (`optimize IN OUT --calib DATA`, the main job).
#[derive(Args, Serialize)]
struct LearnArgs {
    /// Calibration data: `.npz` files (arrays keyed by input name, or one array) or `.npy`
    /// files, several read as one data set (`--calib shards/*.npz`), or a folder of
    /// PNG/JPEG images (sub-folders included). No labels needed: the original model is the
    /// teacher. Read batch by batch, never whole.
    #[arg(long, value_name = "PATH", num_args = 1.., conflicts_with = "exact")]
    calib: Vec<PathBuf>,
    /// The array of a multi-array `.npz` to read.
    #[arg(long, value_name = "NAME", requires = "calib")]
    calib_key: Option<String>,
    /// An integer array in the same `.npz` listing the rows to use.
    #[arg(long, value_name = "NAME", requires = "calib")]
    calib_index: Option<String>,
    /// How stored images become inputs: `imagenet`, `none`, or items such as
    /// `resize=256,crop=224,scale=0.0039,mean=…,std=…,layout=nhwc,bgr`. Images of another
    /// size than a square input are resized and centre-cropped to it unless the SPEC
    /// sizes them.
    #[arg(long, value_name = "SPEC", requires = "calib")]
    preprocess: Option<String>,
    /// Labels: the integer array KEY of each `.npz` (default `y`), or, for a folder of
    /// images, its class sub-folders; adds cross-entropy on them to the distillation.
    #[arg(long, value_name = "KEY", num_args = 0..=1, default_missing_value = "y", requires = "calib")]
    labels: Option<String>,
    /// Weight of the cross-entropy on --labels.
    #[arg(
        long,
        default_value_t = 1.0,
        value_name = "W",
        allow_negative_numbers = true
    )]
    label_weight: f64,
    /// Instead of --calib: this many standard-normal samples (decisions on them are weak).
    #[arg(long, value_name = "N", conflicts_with_all = ["calib", "exact", "linearize"])]
    synthetic: Option<usize>,
    /// Data to measure fidelity on, instead of holding out part of --calib (read with the
    /// same options).
    #[arg(long, value_name = "PATH", num_args = 1.., requires = "calib")]
    holdout_data: Vec<PathBuf>,
    /// Fraction of the data held out to measure fidelity (never trained on).
    #[arg(long, default_value_t = 0.2, value_name = "F")]
    holdout: f64,
    /// Instead of one held-out part: K folds of the data (whole groups when it has
    /// them), each held out once while the others train; the walk's figures are pooled
    /// over all samples, the model written is trained without the first fold.
    #[arg(long, value_name = "K", conflicts_with_all = ["holdout_data", "holdout", "checkpoint"])]
    folds: Option<usize>,
    /// Seeds the split, the training order and the refit sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Passes over the training data (default: enough for about 240 steps).
    #[arg(long, value_name = "N", conflicts_with = "steps")]
    epochs: Option<usize>,
    /// Training steps, whatever an epoch's length (instead of --epochs).
    #[arg(long, value_name = "N")]
    steps: Option<usize>,
    /// Step size of the gates.
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
    lr: f64,
    /// Peak step size of the weights with --finetune (AdamW).
    #[arg(
        long,
        default_value_t = 5e-5,
        value_name = "R",
        allow_negative_numbers = true
    )]
    weight_lr: f64,
    /// Fraction of the steps the weights' step size warms up over before its cosine decay.
    #[arg(
        long,
        default_value_t = 0.05,
        value_name = "F",
        allow_negative_numbers = true
    )]
    warmup: f64,
    /// Decoupled weight decay of the fine-tuned weights.
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "W",
        allow_negative_numbers = true
    )]
    weight_decay: f64,
    /// Samples per training step.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Train the weights too, not only the gates.
    #[arg(long)]
    finetune: bool,
    /// Measure the held-out data every N steps while fine-tuning (default: 10 times a run).
    #[arg(long, value_name = "N")]
    eval_every: Option<usize>,
    /// Train on random crops (area and aspect ranges below) and mirror images of the
    /// training images, the original's targets computed on each.
    #[arg(long)]
    augment: bool,
    /// The area of a random crop, as a fraction of the image's: MIN,MAX.
    #[arg(long, value_name = "MIN,MAX", value_delimiter = ',', default_values_t = [0.08, 1.0], requires = "augment")]
    crop_scale: Vec<f64>,
    /// The aspect ratio (width / height) of a random crop: MIN,MAX.
    #[arg(long, value_name = "MIN,MAX", value_delimiter = ',', default_values_t = [0.75, 4.0 / 3.0], requires = "augment")]
    crop_ratio: Vec<f64>,
    /// Threads for training, reading data and running batches (default: every core; tract
    /// runs each model run on one thread); with --engine ort, also ONNX Runtime's intra-op
    /// threads for timing (default 1).
    #[arg(long, value_name = "T")]
    threads: Option<usize>,
    /// Keep the training state in this folder; the same command run again resumes from it.
    #[arg(long, value_name = "DIR")]
    checkpoint: Option<PathBuf>,
    /// Save the training state every N steps (and at the end).
    #[arg(long, default_value_t = 100, value_name = "N", requires = "checkpoint")]
    checkpoint_every: usize,
    /// Save the training state and stop after N steps of this run (exit 4); the same
    /// command again goes on from there.
    #[arg(long, value_name = "N", requires = "checkpoint")]
    stop_after: Option<usize>,
    /// A gate past this value counts as linear; the order of crossings is the schedule.
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
    threshold: f64,
    /// Do not refit folded layers by least squares.
    #[arg(long)]
    no_refit: bool,
    /// Largest top-1 agreement drop allowed, in points.
    #[arg(
        long,
        default_value_t = 1.0,
        value_name = "PP",
        allow_negative_numbers = true
    )]
    max_drop: f64,
    /// Largest relative error allowed on regression outputs.
    #[arg(
        long,
        default_value_t = 0.05,
        value_name = "E",
        allow_negative_numbers = true
    )]
    max_error: f64,
    /// Stop at the first step within budget at least this much faster.
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    target_speedup: Option<f64>,
    /// Confidence of the intervals of the held-out figures; a step fits the budget only
    /// at their worst end.
    #[arg(
        long,
        default_value_t = 0.95,
        value_name = "C",
        allow_negative_numbers = true
    )]
    confidence: f64,
    /// Exit 3 when nothing fits the budget (the exact-only model is still written).
    #[arg(long)]
    require_speedup: bool,
    /// How an output is distilled and measured: `NAME:class` or `NAME:regression`
    /// (repeatable; by default Softmax outputs and [N, C] outputs are classes).
    #[arg(long, value_name = "NAME:KIND")]
    output_kind: Vec<String>,
}

impl LearnArgs {
    fn enabled(&self) -> bool {
        !self.calib.is_empty() || self.synthetic.is_some()
    }

    fn options(&self, linearize: &[String]) -> Result<LearnOptions> {
        let options = LearnOptions {
            train: TrainOptions {
                epochs: self.epochs,
                steps: self.steps,
                batch: self.batch,
                lr: self.lr,
                weight_lr: self.weight_lr,
                warmup: self.warmup,
                weight_decay: self.weight_decay,
                threshold: self.threshold,
                finetune: self.finetune,
                label_weight: self.label_weight,
                eval_every: self.eval_every,
                seed: self.seed,
                checkpoint: self.checkpoint.clone().map(|dir| Checkpointing {
                    dir,
                    every: self.checkpoint_every,
                    stop_after: self.stop_after,
                }),
            },
            budget: Budget {
                max_drop: self.max_drop,
                max_error: self.max_error,
                target_speedup: self.target_speedup,
                confidence: self.confidence,
            },
            refit: !self.no_refit,
            output_kinds: self
                .output_kind
                .iter()
                .map(|s| parse_output_kind(s))
                .collect::<Result<_>>()?,
            linearize: linearize.to_vec(),
        };
        options.check()?;
        Ok(options)
    }

    fn spec(&self, paths: &[PathBuf]) -> Result<CalibSpec> {
        Ok(CalibSpec {
            paths: paths.to_vec(),
            select: calib::ArraySelection {
                key: self.calib_key.clone(),
                index: self.calib_index.clone(),
            },
            preprocess: self
                .preprocess
                .as_deref()
                .map(Preprocess::parse)
                .transpose()?,
            synthetic: self.synthetic,
            seed: self.seed,
            augment: self.augment,
            crop: CropRange {
                scale: range("crop-scale", &self.crop_scale)?,
                ratio: range("crop-ratio", &self.crop_ratio)?,
            },
            labels: self.labels.clone(),
        })
    }

    /// The (training, held-out) splits: --holdout-data, a split of --calib, or its
    /// --folds.
    fn data(&self, original: &Model, pinned: &PinnedShapes) -> Result<Vec<(Dataset, Dataset)>> {
        let dataset = Dataset::load(&self.spec(&self.calib)?, original, pinned)?;
        let held_out = match self.folds {
            Some(k) => HeldOut::Folds(k),
            None if self.holdout_data.is_empty() => HeldOut::Fraction(self.holdout),
            None => HeldOut::Data(Dataset::load(
                &self.spec(&self.holdout_data)?,
                original,
                pinned,
            )?),
        };
        dataset.splits(held_out, self.seed)
    }
}

/// MIN,MAX given to `option`.
fn range(option: &str, values: &[f64]) -> Result<(f64, f64)> {
    match values {
        [min, max] => Ok((*min, *max)),
        _ => Err(Error::Usage(format!(
            "--{option}: expected two numbers, MIN,MAX"
        ))),
    }
}

#[derive(Args)]
struct VerifyArgs {
    reference: PathBuf,
    candidate: PathBuf,
    /// Inputs: `.npz` (arrays keyed by input name, or one array) or `.npy`.
    #[arg(long, value_name = "FILE")]
    inputs: Option<PathBuf>,
    /// The array of a multi-array `.npz` to read, for a one-input model.
    #[arg(long, value_name = "NAME", requires = "inputs")]
    inputs_key: Option<String>,
    /// An integer array in the same `.npz` listing the rows to use.
    #[arg(long, value_name = "NAME", requires = "inputs")]
    inputs_index: Option<String>,
    /// How stored images become inputs: `imagenet`, `none`, or items such as
    /// `resize=256,crop=224,scale=0.0039,mean=0.485,0.456,0.406,std=0.229,0.224,0.225,layout=nhwc,bgr`.
    #[arg(long, value_name = "SPEC")]
    preprocess: Option<String>,
    /// Only the part of --inputs that `optimize --calib` held out with this --holdout and
    /// the same --seed: the samples its report's fidelity was measured on.
    #[arg(long, value_name = "F", requires = "inputs")]
    held_out: Option<f64>,
    /// Without --inputs: this many standard-normal samples.
    #[arg(long, default_value_t = 8, value_name = "N")]
    random: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Pass when the max relative error (max|c − r| / max|r|) is at most this…
    #[arg(long, default_value_t = 1e-4)]
    rtol: f64,
    /// …or the max absolute error at most this.
    #[arg(long)]
    atol: Option<f64>,
    /// And, for [N, C] outputs, top-1 agreement at least this (0–1).
    #[arg(long, value_name = "F")]
    min_agreement: Option<f64>,
    /// Confidence of the intervals shown for --inputs data (their groups resampled
    /// whole when the data has a `group` array).
    #[arg(
        long,
        default_value_t = 0.95,
        value_name = "C",
        allow_negative_numbers = true
    )]
    confidence: f64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    shapes: ShapeArgs,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    threads: RunThreads,
}

#[derive(Args, Serialize)]
struct BenchArgs {
    /// The model; with OTHER, the one the ratio is taken against.
    model: PathBuf,
    /// A second model, run interleaved with MODEL on the same inputs.
    other: Option<PathBuf>,
    /// Timed runs (pairs, with two models).
    #[arg(long, default_value_t = 50, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    runs: u64,
    /// Untimed runs before them.
    #[arg(long, default_value_t = 5, value_name = "W")]
    warmup: u64,
    /// Exit 1 when the median of the per-pair ratios OTHER / MODEL is above R.
    #[arg(long, value_name = "R", requires = "other")]
    max_ratio: Option<f64>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    #[serde(flatten)]
    shapes: ShapeArgs,
    #[command(flatten)]
    #[serde(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    #[serde(flatten)]
    threads: RunThreads,
}

/// The engine models run and are timed in.
#[derive(Args, Serialize)]
struct EngineArgs {
    /// `tract`, or `ort`: ONNX Runtime (in a build with `--features ort`), the model's
    /// latency and outputs as where it is deployed.
    #[arg(long, value_enum, default_value_t = EngineArg::Tract)]
    engine: EngineArg,
    /// ONNX Runtime's shared library (default: $ORT_DYLIB_PATH).
    #[arg(long, value_name = "PATH")]
    ort_lib: Option<PathBuf>,
    /// ONNX Runtime's graph optimisation: disable, basic, extended or all.
    #[arg(long, default_value = "all", value_name = "LEVEL")]
    ort_opt_level: OrtOptLevel,
}

/// The threads a model runs on, for the commands that only run models.
#[derive(Args, Serialize)]
struct RunThreads {
    /// Intra-op threads of ONNX Runtime. This build of tract runs every model on one
    /// thread (its multithreaded matrix products are a cargo feature of tract-linalg,
    /// left off), so with tract only 1 is accepted.
    #[arg(long, default_value_t = 1, value_name = "T")]
    threads: usize,
}

impl RunThreads {
    /// The engine `engine` asks for, on these threads.
    fn engine(&self, engine: &EngineArgs) -> Result<Engine> {
        if engine.engine == EngineArg::Tract && self.threads != 1 {
            return Err(Error::Usage(format!(
                "--threads {}: this build of tract runs models on one thread only (tract-linalg's multithread-mm feature is off)",
                self.threads
            )));
        }
        engine.engine(self.threads)
    }
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum EngineArg {
    Tract,
    Ort,
}

impl EngineArgs {
    /// The engine, ONNX Runtime's sessions on `ort_threads` intra-op threads.
    fn engine(&self, ort_threads: usize) -> Result<Engine> {
        if ort_threads == 0 {
            return Err(Error::Usage("--threads 0: expected at least 1".into()));
        }
        if self.engine == EngineArg::Ort {
            return Ok(Engine::OnnxRuntime(OrtOptions {
                library: self.ort_lib.clone(),
                threads: ort_threads,
                opt_level: self.ort_opt_level,
            }));
        }
        if self.ort_lib.is_some() {
            return Err(Error::Usage("--ort-lib applies to --engine ort".into()));
        }
        Ok(Engine::Tract)
    }
}

fn main() -> ExitCode {
    onnx_shallow::memory::keep_freed_memory();
    let cli = Cli::parse();
    let progress: Arc<dyn Progress> = match cli.quiet {
        true => Arc::new(Silent),
        false => Arc::new(Bars::stderr()),
    };
    let verifying = matches!(cli.command, Command::Verify(_));
    let outcome = match cli.command {
        Command::Inspect(args) => inspect(&args, &progress),
        Command::Optimize(args) => optimize(&args, &progress),
        Command::Gate(args) => gate(&args, &progress),
        Command::Verify(args) => verify(&args, &progress),
        Command::Bench(args) => bench(&args, &progress),
    };
    match outcome {
        Ok(code) => code,
        Err(Error::Stopped { step, checkpoint }) => {
            eprintln!(
                "training stopped after step {step}; its state is in {}: run the same command again to resume",
                checkpoint.display()
            );
            ExitCode::from(STOPPED)
        }
        Err(err) => {
            eprintln!("error: {}", advice(&err, verifying));
            ExitCode::from(2)
        }
    }
}

/// The library's error as the command line says it: naming the flag that gives what is
/// missing or wrong (`verify` reads its data with flags of its own).
fn advice(err: &Error, verifying: bool) -> String {
    match err {
        Error::Invalid {
            option,
            value,
            expected,
        } => {
            let flag = match *option {
                "holdout" if verifying => "held-out".to_string(),
                option => option.replace(['_', '.'], "-"),
            };
            format!("--{flag} {value}: expected {expected}")
        }
        Error::DynamicInput {
            input,
            declared,
            needs,
        } => format!(
            "input '{input}' is {declared}: {needs}; pin them with --input-shape {input}:D1,D2,…"
        ),
        Error::UnnamedArray { path, input, held } => format!(
            "{}: no array for input {input} (the archive holds: {}); pick one with {} NAME",
            path.display(),
            held.join(", "),
            match verifying {
                true => "--inputs-key",
                false => "--calib-key",
            }
        ),
        Error::OrtNotBuilt => {
            "this build of onnx-shallow has no ONNX Runtime engine: build it with `--features ort`"
                .to_string()
        }
        Error::OrtLibrary { problem } => format!(
            "{problem}; point at an ONNX Runtime shared library with --ort-lib PATH or ORT_DYLIB_PATH=PATH ({ORT_WHEEL})"
        ),
        other => other.to_string(),
    }
}

/// Exit code of a run that stopped training where --stop-after said, its state saved.
const STOPPED: u8 = 4;

/// Sizes the pool that training, data reading and batch runs share; by default every core.
fn use_threads(threads: Option<usize>) -> Result<()> {
    let Some(threads) = threads else {
        return Ok(());
    };
    if threads == 0 {
        return Err(Error::Usage("--threads 0: expected at least 1".into()));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .map_err(|e| Error::Usage(format!("--threads {threads}: {e}")))
}

/// A stage of work that counts no steps, drawn as a spinner until dropped.
fn spinner<'p>(progress: &'p Arc<dyn Progress>, label: &str) -> Stage<'p> {
    Stage::begin(progress.as_ref(), label, None)
}

/// Model files this large take about a second to load: they get a spinner.
const LARGE_MODEL_BYTES: u64 = 256 << 20;

fn load(path: &Path, progress: &Arc<dyn Progress>) -> Result<Model> {
    let large = std::fs::metadata(path).is_ok_and(|m| m.len() >= LARGE_MODEL_BYTES);
    let _stage = large.then(|| spinner(progress, &format!("loading {}", path.display())));
    onnx_shallow::load(path)
}

fn print_json(doc: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(doc).expect("JSON serialises")
    );
}

/// The command line's options as JSON, for reports.
fn options_json(args: &impl Serialize) -> Result<serde_json::Value> {
    serde_json::to_value(args).map_err(|e| Error::Usage(format!("options do not fit in JSON: {e}")))
}

fn inspect(args: &InspectArgs, progress: &Arc<dyn Progress>) -> Result<ExitCode> {
    let model = load(&args.model, progress)?;
    let stats = ModelStats::of(&model.graph, &args.shapes.pinned()?)?;
    if args.json {
        let mut doc = json::document("inspect", serde_json::json!(stats));
        doc["model"] = args.model.display().to_string().into();
        print_json(&doc);
    } else {
        print!("{}", stats::render(&stats));
    }
    Ok(ExitCode::SUCCESS)
}

fn optimize(args: &OptimizeArgs, progress: &Arc<dyn Progress>) -> Result<ExitCode> {
    if !args.exact && args.linearize.is_empty() && !args.learn.enabled() && !args.from_gates {
        return Err(Error::Usage(
            "optimize needs calibration data to learn from (--calib DATA, or --synthetic N), \
             or --exact for the exact rewrites only, or --linearize PATTERN, or --from-gates \
             for a model trained with gates"
                .into(),
        ));
    }
    if args.plot.is_some() && !args.learn.enabled() {
        return Err(Error::Usage(
            "--plot draws the selection walk of a learned run: it needs --calib DATA".into(),
        ));
    }
    use_threads(args.learn.threads)?;
    refuse_overwriting_input(&args.input, &args.output, args.written.force)?;
    for path in std::iter::once(&args.output)
        .chain(&args.report)
        .chain(&args.plot)
    {
        ensure_file_can_go(path)?;
    }
    let options = optimize_options(args, progress)?;
    // A library that does not load is refused before any work.
    options.engine.info()?;
    let original = load(&args.input, progress)?;
    if args.from_gates {
        return optimize_from_gates(args, original, &options, progress);
    }
    if args.learn.enabled() {
        return optimize_learned(args, original, &options, progress);
    }
    let (optimized, report) = match onnx_shallow::optimize(original.clone(), &options) {
        Err(Error::NotReproduced(verified)) => return Ok(refuse(args, &options, verified)),
        outcome => outcome?,
    };
    let verified = verified(&report);
    print_verified(args, &options, verified);
    let written = Written {
        original: &original,
        optimized: &optimized,
        report: &report,
        checked: &Checked::of(verified),
    };
    written.save(args, &options, progress)?;
    Ok(ExitCode::SUCCESS)
}

/// What the library verified of an output it returned.
fn verified(report: &Report) -> &Verified {
    report
        .verified
        .as_ref()
        .expect("the library verifies what it returns")
}

/// Prints why an output was refused: exit 1, nothing written.
fn refuse(args: &OptimizeArgs, options: &Options, verified: Box<Verified>) -> ExitCode {
    print_verified(args, options, &verified);
    eprintln!(
        "error: {}; nothing was written",
        Error::NotReproduced(verified)
    );
    ExitCode::from(1)
}

/// The output against the model its folds started from, in tract and in the run's
/// engine, and against the original when that is another model.
fn print_verified(args: &OptimizeArgs, options: &Options, verified: &Verified) {
    let table = |comparison: &Comparison| {
        let verification = Verification {
            reference: &args.input,
            candidate: &args.output,
            comparison,
            tolerance: &verified.tolerance,
        };
        verification.table()
    };
    if verified.fidelity.is_some() {
        println!("folded vs {} (the folds alone):", verified.against);
    }
    print!("{}", table(&verified.folds));
    if let Some(in_engine) = &verified.in_engine {
        match options.engine.info() {
            Ok(info) => println!("in {info}:"),
            Err(_) => println!("in {}:", options.engine.name()),
        }
        print!("{}", table(in_engine));
    }
    if verified.approximate {
        println!(
            "approximate border folds: the error above is their measured effect (not a failure)"
        );
    }
    if let Some(fidelity) = &verified.fidelity {
        println!(
            "output vs input model (what removing activations cost, on random inputs; information, not a check):"
        );
        print!("{}", table(fidelity));
    }
}

/// A verified output and what a run says about it.
struct Written<'a> {
    original: &'a Model,
    optimized: &'a Model,
    report: &'a Report,
    checked: &'a Checked,
}

impl Written<'_> {
    /// Times both models, writes the output (and the JSON report), and prints what
    /// changed, ending with the before/after table.
    fn save(
        &self,
        args: &OptimizeArgs,
        options: &Options,
        progress: &Arc<dyn Progress>,
    ) -> Result<()> {
        let latency = whole_model_latency(self.original, self.optimized, options, progress)?;
        onnx_shallow::save(self.optimized, &args.output, &args.written.save_options())?;
        print_changes(self.report, options.engine.name());
        if let Some(path) = &args.report {
            write_report(path, args, self.report, self.checked, &latency)?;
        }
        println!("wrote {}", args.output.display());
        let (before, after) = (&self.report.before, &self.report.after);
        let fidelity = Some(&self.checked.fidelity);
        print!(
            "{}",
            stats::before_after_table(before, after, Some(&latency), fidelity)
        );
        Ok(())
    }
}

/// Exit code of a learned run with --require-speedup that kept nothing.
const NO_SPEEDUP: u8 = 3;

fn optimize_learned(
    args: &OptimizeArgs,
    original: Model,
    options: &Options,
    progress: &Arc<dyn Progress>,
) -> Result<ExitCode> {
    let learn = &args.learn;
    let learn_options = learn.options(&args.linearize)?;
    let splits = learn.data(&original, &options.pinned)?;
    let (train, held_out) = &splits[0];
    if train.is_synthetic() {
        eprintln!(
            "warning: learning on synthetic standard-normal inputs: the decisions say little about real data"
        );
    }
    println!(
        "calibration: {} samples from {} to train on{}{}, {} held out{}",
        train.len(),
        train.source(),
        if train.augments() {
            ", randomly cropped and mirrored"
        } else {
            ""
        },
        if train.labels().is_some() {
            ", labelled"
        } else {
            ""
        },
        held_out.len(),
        match (learn.holdout_data.is_empty(), splits.len()) {
            (false, _) => format!(" from {}", held_out.source()),
            (true, 1) => String::new(),
            (true, k) => format!(" (fold 1 of {k}; each fold is held out in turn)"),
        }
    );
    let data = LearnData {
        train,
        held_out,
        more_splits: &splits[1..],
    };
    let outcome = onnx_shallow::optimize_learned(original.clone(), options, &data, &learn_options);
    let (optimized, report) = match outcome {
        Err(Error::NotReproduced(verified)) => return Ok(refuse(args, options, verified)),
        outcome => outcome?,
    };
    let learning = report
        .learning
        .as_ref()
        .expect("a learned run reports its learning");
    let walk = &learning.walk;
    if learning.groups.is_empty() {
        println!("no activation is worth a gate: removing none lets a fold pay");
    }
    if let Some(line) = learning.training.as_ref().and_then(fine_tuning_line) {
        print!("{line}");
    }
    print!("{}", walk_table(walk));
    print!("{}", basis(walk));
    if let Some(warning) = few_groups_warning(walk) {
        eprintln!("warning: {warning}");
    }
    if walk.chosen == 0 && !learning.groups.is_empty() {
        if learn_options.budget.reached(&walk.steps[0]) {
            println!("the exact-only model reaches the target speedup: writing it");
        } else {
            print!("{}", nothing_fits(walk, &learn_options.budget));
        }
    }
    if let Some(in_engine) = &verified(&report).in_engine {
        let worst = in_engine.outputs.iter().map(|o| o.max_rel_error);
        println!(
            "in {}, the output computes as in tract: max relative error {:.1e} on {} standard-normal samples",
            options.engine.name(),
            worst.fold(0.0, f64::max),
            in_engine.samples
        );
    }
    let checked = Checked::of(verified(&report));
    let written = Written {
        original: &original,
        optimized: &optimized,
        report: &report,
        checked: &checked,
    };
    written.save(args, options, progress)?;
    if let Some(path) = &args.plot {
        onnx_shallow::onnx::write_atomically(
            path,
            plot::walk_svg(walk, options.engine.name()).as_bytes(),
        )?;
        println!("wrote {}", path.display());
    }
    Ok(if walk.chosen == 0 && learn.require_speedup {
        ExitCode::from(NO_SPEEDUP)
    } else {
        ExitCode::SUCCESS
    })
}

fn gate(args: &GateArgs, progress: &Arc<dyn Progress>) -> Result<ExitCode> {
    if !(args.threshold > 0.0 && args.threshold <= 1.0) {
        return Err(Error::Usage(format!(
            "--threshold {}: expected a gate value in (0, 1]",
            args.threshold
        )));
    }
    refuse_overwriting_input(&args.input, &args.output, args.written.force)?;
    for path in std::iter::once(&args.output).chain(&args.manifest) {
        ensure_file_can_go(path)?;
    }
    let options = Options {
        pinned: args.shapes.pinned()?,
        folding: args.fold.options(),
        cost: args.fold.cost.clone(),
        cost_cache: args.fold.cost_cache.clone(),
        engine: args.engine.engine(1)?,
        progress: progress.clone(),
        ..Options::default()
    };
    options.engine.info()?;
    let original = load(&args.input, progress)?;
    let gated = onnx_shallow::gate(original, &options, args.threshold)?;
    print!("{}", gates_table(&gated.manifest));
    let tolerance = Tolerance {
        rtol: onnx_shallow::GATED_RTOL,
        ..Tolerance::default()
    };
    let verification = Verification {
        reference: &args.input,
        candidate: &args.output,
        comparison: &gated.verification,
        tolerance: &tolerance,
    };
    println!("gated at α = 0 vs original:");
    print!("{}", verification.table());
    onnx_shallow::save(&gated.model, &args.output, &args.written.save_options())?;
    println!("wrote {}", args.output.display());
    if let Some(path) = &args.manifest {
        let text = serde_json::to_string_pretty(&gated.manifest).expect("JSON serialises");
        onnx_shallow::onnx::write_atomically(path, text.as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Folds a model trained with gates; with --calib, the result must hold the budget
/// against the trained model on that data.
fn optimize_from_gates(
    args: &OptimizeArgs,
    trained: Model,
    options: &Options,
    progress: &Arc<dyn Progress>,
) -> Result<ExitCode> {
    let learn = &args.learn;
    let learn_options = learn.options(&[])?;
    let threshold = learn_options.train.threshold;
    let outcome = onnx_shallow::optimize_from_gates(trained.clone(), options, threshold);
    let (optimized, report) = match outcome {
        Err(Error::NotReproduced(verified)) => return Ok(refuse(args, options, verified)),
        outcome => outcome?,
    };
    let kept = report.gates.iter().filter(|g| g.alpha < threshold).count();
    println!(
        "gates: {} read, {} at or past the threshold {threshold} (removed and folded), {kept} kept as trained",
        report.gates.len(),
        report.gates.len() - kept,
    );
    let verified = verified(&report);
    print_verified(args, options, verified);
    let mut checked = Checked::of(verified);
    if learn.enabled() {
        let data = Dataset::load(&learn.spec(&learn.calib)?, &trained, &options.pinned)?;
        let (comparison, fits) = {
            let _stage = spinner(progress, "measuring the output against the trained model");
            gates::judge(
                &trained,
                &optimized,
                &data,
                &learn_options.budget,
                &learn_options.output_kinds,
                learn.seed,
            )?
        };
        let tolerance = Tolerance::default();
        let verification = Verification {
            reference: &args.input,
            candidate: &args.output,
            comparison: &comparison,
            tolerance: &tolerance,
        };
        println!("output vs trained model, on {}:", data.source());
        print!("{}", verification.table());
        if !fits {
            eprintln!(
                "error: removing the gates below 1 costs more than --max-drop {} points / --max-error {} against the trained model; nothing was written",
                learn.max_drop, learn.max_error
            );
            return Ok(ExitCode::from(1));
        }
        checked.fidelity = comparison;
    }
    let written = Written {
        original: &trained,
        optimized: &optimized,
        report: &report,
        checked: &checked,
    };
    written.save(args, options, progress)?;
    Ok(ExitCode::SUCCESS)
}

fn optimize_options(args: &OptimizeArgs, progress: &Arc<dyn Progress>) -> Result<Options> {
    Ok(Options {
        pinned: args.shapes.pinned()?,
        passes: args.passes.clone(),
        skip_passes: args.skip_passes.clone(),
        max_patches: args.max_patches,
        folding: args.fold.options(),
        cost: args.fold.cost.clone(),
        cost_cache: args.fold.cost_cache.clone(),
        engine: args.engine.engine(args.learn.threads.unwrap_or(1))?,
        // With data, the named activations are removed by learning (and fine-tuned for).
        linearize: match args.learn.enabled() || args.from_gates {
            true => Vec::new(),
            false => args.linearize.clone(),
        },
        progress: progress.clone(),
        verify_samples: args.verify_samples,
    })
}

/// The comparisons a run's report and summary show: the output against the model its
/// folds started from, and against the original.
struct Checked {
    folds: Comparison,
    fidelity: Comparison,
}

impl Checked {
    fn of(verified: &Verified) -> Checked {
        Checked {
            folds: verified.folds.clone(),
            fidelity: verified.against_original().clone(),
        }
    }
}

/// What each pass did and each fold, whether the judged folds held on the whole model
/// (timed in `engine`), and a warning for forced folds that are slower.
fn print_changes(report: &Report, engine: &str) {
    for pass in report.passes.iter().filter(|p| p.patches > 0) {
        println!("{:<28} {:>4} rewrites", pass.pass, pass.patches);
    }
    print!("{}", stats::folds_table(&report.folds));
    if let Some(confirmation) = &report.confirmation {
        print!("{}", stats::confirmation_line(confirmation, engine));
    }
    for note in &report.notes {
        println!("note: {note}");
    }
    for fold in report
        .folds
        .iter()
        .filter(|f| f.forced && f.verdict.ratio() > 1.0)
    {
        eprintln!(
            "warning: {} is {:.2}× the cost of what it replaces, folded because it spans linearised activations",
            fold.result,
            fold.verdict.ratio()
        );
    }
}

fn write_report(
    path: &Path,
    args: &OptimizeArgs,
    report: &Report,
    checked: &Checked,
    latency: &Benchmark,
) -> Result<()> {
    let tolerance = Tolerance::default();
    let run = OptimizeRun {
        input: &args.input,
        output: &args.output,
        options: options_json(args)?,
        // A learned run's choices follow its own seed; an exact run's, the verification's.
        seed: match args.learn.enabled() {
            true => args.learn.seed,
            false => onnx_shallow::VERIFY_SEED,
        },
        report,
        verification: &Verification {
            reference: &args.input,
            candidate: &args.output,
            comparison: &checked.folds,
            tolerance: &tolerance,
        },
        fidelity: &checked.fidelity,
        latency,
    };
    let text = serde_json::to_string_pretty(&run.to_json()).expect("JSON serialises");
    onnx_shallow::onnx::write_atomically(path, text.as_bytes())
}

/// Both models timed in the run's engine at batch 1, interleaved.
fn whole_model_latency(
    original: &Model,
    optimized: &Model,
    options: &Options,
    progress: &Arc<dyn Progress>,
) -> Result<Benchmark> {
    let dims = bench::runtime_input_dims(original, &options.pinned)?;
    let engine = &options.engine;
    let plans = {
        let _stage = spinner(
            progress,
            &format!("loading both models in {}", engine.name()),
        );
        [
            Plan::load(engine, original, &dims)?,
            Plan::load(engine, optimized, &dims)?,
        ]
    };
    bench::benchmark(&plans, BenchOptions::default(), progress.as_ref())
}

/// Refused before any work: an output file goes into an existing folder, not over one.
fn ensure_file_can_go(path: &Path) -> Result<()> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let problem = if !folder.is_dir() {
        format!("the folder {} does not exist", folder.display())
    } else if path.is_dir() {
        "it is a folder".to_string()
    } else {
        return Ok(());
    };
    Err(Error::Usage(format!("{}: {problem}", path.display())))
}

fn refuse_overwriting_input(input: &Path, output: &Path, force: bool) -> Result<()> {
    if !force && onnx_shallow::onnx::same_file(input, output) {
        return Err(Error::Usage(format!(
            "{}: the output would overwrite the input; pass --force to allow it",
            output.display()
        )));
    }
    Ok(())
}

fn verify(args: &VerifyArgs, progress: &Arc<dyn Progress>) -> Result<ExitCode> {
    let engine = args.threads.engine(&args.engine)?;
    let engine_info = engine.info()?;
    let reference = load(&args.reference, progress)?;
    let candidate = load(&args.candidate, progress)?;
    check_confidence(args.confidence)?;
    let inputs = verification_inputs(&reference, args)?;
    let mut comparison = {
        let _stage = spinner(
            progress,
            &format!("running both models in {}", engine.name()),
        );
        compare::compare_in(&engine, &reference, &candidate, &inputs)?
    };
    if args.inputs.is_some() {
        let resampling = Resampling {
            confidence: args.confidence,
            seed: args.seed,
        };
        comparison.estimate_intervals(inputs.groups(), &resampling);
    }
    let tolerance = Tolerance {
        rtol: args.rtol,
        atol: args.atol,
        min_agreement: args.min_agreement,
    };
    let verification = Verification {
        reference: &args.reference,
        candidate: &args.candidate,
        comparison: &comparison,
        tolerance: &tolerance,
    };
    if args.json {
        let mut doc = verification.to_json();
        doc["engine"] = serde_json::json!(engine_info);
        print_json(&doc);
    } else {
        print!("{}", verification.table());
        if let Some(basis) = verification.intervals_basis() {
            println!("{basis}");
        }
        println!("run in {engine_info}");
        println!("{}", verification.verdict());
    }
    Ok(if verification.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn verification_inputs(reference: &Model, args: &VerifyArgs) -> Result<ModelInputs> {
    let preprocess = args
        .preprocess
        .as_deref()
        .map(Preprocess::parse)
        .transpose()?;
    let select = calib::ArraySelection {
        key: args.inputs_key.clone(),
        index: args.inputs_index.clone(),
    };
    match (&args.inputs, args.held_out) {
        (Some(path), Some(holdout)) => {
            let spec = CalibSpec {
                paths: vec![path.clone()],
                select,
                preprocess,
                seed: args.seed,
                ..CalibSpec::default()
            };
            let data = Dataset::load(&spec, reference, &args.shapes.pinned()?)?;
            data.split(holdout, args.seed)?.1.all()
        }
        (Some(path), None) => calib::load_selected_inputs(
            path,
            &calib::input_names(reference),
            &select,
            &preprocess.unwrap_or_default(),
        ),
        (None, _) if args.preprocess.is_some() => Err(Error::Usage(
            "--preprocess applies to --inputs; none were given".into(),
        )),
        (None, _) => calib::random_inputs(
            &calib::sample_dims(reference, &args.shapes.pinned()?)?,
            args.random,
            args.seed,
        ),
    }
}

fn bench(args: &BenchArgs, progress: &Arc<dyn Progress>) -> Result<ExitCode> {
    let engine = args.threads.engine(&args.engine)?;
    // A library that does not load is refused before any work.
    engine.info()?;
    if let Some(max) = args.max_ratio.filter(|r| !(r.is_finite() && *r > 0.0)) {
        return Err(Error::Usage(format!(
            "--max-ratio {max}: expected a positive number"
        )));
    }
    let paths: Vec<&Path> = std::iter::once(&args.model)
        .chain(&args.other)
        .map(PathBuf::as_path)
        .collect();
    let pinned = args.shapes.pinned()?;
    let plans = paths
        .iter()
        .map(|path| {
            let model = load(path, progress)?;
            let _stage = spinner(
                progress,
                &format!("loading {} in {}", path.display(), engine.name()),
            );
            bench::runtime_input_dims(&model, &pinned)
                .and_then(|dims| Plan::load(&engine, &model, &dims))
                .map_err(|e| Error::Usage(format!("{}: {}", path.display(), advice(&e, false))))
        })
        .collect::<Result<Vec<_>>>()?;
    let options = BenchOptions {
        warmup: args.warmup as usize,
        runs: args.runs as usize,
        ..BenchOptions::default()
    };
    let benchmark = bench::benchmark(&plans, options, progress.as_ref())?;
    let run = BenchRun {
        models: &paths,
        options: options_json(args)?,
        benchmark: &benchmark,
        max_ratio: args.max_ratio,
    };
    if args.json {
        print_json(&run.to_json());
    } else {
        print!("{}", run.table());
        if let Some(verdict) = run.verdict() {
            println!("{verdict}");
        }
    }
    Ok(if run.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
