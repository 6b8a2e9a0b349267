//! `vhdx._vhdx`: the private native module behind the `vhdx` Python package.
//!
//! It holds no format logic: [`NativeDisk`] wraps an opened [`vhdx_core::Disk`] and forwards
//! reads and reports to it, releasing the GIL around every call that touches the files
//! (except reads of up to 64 KiB, which finish sooner than the GIL can be handed over).
//! Errors become instances of the exception classes defined in `vhdx/errors.py` (chosen by
//! the error's stable kind), so the class hierarchy lives in one place, in Python.
//! Reports (`info`, `map`, `check`) cross the boundary as JSON text with the same fields as
//! the CLI's `--json`; the Python layer turns them into dicts.

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::path::PathBuf;
use std::sync::Arc;
use vhdx_core::{Disk, Error, OpenOptions, ParentPolicy, VirtualDisk};

/// Reads up to this size keep the GIL (see `readinto_at`).
const SMALL_READ: usize = 64 << 10;

/// Converts a core error into the matching `vhdx.errors` exception.
fn to_py_err(py: Python<'_>, e: Error) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let errors = py.import("vhdx.errors")?;
        let exc = errors.getattr("_from_native")?.call1((
            e.kind().as_str(),
            e.to_string(),
            e.path().map(|p| p.to_path_buf()),
            e.structure_name(),
            e.file_offset(),
        ))?;
        Ok(PyErr::from_value(exc))
    };
    // Importing the errors module can only fail if the package is broken; say so rather
    // than lose the original error.
    build().unwrap_or_else(|import_err| import_err)
}

fn json<T: serde::Serialize + ?Sized>(value: &T) -> PyResult<String> {
    serde_json::to_string(value).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// An opened virtual disk (with its parent chain), read with positional calls.
#[pyclass(frozen, module = "vhdx._vhdx")]
struct NativeDisk {
    disk: Arc<Disk>,
}

#[pymethods]
impl NativeDisk {
    /// Opens the disk at `path`. `parents` replace the locators level by level (nearest
    /// first); `parent_policy` is `"default"` or `"strict"`.
    #[new]
    #[pyo3(signature = (path, parents = Vec::new(), parent_policy = "default", ignore_id_mismatch = false, require_parent = true))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        parents: Vec<PathBuf>,
        parent_policy: &str,
        ignore_id_mismatch: bool,
        require_parent: bool,
    ) -> PyResult<Self> {
        let policy = match parent_policy {
            "default" => ParentPolicy::Default,
            "strict" => ParentPolicy::Strict,
            other => {
                return Err(PyValueError::new_err(format!(
                    "parent_policy must be \"default\" or \"strict\", not {other:?}"
                )))
            }
        };
        let opts = OpenOptions {
            parents,
            policy,
            verify_linkage: !ignore_id_mismatch,
            require_parent,
            ..OpenOptions::default()
        };
        let disk = py
            .detach(|| Disk::open_with(&path, &opts))
            .map_err(|e| to_py_err(py, e))?;
        Ok(NativeDisk {
            disk: Arc::new(disk),
        })
    }

    /// Virtual size in bytes.
    #[getter]
    fn size(&self) -> u64 {
        self.disk.size()
    }

    /// Logical sector size the guest sees.
    #[getter]
    fn logical_sector_size(&self) -> u32 {
        self.disk.logical_sector_size()
    }

    /// Physical sector size reported to the guest.
    #[getter]
    fn physical_sector_size(&self) -> u32 {
        self.disk.physical_sector_size()
    }

    /// Up to `n` bytes at `offset` (fewer at the end of the disk, none past it).
    fn read_at<'py>(
        &self,
        py: Python<'py>,
        offset: u64,
        n: usize,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let n = clamp(self.disk.size(), offset, n as u64);
        if n == 0 {
            return Ok(PyBytes::new(py, b""));
        }
        let disk = Arc::clone(&self.disk);
        PyBytes::new_with(py, n, |buf: &mut [u8]| {
            let r = if n <= SMALL_READ {
                disk.read_at(buf, offset)
            } else {
                py.detach(|| disk.read_at(buf, offset))
            };
            r.map_err(|e| to_py_err(py, e))
        })
    }

    /// Reads into `buffer` (any writable, C-contiguous byte buffer) from `offset`; returns
    /// the number of bytes read (fewer than the buffer at the end of the disk).
    fn readinto_at(&self, py: Python<'_>, offset: u64, buffer: PyBuffer<u8>) -> PyResult<usize> {
        if buffer.readonly() {
            return Err(PyTypeError::new_err(
                "readinto() needs a writable buffer (bytearray, memoryview, array, mmap)",
            ));
        }
        let ptr = buffer
            .as_slice_ptr()
            .ok_or_else(|| PyTypeError::new_err("readinto() needs a C-contiguous buffer"))?;
        let n = clamp(self.disk.size(), offset, ptr.len() as u64);
        if n == 0 {
            return Ok(0);
        }
        // SAFETY: `buffer` holds a buffer export of the object for as long as it lives (to the
        // end of this function), so the memory stays allocated and cannot be resized (a
        // bytearray refuses to resize while exported). It is writable (checked above) and
        // C-contiguous with `ptr.len()` one-byte elements, of which we use the first
        // `n <= ptr.len()`; any byte pattern is a valid `u8`. Writing with the GIL released
        // is what every CPython `readinto` does: other threads touching the same buffer
        // meanwhile see unspecified bytes, as with `io.FileIO.readinto`.
        let dst: &mut [u8] =
            unsafe { std::slice::from_raw_parts_mut(ptr.cast::<u8>().as_ptr(), n) };
        // Small reads come from the page cache in about a microsecond, less than releasing
        // and re-taking the GIL costs; larger ones release it so other threads run.
        let r = if n <= SMALL_READ {
            self.disk.read_at(dst, offset)
        } else {
            let disk = Arc::clone(&self.disk);
            py.detach(|| disk.read_at(dst, offset))
        };
        r.map_err(|e| to_py_err(py, e))?;
        Ok(n)
    }

    /// The facts of `vhdx info --json`, as JSON text.
    #[pyo3(signature = (scan = false))]
    fn info(&self, py: Python<'_>, scan: bool) -> PyResult<String> {
        let disk = Arc::clone(&self.disk);
        let info = py
            .detach(|| disk.info(scan))
            .map_err(|e| to_py_err(py, e))?;
        json(&info)
    }

    /// The allocation map of `vhdx map --json`, as JSON text.
    fn map(&self, py: Python<'_>) -> PyResult<String> {
        let disk = Arc::clone(&self.disk);
        let entries = py
            .detach(|| vhdx_core::ops::map::map(&*disk))
            .map_err(|e| to_py_err(py, e))?;
        json(&entries)
    }

    /// The report of `vhdx check --json`, as JSON text.
    fn check(&self, py: Python<'_>) -> PyResult<String> {
        let disk = Arc::clone(&self.disk);
        let report = py.detach(|| disk.check());
        let path = disk.path().map(|p| p.display().to_string());
        json(&vhdx_core::CheckSummary::new(path, report))
    }
}

