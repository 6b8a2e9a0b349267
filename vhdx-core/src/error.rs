//! The one public error type: a stable [`ErrorKind`] plus the context a user needs to act on
//! it (file, on-disk structure, offset, expected-versus-found) and an optional I/O source.
//!
//! Call sites build errors with the small constructors ([`Error::corrupt`], [`Error::io`], …)
//! and add context with the chaining setters; the open functions attach the path at the
//! boundary with [`Error::in_file`], so inner parsers never need to know file names.
//! The CLI maps kinds to exit codes and Python maps them to exception classes, so the kind of
//! an error is part of the public contract and never changes for the same situation.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The stable category of an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The operating system failed an I/O request (the source holds the `io::Error`).
    Io,
    /// The file is not a VHDX or VHD image at all (no known signature).
    NotADisk,
    /// A structure inside the image violates the format: bad checksum, impossible value,
    /// overlap, truncation.
    Corrupt,
    /// The image is valid but uses something this library does not implement (for example an
    /// unknown region marked required).
    Unsupported,
    /// A differencing disk's parent could not be found under any of the candidate paths.
    ParentNotFound,
    /// A parent was found but its identity does not match the linkage the child recorded.
    LinkageMismatch,
    /// The parent chain refers back to a disk already in it, or is deeper than the limit.
    ChainLoop,
    /// A caller-supplied argument is invalid (offset past the end, bad size, …).
    InvalidArgument,
    /// The disk is held by another writer.
    InUse,
    /// A parent path was refused by the active parent policy.
    PolicyRefused,
}

impl ErrorKind {
    /// A short, stable, machine-readable name for the kind (`"corrupt"`, `"io"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Io => "io",
            ErrorKind::NotADisk => "not_a_disk",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::ParentNotFound => "parent_not_found",
            ErrorKind::LinkageMismatch => "linkage_mismatch",
            ErrorKind::ChainLoop => "chain_loop",
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::InUse => "in_use",
            ErrorKind::PolicyRefused => "policy_refused",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error with a stable kind and the context of where it happened. The context lives in
/// one heap allocation so `Result<T, Error>` stays small on the happy path.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Error(Box<Inner>);

/// The context of an [`Error`].
#[derive(Debug, thiserror::Error)]
#[error("{}", self.render())]
struct Inner {
    kind: ErrorKind,
    path: Option<PathBuf>,
    structure: Option<Cow<'static, str>>,
    offset: Option<u64>,
    message: Cow<'static, str>,
    expected: Option<String>,
    found: Option<String>,
    #[source]
    source: Option<io::Error>,
    /// The `errno` of an I/O failure reported without its source (see [`Error::os_code`]).
    errno: Option<i32>,
}

impl Error {
    /// A new error of `kind` with a human-readable message.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Error(Box::new(Inner {
            kind,
            path: None,
            structure: None,
            offset: None,
            message: message.into(),
            expected: None,
            found: None,
            source: None,
            errno: None,
        }))
    }

    /// A format violation in `structure` at file `offset`.
    pub fn corrupt(
        structure: impl Into<Cow<'static, str>>,
        offset: u64,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Error::new(ErrorKind::Corrupt, message)
            .structure(structure)
            .offset(offset)
    }

    /// A valid but unimplemented feature in `structure` at file `offset`.
    pub fn unsupported(
        structure: impl Into<Cow<'static, str>>,
        offset: u64,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Error::new(ErrorKind::Unsupported, message)
            .structure(structure)
            .offset(offset)
    }

    /// An invalid caller argument.
    pub fn invalid_argument(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::InvalidArgument, message)
    }

    /// An I/O failure while doing `what` (for example "reading the BAT").
    pub fn io(source: io::Error, what: impl Into<Cow<'static, str>>) -> Self {
        let mut e = Error::new(ErrorKind::Io, what);
        e.0.source = Some(source);
        e
    }

    /// An I/O failure reading `structure` at `offset`. A short read (the structure lies past
    /// the end of the file) is reported as corruption, since the file is truncated.
    pub fn read_failed(
        structure: impl Into<Cow<'static, str>>,
        offset: u64,
        source: io::Error,
    ) -> Self {
        if source.kind() == io::ErrorKind::UnexpectedEof {
            Error::corrupt(structure, offset, "the file ends before this structure")
        } else {
            let mut e = Error::new(ErrorKind::Io, "read failed")
                .structure(structure)
                .offset(offset);
            e.0.source = Some(source);
            e
        }
    }

    /// Sets the on-disk structure the error is about.
    pub fn structure(mut self, structure: impl Into<Cow<'static, str>>) -> Self {
        self.0.structure = Some(structure.into());
        self
    }

    /// Sets the file offset the error is about.
    pub fn offset(mut self, offset: u64) -> Self {
        self.0.offset = Some(offset);
        self
    }

    /// Sets what the format expected at that place.
    pub fn expected(mut self, expected: impl fmt::Display) -> Self {
        self.0.expected = Some(expected.to_string());
        self
    }

    /// Sets what was found instead.
    pub fn found(mut self, found: impl fmt::Display) -> Self {
        self.0.found = Some(found.to_string());
        self
    }

    /// Names the file the error is about, unless an inner call already named one.
    pub fn in_file(mut self, path: &Path) -> Self {
        if self.0.path.is_none() {
            self.0.path = Some(path.to_path_buf());
        }
        self
    }

    /// The stable kind.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// The file, when known.
    pub fn path(&self) -> Option<&Path> {
        self.0.path.as_deref()
    }

    /// The on-disk structure, when known.
    pub fn structure_name(&self) -> Option<&str> {
        self.0.structure.as_deref()
    }

    /// The file offset, when known.
    pub fn file_offset(&self) -> Option<u64> {
        self.0.offset
    }

    /// The bare message, without context.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The operating system's error number (`errno`) of the I/O failure behind the error,
    /// when there is one (so bindings can raise the fitting `FileNotFoundError` or
    /// `PermissionError`).
    pub fn os_error(&self) -> Option<i32> {
        self.0
            .source
            .as_ref()
            .and_then(io::Error::raw_os_error)
            .or(self.0.errno)
    }

    /// Records the `errno` of the I/O failure behind an error whose message replaces the
    /// failure's own text (for example "no such file").
    pub fn os_code(mut self, errno: Option<i32>) -> Self {
        self.0.errno = errno;
        self
    }

    /// What the format expected, when recorded.
    pub fn expected_value(&self) -> Option<&str> {
        self.0.expected.as_deref()
    }

    /// What was found, when recorded.
    pub fn found_value(&self) -> Option<&str> {
        self.0.found.as_deref()
    }
}

