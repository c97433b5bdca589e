//! NumPy `.npy` arrays and `.npz` archives of them, read as f32.
//!
//! Format versions 1.0, 2.0 and 3.0; little-endian numeric and boolean dtypes in C order.
//! Every malformed file is an [`Error::Data`] naming the file (and, in an archive, the
//! array). The data is read as it arrives, never into a buffer of the size a header
//! claims, so a lying header cannot make us allocate what the file does not hold.
//!
//! Large arrays are read a few rows at a time ([`MappedArray`]): a `.npy` file, or an
//! `.npz` member stored uncompressed (`np.savez`), is memory-mapped where it lies; a
//! compressed member (`np.savez_compressed`) is inflated once into an unnamed temporary
//! file and mapped there. Either way its rows live in the page cache, not on the heap.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use ndarray::{ArrayD, IxDyn};

use crate::error::{Error, Result};

const MAGIC: &[u8] = b"\x93NUMPY";

/// The element type an array was stored with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F16,
    F32,
    F64,
    U8,
    I8,
    I16,
    I32,
    I64,
    Bool,
}

impl Dtype {
    /// The dtype of a header's `descr` (`<f4`, `|u1`, …).
    fn from_descr(descr: &str) -> Result<Dtype, String> {
        use Dtype::*;
        let unsupported = || format!("unsupported dtype '{descr}'");
        let (byte_order, code) = descr.split_at_checked(1).ok_or_else(unsupported)?;
        let dtype = match code {
            "f2" => F16,
            "f4" => F32,
            "f8" => F64,
            "u1" => U8,
            "i1" => I8,
            "i2" => I16,
            "i4" => I32,
            "i8" => I64,
            "b1" => Bool,
            _ => return Err(unsupported()),
        };
        match (byte_order, dtype.size()) {
            ("<", _) | ("|" | ">", 1) => Ok(dtype),
            (">", _) => Err(format!("big-endian dtype '{descr}' is not supported")),
            _ => Err(unsupported()),
        }
    }

    fn size(self) -> usize {
        use Dtype::*;
        match self {
            U8 | I8 | Bool => 1,
            F16 | I16 => 2,
            F32 | I32 => 4,
            F64 | I64 => 8,
        }
    }

    /// Decodes little-endian elements to f32.
    fn decode(self, bytes: &[u8]) -> Vec<f32> {
        use Dtype::*;
        match self {
            F16 => elements(bytes, |b| half::f16::from_le_bytes(b).to_f32()),
            F32 => elements(bytes, f32::from_le_bytes),
            F64 => elements(bytes, |b| f64::from_le_bytes(b) as f32),
            U8 => elements(bytes, |[b]| b as f32),
            I8 => elements(bytes, |b| i8::from_le_bytes(b) as f32),
            I16 => elements(bytes, |b| i16::from_le_bytes(b) as f32),
            I32 => elements(bytes, |b| i32::from_le_bytes(b) as f32),
            I64 => elements(bytes, |b| i64::from_le_bytes(b) as f32),
            Bool => elements(bytes, |[b]| if b == 0 { 0.0 } else { 1.0 }),
        }
    }
}

fn elements<const N: usize>(bytes: &[u8], decode: impl Fn([u8; N]) -> f32) -> Vec<f32> {
    bytes
        .as_chunks::<N>()
        .0
        .iter()
        .map(|chunk| decode(*chunk))
        .collect()
}

/// An array read from a `.npy` file or an `.npz` member.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    pub values: ArrayD<f32>,
    /// The stored element type: preprocessing needs to know raw `uint8` pixels.
    pub dtype: Dtype,
}

/// Reads a `.npy` file.
pub fn read_npy(path: &Path) -> Result<NpyArray> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    read_array(BufReader::new(file)).map_err(|reason| Error::Data {
        path: path.to_path_buf(),
        reason,
    })
}

/// An open `.npz` archive; arrays are decoded one at a time, on demand.
pub struct Npz {
    path: PathBuf,
    archive: zip::ZipArchive<BufReader<File>>,
}

