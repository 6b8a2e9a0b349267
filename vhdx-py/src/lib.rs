//! `vhdx._vhdx`: the private native module behind the `vhdx` Python package.
//!
//! It holds no format logic: [`NativeDisk`] wraps a [`vhdx_core::Disk`] opened read-only or a
//! [`vhdx_core::WritableDisk`] (mode `"r+"`) and forwards reads, writes and reports to it,
//! releasing the GIL around every call that touches the files (except reads and writes of
//! up to 64 KiB, which finish sooner than the GIL can be handed over).
//! Errors become instances of the exception classes defined in `vhdx/errors.py` (chosen by
//! the error's stable kind), so the class hierarchy lives in one place, in Python.
//! Reports (`info`, `map`, `check`, and what the operations return) cross the boundary as
//! JSON text with the same fields as the CLI's `--json`; the Python layer turns them into
//! dicts.

use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::marker::Ungil;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyMemoryView};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vhdx_core::write::compact::{compact_copy, CompactMode, CompactOptions};
use vhdx_core::{Disk, Error, OpenOptions, ParentPolicy, VirtualDisk, WritableDisk};

pyo3::import_exception!(io, UnsupportedOperation);

/// Reads and writes up to this size keep the GIL (see [`with_io`]).
const SMALL_IO: usize = 64 << 10;

/// Least time between two calls of a Python progress callback.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

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
            e.os_error(),
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

/// Runs `f`, I/O of `n` bytes, with the GIL released unless `n` is small and `quick`: a
/// small read or write is a page-cache copy of a few microseconds (measured: 3-5 us for 4 KiB,
/// 10-16 us when it allocates a block), less than releasing and re-taking the GIL costs;
/// larger ones release it so other threads run meanwhile. Callers pass `quick = false` for
/// a call they know waits for the disk.
fn with_io<T: Ungil>(py: Python<'_>, n: usize, quick: bool, f: impl Ungil + FnOnce() -> T) -> T {
    if n <= SMALL_IO && quick {
        f()
    } else {
        py.detach(f)
    }
}

/// A Python object's buffer seen as bytes, whatever its item type (as `io.FileIO` sees it in
/// `write` and `readinto`), exported for as long as this value lives.
struct Bytes(PyUntypedBuffer);

impl Bytes {
    /// Exports the buffer of `obj`; `None` when it is not C-contiguous (a strided view).
    fn export(obj: &Bound<'_, PyAny>) -> PyResult<Option<Self>> {
        let b = PyUntypedBuffer::get(obj)?;
        Ok(b.is_c_contiguous().then_some(Bytes(b)))
    }

    fn as_slice(&self) -> &[u8] {
        let n = self.0.len_bytes();
        if n == 0 {
            return &[];
        }
        // SAFETY: `self.0` holds the export, so the memory stays allocated and is not resized
        // (a bytearray refuses to resize while exported) for as long as `self`, which the
        // returned borrow cannot outlive. It is C-contiguous (checked in `export`) and
        // `len_bytes()` long; any byte is a valid `u8`. Other threads may change the bytes
        // while we read them with the GIL released, as with `io.FileIO.write`: what is
        // written is then theirs to define.
        unsafe { std::slice::from_raw_parts(self.0.buf_ptr().cast::<u8>(), n) }
    }

    /// The bytes, to fill; `None` when the exporter declared them read-only.
    fn as_mut_slice(&mut self) -> Option<&mut [u8]> {
        let n = self.0.len_bytes();
        if self.0.readonly() {
            return None;
        }
        if n == 0 {
            return Some(&mut []);
        }
        // SAFETY: as in `as_slice`, and the exporter declared the memory writable (checked
        // above); `&mut self` makes this the only view we hand out. Other threads touching
        // the buffer meanwhile see unspecified bytes, as with `io.FileIO.readinto`.
        Some(unsafe { std::slice::from_raw_parts_mut(self.0.buf_ptr().cast::<u8>(), n) })
    }
}

