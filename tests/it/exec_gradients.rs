//! Every gradient of the executor (inputs, weights, gates) against central differences in
//! f64, per operator, on small random shapes with signed inputs kept away from kinks.

use ndarray::{ArrayD, IxDyn};
use onnx_shallow::calib::random::Rng;
use onnx_shallow::exec::{Executor, Gate, Params, Wanted};
use onnx_shallow::ir::builder::ModelBuilder;
use onnx_shallow::ir::{Attributes, Model, Tensor};

const STEP: f64 = 1e-5;

/// Standard-normal samples at least `margin` away from every kink.
fn sample(dims: &[usize], kinks: &[f64], rng: &mut Rng) -> ArrayD<f64> {
    ArrayD::from_shape_simple_fn(IxDyn(dims), || {
        loop {
            let v = rng.normal() * 1.5;
            if kinks.iter().all(|k| (v - k).abs() > 0.05) {
                return v;
            }
        }
    })
}

fn weight(dims: &[usize], rng: &mut Rng) -> Tensor {
    let values: Vec<f32> = (0..dims.iter().product())
        .map(|_| rng.normal() as f32)
        .collect();
    Tensor::from_f32(dims.to_vec(), &values)
}

fn positive(dims: &[usize], rng: &mut Rng) -> Tensor {
    let values: Vec<f32> = (0..dims.iter().product())
        .map(|_| 0.5 + rng.uniform() as f32)
        .collect();
    Tensor::from_f32(dims.to_vec(), &values)
}

fn ints(values: &[i64]) -> Tensor {
    Tensor::from_i64(vec![values.len()], values)
}

fn scalar(v: f32) -> Tensor {
    Tensor::from_f32(vec![], &[v])
}

fn attrs() -> Attributes {
    Attributes::default()
}

/// Checks ∂L/∂(every input, weight and α) for L = Σ r ⊙ outputs with random r.
struct Check {
    builder: ModelBuilder,
    feeds: Vec<(&'static str, ArrayD<f64>)>,
    gates: Vec<Gate>,
}

impl Check {
    fn new(opset: i64) -> Check {
        Check {
            builder: ModelBuilder::new(opset),
            feeds: Vec::new(),
            gates: Vec::new(),
        }
    }

    fn feed(mut self, name: &'static str, value: ArrayD<f64>) -> Check {
        let dims: Vec<i64> = value.shape().iter().map(|&d| d as i64).collect();
        self.builder = self.builder.input(name, &dims);
        self.feeds.push((name, value));
        self
    }

    fn init(mut self, name: &str, tensor: Tensor) -> Check {
        self.builder = self.builder.initializer(name, tensor);
        self
    }

    fn node(mut self, op: &str, inputs: &[&str], output: &str, attributes: Attributes) -> Check {
        self.builder = self.builder.node(op, inputs, &[output], attributes);
        self
    }

    fn gate(mut self, input: &str, output: &str, group: usize) -> Check {
        self.gates.push(Gate {
            input: input.into(),
            output: output.into(),
            group,
        });
        self
    }

