//! Turning the Windows paths stored in parent locators into host paths, and the lexical
//! containment test of the strict parent policy.

use std::path::{Component, Path, PathBuf};

/// Converts a Windows path from a locator into a host path: drops the `\\?\` prefix, maps
/// `UNC\server\share` to `//server/share`, and turns backslashes into the host separator.
/// Returns `None` for a path that cannot name a file on this host: on non-Windows hosts, a
/// drive-letter path (`C:\dir\x.vhdx`) or a volume GUID path (`Volume{…}\x.vhdx`), which
/// would otherwise be looked up relative to the current directory.
pub fn host_path_from_windows(value: &str) -> Option<PathBuf> {
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
        return Some(PathBuf::from(v));
    }
    let b = v.as_bytes();
    let drive = b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':';
    if drive || v.starts_with("Volume{") {
        return None;
    }
    Some(PathBuf::from(v.replace('\\', "/")))
}

/// Removes `.` components (never `..`, which a symbolic link can give another meaning), so
/// paths built from locators read as the user would write them.
pub fn without_cur_dir(path: &Path) -> PathBuf {
    let mut out: PathBuf = path
        .components()
        .filter(|c| *c != Component::CurDir)
        .collect();
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
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
        let h = host_path_from_windows;
        assert_eq!(
            h(r".\fat-parent.vhd"),
            Some(PathBuf::from("./fat-parent.vhd"))
        );
        assert_eq!(
            h(r"\\?\UNC\srv\share\x.vhdx"),
            Some(PathBuf::from("//srv/share/x.vhdx"))
        );
        assert_eq!(h(r"..\..\p.vhdx"), Some(PathBuf::from("../../p.vhdx")));
        if cfg!(windows) {
            assert!(h(r"\\?\C:\Projects\x.vhdx").is_some());
        } else {
            assert_eq!(h(r"\\?\C:\Projects\x.vhdx"), None);
            assert_eq!(h(r"C:\x.vhd"), None);
            assert_eq!(
                h(r"\\?\Volume{26a21bda-a627-11d7-9931-806e6f6e6963}\x.vhdx"),
                None
            );
        }
    }

    #[test]
    fn cur_dir_removed() {
        assert_eq!(
            without_cur_dir(Path::new("././base.vhdx")),
            PathBuf::from("base.vhdx")
        );
        assert_eq!(
            without_cur_dir(Path::new("/a/./b/../c")),
            PathBuf::from("/a/b/../c")
        );
        assert_eq!(without_cur_dir(Path::new(".")), PathBuf::from("."));
    }

    #[test]
    fn containment() {
        assert!(is_inside(Path::new("/a/b"), Path::new("/a/b/./c.vhdx")));
        assert!(is_inside(Path::new("/a/b"), Path::new("/a/b/d/../c.vhdx")));
        assert!(!is_inside(Path::new("/a/b"), Path::new("/a/b/../c.vhdx")));
        assert!(!is_inside(Path::new("/a/b"), Path::new("/etc/passwd")));
    }
}
