//! Atomic saving: every file is written beside its target under a temporary name and
//! renamed into place only once complete, so a failure never leaves a partial file.

use std::io::Write;
use std::path::{Path, PathBuf};

use prost::Message;

use super::pb;
use crate::error::{Error, Result};

/// Protobuf's hard limit for one message.
const PROTOBUF_LIMIT: usize = i32::MAX as usize;

#[derive(Clone, Debug)]
pub struct SaveOptions {
    /// Always move tensors to `<model file name>.data` beside the model.
    pub external_data: bool,
    /// Above this encoded size the tensors go to external data anyway.
    pub size_limit: usize,
    /// Tensors smaller than this stay inline when external data is written.
    pub external_min_bytes: usize,
}

impl Default for SaveOptions {
    fn default() -> Self {
        SaveOptions {
            external_data: false,
            size_limit: PROTOBUF_LIMIT,
            external_min_bytes: 1024,
        }
    }
}

/// Writes `model` to `path` atomically, with external data when asked or needed.
pub fn save(model: &pb::ModelProto, path: &Path, options: &SaveOptions) -> Result<()> {
    if !options.external_data && model.encoded_len() <= options.size_limit {
        return write_atomically(path, &model.encode_to_vec());
    }
    let data_name = format!("{}.data", file_name(path)?);
    let mut model = model.clone();
    let mut data = Vec::new();
    super::external::externalize(
        &mut model,
        &data_name,
        options.external_min_bytes,
        &mut data,
    )?;
    let bytes = model.encode_to_vec();
    if bytes.len() > PROTOBUF_LIMIT {
        return Err(Error::io(
            path,
            std::io::Error::other("the model is over 2 GiB even with its tensors in external data"),
        ));
    }
    let data_path = path.with_file_name(&data_name);
    let data_tmp = write_temporary(&data_path, &data)?;
    let model_tmp = match write_temporary(path, &bytes) {
        Ok(tmp) => tmp,
        Err(e) => {
            let _ = std::fs::remove_file(&data_tmp);
            return Err(e);
        }
    };
    rename_into_place(&data_tmp, &data_path).inspect_err(|_| {
        let _ = std::fs::remove_file(&model_tmp);
    })?;
    rename_into_place(&model_tmp, path)
}

/// True when both paths name the same existing file (through links or `..` too).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::io(path, std::io::Error::other("not a file name")))
}

/// Writes `bytes` to `path` through a temporary file beside it, renamed into place.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = write_temporary(path, bytes)?;
    rename_into_place(&tmp, path)
}

fn write_temporary(path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let tmp = path.with_file_name(format!(".{}.tmp-{}", file_name(path)?, std::process::id()));
    let written = std::fs::File::create(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    match written {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(Error::io(path, e))
        }
    }
}

fn rename_into_place(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::rename(tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(tmp);
        Error::io(path, e)
    })
}
