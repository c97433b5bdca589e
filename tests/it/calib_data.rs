//! Calibration datasets: array selection on the real digits split, group-aware splits on
//! the natural-photo patches, image folders, synthetic data and augmentation.

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;

use ndarray::{ArrayD, Axis};
use onnx_shallow::Model;
use onnx_shallow::calib::{ArraySelection, CalibSpec, Dataset, Npz, Preprocess};
use onnx_shallow::ir::builder::ModelBuilder;

/// A one-input model (Relu) with the given input dims.
fn relu_model(dims: &[i64]) -> Model {
    let proto = ModelBuilder::new(13)
        .input("image", dims)
        .node("Relu", &["image"], &["y"], Default::default())
        .output("y")
        .build();
    Model::from_proto(proto).unwrap()
}

fn digits_spec(data: &Path, key: Option<&str>, index: Option<&str>) -> CalibSpec {
    CalibSpec {
        paths: vec![data.to_path_buf()],
        select: ArraySelection {
            key: key.map(str::to_string),
            index: index.map(str::to_string),
        },
        ..CalibSpec::default()
    }
}

fn load_error(spec: &CalibSpec, model: &Model) -> String {
    Dataset::load(spec, model, &Default::default())
        .err()
        .expect("an error")
        .to_string()
}

#[test]
fn digits_key_and_index_select_the_indexed_rows() {
    let Some(data) = common::shared("data/sklearn_digits_split.npz") else {
        return;
    };
    let model = relu_model(&[-1, 1, 8, 8]);
    let train = Dataset::load(
        &digits_spec(&data, Some("x"), Some("train_idx")),
        &model,
        &Default::default(),
    )
    .unwrap();
    let mut npz = Npz::open(&data).unwrap();
    let x = npz.array("x").unwrap().values;
    let index: Vec<usize> = npz
        .array("train_idx")
        .unwrap()
        .values
        .iter()
        .map(|&v| v as usize)
        .collect();
    assert_eq!(train.len(), 1347);
    assert!(!train.is_synthetic() && !train.augments() && train.groups().is_none());
    assert!(
        train.source().contains("rows 'train_idx'"),
        "{}",
        train.source()
    );
    let rows = train.batch(&[0, 1, 1346]).unwrap();
    assert_eq!(rows[0].shape(), &[3, 1, 8, 8]);
    for (i, position) in [0, 1, 1346].into_iter().enumerate() {
        assert_eq!(
            rows[0].index_axis(Axis(0), i),
            x.index_axis(Axis(0), index[position])
        );
    }
    assert_eq!(train.all().unwrap().samples(), 1347);
}

#[test]
fn bad_keys_and_indices_name_the_array_and_list_the_archive() {
    let Some(data) = common::shared("data/sklearn_digits_split.npz") else {
        return;
    };
    let model = relu_model(&[-1, 1, 8, 8]);
    let holds = "the archive holds: x, y, train_idx, test_idx";
    let cases = [
        (None, None, "no array for input image"),
        (Some("pixels"), None, "array 'pixels': no such array"),
        (Some("x"), Some("val_idx"), "array 'val_idx': no such array"),
    ];
    for (key, index, expected) in cases {
        let err = load_error(&digits_spec(&data, key, index), &model);
        assert!(
            err.contains("sklearn_digits_split.npz")
                && err.contains(expected)
                && err.contains(holds),
            "{err}"
        );
    }
    let err = load_error(&digits_spec(&data, Some("x"), Some("x")), &model);
    assert!(err.contains("array 'x' is F32, expected integers"), "{err}");
    // y holds one label per row: samples of [] do not fit an input of [?,1,8,8].
    let err = load_error(&digits_spec(&data, Some("y"), None), &model);
    assert!(
        err.contains("array 'y' holds samples of [], input 'image' is"),
        "{err}"
    );
}