/// A new bytes object of `n` bytes that `fill` writes in full (as `PyBytes::new_with`, but
/// the memory is not zeroed first with the GIL held: for a large read that first touch of
/// every page costs most of the time, and here it happens inside `fill`, which may release
/// the GIL). On an error from `fill` the object is dropped unseen.
fn bytes_filled_by<'py>(
    py: Python<'py>,
    n: usize,
    fill: impl FnOnce(&mut [u8]) -> PyResult<()>,
) -> PyResult<Bound<'py, PyBytes>> {
    let len = isize::try_from(n).map_err(|_| PyValueError::new_err("read too large"))?;
    // SAFETY: a NULL source asks CPython for an uninitialized bytes object of `len` bytes
    // (the documented way to build one in place); a NULL result (an exception set) is
    // turned into the error by `from_owned_ptr_or_err`; the object is a bytes object.
    let bytes = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), len),
        )?
        .cast_into_unchecked::<PyBytes>()
    };
    if n > 0 {
        // SAFETY: the object is new and referenced only by `bytes` until this function
        // returns it, so nothing else touches its `n` bytes while `fill` writes them;
        // `PyBytes_AsString` returns its buffer, which lives as long as `bytes` does, and the
        // slice does not outlive this block. `fill` only writes (it reads into the slice).
        let buf = unsafe {
            std::slice::from_raw_parts_mut(
                pyo3::ffi::PyBytes_AsString(bytes.as_ptr()).cast::<u8>(),
                n,
            )
        };
        fill(buf)?;
    }
    Ok(bytes)
}

/// What an open [`NativeDisk`] holds.
#[derive(Clone)]
enum Handle {
    /// Opened with mode `"r"`.
    Read(Arc<Disk>),
    /// Opened with mode `"r+"`.
    Write(Arc<WritableDisk>),
}

impl Handle {
    /// The disk as it reads now (a writable disk's reads see its earlier writes).
    fn disk(&self) -> &Disk {
        match self {
            Handle::Read(d) => d,
            Handle::Write(w) => w.disk(),
        }
    }
}

/// An opened virtual disk (with its parent chain), read and written with positional calls.
#[pyclass(frozen, module = "vhdx._vhdx")]
struct NativeDisk {
    /// `None` once closed. Each call clones the handle out, so calls from several threads
    /// run side by side, and `close` drops the files (and a writer's locks) as soon as the
    /// calls in flight return.
    handle: Mutex<Option<Handle>>,
    writable: bool,
    /// Whether a write succeeded yet. The first write of a session renews a VHDX's
    /// identity in both headers, flushing the file in between (measured: 8 ms), so it
    /// releases the GIL whatever its size. (A small write that fills the journal, and so
    /// commits it, still keeps the GIL for the commit: once per log's worth of changed
    /// metadata pages, a few hundred with the default 1 MiB VHDX log.)
    wrote: AtomicBool,
}

impl NativeDisk {
    fn handle(&self) -> PyResult<Handle> {
        self.handle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| PyValueError::new_err("I/O operation on closed disk"))
    }

    fn writer(&self) -> PyResult<Arc<WritableDisk>> {
        match self.handle()? {
            Handle::Write(w) => Ok(w),
            Handle::Read(_) => Err(UnsupportedOperation::new_err(
                "the disk was opened read-only: open it with mode \"r+\" to write",
            )),
        }
    }
}

