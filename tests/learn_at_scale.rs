//! Learning at scale: memory is set by the model and the batch, not by the number of
//! samples; training stopped at a checkpoint and run again ends as an uninterrupted run
//! would; labels, when given, train by cross-entropy and are measured against.

mod common;

use std::io::Write;
use std::path::Path;

use common::{optimize_digits_calib, testdata};
use onnx_shallow::calib::{ArraySelection, CalibSpec, Dataset};
use onnx_shallow::gates::{LearnData, LearnOptions, Learning};
use onnx_shallow::runtime::memory::{CountingAllocator, heap_growth};
use onnx_shallow::{Cost, Options};

#[global_allocator]
static HEAP: CountingAllocator = CountingAllocator;

/// The heap counter counts every thread's allocations: the tests of this binary run one
/// at a time, so that none counts into another's window.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// An `.npy` file of `descr` elements (`<f4`, `<i8`) of `shape`, their bytes `data`.
fn npy(descr: &str, shape: &[usize], data: Vec<u8>) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| format!("{d},")).collect();
    let mut header = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': ({}), }}",
        dims.join(" ")
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    bytes
}

fn npy_bytes(shape: &[usize], values: impl Iterator<Item = f32>) -> Vec<u8> {
    npy("<f4", shape, values.flat_map(f32::to_le_bytes).collect())
}

/// A learned run of the PP-OCR classifier on `samples` noise samples (a fifth held out),
/// fine-tuning for a fixed number of steps; its peak heap in bytes.
fn peak_heap_of_a_learned_run(dir: &Path, samples: usize) -> u64 {
    let model = onnx_shallow::load(&testdata("ppocr_textline_cls.onnx")).unwrap();
    let path = dir.join(format!("noise_{samples}.npy"));
    let mut rng = onnx_shallow::calib::random::Rng::new(samples as u64);
    let values = (0..samples * 3 * 48 * 192).map(|_| rng.normal() as f32);
    std::fs::write(&path, npy_bytes(&[samples, 3, 48, 192], values)).unwrap();
    let pinned: onnx_shallow::ir::shape::PinnedShapes = [("x".to_string(), vec![1, 3, 48, 192])]
        .into_iter()
        .collect();
    let spec = CalibSpec {
        paths: vec![path],
        ..CalibSpec::default()
    };
    let data = Dataset::load(&spec, &model, &pinned).unwrap();
    let (train, held_out) = data.split(0.2, 0).unwrap();
    let options = Options {
        cost: Cost::Macs,
        pinned,
        ..Options::default()
    };
    let mut learn = LearnOptions::default();
    learn.train.finetune = true;
    learn.train.steps = Some(6);
    learn.train.batch = 4;
    learn.budget.max_drop = 100.0;
    let data = LearnData {
        train: &train,
        held_out: &held_out,
        more_splits: &[],
    };
    let (result, growth) =
        heap_growth(|| onnx_shallow::optimize_learned(model, &options, &data, &learn).map(|_| ()));
    result.unwrap();
    growth
        .expect("the counting allocator is installed")
        .peak_bytes
}

/// Ten times the samples, the same steps: the peak heap stays within 1.2× (a pipeline
/// holding every sample's input would need 10× the 5.6 MB of inputs on top).
#[test]
fn the_peak_heap_does_not_grow_with_the_number_of_samples() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let few = peak_heap_of_a_learned_run(dir.path(), 40);
    let many = peak_heap_of_a_learned_run(dir.path(), 400);
    eprintln!("peak heap: {few} bytes with 40 samples, {many} with 400");
    assert!(
        (many as f64) <= 1.2 * few as f64,
        "{many} bytes with 400 samples against {few} with 40"
    );
}

fn os(args: &[&str]) -> Vec<std::ffi::OsString> {
    args.iter().map(Into::into).collect()
}

/// A run stopped after 5 of its 12 steps, then 5 more, and run again writes the very bytes
/// an uninterrupted run writes; a state saved by another run is refused, nothing written.
#[test]
fn a_stopped_run_resumes_to_the_same_output_and_a_foreign_state_is_refused() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let training = ["--finetune", "--steps", "12", "--batch", "8", "--seed", "3"];
    let run = |out: &Path, extra: &[&str]| {
        let args = os(&[&training[..], extra].concat());
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        optimize_digits_calib(out, &args)
    };
    let whole = dir.path().join("whole.onnx");
    assert_eq!(run(&whole, &[]).code, 0);

    let resumed = dir.path().join("resumed.onnx");
    let checkpointed = ["--checkpoint", state.to_str().unwrap()];
    let stopped = run(
        &resumed,
        &[&checkpointed[..], &["--stop-after", "5"]].concat(),
    );
    assert_eq!(stopped.code, 4, "{}", stopped.stderr);
    assert!(
        stopped.stderr.contains("stopped after step 5"),
        "{}",
        stopped.stderr
    );
    assert!(!resumed.exists(), "nothing is written before training ends");
    // The same command again takes 5 more steps; without a stop, the rest.
    let again = run(
        &resumed,
        &[&checkpointed[..], &["--stop-after", "5"]].concat(),
    );
    assert!(
        again.stderr.contains("stopped after step 10"),
        "{}",
        again.stderr
    );
    let finished = run(&resumed, &checkpointed);
    assert_eq!(finished.code, 0, "{}", finished.stderr);
    assert_eq!(
        std::fs::read(&whole).unwrap(),
        std::fs::read(&resumed).unwrap(),
        "the resumed run writes what the uninterrupted one wrote"
    );

    let foreign = dir.path().join("foreign.onnx");
    let refused = run(
        &foreign,
        &[&checkpointed[..], &["--weight-lr", "0.001"]].concat(),
    );
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("saved by another run"),
        "{}",
        refused.stderr
    );
    assert!(!foreign.exists());
}

