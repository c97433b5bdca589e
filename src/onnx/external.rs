//! External tensor data: reading it in on load, writing it out on save.
//!
//! A model may keep tensor bytes in files beside it (`location`, `offset`, `length`).
//! Those files are untrusted input: a location must stay inside the model's folder
//! (no absolute path, no `..`, no symlink leading out), and the byte range must lie
//! inside the file.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use super::pb;
use super::pb::tensor_proto::DataLocation;
use crate::error::{Error, Result};

/// Replaces every external tensor reference by its bytes (`raw_data`).
pub(super) fn resolve(
    model: &mut pb::ModelProto,
    origin: &Path,
    base_dir: Option<&Path>,
) -> Result<()> {
    super::for_each_tensor_mut(model, &mut |tensor| {
        if tensor.data_location() != DataLocation::External {
            return Ok(());
        }
        let base_dir = base_dir.ok_or_else(|| Error::ExternalData {
            path: origin.to_path_buf(),
            reason: format!(
                "tensor '{}' has external data but the model was not read from a file",
                tensor.name()
            ),
        })?;
        let bytes = read_external(tensor, base_dir)?;
        tensor.raw_data = Some(bytes.into());
        tensor.external_data.clear();
        tensor.data_location = None;
        Ok(())
    })
}

struct ExternalRef {
    location: String,
    offset: u64,
    length: Option<u64>,
}

fn external_ref(tensor: &pb::TensorProto, base_dir: &Path) -> Result<ExternalRef> {
    let error = |reason: String| Error::ExternalData {
        path: base_dir.to_path_buf(),
        reason,
    };
    let mut location = None;
    let mut offset = 0;
    let mut length = None;
    for entry in &tensor.external_data {
        let parse = |v: &str| {
            v.parse::<u64>().map_err(|_| {
                error(format!(
                    "tensor '{}': external data {} '{v}' is not a number",
                    tensor.name(),
                    entry.key()
                ))
            })
        };
        match entry.key() {
            "location" => location = Some(entry.value().to_string()),
            "offset" => offset = parse(entry.value())?,
            "length" => length = Some(parse(entry.value())?),
            _ => {}
        }
    }
    let location = location.ok_or_else(|| {
        error(format!(
            "tensor '{}': external data without a location",
            tensor.name()
        ))
    })?;
    Ok(ExternalRef {
        location,
        offset,
        length,
    })
}

/// Resolves `location` inside `base_dir`, refusing any path that leads out of it.
pub(crate) fn confined_path(base_dir: &Path, location: &str, tensor: &str) -> Result<PathBuf> {
    let error = |reason: String| Error::ExternalData {
        path: base_dir.join(location),
        reason,
    };
    let relative = Path::new(location);
    if location.is_empty()
        || relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(error(format!(
            "tensor '{tensor}': external data location '{location}' must be a relative path inside the model's folder"
        )));
    }
    let base = base_dir
        .canonicalize()
        .map_err(|e| Error::io(base_dir, e))?;
    let path = base.join(relative);
    let resolved = path.canonicalize().map_err(|e| Error::io(&path, e))?;
    if !resolved.starts_with(&base) {
        return Err(error(format!(
            "tensor '{tensor}': external data location '{location}' leads outside the model's folder (to {})",
            resolved.display()
        )));
    }
    Ok(resolved)
}

fn read_external(tensor: &pb::TensorProto, base_dir: &Path) -> Result<Vec<u8>> {
    let ext = external_ref(tensor, base_dir)?;
    let path = confined_path(base_dir, &ext.location, tensor.name())?;
    let mut file = File::open(&path).map_err(|e| Error::io(&path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
    let length = ext.length.unwrap_or(file_len.saturating_sub(ext.offset));
    let end = ext
        .offset
        .checked_add(length)
        .filter(|&end| end <= file_len)
        .ok_or_else(|| Error::ExternalData {
            path: path.clone(),
            reason: format!(
                "tensor '{}': bytes {}..{} lie beyond the end of the file ({file_len} bytes)",
                tensor.name(),
                ext.offset,
                ext.offset as u128 + length as u128
            ),
        })?;
    file.seek(SeekFrom::Start(ext.offset))
        .map_err(|e| Error::io(&path, e))?;
    let mut bytes = Vec::with_capacity((end - ext.offset) as usize);
    file.take(length)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(&path, e))?;
    Ok(bytes)
}

/// Moves the bytes of every tensor of at least `min_bytes` into `data_file` (a name
/// relative to the model's folder), appending them to `sink` with 4 KiB alignment.
pub(super) fn externalize(
    model: &mut pb::ModelProto,
    data_file: &str,
    min_bytes: usize,
    sink: &mut Vec<u8>,
) -> Result<()> {
    super::for_each_tensor_mut(model, &mut |tensor| {
        let Some(raw) = tensor
            .raw_data
            .as_ref()
            .filter(|raw| raw.len() >= min_bytes)
        else {
            return Ok(());
        };
        let offset = sink.len().next_multiple_of(4096);
        sink.resize(offset, 0);
        sink.extend_from_slice(raw);
        let entry = |key: &str, value: String| pb::StringStringEntryProto {
            key: Some(key.into()),
            value: Some(value),
        };
        tensor.external_data = vec![
            entry("location", data_file.to_string()),
            entry("offset", offset.to_string()),
            entry("length", raw.len().to_string()),
        ];
        tensor.raw_data = None;
        tensor.data_location = Some(DataLocation::External as i32);
        Ok(())
    })
}