#[pymethods]
impl NativeDisk {
    /// Opens the disk at `path`, for writing too when `writable` (taking the write lock).
    /// `parents` replace the locators level by level (nearest first); `parent_policy` is
    /// `"default"` or `"strict"`. Parents are always opened read-only.
    #[new]
    #[pyo3(signature = (path, parents = Vec::new(), parent_policy = "default", ignore_id_mismatch = false, require_parent = true, writable = false))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        parents: Vec<PathBuf>,
        parent_policy: &str,
        ignore_id_mismatch: bool,
        require_parent: bool,
        writable: bool,
    ) -> PyResult<Self> {
        let opts = open_options(parents, parent_policy, ignore_id_mismatch, require_parent)?;
        let handle = py
            .detach(|| {
                if writable {
                    Disk::open_rw(&path, &opts).map(|w| Handle::Write(Arc::new(w)))
                } else {
                    Disk::open_with(&path, &opts).map(|d| Handle::Read(Arc::new(d)))
                }
            })
            .map_err(|e| to_py_err(py, e))?;
        Ok(NativeDisk {
            handle: Mutex::new(Some(handle)),
            writable,
            wrote: AtomicBool::new(false),
        })
    }

    /// Whether the disk was opened for writing.
    #[getter]
    fn writable(&self) -> bool {
        self.writable
    }

    /// Virtual size in bytes.
    #[getter]
    fn size(&self) -> PyResult<u64> {
        Ok(self.handle()?.disk().size())
    }

    /// Logical sector size the guest sees.
    #[getter]
    fn logical_sector_size(&self) -> PyResult<u32> {
        Ok(self.handle()?.disk().logical_sector_size())
    }

    /// Physical sector size reported to the guest.
    #[getter]
    fn physical_sector_size(&self) -> PyResult<u32> {
        Ok(self.handle()?.disk().physical_sector_size())
    }

    /// Up to `n` bytes at `offset` (fewer at the end of the disk, none past it). The bytes
    /// object is filled in place, with the GIL released for a large read.
    fn read_at<'py>(
        &self,
        py: Python<'py>,
        offset: u64,
        n: usize,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let handle = self.handle()?;
        let disk = handle.disk();
        let n = clamp(disk.size(), offset, n as u64);
        bytes_filled_by(py, n, |buf| {
            with_io(py, n, true, || disk.read_at(buf, offset)).map_err(|e| to_py_err(py, e))
        })
    }

    /// Reads into `buffer` (any writable, C-contiguous buffer, filled byte-wise) from
    /// `offset`; returns the number of bytes read (fewer than the buffer at the end of the
    /// disk).
    fn readinto_at(
        &self,
        py: Python<'_>,
        offset: u64,
        buffer: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        let Some(mut exported) = Bytes::export(buffer)? else {
            return Err(PyTypeError::new_err(
                "readinto() needs a C-contiguous buffer",
            ));
        };
        let Some(dst) = exported.as_mut_slice() else {
            return Err(PyTypeError::new_err(
                "readinto() needs a writable buffer (bytearray, memoryview, array, mmap)",
            ));
        };
        let handle = self.handle()?;
        let disk = handle.disk();
        let n = clamp(disk.size(), offset, dst.len() as u64);
        if n == 0 {
            return Ok(0);
        }
        let dst = &mut dst[..n];
        with_io(py, n, true, || disk.read_at(dst, offset)).map_err(|e| to_py_err(py, e))?;
        Ok(n)
    }

    /// Writes the bytes of `data` (any object with the buffer protocol: bytes, bytearray,
    /// memoryview, array, mmap, ...; taken byte-wise in C order) at `offset`, up to the end of
    /// the disk; returns how many were written (0 when `offset` is at or past the end).
    /// Contiguous buffers are written without a copy. Raises `io.UnsupportedOperation` on a
    /// disk opened read-only.
    fn write_at(&self, py: Python<'_>, offset: u64, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        let disk = self.writer()?;
        let write = |src: &[u8]| -> PyResult<usize> {
            let n = clamp(disk.size(), offset, src.len() as u64);
            if n == 0 {
                return Ok(0);
            }
            let src = &src[..n];
            let quick = self.wrote.load(Ordering::Relaxed);
            with_io(py, n, quick, || disk.write_at(src, offset)).map_err(|e| to_py_err(py, e))?;
            self.wrote.store(true, Ordering::Relaxed);
            Ok(n)
        };
        match Bytes::export(data)? {
            Some(src) => write(src.as_slice()),
            // A strided view (every other byte, a column of a matrix): its bytes in C order.
            None => write(
                PyMemoryView::from(data)?
                    .call_method0("tobytes")?
                    .cast_into::<PyBytes>()?
                    .as_bytes(),
            ),
        }
    }

    /// Makes `length` bytes at `offset` read as zeros and gives their space back where the
    /// format allows (see `WritableDisk::trim`). Raises `io.UnsupportedOperation` on a disk
    /// opened read-only, and `InvalidArgumentError` for a range outside the disk.
    fn trim(&self, py: Python<'_>, offset: u64, length: u64) -> PyResult<()> {
        let disk = self.writer()?;
        py.detach(|| disk.trim(offset, length))
            .map_err(|e| to_py_err(py, e))?;
        self.wrote.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Trims the free space of every understood guest volume (ext2/3/4, NTFS) where this
    /// file stores it (see `vhdx_core::guest::freespace::trim_free_space`) and returns the
    /// JSON text of the per-volume outcomes. The GIL is released.
    fn trim_free_space(&self, py: Python<'_>) -> PyResult<String> {
        let disk = self.writer()?;
        let volumes = py
            .detach(|| vhdx_core::guest::freespace::trim_free_space(&disk, None))
            .map_err(|e| to_py_err(py, e))?;
        self.wrote.store(true, Ordering::Relaxed);
        json(&volumes)
    }

    /// Commits every earlier write and makes it durable (the data, then the metadata that
    /// makes it visible). Nothing to do on a disk opened read-only.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        match self.handle()? {
            Handle::Write(w) => py.detach(|| w.flush()).map_err(|e| to_py_err(py, e)),
            Handle::Read(_) => Ok(()),
        }
    }

    /// Closes the disk. A writable disk is flushed, its VHDX log marked clean and its write
    /// lock released (once calls still running on other threads return). An error is raised,
    /// but the disk is closed all the same. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let handle = self.handle.lock().unwrap_or_else(|p| p.into_inner()).take();
        match handle {
            // Dropped inside: closing the file may wait for the kernel.
            Some(Handle::Write(w)) => py.detach(move || w.close()).map_err(|e| to_py_err(py, e)),
            Some(Handle::Read(_)) | None => Ok(()),
        }
    }

    /// The facts of `vhdx info --json`, as JSON text.
    #[pyo3(signature = (scan = false))]
    fn info(&self, py: Python<'_>, scan: bool) -> PyResult<String> {
        let handle = self.handle()?;
        let info = py
            .detach(|| handle.disk().info(scan))
            .map_err(|e| to_py_err(py, e))?;
        json(&info)
    }

    /// The allocation map of `vhdx map --json`, as JSON text.
    fn map(&self, py: Python<'_>) -> PyResult<String> {
        let handle = self.handle()?;
        let entries = py
            .detach(|| vhdx_core::ops::map::map(handle.disk()))
            .map_err(|e| to_py_err(py, e))?;
        json(&entries)
    }

    /// The report of `vhdx check --json`, as JSON text.
    fn check(&self, py: Python<'_>) -> PyResult<String> {
        let handle = self.handle()?;
        let disk = handle.disk();
        let report = py.detach(|| disk.check());
        let path = disk.path().map(|p| p.display().to_string());
        json(&vhdx_core::CheckSummary::new(path, report))
    }
}

