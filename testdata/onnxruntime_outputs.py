"""Writes onnxruntime_outputs.npz: what ONNX Runtime's own Python package computes for
models and inputs of this folder, the reference `tests/onnxruntime.rs` holds the `ort`
engine to. Run it from this folder with the pinned wheel (`.ci/run` installs it):

    python onnxruntime_outputs.py   # needs ../../shared/data/ for the PP-OCR inputs
"""

import numpy as np
import onnxruntime

PPOCR_SAMPLES = 8


def run(model, inputs):
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        model, options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, inputs)[0]


digits = np.load("digits_test64.npz")["input"]
textlines = np.load("../../shared/data/textline_0_180_page.npz")["x"][:PPOCR_SAMPLES]
np.savez(
    "onnxruntime_outputs.npz",
    digits_mobilenetish=run("digits_mobilenetish.onnx", {"input": digits}),
    ppocr_textline_cls=run("ppocr_textline_cls.onnx", {"x": textlines}),
    onnxruntime_version=np.array(onnxruntime.__version__),
)