#[test]
fn patches_split_by_photo_deterministically_and_augment_only_the_training_part() {
    let Some(data) = common::shared("data/natural_calib_patches_224.npz") else {
        return;
    };
    let spec = CalibSpec {
        paths: vec![data],
        preprocess: Some(Preprocess::parse("imagenet").unwrap()),
        augment: true,
        ..CalibSpec::default()
    };
    let patches =
        Dataset::load(&spec, &relu_model(&[-1, 3, 224, 224]), &Default::default()).unwrap();
    assert_eq!(patches.len(), 512);
    assert_eq!(patches.sample_dims(), [vec![3, 224, 224]]);
    assert!(patches.augments());

    let groups_of = |part: &Dataset| part.groups().unwrap().into_iter().collect::<BTreeSet<_>>();
    let (train, held_out) = patches.split(0.2, 1).unwrap();
    assert_eq!(train.len() + held_out.len(), 512);
    assert!(groups_of(&train).is_disjoint(&groups_of(&held_out)));
    assert!(
        (0.1..0.3).contains(&(held_out.len() as f64 / 512.0)),
        "{} held out",
        held_out.len()
    );
    let (_, again) = patches.split(0.2, 1).unwrap();
    assert_eq!(again.groups(), held_out.groups());
    let (_, other) = patches.split(0.2, 2).unwrap();
    assert_ne!(groups_of(&other), groups_of(&held_out));

    assert!(train.augments() && !held_out.augments());
    let first_batch = |part: &Dataset| part.epoch(8, 3).unwrap().next().unwrap().unwrap();
    let plain = train.with_augment(false).unwrap();
    let augmented = first_batch(&train);
    let unaugmented = first_batch(&plain);
    assert_eq!(augmented[0].shape(), &[8, 3, 224, 224]);
    assert_ne!(augmented, unaugmented);
    let forced = held_out.with_augment(true).unwrap();
    assert_ne!(first_batch(&held_out), first_batch(&forced));
}

#[test]
fn an_epoch_visits_every_sample_once_in_a_seeded_order() {
    let model = relu_model(&[-1, 4]);
    let spec = CalibSpec {
        synthetic: Some(10),
        ..CalibSpec::default()
    };
    let data = Dataset::load(&spec, &model, &Default::default()).unwrap();
    let epoch = |seed| -> Vec<ArrayD<f32>> {
        data.epoch(4, seed)
            .unwrap()
            .map(|batch| batch.unwrap().remove(0))
            .collect()
    };
    let batches = epoch(7);
    assert_eq!(
        batches
            .iter()
            .map(|b| b.len_of(Axis(0)))
            .collect::<Vec<_>>(),
        [4, 4, 2]
    );
    let first_values = |batches: &[ArrayD<f32>]| {
        let mut firsts: Vec<f32> = batches
            .iter()
            .flat_map(|b| b.outer_iter().map(|row| row[0]).collect::<Vec<_>>())
            .collect();
        firsts.sort_by(f32::total_cmp);
        firsts
    };
    let all = data.all().unwrap();
    let mut expected: Vec<f32> = all.arrays()[0].outer_iter().map(|row| row[0]).collect();
    expected.sort_by(f32::total_cmp);
    assert_eq!(first_values(&batches), expected);
    assert_eq!(batches, epoch(7));
    assert_ne!(batches, epoch(8));
    assert!(data.epoch(0, 7).is_err());
}

#[test]
fn augmentation_is_refused_for_inputs_that_are_not_images_naming_the_input() {
    let spec = CalibSpec {
        synthetic: Some(4),
        augment: true,
        ..CalibSpec::default()
    };
    let err = load_error(&spec, &relu_model(&[-1, 64]));
    assert!(
        err.contains("augmentation needs image inputs") && err.contains("'image'"),
        "{err}"
    );
}

#[test]
fn synthetic_data_is_flagged_signed_and_sized_from_the_model() {
    let model = relu_model(&[-1, 3, 5, 5]);
    let spec = CalibSpec {
        synthetic: Some(16),
        seed: 4,
        ..CalibSpec::default()
    };
    let data = Dataset::load(&spec, &model, &Default::default()).unwrap();
    assert!(data.is_synthetic() && !data.augments());
    let inputs = data.all().unwrap();
    assert_eq!(inputs.arrays()[0].shape(), &[16, 3, 5, 5]);
    assert!(inputs.arrays()[0].iter().any(|&v| v < 0.0));
    assert!(data.source().contains("synthetic"), "{}", data.source());

    let both = CalibSpec {
        paths: vec!["x.npz".into()],
        ..spec.clone()
    };
    assert!(load_error(&both, &model).contains("not both"));
    assert!(load_error(&CalibSpec::default(), &model).contains("no calibration data"));
    let err = load_error(&spec, &relu_model(&[-1, 3, -1, 5]));
    assert!(err.contains("must be fixed"), "{err}");
}