    fn run(self, output: &str) {
        let model = Model::from_proto(self.builder.output(output).build()).unwrap();
        let names: Vec<String> = self.feeds.iter().map(|(n, _)| n.to_string()).collect();
        let exec = Executor::new(&model.graph, &names, &[output.to_string()], self.gates).unwrap();
        let mut params = Params::<f64>::new(&exec, &model.graph).unwrap();
        params
            .alpha
            .iter_mut()
            .enumerate()
            .for_each(|(i, a)| *a = 0.2 + 0.1 * i as f64);
        let feeds: Vec<ArrayD<f64>> = self.feeds.into_iter().map(|(_, v)| v).collect();
        let run = exec.forward(&feeds, &params, true).unwrap();
        let r = sample(run.outputs[0].shape(), &[], &mut Rng::new(99));
        let want = Wanted {
            weights: true,
            inputs: true,
        };
        let grads = exec
            .backward(&run, std::slice::from_ref(&r), &params, want)
            .unwrap();
        let loss = |feeds: &[ArrayD<f64>], params: &Params<f64>| {
            (&exec.forward(feeds, params, false).unwrap().outputs[0] * &r).sum()
        };
        let central = |f: &mut dyn FnMut(f64) -> f64| (f(STEP) - f(-STEP)) / (2.0 * STEP);
        let close = |analytic: f64, numeric: f64, what: &str| {
            let tol = 1e-6 * (1.0 + numeric.abs());
            assert!(
                (analytic - numeric).abs() <= tol,
                "{what}: analytic {analytic}, numeric {numeric}"
            );
        };
        for k in 0..feeds.len() {
            for i in 0..feeds[k].len() {
                let numeric = central(&mut |h| {
                    let mut moved = feeds.clone();
                    moved[k].as_slice_mut().unwrap()[i] += h;
                    loss(&moved, &params)
                });
                close(
                    grads.inputs[k].as_slice().unwrap()[i],
                    numeric,
                    &format!("input {k}[{i}]"),
                );
            }
        }
        let names: Vec<String> = params.weights.keys().cloned().collect();
        for name in &names {
            for i in 0..params.weights[name].len() {
                let numeric = central(&mut |h| {
                    let mut moved = params.clone();
                    moved.weights.get_mut(name).unwrap().as_slice_mut().unwrap()[i] += h;
                    loss(&feeds, &moved)
                });
                close(
                    grads.weights[name].as_slice().unwrap()[i],
                    numeric,
                    &format!("weight {name}[{i}]"),
                );
            }
        }
        for g in 0..params.alpha.len() {
            let numeric = central(&mut |h| {
                let mut moved = params.clone();
                moved.alpha[g] += h;
                loss(&feeds, &moved)
            });
            close(grads.alpha[g], numeric, &format!("alpha {g}"));
        }
    }
}

fn conv_attrs(strides: &[i64], pads: &[i64], dilations: &[i64], group: i64) -> Attributes {
    attrs()
        .with_ints("strides", strides)
        .with_ints("pads", pads)
        .with_ints("dilations", dilations)
        .with_int("group", group)
}

#[test]
fn conv_dense_strided_dilated_asymmetric_pads() {
    let rng = &mut Rng::new(1);
    // Five samples: weight gradients are summed over runs of four, then added.
    Check::new(13)
        .feed("x", sample(&[5, 3, 7, 6], &[], rng))
        .init("w", weight(&[4, 3, 3, 2], rng))
        .init("b", weight(&[4], rng))
        .node(
            "Conv",
            &["x", "w", "b"],
            "y",
            conv_attrs(&[2, 1], &[1, 0, 2, 1], &[2, 1], 1),
        )
        .run("y");
}

#[test]
fn conv_grouped_depthwise_pointwise_and_1d() {
    let rng = &mut Rng::new(2);
    Check::new(13)
        .feed("x", sample(&[2, 4, 5, 5], &[], rng))
        .init("w", weight(&[6, 2, 3, 3], rng))
        .node(
            "Conv",
            &["x", "w"],
            "y",
            conv_attrs(&[1, 1], &[1, 1, 1, 1], &[1, 1], 2),
        )
        .run("y");
    Check::new(13)
        .feed("x", sample(&[6, 3, 6, 7], &[], rng))
        .init("w", weight(&[6, 1, 3, 3], rng))
        .init("b", weight(&[6], rng))
        .node(
            "Conv",
            &["x", "w", "b"],
            "y",
            conv_attrs(&[2, 2], &[1, 1, 1, 0], &[1, 1], 3),
        )
        .run("y");
    Check::new(13)
        .feed("x", sample(&[9, 3, 4, 4], &[], rng))
        .init("w", weight(&[5, 3, 1, 1], rng))
        .node("Conv", &["x", "w"], "y", attrs())
        .run("y");
    Check::new(13)
        .feed("x", sample(&[2, 2, 9], &[], rng))
        .init("w", weight(&[3, 2, 3], rng))
        .node("Conv", &["x", "w"], "y", conv_attrs(&[2], &[1, 1], &[1], 1))
        .run("y");
}

#[test]
fn gemm_and_matmul() {
    let rng = &mut Rng::new(3);
    let gemm = attrs()
        .with_int("transA", 1)
        .with_int("transB", 1)
        .with_float("alpha", 0.7)
        .with_float("beta", 1.3);
    Check::new(13)
        .feed("a", sample(&[4, 3], &[], rng))
        .init("b", weight(&[5, 4], rng))
        .init("c", weight(&[5], rng))
        .node("Gemm", &["a", "b", "c"], "y", gemm)
        .run("y");
    Check::new(13)
        .feed("a", sample(&[2, 3, 4], &[], rng))
        .feed("b", sample(&[4, 5], &[], rng))
        .node("MatMul", &["a", "b"], "y", attrs())
        .run("y");
    Check::new(13)
        .feed("a", sample(&[4], &[], rng))
        .init("b", weight(&[2, 4, 3], rng))
        .node("MatMul", &["a", "b"], "y", attrs())
        .run("y");
}

#[test]
fn broadcasting_arithmetic() {
    let rng = &mut Rng::new(4);
    for op in ["Add", "Sub", "Mul", "Div"] {
        Check::new(13)
            .feed("a", sample(&[2, 3, 4], &[], rng))
            .init("w", positive(&[3, 1], rng))
            .node(op, &["a", "w"], "y", attrs())
            .run("y");
        Check::new(13)
            .init("w", weight(&[4], rng))
            .feed("b", sample(&[2, 3, 1], &[-0.5, 0.0, 0.5], rng))
            .node(op, &["w", "b"], "y", attrs())
            .run("y");
    }
}

#[test]
fn batch_normalization() {
    let rng = &mut Rng::new(5);
    Check::new(13)
        .feed("x", sample(&[2, 3, 2, 3], &[], rng))
        .init("scale", weight(&[3], rng))
        .init("bias", weight(&[3], rng))
        .init("mean", weight(&[3], rng))
        .init("var", positive(&[3], rng))
        .node(
            "BatchNormalization",
            &["x", "scale", "bias", "mean", "var"],
            "y",
            attrs().with_float("epsilon", 1e-3),
        )
        .run("y");
}

/// Each activation applied to the input, gated, with inputs away from its kinks.
#[test]
fn gated_activations() {
    let rng = &mut Rng::new(6);
    let cases: Vec<(&str, Attributes, &[f64])> = vec![
        ("Relu", attrs(), &[0.0]),
        ("LeakyRelu", attrs().with_float("alpha", 0.1), &[0.0]),
        (
            "HardSigmoid",
            attrs().with_float("alpha", 0.3).with_float("beta", 0.4),
            &[-4.0 / 3.0, 2.0],
        ),
        ("HardSwish", attrs(), &[-3.0, 3.0]),
        ("Sigmoid", attrs(), &[]),
        ("Tanh", attrs(), &[]),
    ];
    for (op, a, kinks) in cases {
        Check::new(14)
            .feed("x", sample(&[2, 3, 4], kinks, rng))
            .node(op, &["x"], "y", a)
            .gate("x", "y", 0)
            .run("y");
    }
    Check::new(13)
        .feed("x", sample(&[2, 3, 4], &[-0.5, 0.7], rng))
        .init("lo", scalar(-0.5))
        .init("hi", scalar(0.7))
        .node("Clip", &["x", "lo", "hi"], "y", attrs())
        .gate("x", "y", 0)
        .run("y");
    Check::new(13)
        .feed("x", sample(&[2, 3, 2, 2], &[0.0], rng))
        .init("slope", weight(&[3, 1, 1], rng))
        .node("PRelu", &["x", "slope"], "y", attrs())
        .gate("x", "y", 0)
        .run("y");
}

/// A HardSwish written as Add/Clip/Mul/Div gated at its boundary, between two convs, with
/// two gate groups: gate gradients flow through weights and other gates.
#[test]
fn gates_on_multi_node_activations_inside_a_network() {
    let rng = &mut Rng::new(7);
    Check::new(13)
        .feed("x", sample(&[2, 2, 4, 4], &[-3.0, 3.0], rng))
        .init("three", scalar(3.0))
        .init("zero", scalar(0.0))
        .init("six", scalar(6.0))
        .init("w", weight(&[3, 2, 3, 3], rng))
        .node("Add", &["x", "three"], "s", attrs())
        .node("Clip", &["s", "zero", "six"], "c", attrs())
        .node("Mul", &["x", "c"], "m", attrs())
        .node("Div", &["m", "six"], "h", attrs())
        .node(
            "Conv",
            &["h", "w"],
            "z",
            conv_attrs(&[1, 1], &[1, 1, 1, 1], &[1, 1], 1),
        )
        .node("Tanh", &["z"], "t", attrs())
        .node("GlobalAveragePool", &["t"], "y", attrs())
        .gate("x", "h", 0)
        .gate("z", "t", 1)
        .run("y");
}

#[test]
fn softmax_current_and_legacy_axis() {
    let rng = &mut Rng::new(8);
    Check::new(13)
        .feed("x", sample(&[2, 3, 4], &[], rng))
        .node("Softmax", &["x"], "y", attrs().with_int("axis", 1))
        .run("y");
    Check::new(11)
        .feed("x", sample(&[2, 3, 4], &[], rng))
        .node("Softmax", &["x"], "y", attrs().with_int("axis", 1))
        .run("y");
}

#[test]
fn pools() {
    let rng = &mut Rng::new(9);
    let window = |ceil: i64| {
        attrs()
            .with_ints("kernel_shape", &[3, 2])
            .with_ints("strides", &[2, 2])
            .with_ints("pads", &[1, 0, 1, 1])
            .with_int("ceil_mode", ceil)
    };
    for ceil in [0, 1] {
        Check::new(13)
            .feed("x", sample(&[2, 2, 6, 5], &[], rng))
            .node("MaxPool", &["x"], "y", window(ceil))
            .run("y");
        for count_pad in [0, 1] {
            Check::new(13)
                .feed("x", sample(&[2, 2, 6, 5], &[], rng))
                .node(
                    "AveragePool",
                    &["x"],
                    "y",
                    window(ceil).with_int("count_include_pad", count_pad),
                )
                .run("y");
        }
    }
    Check::new(13)
        .feed("x", sample(&[2, 3, 3, 4], &[], rng))
        .node("GlobalAveragePool", &["x"], "y", attrs())
        .run("y");
    Check::new(18)
        .feed("x", sample(&[2, 3, 4], &[], rng))
        .init("axes", ints(&[-1, 1]))
        .node(
            "ReduceMean",
            &["x", "axes"],
            "y",
            attrs().with_int("keepdims", 0),
        )
        .run("y");
}

#[test]
fn shape_ops() {
    let rng = &mut Rng::new(10);
    let x = || sample(&[2, 3, 1, 4], &[], &mut Rng::new(11));
    Check::new(13)
        .feed("x", x())
        .node("Flatten", &["x"], "y", attrs().with_int("axis", 2))
        .run("y");
    Check::new(13)
        .feed("x", x())
        .init("shape", ints(&[0, -1, 2]))
        .node("Reshape", &["x", "shape"], "y", attrs())
        .run("y");
    Check::new(13)
        .feed("x", x())
        .init("axes", ints(&[2]))
        .node("Squeeze", &["x", "axes"], "y", attrs())
        .run("y");
    Check::new(13)
        .feed("x", x())
        .init("axes", ints(&[0, -1]))
        .node("Unsqueeze", &["x", "axes"], "y", attrs())
        .run("y");
    Check::new(13)
        .feed("x", x())
        .node(
            "Transpose",
            &["x"],
            "y",
            attrs().with_ints("perm", &[3, 0, 2, 1]),
        )
        .run("y");
    Check::new(13)
        .feed("a", x())
        .init("b", weight(&[2, 2, 1, 4], rng))
        .node("Concat", &["a", "b"], "y", attrs().with_int("axis", 1))
        .run("y");
    for mode in ["constant", "reflect", "edge", "wrap"] {
        Check::new(13)
            .feed("x", x())
            .init("pads", ints(&[0, 1, 0, 2, 0, 2, 1, 1]))
            .init("value", scalar(0.5))
            .node(
                "Pad",
                &["x", "pads", "value"],
                "y",
                attrs().with_string("mode", mode),
            )
            .run("y");
    }
}

#[test]
fn gate_gradients_skip_weights_when_not_wanted() {
    let rng = &mut Rng::new(12);
    let model = Model::from_proto(
        ModelBuilder::new(13)
            .input("x", &[-1, 2, 3, 3])
            .initializer("w", weight(&[2, 2, 1, 1], rng))
            .node("Conv", &["x", "w"], &["z"], attrs())
            .node("Sigmoid", &["z"], &["y"], attrs())
            .output("y")
            .build(),
    )
    .unwrap();
    let gate = Gate {
        input: "z".into(),
        output: "y".into(),
        group: 0,
    };
    let exec = Executor::new(&model.graph, &["x".into()], &["y".into()], vec![gate]).unwrap();
    let params = Params::<f64>::new(&exec, &model.graph).unwrap();
    let run = exec
        .forward(&[sample(&[2, 2, 3, 3], &[], rng)], &params, true)
        .unwrap();
    let r = sample(&[2, 2, 3, 3], &[], rng);
    let all = exec
        .backward(
            &run,
            std::slice::from_ref(&r),
            &params,
            Wanted {
                weights: true,
                inputs: true,
            },
        )
        .unwrap();
    let gates_only = exec
        .backward(&run, &[r], &params, Wanted::default())
        .unwrap();
    assert_eq!(gates_only.alpha, all.alpha);
    assert_ne!(all.alpha[0], 0.0);
    assert!(gates_only.weights.is_empty() && gates_only.inputs.is_empty());
    assert_eq!(all.weights.len(), 1);
}

#[test]
fn an_unsupported_operator_in_the_region_is_an_error_naming_the_node() {
    let model = Model::from_proto(
        ModelBuilder::new(13)
            .input("x", &[-1, 4])
            .node("Relu", &["x"], &["r"], attrs())
            .node("Erf", &["r"], &["y"], attrs())
            .output("y")
            .build(),
    )
    .unwrap();
    let err = Executor::new(&model.graph, &["x".into()], &["y".into()], Vec::new()).unwrap_err();
    assert!(err.to_string().contains("Erf_1"), "{err}");
    // The region before it runs.
    assert!(Executor::new(&model.graph, &["x".into()], &["r".into()], Vec::new()).is_ok());
}
