//! Turning the Windows paths stored in parent locators into host paths, and the lexical
//! containment test of the strict parent policy.

use std::path::{Component, Path, PathBuf};

/// Converts a Windows path from a locator into a host path: drops the `\\?\` prefix, maps
/// `UNC\server\share` to `//server/share`, and turns backslashes into the host separator.
/// Drive-letter paths keep their drive (`C:/dir/x.vhdx`), which exists only on Windows or on
/// hosts that mount such a path.
pub fn host_path_from_windows(value: &str) -> PathBuf {
    let mut v = value.trim_end_matches('\0');
    if let Some(rest) = v.strip_prefix(r"\\?\") {
        v = rest;
    }
    let owned;
    if let Some(rest) = v.strip_prefix(r"UNC\") {
        owned = format!(r"\\{rest}");
        v = &owned;
    }
    if cfg!(windows) {
        PathBuf::from(v)
    } else {
        PathBuf::from(v.replace('\\', "/"))
    }
}

/// Removes `.` and resolves `..` lexically (without touching the file system).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Whether `path` lies inside `dir` (or below it), both lexically and, when both exist,
/// after resolving symbolic links.
pub fn is_inside(dir: &Path, path: &Path) -> bool {
    let d = normalize(dir);
    let p = normalize(path);
    if !p.starts_with(&d)
        || p.components().any(|c| c == Component::ParentDir)
            && !d.components().any(|c| c == Component::ParentDir)
    {
        return false;
    }
    match (std::fs::canonicalize(dir), std::fs::canonicalize(path)) {
        (Ok(cd), Ok(cp)) => cp.starts_with(cd),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_paths() {
        assert_eq!(
            host_path_from_windows(r".\fat-parent.vhd"),
            PathBuf::from("./fat-parent.vhd")
        );
        assert_eq!(
            host_path_from_windows(r"\\?\C:\Projects\x.vhdx"),
            PathBuf::from("C:/Projects/x.vhdx")
        );
        assert_eq!(
            host_path_from_windows(r"\\?\UNC\srv\share\x.vhdx"),
            PathBuf::from("//srv/share/x.vhdx")
        );
        assert_eq!(
            host_path_from_windows(r"..\..\p.vhdx"),
            PathBuf::from("../../p.vhdx")
        );
    }

    #[test]
    fn containment() {
        assert!(is_inside(Path::new("/a/b"), Path::new("/a/b/./c.vhdx")));
        assert!(is_inside(Path::new("/a/b"), Path::new("/a/b/d/../c.vhdx")));
        assert!(!is_inside(Path::new("/a/b"), Path::new("/a/b/../c.vhdx")));
        assert!(!is_inside(Path::new("/a/b"), Path::new("/etc/passwd")));
    }
}