impl Inner {
    fn render(&self) -> String {
        let mut s = String::new();
        if let Some(p) = &self.path {
            s.push_str(&p.display().to_string());
            s.push_str(": ");
        }
        if let Some(st) = &self.structure {
            s.push_str(st);
            if let Some(o) = self.offset {
                s.push_str(&format!(" at offset {o:#x}"));
            }
            s.push_str(": ");
        } else if let Some(o) = self.offset {
            s.push_str(&format!("at offset {o:#x}: "));
        }
        s.push_str(&self.message);
        match (&self.expected, &self.found) {
            (Some(e), Some(f)) => s.push_str(&format!(" (expected {e}, found {f})")),
            (Some(e), None) => s.push_str(&format!(" (expected {e})")),
            (None, Some(f)) => s.push_str(&format!(" (found {f})")),
            (None, None) => {}
        }
        if let Some(src) = &self.source {
            s.push_str(&format!(": {src}"));
        }
        s
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match e.0.kind {
            ErrorKind::Io => {
                e.0.source
                    .as_ref()
                    .map(|s| s.kind())
                    .unwrap_or(io::ErrorKind::Other)
            }
            ErrorKind::InvalidArgument => io::ErrorKind::InvalidInput,
            ErrorKind::ParentNotFound => io::ErrorKind::NotFound,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_all_context() {
        let e = Error::corrupt("VHDX header 1", 0x10000, "bad checksum")
            .expected("0x12345678")
            .found("0x0")
            .in_file(Path::new("/x/disk.vhdx"));
        assert_eq!(
            e.to_string(),
            "/x/disk.vhdx: VHDX header 1 at offset 0x10000: bad checksum (expected 0x12345678, found 0x0)"
        );
        assert_eq!(e.kind(), ErrorKind::Corrupt);
    }

    #[test]
    fn short_read_is_corruption() {
        let e = Error::read_failed("BAT", 5, io::Error::from(io::ErrorKind::UnexpectedEof));
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        let e = Error::read_failed("BAT", 5, io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!(e.kind(), ErrorKind::Io);
    }
}
