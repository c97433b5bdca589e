//! `optimize --plot` renders in a browser: headless Chromium screenshots the SVG, and the
//! screenshot shows the walk's line and the ring around the chosen step. Skipped, with a
//! message, where no `chromium` is installed (Debian's package), unless
//! `ONNX_SHALLOW_REQUIRE_CHROMIUM` is set, as in CI.

use crate::common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

#[test]
fn the_walk_plot_renders_with_its_line_and_chosen_point() {
    if Command::new("chromium").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("ONNX_SHALLOW_REQUIRE_CHROMIUM").is_none(),
            "ONNX_SHALLOW_REQUIRE_CHROMIUM is set but `chromium` does not run"
        );
        eprintln!("skipped: no `chromium` to render the plot with (apt-get install chromium)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (out, svg) = (dir.path().join("out.onnx"), dir.path().join("walk.svg"));
    let run = common::optimize_digits_calib(&out, &["--plot".as_ref(), svg.as_os_str()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let shot = screenshot(&svg, &dir.path().join("walk.png"));
    let pixels = |colour: [u8; 3]| {
        shot.pixels()
            .filter(|p| p.0.iter().zip(colour).all(|(&a, b)| a.abs_diff(b) < 40))
            .count()
    };
    assert!(pixels([0x44, 0x77, 0xaa]) > 200, "the walk's line is drawn");
    assert!(
        pixels([0xcc, 0x33, 0x11]) > 100,
        "the chosen step is ringed"
    );
    assert!(
        pixels([0x22, 0x88, 0x33]) > 20,
        "steps within budget are filled"
    );
}

fn screenshot(svg: &Path, png: &Path) -> image::RgbImage {
    let url = format!("file://{}", svg.display());
    let status = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=660,440",
        ])
        .arg(OsStr::new(&format!("--screenshot={}", png.display())))
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        png.exists(),
        "chromium wrote no screenshot: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    image::open(png).unwrap().to_rgb8()
}