/// The bundled digits with their labels replaced by `label` for every sample.
fn digits_labelled(dir: &Path, label: Option<i64>) -> std::path::PathBuf {
    let mut npz = onnx_shallow::calib::Npz::open(&testdata("digits_test64.npz")).unwrap();
    let x = npz.array("input").unwrap().values;
    let labels = npz.array("labels").unwrap().values;
    let labels: Vec<f32> = match label {
        Some(l) => vec![l as f32; labels.len()],
        None => labels.iter().copied().collect(),
    };
    let path = dir.join(format!("digits_{label:?}.npz"));
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in [
        ("input.npy", npy_bytes(x.shape(), x.iter().copied())),
        ("y.npy", npy_i64(&labels)),
    ] {
        zip.start_file(name, stored).unwrap();
        zip.write_all(&bytes).unwrap();
    }
    zip.finish().unwrap();
    path
}

fn npy_i64(values: &[f32]) -> Vec<u8> {
    let data = values
        .iter()
        .flat_map(|&v| (v as i64).to_le_bytes())
        .collect();
    npy("<i8", &[values.len()], data)
}

fn fine_tuned_on(path: &Path, label_weight: f64, weight_lr: f64) -> Learning {
    let model = onnx_shallow::load(&testdata("digits_mobilenetish.onnx")).unwrap();
    let spec = CalibSpec {
        paths: vec![path.to_path_buf()],
        select: ArraySelection {
            key: Some("input".into()),
            index: None,
        },
        labels: Some("y".into()),
        ..CalibSpec::default()
    };
    let data = Dataset::load(&spec, &model, &Default::default()).unwrap();
    let (train, held_out) = data.split(0.2, 0).unwrap();
    let options = Options {
        cost: Cost::Macs,
        ..Options::default()
    };
    let mut learn = LearnOptions::default();
    learn.train.finetune = true;
    learn.train.steps = Some(40);
    learn.train.weight_lr = weight_lr;
    learn.train.label_weight = label_weight;
    learn.budget.max_drop = 100.0;
    let data = LearnData {
        train: &train,
        held_out: &held_out,
        more_splits: &[],
    };
    let (_, report) = onnx_shallow::optimize_learned(model, &options, &data, &learn).unwrap();
    report.learning.unwrap()
}

/// Labels train by cross-entropy: told every digit is a 3, the fine-tuned network says 3
/// for most held-out digits, while distillation alone keeps the original's answers. The
/// accuracy against the labels is measured on the held-out samples and reported.
#[test]
fn labels_add_cross_entropy_and_accuracy_is_reported() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let threes = digits_labelled(dir.path(), Some(3));
    let accuracy = |learning: &Learning| {
        let evaluations = &learning.training.as_ref().unwrap().evaluations;
        evaluations
            .last()
            .unwrap()
            .accuracy
            .expect("labels are measured against")
    };
    let taught = fine_tuned_on(&threes, 5.0, 0.01);
    let distilled = fine_tuned_on(&threes, 0.0, 0.01);
    eprintln!(
        "held-out 'accuracy' against all-3 labels: {} with labels, {} without",
        accuracy(&taught),
        accuracy(&distilled)
    );
    assert!(accuracy(&taught) > 0.8, "{}", accuracy(&taught));
    assert!(accuracy(&distilled) < 0.3, "{}", accuracy(&distilled));
    let true_labels = fine_tuned_on(&digits_labelled(dir.path(), None), 1.0, 1e-3);
    eprintln!(
        "held-out accuracy against the true labels: {}",
        accuracy(&true_labels)
    );
    assert!(accuracy(&true_labels) > 0.75, "{}", accuracy(&true_labels));
}

/// Fine-tuning is measured before its first step, each measurement says how many training
/// samples it had seen, and the report gives the steps' rate.
#[test]
fn fine_tuning_is_measured_from_before_its_first_step() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let learning = fine_tuned_on(&digits_labelled(dir.path(), None), 0.0, 1e-3);
    let training = learning.training.unwrap();
    let first = &training.evaluations[0];
    assert_eq!((first.step, first.samples_seen), (0, 0));
    let seen: Vec<usize> = training
        .evaluations
        .iter()
        .map(|e| e.samples_seen)
        .collect();
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert_eq!(seen.last(), Some(&training.samples_seen));
    assert_eq!(training.throughput.samples, training.samples_seen);
    assert!(training.throughput.samples_per_second > 0.0);
}