/// Open options from the keyword arguments `vhdx.open` and `vhdx.compact` share.
fn open_options(
    parents: Vec<PathBuf>,
    parent_policy: &str,
    ignore_id_mismatch: bool,
    require_parent: bool,
) -> PyResult<OpenOptions> {
    let policy = match parent_policy {
        "default" => ParentPolicy::Default,
        "strict" => ParentPolicy::Strict,
        other => {
            return Err(PyValueError::new_err(format!(
                "parent_policy must be \"default\" or \"strict\", not {other:?}"
            )))
        }
    };
    Ok(OpenOptions {
        parents,
        policy,
        verify_linkage: !ignore_id_mismatch,
        require_parent,
        ..OpenOptions::default()
    })
}

/// Hands the core's progress reports, made with the GIL released, to a Python callable:
/// at most one call per [`PROGRESS_INTERVAL`] (and always the last, `done == total`), each
/// taking the GIL only for the call. The first exception the callable raises stops further
/// calls and is kept for the caller to raise once the work is over (the core cannot be
/// interrupted halfway).
struct Relay<'a> {
    callback: &'a Py<PyAny>,
    last: Mutex<Option<Instant>>,
    error: Mutex<Option<PyErr>>,
}

impl<'a> Relay<'a> {
    fn new(callback: &'a Py<PyAny>) -> Self {
        Relay {
            callback,
            last: Mutex::new(None),
            error: Mutex::new(None),
        }
    }