/// How many of `n` bytes at `offset` lie inside a disk of `size` bytes.
fn clamp(size: u64, offset: u64, n: u64) -> usize {
    // Bounded by `n`, which came from a usize.
    size.saturating_sub(offset).min(n) as usize
}

/// Creates a new disk at `path` (see `vhdx_core::create`). `disk_type` is `"dynamic"` or
/// `"fixed"` (a parent makes it differencing); `format` is `"vhdx"`, `"vhd"` or `None` (from
/// the extension); `size` may be `None` only with a parent.
#[pyfunction]
#[pyo3(signature = (path, size, disk_type = "dynamic", block_size = None, logical_sector_size = None, physical_sector_size = None, parent = None, format = None))]
#[allow(clippy::too_many_arguments)]
fn create_disk(
    py: Python<'_>,
    path: PathBuf,
    size: Option<u64>,
    disk_type: &str,
    block_size: Option<u32>,
    logical_sector_size: Option<u32>,
    physical_sector_size: Option<u32>,
    parent: Option<PathBuf>,
    format: Option<&str>,
) -> PyResult<()> {
    use vhdx_core::create::{create, CreateOptions};
    let mut opts = CreateOptions::new();
    // A parent makes the disk differencing; the default "dynamic" then means nothing, and
    // "fixed" is refused by the core with a typed error.
    match (disk_type, parent.is_some()) {
        ("dynamic" | "differencing", true) => {}
        ("dynamic", false) => opts = opts.disk_type(vhdx_core::DiskType::Dynamic),
        ("fixed", _) => opts = opts.disk_type(vhdx_core::DiskType::Fixed),
        (other, _) => {
            return Err(PyValueError::new_err(format!(
                "type must be \"dynamic\" or \"fixed\", not {other:?}"
            )))
        }
    }
    match format {
        None => {}
        Some("vhdx") => opts = opts.format(vhdx_core::Format::Vhdx),
        Some("vhd") => opts = opts.format(vhdx_core::Format::Vhd),
        Some(other) => {
            return Err(PyValueError::new_err(format!(
                "format must be \"vhdx\" or \"vhd\", not {other:?}"
            )))
        }
    }
    if let Some(s) = size {
        opts = opts.size(s);
    }
    if let Some(b) = block_size {
        opts = opts.block_size(b);
    }
    if let Some(n) = logical_sector_size {
        opts = opts.logical_sector_size(n);
    }
    if let Some(n) = physical_sector_size {
        opts = opts.physical_sector_size(n);
    }
    if let Some(p) = parent {
        opts = opts.parent(p);
    }
    py.detach(|| create(&path, &opts))
        .map_err(|e| to_py_err(py, e))
}

/// The native module `vhdx._vhdx`.
#[pymodule]
fn _vhdx(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeDisk>()?;
    m.add_function(wrap_pyfunction!(create_disk, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
