//! A folder of PNG and JPEG images as calibration samples. The folder is listed and every
//! image's header checked when it is opened; pixels are decoded and preprocessed batch by
//! batch, so a large folder is never held decoded in memory.
//!
//! Each image is read as one uint8 NHWC sample, RGB (grey when the model's input has one
//! channel), exactly like a row of a uint8 image array, so the same preprocessing SPEC
//! applies to both. Files named other than `.png`, `.jpg` or `.jpeg` are skipped and
//! counted; a file named so that is not a readable PNG or JPEG is an error naming it.

use std::path::{Path, PathBuf};

use image::{ImageFormat, ImageReader};
use ndarray::{ArrayD, IxDyn};

use crate::error::{Error, Result};
use crate::ir::shape::ValueType;

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

pub(crate) struct ImageFolder {
    root: PathBuf,
    files: Vec<PathBuf>,
    skipped: usize,
    grey: bool,
}

impl ImageFolder {
    /// Lists and checks the images under `root` (subfolders included, in path order);
    /// `grey` reads them with one channel.
    pub(crate) fn open(root: &Path, grey: bool) -> Result<ImageFolder> {
        let mut entries = Vec::new();
        list_files(root, &mut entries)?;
        let total = entries.len();
        let files: Vec<PathBuf> = entries.into_iter().filter(|f| is_image(f)).collect();
        if files.is_empty() {
            return Err(Error::Data {
                path: root.to_path_buf(),
                reason: format!("no .png, .jpg or .jpeg files among its {total} files"),
            });
        }
        files.iter().try_for_each(|file| check_header(file))?;
        Ok(ImageFolder {
            root: root.to_path_buf(),
            skipped: total - files.len(),
            files,
            grey,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.files.len()
    }

    pub(crate) fn file(&self, row: usize) -> &Path {
        &self.files[row]
    }

    pub(crate) fn describe(&self) -> String {
        let skipped = match self.skipped {
            0 => String::new(),
            n => format!(", {n} other files skipped"),
        };
        format!(
            "{}: {} images{skipped}",
            self.root.display(),
            self.files.len()
        )
    }

    /// Each image's class, as torchvision's `ImageFolder` numbers them: the position of
    /// its first-level sub-folder among the sub-folders, sorted by name.
    pub(crate) fn classes(&self) -> Result<Vec<i64>> {
        let folder_of = |file: &PathBuf| -> Option<String> {
            let relative = file.strip_prefix(&self.root).ok()?;
            let mut parts = relative.components();
            let first = parts.next()?.as_os_str().to_string_lossy().into_owned();
            parts.next().map(|_| first)
        };
        let folders: Vec<Option<String>> = self.files.iter().map(folder_of).collect();
        if let Some(row) = folders.iter().position(Option::is_none) {
            return Err(Error::Data {
                path: self.files[row].clone(),
                reason: "labels come from class sub-folders, and this image is in none".into(),
            });
        }
        let mut names: Vec<&String> = folders.iter().flatten().collect();
        names.sort();
        names.dedup();
        Ok(folders
            .iter()
            .flatten()
            .map(|f| names.binary_search(&f).expect("listed above") as i64)
            .collect())
    }

    /// One image as stored: `[1, height, width, channels]`, RGB or grey, 0–255.
    pub(crate) fn decode(&self, row: usize) -> Result<ArrayD<f32>> {
        let file = &self.files[row];
        let error = |reason: String| Error::Data {
            path: file.to_path_buf(),
            reason,
        };
        let image = ImageReader::open(file)
            .map_err(|e| Error::io(file, e))?
            .with_guessed_format()
            .map_err(|e| Error::io(file, e))?
            .decode()
            .map_err(|e| error(format!("cannot decode: {e}")))?;
        let (width, height) = (image.width() as usize, image.height() as usize);
        let (pixels, channels) = match self.grey {
            true => (image.into_luma8().into_raw(), 1),
            false => (image.into_rgb8().into_raw(), 3),
        };
        ArrayD::from_shape_vec(
            IxDyn(&[1, height, width, channels]),
            pixels.into_iter().map(f32::from).collect(),
        )
        .map_err(|e| error(e.to_string()))
    }
}

/// Every file under `dir`, recursively, in path order.
fn list_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries = std::fs::read_dir(dir)
        .and_then(|entries| {
            entries
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| Error::io(dir, e))?;
    entries.sort();
    for path in entries {
        match path.is_dir() {
            true => list_files(&path, files)?,
            false => files.push(path),
        }
    }
    Ok(())
}

fn is_image(file: &Path) -> bool {
    file.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Reads just enough of a file to know it is a PNG or JPEG and its size.
fn check_header(file: &Path) -> Result<()> {
    let reader = ImageReader::open(file)
        .and_then(ImageReader::with_guessed_format)
        .map_err(|e| Error::io(file, e))?;
    let error = |reason: String| Error::Data {
        path: file.to_path_buf(),
        reason,
    };
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg) => reader
            .into_dimensions()
            .map(|_| ())
            .map_err(|e| error(format!("not a readable image: {e}"))),
        _ => Err(error("named as an image but not a PNG or JPEG".into())),
    }
}

/// An NCHW or NHWC image input with one channel: read images as grey.
pub(crate) fn has_one_channel(declared: &ValueType) -> bool {
    let channel = |axis| declared.dim(axis) == Some(1);
    declared.rank() == Some(4) && (channel(1) || channel(3))
}