/// Writes a solid-colour image; the format follows the extension.
fn write_image(path: &Path, width: u32, height: u32, rgb: [u8; 3]) {
    image::RgbImage::from_pixel(width, height, image::Rgb(rgb))
        .save(path)
        .unwrap();
}

fn folder_spec(folder: &Path, preprocess: &str) -> CalibSpec {
    CalibSpec {
        paths: vec![folder.to_path_buf()],
        preprocess: Some(Preprocess::parse(preprocess).unwrap()),
        ..CalibSpec::default()
    }
}

#[test]
fn a_folder_of_png_and_jpeg_images_is_decoded_resized_and_preprocessed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("more")).unwrap();
    write_image(&root.join("a.png"), 40, 30, [255, 0, 0]);
    write_image(&root.join("b.JPG"), 30, 40, [0, 255, 0]);
    write_image(&root.join("more/c.jpeg"), 20, 20, [0, 0, 255]);
    write_image(&root.join("more/d.png"), 16, 16, [128, 128, 128]);
    std::fs::write(root.join("notes.txt"), "not an image").unwrap();

    let model = relu_model(&[-1, 3, 16, 16]);
    let spec = folder_spec(
        root,
        "scale=0.00392156862745098,layout=nhwc,resize=16,crop=16",
    );
    let images = Dataset::load(&spec, &model, &Default::default()).unwrap();
    assert_eq!(images.len(), 4);
    assert!(!images.augments(), "augmentation is asked for");
    assert!(
        images.source().contains("4 images, 1 other files skipped"),
        "{}",
        images.source()
    );
    let batch = images.all().unwrap();
    let pixels = &batch.arrays()[0];
    assert_eq!(pixels.shape(), &[4, 3, 16, 16]);
    // Paths sort as a.png, b.JPG, more/c.jpeg, more/d.png; JPEG is lossy.
    let expected = [
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0],
        [0.502, 0.502, 0.502],
    ];
    for (image, colour) in expected.iter().enumerate() {
        for (channel, &value) in colour.iter().enumerate() {
            let plane = pixels.index_axis(Axis(0), image);
            let plane = plane.index_axis(Axis(0), channel);
            assert!(
                plane.iter().all(|&v| (v - value).abs() < 0.05),
                "image {image} channel {channel}: {plane:?}"
            );
        }
    }

    let grey = Dataset::load(&spec, &relu_model(&[-1, 1, 16, 16]), &Default::default()).unwrap();
    assert_eq!(grey.batch(&[3]).unwrap()[0].shape(), &[1, 1, 16, 16]);
}