impl Npz {
    pub fn open(path: &Path) -> Result<Npz> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let archive = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| Error::Data {
            path: path.to_path_buf(),
            reason: format!("not an .npz (zip) archive: {e}"),
        })?;
        Ok(Npz {
            path: path.to_path_buf(),
            archive,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The names of the arrays, in archive order (without the `.npy` suffix).
    pub fn names(&self) -> Vec<String> {
        self.archive
            .file_names()
            .map(|name| name.strip_suffix(".npy").unwrap_or(name).to_string())
            .collect()
    }

    pub fn array(&mut self, name: &str) -> Result<NpyArray> {
        let index = self.index_of(name)?;
        let member = self.archive.by_index(index).map_err(|e| e.to_string());
        member
            .and_then(read_array)
            .map_err(|reason| self.error(name, reason))
    }

    fn index_of(&self, name: &str) -> Result<usize> {
        let found = self
            .archive
            .index_for_name(&format!("{name}.npy"))
            .or_else(|| self.archive.index_for_name(name));
        found.ok_or_else(|| {
            self.error(
                name,
                format!(
                    "no such array (the archive holds: {})",
                    self.names().join(", ")
                ),
            )
        })
    }

    fn error(&self, array: &str, reason: String) -> Error {
        Error::Data {
            path: self.path.clone(),
            reason: format!("array '{array}': {reason}"),
        }
    }
}

impl Npz {
    /// Array `name`, mapped rather than read (see [`MappedArray`]).
    pub fn mapped(&mut self, name: &str) -> Result<MappedArray> {
        let index = self.index_of(name)?;
        let path = self.path.clone();
        let mapped = match self.archive.by_index(index) {
            Err(e) => Err(Error::Data {
                path: path.clone(),
                reason: e.to_string(),
            }),
            Ok(member) if member.compression() == zip::CompressionMethod::Stored => {
                let start = member.data_start() as usize;
                drop(member);
                File::open(&path)
                    .map_err(|e| Error::io(&path, e))
                    .and_then(|file| map_file(&file, &path))
                    .and_then(|map| MappedArray::at(map, start, &path))
            }
            Ok(member) => {
                inflate_to_temporary(member, &path).and_then(|map| MappedArray::at(map, 0, &path))
            }
        };
        mapped.map_err(|e| match e {
            Error::Data { reason, .. } => self.error(name, reason),
            other => other,
        })
    }
}

/// Inflates an archive member into an unnamed temporary file and maps it.
fn inflate_to_temporary(mut member: impl Read, path: &Path) -> Result<Arc<Mmap>> {
    let mut file = tempfile::tempfile().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    io::copy(&mut member, &mut file).map_err(|e| Error::Data {
        path: path.to_path_buf(),
        reason: format!("cannot inflate: {e}"),
    })?;
    file.rewind().map_err(|e| Error::io(path, e))?;
    map_file(&file, path)
}

fn map_file(file: &File, path: &Path) -> Result<Arc<Mmap>> {
    // SAFETY: the map is only read; a file truncated under us by another process would
    // fault, as it would for any reader that trusts its input files to stay put.
    let map = unsafe { Mmap::map(file) }.map_err(|e| Error::io(path, e))?;
    Ok(Arc::new(map))
}

/// An array whose rows (slices along its first dim) are read on demand from a mapped
/// file: a data set larger than memory costs only the rows in use.
#[derive(Clone)]
pub struct MappedArray {
    map: Arc<Mmap>,
    /// Where the data starts in the map.
    data: usize,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

impl std::fmt::Debug for MappedArray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MappedArray({:?} {:?})", self.dtype, self.shape)
    }
}

impl MappedArray {
    /// Maps a `.npy` file.
    pub fn open_npy(path: &Path) -> Result<MappedArray> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        MappedArray::at(map_file(&file, path)?, 0, path)
    }

    /// The `.npy` stream at `offset` of `map`; its data must be all there.
    fn at(map: Arc<Mmap>, offset: usize, path: &Path) -> Result<MappedArray> {
        let error = |reason: String| Error::Data {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = map.get(offset..).unwrap_or_default();
        let (header, header_len) = read_header(bytes).map_err(error)?;
        let needed = header.data_len().map_err(error)?;
        if header.shape.is_empty() {
            return Err(error("a scalar has no rows".into()));
        }
        if bytes.len() - header_len < needed {
            return Err(error(format!(
                "truncated data: shape {:?} of {:?} needs {needed} bytes, the file holds {}",
                header.shape,
                header.dtype,
                bytes.len() - header_len
            )));
        }
        Ok(MappedArray {
            map,
            data: offset + header_len,
            dtype: header.dtype,
            shape: header.shape,
        })
    }

    pub fn rows(&self) -> usize {
        self.shape[0]
    }

    fn row_bytes(&self) -> usize {
        self.shape[1..].iter().product::<usize>() * self.dtype.size()
    }

    /// Rows `rows`, in that order, stacked and decoded to f32.
    pub fn read_rows(&self, rows: &[usize]) -> ArrayD<f32> {
        let row_bytes = self.row_bytes();
        let mut values = Vec::with_capacity(rows.len() * row_bytes / self.dtype.size());
        for &row in rows {
            let start = self.data + row * row_bytes;
            values.extend(self.dtype.decode(&self.map[start..start + row_bytes]));
        }
        let dims = [&[rows.len()], &self.shape[1..]].concat();
        ArrayD::from_shape_vec(IxDyn(&dims), values).expect("rows of the mapped shape")
    }
}