    fn report(&self, done: u64, total: u64) {
        let mut error = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if error.is_some() {
            return;
        }
        {
            let now = Instant::now();
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if done < total && last.is_some_and(|t| now - t < PROGRESS_INTERVAL) {
                return;
            }
            *last = Some(now);
        }
        Python::attach(|py| {
            if let Err(e) = self.callback.call1(py, (done, total)) {
                *error = Some(e);
            }
        });
    }

    /// The exception the callable raised, if any.
    fn into_error(self) -> Option<PyErr> {
        self.error.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs `work` with the GIL released, handing it the progress function that relays to
/// `progress` (none when `progress` is `None`). An exception the callable raised comes back
/// once the work is over, before the work's own result.
fn with_progress<T: Send>(
    py: Python<'_>,
    progress: Option<&Py<PyAny>>,
    work: impl Send + FnOnce(Option<&dyn Fn(u64, u64)>) -> T,
) -> PyResult<T> {
    let relay = progress.map(Relay::new);
    let result = py.detach(|| {
        let update = |done, total| {
            if let Some(r) = &relay {
                r.report(done, total);
            }
        };
        work(relay.is_some().then_some(&update as &dyn Fn(u64, u64)))
    });
    match relay.and_then(Relay::into_error) {
        Some(e) => Err(e),
        None => Ok(result),
    }
}

/// Compacts the disk at `path` (see `vhdx_core::write::compact`) and returns what was done
/// as the JSON text of `CompactStats`: in place, or into a compacted copy at `out` (the
/// input is left as it was; an existing `out` is replaced only with `overwrite`), or with
/// `dry_run` only measured. `mode` is `"quick"`, `"full"` or `"retrim"`; `free_space` lets
/// full mode release the blocks holding only guest free space. The GIL is released for the
/// whole work; `progress(done, total)` is called as it advances.
#[pyfunction]
#[pyo3(signature = (path, mode = "full", out = None, dry_run = false, overwrite = false, parents = Vec::new(), parent_policy = "default", ignore_id_mismatch = false, progress = None, free_space = true))]
#[allow(clippy::too_many_arguments)]
fn compact(
    py: Python<'_>,
    path: PathBuf,
    mode: &str,
    out: Option<PathBuf>,
    dry_run: bool,
    overwrite: bool,
    parents: Vec<PathBuf>,
    parent_policy: &str,
    ignore_id_mismatch: bool,
    progress: Option<Py<PyAny>>,
    free_space: bool,
) -> PyResult<String> {
    let mode: CompactMode = mode.parse().map_err(|e| to_py_err(py, e))?;
    let mode = CompactOptions { mode, free_space };
    let opts = open_options(parents, parent_policy, ignore_id_mismatch, true)?;
    let stats = with_progress(py, progress.as_ref(), |update| {
        match &out {
            // A compacted copy starts as a byte copy of `path`, so its figures are the copy's.
            _ if dry_run => Disk::open_rw(&path, &opts).and_then(|disk| {
                let stats = disk.compact_dry_run(mode);
                let closed = disk.close();
                let stats = stats?;
                closed.map(|()| stats)
            }),
            Some(out) => compact_copy(&path, out, mode, overwrite, &opts, update),
            None => Disk::open_rw(&path, &opts).and_then(|disk| {
                let stats = disk.compact(mode, update);
                let closed = disk.close();
                let stats = stats?;
                closed.map(|()| stats)
            }),
        }
    })?;
    json(&stats.map_err(|e| to_py_err(py, e))?)
}

/// The disk type a `type=` argument names (`"dynamic"` or `"fixed"`).
fn parse_disk_type(name: &str) -> PyResult<vhdx_core::DiskType> {
    match name {
        "dynamic" => Ok(vhdx_core::DiskType::Dynamic),
        "fixed" => Ok(vhdx_core::DiskType::Fixed),
        other => Err(PyValueError::new_err(format!(
            "type must be \"dynamic\" or \"fixed\", not {other:?}"
        ))),
    }
}

/// A format name from Python (`"vhdx"`, `"vhd"`, `"raw"`); `what` names the argument.
fn parse_format(name: &str, what: &str) -> PyResult<vhdx_core::Format> {
    match name {
        "vhdx" => Ok(vhdx_core::Format::Vhdx),
        "vhd" => Ok(vhdx_core::Format::Vhd),
        "raw" => Ok(vhdx_core::Format::Raw),
        other => Err(PyValueError::new_err(format!(
            "{what} must be \"vhdx\", \"vhd\" or \"raw\", not {other:?}"
        ))),
    }
}

/// Converts the disk at `src` (with its parents; a raw file when `input_format` says so or
/// its name ends in .raw/.img/.bin) into a new disk at `out` (see
/// `vhdx_core::ops::convert`) and returns the JSON text of `ConvertStats`. `format` is
/// `"vhdx"`, `"vhd"`, `"raw"` or `None` (VHD with `azure`, else from `out`'s extension);
/// `disk_type` is `None` (dynamic) or `"fixed"`. The GIL is released for the whole work;
/// `progress(done, total)` is called as it advances.
#[pyfunction]
#[pyo3(signature = (src, out, format = None, disk_type = None, block_size = None, logical_sector_size = None, azure = false, round_up = false, overwrite = false, input_format = None, parents = Vec::new(), parent_policy = "default", ignore_id_mismatch = false, progress = None))]
#[allow(clippy::too_many_arguments)]
fn convert(
    py: Python<'_>,
    src: PathBuf,
    out: PathBuf,
    format: Option<&str>,
    disk_type: Option<&str>,
    block_size: Option<u32>,
    logical_sector_size: Option<u32>,
    azure: bool,
    round_up: bool,
    overwrite: bool,
    input_format: Option<&str>,
    parents: Vec<PathBuf>,
    parent_policy: &str,
    ignore_id_mismatch: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<String> {
    use vhdx_core::ops::convert::{self, ConvertOptions};
    let format = match format {
        Some(f) => parse_format(f, "format")?,
        None if azure => vhdx_core::Format::Vhd,
        None => convert::format_from_extension(&out).ok_or_else(|| {
            PyValueError::new_err(format!(
                "cannot tell the output format of {} from its extension; pass format=\"vhdx\", \
                 \"vhd\" or \"raw\"",
                out.display()
            ))
        })?,
    };
    let mut opts = ConvertOptions::new(format)
        .overwrite(overwrite)
        .azure(azure)
        .round_up(round_up);
    if let Some(t) = disk_type {
        opts = opts.disk_type(parse_disk_type(t)?);
    }
    if let Some(b) = block_size {
        opts = opts.block_size(b);
    }
    if let Some(n) = logical_sector_size {
        opts = opts.logical_sector_size(n);
    }
    let mut open = open_options(parents, parent_policy, ignore_id_mismatch, true)?;
    open.format = input_format
        .map(|f| parse_format(f, "input_format"))
        .transpose()?;
    let stats = with_progress(py, progress.as_ref(), |update| {
        let disk = convert::open_source(&src, &open)?;
        convert::convert(&disk, &out, &opts, update)
    })?;
    json(&stats.map_err(|e| to_py_err(py, e))?)
}

/// Merges the differencing disk `child` (and the disks between it and the ancestor) into
/// its parent, or into the ancestor `into` (see `vhdx_core::ops::merge`), and returns what
/// was done as the JSON text of `MergeStats`. With `delete` the merged disks are removed
/// once the merge is complete. The GIL is released for the whole work;
/// `progress(done, total)` is called as it advances.
#[pyfunction]
#[pyo3(signature = (child, into = None, delete = false, parents = Vec::new(), parent_policy = "default", ignore_id_mismatch = false, progress = None))]
#[allow(clippy::too_many_arguments)]
fn merge(
    py: Python<'_>,
    child: PathBuf,
    into: Option<PathBuf>,
    delete: bool,
    parents: Vec<PathBuf>,
    parent_policy: &str,
    ignore_id_mismatch: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<String> {
    let opts = vhdx_core::ops::merge::MergeOptions {
        into,
        delete,
        open: open_options(parents, parent_policy, ignore_id_mismatch, true)?,
    };
    let stats = with_progress(py, progress.as_ref(), |update| {
        vhdx_core::ops::merge::merge(&child, &opts, update)
    })?;
    json(&stats.map_err(|e| to_py_err(py, e))?)
}

/// Writes the disk `child` with its whole chain into a new standalone disk at `out` (see
/// `vhdx_core::ops::merge::flatten`) and returns the JSON text of `ConvertStats`.
/// `disk_type` is `"dynamic"` or `"fixed"`; `format` is `"vhdx"`, `"vhd"`, `"raw"` or `None`
/// (the chain's format). The GIL is released for the whole work; `progress(done, total)` is
/// called as it advances.
#[pyfunction]
#[pyo3(signature = (child, out, disk_type = "dynamic", format = None, overwrite = false, parents = Vec::new(), parent_policy = "default", ignore_id_mismatch = false, progress = None))]
#[allow(clippy::too_many_arguments)]
fn flatten(
    py: Python<'_>,
    child: PathBuf,
    out: PathBuf,
    disk_type: &str,
    format: Option<&str>,
    overwrite: bool,
    parents: Vec<PathBuf>,
    parent_policy: &str,
    ignore_id_mismatch: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<String> {
    use vhdx_core::ops::merge::FlattenOptions;
    let disk_type = parse_disk_type(disk_type)?;
    let format = format.map(|f| parse_format(f, "format")).transpose()?;
    let opts = open_options(parents, parent_policy, ignore_id_mismatch, true)?;
    let flat = FlattenOptions {
        format,
        disk_type,
        overwrite,
    };
    let stats = with_progress(py, progress.as_ref(), |update| {
        Disk::open_with(&child, &opts)
            .and_then(|disk| vhdx_core::ops::merge::flatten(&disk, &out, &flat, update))
    })?;
    json(&stats.map_err(|e| to_py_err(py, e))?)
}

/// Points the differencing disk `child` at `parent` (see `vhdx_core::write::relink`) and
/// returns the JSON text of `SetParentStats`. The GIL is released for the work.
#[pyfunction]
#[pyo3(signature = (child, parent, ignore_id_mismatch = false))]
fn set_parent(
    py: Python<'_>,
    child: PathBuf,
    parent: PathBuf,
    ignore_id_mismatch: bool,
) -> PyResult<String> {
    let stats = py.detach(|| vhdx_core::write::set_parent(&child, &parent, ignore_id_mismatch));
    json(&stats.map_err(|e| to_py_err(py, e))?)
}

/// Resizes the disk at `path` to `size` bytes, or with `to_minimum` to the end of its last
/// data (see `vhdx_core::write::resize`), and returns the JSON text of `ResizeStats`.
/// `parents`, `parent_policy` and `ignore_id_mismatch` locate the parents of a differencing
/// disk as in `open`. The GIL is released for the whole work; `progress(done, total)` is
/// called as it advances.
#[pyfunction]
#[pyo3(signature = (path, size = None, to_minimum = false, parents = Vec::new(), parent_policy = "default", ignore_id_mismatch = false, progress = None))]
#[allow(clippy::too_many_arguments)]
fn resize(
    py: Python<'_>,
    path: PathBuf,
    size: Option<u64>,
    to_minimum: bool,
    parents: Vec<PathBuf>,
    parent_policy: &str,
    ignore_id_mismatch: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<String> {
    use vhdx_core::write::resize::{resize, resize_to_minimum};
    let opts = open_options(parents, parent_policy, ignore_id_mismatch, true)?;
    let stats = with_progress(py, progress.as_ref(), |update| match (size, to_minimum) {
        (Some(n), false) => resize(&path, n, &opts, update),
        (None, true) => resize_to_minimum(&path, &opts, update),
        _ => Err(Error::invalid_argument(
            "give either a new size or to_minimum=True",
        )),
    })?;
    json(&stats.map_err(|e| to_py_err(py, e))?)
}

/// Compares the disks at `a` and `b` (see `vhdx_core::ops::compare`; each with its parents,
/// or a raw file as in `convert`) and returns the JSON text of `Comparison`. `parents` name
/// A's parents, `parents_b` B's. The GIL is released for the whole work;
/// `progress(done, total)` is called as it advances.
#[pyfunction]
#[pyo3(signature = (a, b, strict = false, input_format = None, parents = Vec::new(), parents_b = Vec::new(), parent_policy = "default", ignore_id_mismatch = false, progress = None))]
#[allow(clippy::too_many_arguments)]
fn compare(
    py: Python<'_>,
    a: PathBuf,
    b: PathBuf,
    strict: bool,
    input_format: Option<&str>,
    parents: Vec<PathBuf>,
    parents_b: Vec<PathBuf>,
    parent_policy: &str,
    ignore_id_mismatch: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<String> {
    use vhdx_core::ops::compare::{compare, CompareOptions};
    use vhdx_core::ops::convert::open_source;
    let mut open_a = open_options(parents, parent_policy, ignore_id_mismatch, true)?;
    open_a.format = input_format
        .map(|f| parse_format(f, "input_format"))
        .transpose()?;
    let open_b = OpenOptions {
        parents: parents_b,
        ..open_a.clone()
    };
    let result = with_progress(py, progress.as_ref(), |update| {
        let disk_a = open_source(&a, &open_a)?;
        let disk_b = open_source(&b, &open_b)?;
        compare(&disk_a, &disk_b, &CompareOptions { strict }, update)
    })?;
    json(&result.map_err(|e| to_py_err(py, e))?)
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
        (t, _) => opts = opts.disk_type(parse_disk_type(t)?),
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

/// Checks whether Hyper-V could offload copies (ODX) for the disk at `path` (see
/// `vhdx_core::guest::odx`): every file of its chain on the host, the controller, the guest
/// volumes (all, or `volume`) and the guest `files` on that volume. Returns the JSON text
/// of `OdxReport`. The GIL is released for the whole work.
#[pyfunction]
#[pyo3(signature = (path, volume = None, files = Vec::new(), controller = "scsi", parents = Vec::new(), parent_policy = "default", ignore_id_mismatch = false))]
#[allow(clippy::too_many_arguments)]
fn odx_check(
    py: Python<'_>,
    path: PathBuf,
    volume: Option<u32>,
    files: Vec<String>,
    controller: &str,
    parents: Vec<PathBuf>,
    parent_policy: &str,
    ignore_id_mismatch: bool,
) -> PyResult<String> {
    use vhdx_core::guest::{odx_check_disk, Controller, OdxOptions};
    let controller: Controller = controller.parse().map_err(|e| to_py_err(py, e))?;
    let open = open_options(parents, parent_policy, ignore_id_mismatch, true)?;
    let opts = OdxOptions {
        volume,
        files,
        controller,
    };
    let report = py.detach(|| {
        let disk = Disk::open_with(&path, &open)?;
        odx_check_disk(&disk, &opts)
    });
    json(&report.map_err(|e| to_py_err(py, e))?)
}

/// The native module `vhdx._vhdx`.
#[pymodule]
fn _vhdx(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeDisk>()?;
    m.add_function(wrap_pyfunction!(create_disk, m)?)?;
    m.add_function(wrap_pyfunction!(compact, m)?)?;
    m.add_function(wrap_pyfunction!(merge, m)?)?;
    m.add_function(wrap_pyfunction!(flatten, m)?)?;
    m.add_function(wrap_pyfunction!(convert, m)?)?;
    m.add_function(wrap_pyfunction!(set_parent, m)?)?;
    m.add_function(wrap_pyfunction!(resize, m)?)?;
    m.add_function(wrap_pyfunction!(compare, m)?)?;
    m.add_function(wrap_pyfunction!(odx_check, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