/// A folder of photos larger than a square input needs no more than a preset: images are
/// height × width × channels whatever the SPEC says of the layout, and are fitted by
/// torchvision's evaluation recipe (short side to 16 / 0.875 = 18, centre 16×16). Class
/// sub-folders are labels, numbered by sorted name; training crops are random, drawn from
/// the seed, the epoch and the sample, and never touch the held-out part.
#[test]
fn a_folder_of_larger_photos_is_fitted_labelled_by_class_folder_and_randomly_cropped() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for (class, files) in [("cat", 3), ("ant", 2)] {
        std::fs::create_dir(root.join(class)).unwrap();
        for i in 0..files {
            let path = root.join(class).join(format!("{i}.png"));
            let mut image = image::RgbImage::new(48, 32);
            for (x, _, pixel) in image.enumerate_pixels_mut() {
                *pixel = image::Rgb([(x * 5) as u8, 40 * i as u8, 0]);
            }
            image.save(path).unwrap();
        }
    }
    let model = relu_model(&[-1, 3, 16, 16]);
    let mut spec = folder_spec(root, "scale=0.00392156862745098,layout=nchw");
    spec.labels = Some("y".into());
    let images = Dataset::load(&spec, &model, &Default::default()).unwrap();
    assert_eq!(images.sample_dims(), [vec![3, 16, 16]]);
    assert_eq!(images.labels(), Some(vec![0, 0, 1, 1, 1]), "ant before cat");
    // The centre crop of the resized ramp: its columns rise left to right, red only.
    let fitted = images.batch(&[0]).unwrap().remove(0);
    assert!(fitted[[0, 0, 0, 0]] < fitted[[0, 0, 0, 15]]);
    assert!(fitted[[0, 0, 0, 0]] > 0.1, "the left edge is cropped away");

    let (train, held_out) = images.with_augment(true).unwrap().split(0.4, 1).unwrap();
    assert!(train.augments() && !held_out.augments());
    let crops = |epoch| train.training_batch(&[0, 1], epoch).unwrap().remove(0);
    assert_eq!(crops(0).shape(), &[2, 3, 16, 16]);
    assert_eq!(crops(0), crops(0), "the seed, epoch and sample fix a crop");
    assert_ne!(crops(0), crops(1), "each epoch draws new crops");
    assert_ne!(crops(0), train.batch(&[0, 1]).unwrap().remove(0));
    let held = held_out.training_batch(&[0], 0).unwrap();
    assert_eq!(
        held,
        held_out.batch(&[0]).unwrap(),
        "held-out samples are never cropped"
    );

    let no_labels = Dataset::load(
        &folder_spec(&root.join("cat"), "imagenet"),
        &model,
        &Default::default(),
    )
    .unwrap();
    assert_eq!(no_labels.labels(), None);
    let mut flat = folder_spec(&root.join("cat"), "imagenet");
    flat.labels = Some("y".into());
    let err = load_error(&flat, &model);
    assert!(
        err.contains("0.png") && err.contains("class sub-folders"),
        "{err}"
    );
}

#[test]
fn image_folder_errors_name_the_file_or_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let model = relu_model(&[-1, 3, 16, 16]);
    let fit = "layout=nhwc,resize=16,crop=16";

    std::fs::write(root.join("readme.txt"), "text").unwrap();
    let err = load_error(&folder_spec(root, fit), &model);
    assert!(
        err.contains("no .png, .jpg or .jpeg files among its 1 files"),
        "{err}"
    );

    write_image(&root.join("a.png"), 16, 16, [1, 2, 3]);
    write_image(&root.join("b.png"), 32, 16, [1, 2, 3]);
    let no_preprocess = CalibSpec {
        preprocess: None,
        ..folder_spec(root, fit)
    };
    assert!(load_error(&no_preprocess, &model).contains("needs a preprocessing SPEC"));
    let err = load_error(&folder_spec(root, "layout=nhwc,resize=8"), &model);
    assert!(
        err.contains("a.png")
            && err.contains("the image gives samples of [3, 8, 8], input 'image' is"),
        "{err}"
    );
    // Without a crop, the wide image comes out wider than the first: found when batched.
    let uncropped = Dataset::load(
        &folder_spec(root, "layout=nhwc,resize=16"),
        &model,
        &Default::default(),
    )
    .unwrap();
    let err = uncropped.all().unwrap_err().to_string();
    assert!(
        err.contains("b.png") && err.contains("every sample must come out the same size"),
        "{err}"
    );

    std::fs::write(root.join("c.jpg"), "not a jpeg").unwrap();
    let err = load_error(&folder_spec(root, fit), &model);
    assert!(
        err.contains("c.jpg") && err.contains("not a readable image"),
        "{err}"
    );
}

#[test]
fn verify_reads_the_keyed_and_indexed_rows_of_an_npz() {
    let (Some(data), Some(model)) = (
        common::shared("data/sklearn_digits_split.npz"),
        common::shared("models/digits_mlp_sklearn-digits_op13.onnx"),
    ) else {
        return;
    };
    let args = [
        "verify".as_ref(),
        model.as_os_str(),
        model.as_os_str(),
        "--inputs".as_ref(),
        data.as_os_str(),
        "--inputs-key".as_ref(),
        "x".as_ref(),
        "--inputs-index".as_ref(),
        "test_idx".as_ref(),
        "--json".as_ref(),
    ];
    let run = common::cli(&args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["samples"], 450);
}
