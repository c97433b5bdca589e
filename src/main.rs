//! The `onnx-shallow` command line: a thin layer over the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use onnx_shallow::calib::{self, ModelInputs, Preprocess};
use onnx_shallow::ir::shape::PinnedShapes;
use onnx_shallow::passes::FoldOptions;
use onnx_shallow::report::stats::{self, ModelStats};
use onnx_shallow::report::verify::Verification;
use onnx_shallow::runtime::bench::{self, BenchOptions, PairTiming};
use onnx_shallow::runtime::compare::{self, Tolerance};
use onnx_shallow::{Cost, Error, Model, Options, Result, SaveOptions};

/// Makes pre-trained ONNX networks shallower and faster, verified with tract.
#[derive(Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
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
    Optimize(OptimizeArgs),
    /// Runs two models on the same inputs with tract and compares their outputs.
    #[command(
        after_help = "Example:\n  onnx-shallow verify model.onnx model.shallow.onnx --inputs images.npz --preprocess imagenet\n\n\
                            Exit codes: 0 within tolerance, 1 outside it, 2 on any error."
    )]
    Verify(VerifyArgs),
}

#[derive(Args)]
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

#[derive(Args)]
struct OptimizeArgs {
    input: PathBuf,
    output: PathBuf,
    /// Exact rewrites only: no calibration data, no learning.
    #[arg(long)]
    exact: bool,
    /// Allow the output path to be the input file.
    #[arg(long)]
    force: bool,
    /// Store tensors in `<output>.data` beside the model.
    #[arg(long)]
    external_data: bool,
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
    /// Also fold padded layers after mixing ones, exact only away from the border (the
    /// measured error is reported).
    #[arg(long)]
    allow_approx_borders: bool,
    /// How folds are judged: `measured` in tract, or `macs` (a quick estimate).
    #[arg(long, value_enum, default_value_t = CostArg::Measured)]
    cost: CostArg,
    /// Keep latency measurements in this file between runs (same cache and options give
    /// the same output).
    #[arg(long, value_name = "FILE")]
    cost_cache: Option<PathBuf>,
    /// A fold must save at least this fraction of the latency of what it replaces.
    #[arg(long, default_value_t = 0.02, value_name = "F")]
    min_gain: f64,
    /// Random standard-normal samples used to verify the output.
    #[arg(long, default_value_t = 8, value_name = "N")]
    verify_samples: usize,
    #[command(flatten)]
    shapes: ShapeArgs,
}

#[derive(Args)]
struct VerifyArgs {
    reference: PathBuf,
    candidate: PathBuf,
    /// Inputs: `.npz` (arrays keyed by input name, or one array) or `.npy`.
    #[arg(long, value_name = "FILE")]
    inputs: Option<PathBuf>,
    /// How stored images become inputs: `imagenet`, `none`, or items such as
    /// `resize=256,crop=224,scale=0.0039,mean=0.485,0.456,0.406,std=0.229,0.224,0.225,layout=nhwc,bgr`.
    #[arg(long, value_name = "SPEC")]
    preprocess: Option<String>,
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
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    shapes: ShapeArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CostArg {
    Measured,
    Macs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Inspect(args) => inspect(&args),
        Command::Optimize(args) => optimize(&args),
        Command::Verify(args) => verify(&args),
    };
    match outcome {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}

fn inspect(args: &InspectArgs) -> Result<ExitCode> {
    let model = onnx_shallow::load(&args.model)?;
    let stats = ModelStats::of(&model.graph, &args.shapes.pinned()?)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&stats).expect("stats serialise")
        );
    } else {
        print!("{}", stats::render(&stats));
    }
    Ok(ExitCode::SUCCESS)
}