/// Reads one `.npy` stream: magic, version, header, data.
fn read_array(mut reader: impl Read) -> Result<NpyArray, String> {
    let (header, _) = read_header(&mut reader)?;
    let data = read_up_to(&mut reader, header.data_len()?).map_err(|e| e.to_string())?;
    header.array(&data)
}

/// Reads magic, version and header; returns the header and the bytes they took.
fn read_header(mut reader: impl Read) -> Result<(Header, usize), String> {
    let mut preamble = [0u8; 8];
    reader
        .read_exact(&mut preamble)
        .map_err(|e| truncated("header", e))?;
    if &preamble[..6] != MAGIC {
        return Err("not an .npy array (bad magic)".into());
    }
    let header_len = match preamble[6] {
        1 => u16::from_le_bytes(read_bytes(&mut reader)?) as usize,
        2 | 3 => u32::from_le_bytes(read_bytes(&mut reader)?) as usize,
        major => {
            return Err(format!(
                "unsupported .npy format version {major}.{}",
                preamble[7]
            ));
        }
    };
    let header_bytes = read_up_to(&mut reader, header_len).map_err(|e| e.to_string())?;
    if header_bytes.len() < header_len {
        return Err("truncated header".into());
    }
    // Versions 1 and 2 store the header in latin-1, version 3 in UTF-8.
    let text: String = match preamble[6] {
        3 => String::from_utf8(header_bytes).map_err(|_| "header is not UTF-8".to_string())?,
        _ => header_bytes.iter().map(|&b| b as char).collect(),
    };
    let length_bytes = if preamble[6] == 1 { 2 } else { 4 };
    Ok((Header::parse(&text)?, 8 + length_bytes + header_len))
}

fn read_bytes<const N: usize>(reader: &mut impl Read) -> Result<[u8; N], String> {
    let mut bytes = [0u8; N];
    reader
        .read_exact(&mut bytes)
        .map_err(|e| truncated("header", e))?;
    Ok(bytes)
}

/// Reads at most `len` bytes, growing the buffer only as data arrives.
fn read_up_to(reader: &mut impl Read, len: usize) -> io::Result<Vec<u8>> {
    let mut buffer = Vec::new();
    reader.take(len as u64).read_to_end(&mut buffer)?;
    Ok(buffer)
}

fn truncated(part: &str, err: io::Error) -> String {
    match err.kind() {
        io::ErrorKind::UnexpectedEof => format!("truncated {part}"),
        _ => err.to_string(),
    }
}

/// The `.npy` header: a Python dict literal such as
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
#[derive(Debug, PartialEq)]
struct Header {
    dtype: Dtype,
    shape: Vec<usize>,
}

impl Header {
    fn parse(text: &str) -> Result<Header, String> {
        let mut parser = Parser {
            rest: text.trim_end(),
        };
        let (mut descr, mut fortran_order, mut shape) = (None, None, None);
        parser.expect('{')?;
        while !parser.eat('}') {
            let key = parser.string()?;
            parser.expect(':')?;
            match key.as_str() {
                "descr" => {
                    descr = Some(
                        parser
                            .string()
                            .map_err(|_| "structured dtypes are not supported".to_string())?,
                    )
                }
                "fortran_order" => fortran_order = Some(parser.boolean()?),
                "shape" => shape = Some(parser.shape()?),
                other => return Err(format!("header: unexpected key '{other}'")),
            }
            if !parser.eat(',') {
                parser.expect('}')?;
                break;
            }
        }
        if !parser.rest.is_empty() {
            return Err(format!(
                "header: unexpected '{}' after the dict",
                parser.rest
            ));
        }
        let missing = |key: &str| format!("header: no '{key}'");
        if fortran_order.ok_or_else(|| missing("fortran_order"))? {
            return Err("Fortran-order arrays are not supported (save in C order)".into());
        }
        let dtype = Dtype::from_descr(&descr.ok_or_else(|| missing("descr"))?)?;
        Ok(Header {
            dtype,
            shape: shape.ok_or_else(|| missing("shape"))?,
        })
    }