fn optimize(args: &OptimizeArgs) -> Result<ExitCode> {
    if !args.exact && args.linearize.is_empty() {
        return Err(Error::Usage(
            "learning from calibration data is not available yet: pass --exact, or name activations with --linearize"
                .into(),
        ));
    }
    refuse_overwriting_input(&args.input, &args.output, args.force)?;
    let original = onnx_shallow::load(&args.input)?;
    let cost = match (args.cost, &args.cost_cache) {
        (CostArg::Macs, _) => Cost::Macs,
        (CostArg::Measured, Some(path)) => Cost::MeasuredWithCache(path.clone()),
        (CostArg::Measured, None) => Cost::Measured,
    };
    let options = Options {
        pinned: args.shapes.pinned()?,
        passes: args.passes.clone(),
        skip_passes: args.skip_passes.clone(),
        max_patches: args.max_patches,
        folding: FoldOptions {
            min_gain: args.min_gain,
            allow_approx_borders: args.allow_approx_borders,
        },
        cost,
        linearize: args.linearize.clone(),
    };
    let (optimized, report) = onnx_shallow::optimize(original.clone(), &options)?;
    let inputs = calib::random_inputs(
        &calib::sample_dims(&original, &options.pinned)?,
        args.verify_samples,
        0,
    )?;
    // The folds must reproduce the model they started from: the original, or the
    // original with the named activations linearised.
    let fold_reference = report.fold_reference.as_ref().unwrap_or(&original);
    let comparison = compare::compare(fold_reference, &optimized, &inputs)?;
    let tolerance = Tolerance::default();
    let verification = Verification {
        reference: &args.input,
        candidate: &args.output,
        comparison: &comparison,
        tolerance: &tolerance,
    };
    if report.fold_reference.is_some() {
        println!("folded vs linearised (the folds alone):");
    }
    print!("{}", verification.table());
    let approximate = report.folds.iter().any(|f| !f.exact);
    if approximate {
        println!(
            "approximate border folds: the error above is their measured effect (not a failure)"
        );
    } else if !verification.passed() {
        eprintln!(
            "error: the rewritten model does not match within {}; nothing was written",
            tolerance.rtol
        );
        return Ok(ExitCode::from(1));
    }
    if report.fold_reference.is_some() {
        let fidelity = compare::compare(&original, &optimized, &inputs)?;
        let against_original = Verification {
            reference: &args.input,
            candidate: &args.output,
            comparison: &fidelity,
            tolerance: &tolerance,
        };
        println!(
            "output vs original (what linearising cost, on random inputs; information, not a check):"
        );
        print!("{}", against_original.table());
    }
    let save = SaveOptions {
        external_data: args.external_data,
        ..SaveOptions::default()
    };
    onnx_shallow::save(&optimized, &args.output, &save)?;
    for pass in report.passes.iter().filter(|p| p.patches > 0) {
        println!("{:<28} {:>4} rewrites", pass.pass, pass.patches);
    }
    print!("{}", stats::folds_table(&report.folds));
    for fold in report
        .folds
        .iter()
        .filter(|f| f.forced && !f.verdict.pays(0.0))
    {
        eprintln!(
            "warning: {} is {:.2}× the cost of what it replaces, folded because it spans linearised activations",
            fold.result,
            fold.verdict.ratio()
        );
    }
    let latency = whole_model_latency(&original, &optimized, &options.pinned)?;
    print!(
        "{}",
        stats::before_after_table(&report.before, &report.after, Some(&latency))
    );
    println!("wrote {}", args.output.display());
    Ok(ExitCode::SUCCESS)
}

/// Both models timed in tract at batch 1, interleaved.
fn whole_model_latency(
    original: &Model,
    optimized: &Model,
    pinned: &PinnedShapes,
) -> Result<PairTiming> {
    let dims: Vec<Vec<usize>> = calib::sample_dims(original, pinned)?
        .into_iter()
        .map(|d| [vec![1], d].concat())
        .collect();
    bench::time_models(original, optimized, &dims, BenchOptions::default())
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

fn verify(args: &VerifyArgs) -> Result<ExitCode> {
    let reference = onnx_shallow::load(&args.reference)?;
    let candidate = onnx_shallow::load(&args.candidate)?;
    let inputs = verification_inputs(&reference, args)?;
    let comparison = compare::compare(&reference, &candidate, &inputs)?;
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
        println!(
            "{}",
            serde_json::to_string_pretty(&verification.to_json()).expect("JSON serialises")
        );
    } else {
        print!("{}", verification.table());
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
        .transpose()?
        .unwrap_or_default();
    match &args.inputs {
        Some(path) => calib::load_inputs(path, &calib::input_names(reference), &preprocess),
        None if args.preprocess.is_some() => Err(Error::Usage(
            "--preprocess applies to --inputs; none were given".into(),
        )),
        None => calib::random_inputs(
            &calib::sample_dims(reference, &args.shapes.pinned()?)?,
            args.random,
            args.seed,
        ),
    }
}