    fn data_len(&self) -> Result<usize, String> {
        self.shape
            .iter()
            .try_fold(self.dtype.size(), |bytes, &dim| bytes.checked_mul(dim))
            .ok_or_else(|| format!("shape {:?} is too large", self.shape))
    }

    fn array(&self, data: &[u8]) -> Result<NpyArray, String> {
        let expected = self.data_len()?;
        if data.len() < expected {
            return Err(format!(
                "truncated data: shape {:?} of {:?} needs {expected} bytes, the file holds {}",
                self.shape,
                self.dtype,
                data.len()
            ));
        }
        let values = ArrayD::from_shape_vec(IxDyn(&self.shape), self.dtype.decode(data))
            .map_err(|e| e.to_string())?;
        Ok(NpyArray {
            values,
            dtype: self.dtype,
        })
    }
}

/// Just enough of Python's literal syntax for `.npy` headers.
struct Parser<'a> {
    rest: &'a str,
}

impl Parser<'_> {
    fn eat(&mut self, token: char) -> bool {
        self.rest = self.rest.trim_start();
        match self.rest.strip_prefix(token) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, token: char) -> Result<(), String> {
        match self.eat(token) {
            true => Ok(()),
            false => Err(format!("header: expected '{token}' at '{}'", self.rest)),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let quote = ['\'', '"']
            .into_iter()
            .find(|&q| self.eat(q))
            .ok_or_else(|| format!("header: expected a string at '{}'", self.rest))?;
        let (content, rest) = self
            .rest
            .split_once(quote)
            .ok_or("header: unterminated string")?;
        self.rest = rest;
        Ok(content.to_string())
    }

    fn boolean(&mut self) -> Result<bool, String> {
        self.rest = self.rest.trim_start();
        for (word, value) in [("True", true), ("False", false)] {
            if let Some(rest) = self.rest.strip_prefix(word) {
                self.rest = rest;
                return Ok(value);
            }
        }
        Err(format!("header: expected True or False at '{}'", self.rest))
    }

    /// A tuple of dims; Python 2 writers may suffix them with `L`.
    fn shape(&mut self) -> Result<Vec<usize>, String> {
        self.expect('(')?;
        let (inside, rest) = self
            .rest
            .split_once(')')
            .ok_or("header: unterminated shape")?;
        self.rest = rest;
        inside
            .split(',')
            .map(str::trim)
            .filter(|dim| !dim.is_empty())
            .map(|dim| {
                dim.trim_end_matches('L')
                    .parse()
                    .map_err(|_| format!("header: bad dim '{dim}' in the shape"))
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// The bytes of a `.npy` file with the given header dict and data.
    pub(crate) fn npy_bytes(version: u8, dict: &str, data: &[u8]) -> Vec<u8> {
        let mut header = dict.as_bytes().to_vec();
        let prefix = if version == 1 { 10 } else { 12 };
        while !(prefix + header.len() + 1).is_multiple_of(64) {
            header.push(b' ');
        }
        header.push(b'\n');
        let mut bytes = MAGIC.to_vec();
        bytes.extend([version, 0]);
        match version {
            1 => bytes.extend((header.len() as u16).to_le_bytes()),
            _ => bytes.extend((header.len() as u32).to_le_bytes()),
        }
        bytes.extend(header);
        bytes.extend(data);
        bytes
    }

    pub(crate) fn f32_npy(shape: &str, values: &[f32]) -> Vec<u8> {
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        npy_bytes(
            1,
            &format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"),
            &data,
        )
    }

    /// Writes an `.npz` of the given (name, .npy bytes) members, deflated or stored.
    pub(crate) fn write_npz(path: &Path, members: &[(&str, Vec<u8>)], deflate: bool) {
        let method = if deflate {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        };
        let options = zip::write::SimpleFileOptions::default().compression_method(method);
        let mut writer = zip::ZipWriter::new(File::create(path).unwrap());
        for (name, bytes) in members {
            writer.start_file(format!("{name}.npy"), options).unwrap();
            writer.write_all(bytes).unwrap();
        }
        writer.finish().unwrap();
    }

    fn parse(bytes: &[u8]) -> Result<NpyArray, String> {
        read_array(bytes)
    }

    fn dict(descr: &str, shape: &str) -> String {
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}")
    }

    #[test]
    fn reads_f32_in_c_order_in_every_format_version() {
        let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        for version in [1, 2, 3] {
            let array = parse(&npy_bytes(version, &dict("<f4", "(2, 3)"), &data)).unwrap();
            assert_eq!(array.dtype, Dtype::F32);
            assert_eq!(array.values.shape(), &[2, 3]);
            assert_eq!(array.values[[1, 0]], 4.0, "version {version}");
        }
    }

    #[test]
    fn converts_every_supported_dtype_to_f32() {
        fn le<T, const N: usize>(values: &[T], bytes: impl Fn(&T) -> [u8; N]) -> Vec<u8> {
            values.iter().flat_map(bytes).collect()
        }
        let f16 = [half::f16::from_f32(-1.5), half::f16::from_f32(2.0)];
        let cases: &[(&str, Vec<u8>, Dtype, [f32; 2])] = &[
            (
                "<f8",
                le(&[-1.5f64, 2.0], |v| v.to_le_bytes()),
                Dtype::F64,
                [-1.5, 2.0],
            ),
            (
                "<f2",
                le(&f16, |v| v.to_le_bytes()),
                Dtype::F16,
                [-1.5, 2.0],
            ),
            (
                "<i2",
                le(&[-1i16, 2], |v| v.to_le_bytes()),
                Dtype::I16,
                [-1.0, 2.0],
            ),
            (
                "<i4",
                le(&[-1i32, 2], |v| v.to_le_bytes()),
                Dtype::I32,
                [-1.0, 2.0],
            ),
            (
                "<i8",
                le(&[-1i64, 2], |v| v.to_le_bytes()),
                Dtype::I64,
                [-1.0, 2.0],
            ),
            ("|i1", vec![0xFF, 2], Dtype::I8, [-1.0, 2.0]),
            ("|u1", vec![0, 255], Dtype::U8, [0.0, 255.0]),
            ("|b1", vec![0, 1], Dtype::Bool, [0.0, 1.0]),
        ];
        for (descr, data, dtype, expected) in cases {
            let array = parse(&npy_bytes(1, &dict(descr, "(2,)"), data)).unwrap();
            assert_eq!(
                (array.dtype, array.values.as_slice().unwrap()),
                (*dtype, &expected[..]),
                "{descr}"
            );
        }
    }

    #[test]
    fn reads_scalars_python2_longs_and_double_quotes() {
        let scalar = parse(&npy_bytes(1, &dict("<f4", "()"), &7.0f32.to_le_bytes())).unwrap();
        assert_eq!((scalar.values.ndim(), scalar.values.sum()), (0, 7.0));
        let longs = parse(&npy_bytes(
            1,
            "{\"descr\": \"|u1\", \"fortran_order\": False, \"shape\": (2L,)}",
            &[1, 2],
        ))
        .unwrap();
        assert_eq!(longs.values.shape(), &[2]);
    }

    #[test]
    fn refuses_each_malformed_array_with_a_reason() {
        let good = f32_npy("(2, 2)", &[1.0, 2.0, 3.0, 4.0]);
        let mut bad_magic = good.clone();
        bad_magic[1] = b'X';
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("bad magic", bad_magic, "bad magic"),
            ("truncated preamble", good[..7].to_vec(), "truncated header"),
            ("truncated header", good[..40].to_vec(), "truncated header"),
            (
                "truncated data",
                good[..good.len() - 1].to_vec(),
                "truncated data",
            ),
            (
                "shape larger than the data",
                f32_npy("(1000000000, 1000000000)", &[1.0]),
                "truncated data",
            ),
            (
                "shape overflowing usize",
                f32_npy("(99999999999, 99999999999, 99999999999)", &[1.0]),
                "too large",
            ),
            (
                "Fortran order",
                npy_bytes(
                    1,
                    "{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }",
                    &[0; 4],
                ),
                "Fortran",
            ),
            (
                "unknown dtype",
                npy_bytes(1, &dict("<c8", "(1,)"), &[0; 8]),
                "unsupported dtype '<c8'",
            ),
            (
                "big-endian",
                npy_bytes(1, &dict(">f4", "(1,)"), &[0; 4]),
                "big-endian",
            ),
            (
                "structured dtype",
                npy_bytes(
                    1,
                    "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }",
                    &[0; 4],
                ),
                "structured",
            ),
            (
                "no shape",
                npy_bytes(1, "{'descr': '<f4', 'fortran_order': False, }", &[]),
                "no 'shape'",
            ),
            (
                "bad dim",
                npy_bytes(1, &dict("<f4", "(2, x)"), &[]),
                "bad dim 'x'",
            ),
            (
                "unknown version",
                npy_bytes(4, &dict("<f4", "(1,)"), &[0; 4]),
                "version 4.0",
            ),
        ];
        for (case, bytes, expected) in cases {
            let err = parse(&bytes).unwrap_err();
            assert!(err.contains(expected), "{case}: {err}");
        }
    }

    #[test]
    fn read_npy_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.npy");
        std::fs::write(&path, b"not numpy").unwrap();
        let err = read_npy(&path).unwrap_err().to_string();
        assert!(
            err.contains("bad.npy") && err.contains("bad magic"),
            "{err}"
        );
    }

    #[test]
    fn reads_npz_members_stored_or_deflated_and_names_the_array_on_error() {
        let dir = tempfile::tempdir().unwrap();
        for deflate in [false, true] {
            let path = dir.path().join(format!("data_{deflate}.npz"));
            let broken = f32_npy("(3,)", &[1.0]);
            write_npz(
                &path,
                &[("x", f32_npy("(2,)", &[1.0, 2.0])), ("broken", broken)],
                deflate,
            );
            let mut npz = Npz::open(&path).unwrap();
            assert_eq!(npz.names(), ["x", "broken"]);
            assert_eq!(
                npz.array("x").unwrap().values.as_slice().unwrap(),
                &[1.0, 2.0]
            );
            let err = npz.array("broken").unwrap_err().to_string();
            assert!(
                err.contains("array 'broken'") && err.contains("truncated data"),
                "{err}"
            );
            let err = npz.array("y").unwrap_err().to_string();
            assert!(
                err.contains("array 'y'") && err.contains("holds: x, broken"),
                "{err}"
            );
        }
    }

    #[test]
    fn mapped_rows_are_the_rows_read_whole_in_npy_and_stored_or_deflated_npz() {
        let dir = tempfile::tempdir().unwrap();
        let values: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let npy = dir.path().join("x.npy");
        std::fs::write(&npy, f32_npy("(4, 3)", &values)).unwrap();
        let mut mapped = vec![MappedArray::open_npy(&npy).unwrap()];
        for deflate in [false, true] {
            let path = dir.path().join(format!("x_{deflate}.npz"));
            write_npz(&path, &[("x", f32_npy("(4, 3)", &values))], deflate);
            mapped.push(Npz::open(&path).unwrap().mapped("x").unwrap());
        }
        for array in mapped {
            assert_eq!((array.rows(), array.dtype), (4, Dtype::F32));
            let rows = array.read_rows(&[3, 0]);
            assert_eq!(rows.shape(), &[2, 3]);
            assert_eq!(rows.as_slice().unwrap(), &[9.0, 10.0, 11.0, 0.0, 1.0, 2.0]);
        }
        let short = dir.path().join("short.npy");
        std::fs::write(&short, f32_npy("(5, 3)", &values)).unwrap();
        let err = MappedArray::open_npy(&short).unwrap_err().to_string();
        assert!(
            err.contains("short.npy") && err.contains("truncated data"),
            "{err}"
        );
    }

    #[test]
    fn refuses_a_file_that_is_not_a_zip_as_npz() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain.npz");
        std::fs::write(&path, f32_npy("(1,)", &[1.0])).unwrap();
        let err = Npz::open(&path).err().unwrap().to_string();
        assert!(err.contains("plain.npz") && err.contains("zip"), "{err}");
    }
}
