//! `odx-check`: would Hyper-V offload copies (ODX, offloaded data transfer) for this disk?
//! ODX only works when every condition holds, so the check examines each one and ties every
//! finding to a stable rule id ([`OdxRule`]):
//!
//! - the image files on the host (every file of a differencing chain): not sparse
//!   (`SEEK_DATA`/`SEEK_HOLE` against the allocated size), not compressed and not encrypted
//!   by the host file system (inode flags), and the host file system type (informational:
//!   ODX also needs an ODX-capable NTFS volume on the Windows host that will use the disk);
//! - the controller the disk hangs off: SCSI qualifies, IDE does not;
//! - each examined guest volume (as the guest sees it, through the chain): NTFS, not
//!   BitLocker-protected;
//! - each named guest file on that NTFS volume: not sparse, not compressed, not encrypted
//!   (EFS), not resident in its MFT record, not a reparse point (deduplicated or other).
//!
//! The verdict is eligible when no finding fails. An error (not a finding) means the disk
//! itself could not be read.

use super::ntfs_file::{self, FileFacts, Lookup, NtfsVolume};
use super::{inspect, GuestLayout, Volume, VolumeKind};
use crate::disk::VirtualDisk;
use crate::error::{Error, Result};
use crate::storage::hostfile;
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// The virtual controller the disk is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Controller {
    /// A virtual SCSI controller (ODX works).
    #[default]
    Scsi,
    /// A virtual IDE controller (no ODX; generation 1 VMs boot from IDE).
    Ide,
}

impl Controller {
    /// `scsi` or `ide`.
    pub fn as_str(self) -> &'static str {
        match self {
            Controller::Scsi => "scsi",
            Controller::Ide => "ide",
        }
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Controller {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "scsi" => Ok(Controller::Scsi),
            "ide" => Ok(Controller::Ide),
            _ => Err(Error::invalid_argument(format!(
                "controller {s:?}: expected scsi or ide"
            ))),
        }
    }
}

/// What to examine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OdxOptions {
    /// The volume to examine (its number in [`GuestLayout`]); `None`: every volume.
    pub volume: Option<u32>,
    /// Guest paths (inside the examined volume) whose files to examine.
    pub files: Vec<String>,
    /// The controller the disk is attached to.
    pub controller: Controller,
}

/// The rules, each a stable snake_case id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OdxRule {
    /// Informational: the host file system an image file lives on.
    HostFilesystem,
    /// An image file has holes (sparse) on the host.
    HostFileSparse,
    /// An image file is compressed by the host file system.
    HostFileCompressed,
    /// An image file is encrypted by the host file system.
    HostFileEncrypted,
    /// The disk is attached to an IDE controller.
    ControllerIde,
    /// The disk holds no volume, or a volume is not NTFS.
    GuestVolumeNotNtfs,
    /// A volume is BitLocker-protected.
    GuestVolumeBitlocker,
    /// An NTFS volume's structures cannot be read.
    GuestVolumeUnreadable,
    /// A named file does not exist on the volume (or names a directory).
    GuestFileNotFound,
    /// A named file could not be examined: its volume is not a readable NTFS volume.
    GuestFileNotExamined,
    /// A file is sparse.
    GuestFileSparse,
    /// A file is NTFS-compressed.
    GuestFileCompressed,
    /// A file is EFS-encrypted.
    GuestFileEncrypted,
    /// A file's data lives inside its MFT record (resident), with no clusters to offload.
    GuestFileResident,
    /// A file is a reparse point (deduplicated, or another reparse tag).
    GuestFileReparsePoint,
}

impl OdxRule {
    /// Every rule, in report order.
    pub const ALL: [OdxRule; 15] = [
        OdxRule::HostFilesystem,
        OdxRule::HostFileSparse,
        OdxRule::HostFileCompressed,
        OdxRule::HostFileEncrypted,
        OdxRule::ControllerIde,
        OdxRule::GuestVolumeNotNtfs,
        OdxRule::GuestVolumeBitlocker,
        OdxRule::GuestVolumeUnreadable,
        OdxRule::GuestFileNotFound,
        OdxRule::GuestFileNotExamined,
        OdxRule::GuestFileSparse,
        OdxRule::GuestFileCompressed,
        OdxRule::GuestFileEncrypted,
        OdxRule::GuestFileResident,
        OdxRule::GuestFileReparsePoint,
    ];

    /// The stable id (`host_file_sparse`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            OdxRule::HostFilesystem => "host_filesystem",
            OdxRule::HostFileSparse => "host_file_sparse",
            OdxRule::HostFileCompressed => "host_file_compressed",
            OdxRule::HostFileEncrypted => "host_file_encrypted",
            OdxRule::ControllerIde => "controller_ide",
            OdxRule::GuestVolumeNotNtfs => "guest_volume_not_ntfs",
            OdxRule::GuestVolumeBitlocker => "guest_volume_bitlocker",
            OdxRule::GuestVolumeUnreadable => "guest_volume_unreadable",
            OdxRule::GuestFileNotFound => "guest_file_not_found",
            OdxRule::GuestFileNotExamined => "guest_file_not_examined",
            OdxRule::GuestFileSparse => "guest_file_sparse",
            OdxRule::GuestFileCompressed => "guest_file_compressed",
            OdxRule::GuestFileEncrypted => "guest_file_encrypted",
            OdxRule::GuestFileResident => "guest_file_resident",
            OdxRule::GuestFileReparsePoint => "guest_file_reparse_point",
        }
    }
}

impl fmt::Display for OdxRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one rule for one subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OdxStatus {
    /// The condition holds: nothing here stops ODX.
    Pass,
    /// The condition fails: ODX will not be used.
    Fail,
    /// Reported for information; no bearing on the verdict.
    Info,
}

impl OdxStatus {
    /// `pass`, `fail` or `info`.
    pub fn as_str(self) -> &'static str {
        match self {
            OdxStatus::Pass => "pass",
            OdxStatus::Fail => "fail",
            OdxStatus::Info => "info",
        }
    }
}

/// One rule applied to one subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OdxFinding {
    /// The rule.
    pub rule: OdxRule,
    /// What was examined: a host file path, `controller`, `disk`, `volume N`, or
    /// `volume N: GUEST_PATH`.
    pub subject: String,
    /// The guest volume the finding is about, when it is about one.
    pub volume: Option<u32>,
    /// Pass, fail or info.
    pub status: OdxStatus,
    /// What was found, in a sentence.
    pub message: String,
}

/// The result of an ODX eligibility check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OdxReport {
    /// The disk (the first host file).
    pub path: String,
    /// No finding failed.
    pub eligible: bool,
    /// The controller the check assumed.
    pub controller: Controller,
    /// The host files examined (a differencing chain nearest first).
    pub host_files: Vec<String>,
    /// The guest volumes examined.
    pub volumes: Vec<u32>,
    /// Every finding, host first, then the controller, the volumes and the files.
    pub findings: Vec<OdxFinding>,
}

impl OdxReport {
    /// The findings that fail.
    pub fn failures(&self) -> impl Iterator<Item = &OdxFinding> {
        self.findings.iter().filter(|f| f.status == OdxStatus::Fail)
    }
}

/// Checks `disk` for ODX eligibility. `host_files` are the image files on the host whose
/// content makes up `disk`, nearest first (one file, or every file of a differencing
/// chain); the guest is read through `disk`. Errors: the disk or a host file cannot be
/// read, a partition table is unusable, `opts.volume` names no volume, or `opts.files` is
/// given for a disk with several volumes and no `opts.volume`.
pub fn odx_check(
    host_files: &[&Path],
    disk: &dyn VirtualDisk,
    opts: &OdxOptions,
) -> Result<OdxReport> {
    let mut findings = Vec::new();
    for p in host_files {
        host_findings(p, &mut findings)?;
    }
    findings.push(controller_finding(opts.controller));
    let layout = inspect(disk)?;
    let volumes = select_volumes(&layout, opts)?;
    if volumes.is_empty() {
        findings.push(OdxFinding {
            rule: OdxRule::GuestVolumeNotNtfs,
            subject: "disk".into(),
            volume: None,
            status: OdxStatus::Fail,
            message: "the disk holds no volume (no partition and no file system at its start)"
                .into(),
        });
    }
    for v in &volumes {
        match system_partition(v).filter(|_| opts.volume.is_none()) {
            // Firmware and Windows system partitions hold no data anyone copies: judging
            // them would fail every boot disk. Named with --volume, they are judged.
            Some(what) => findings.push(OdxFinding {
                rule: OdxRule::GuestVolumeNotNtfs,
                subject: volume_subject(v),
                volume: Some(v.number),
                status: OdxStatus::Info,
                message: format!(
                    "{what} partition ({}): a system partition, not judged (name it with \
                     --volume {} to judge it)",
                    v.kind, v.number
                ),
            }),
            None => volume_findings(v, &mut findings),
        }
    }
    if !opts.files.is_empty() {
        let target = file_volume(&layout, &volumes, opts)?;
        file_findings(disk, target, &opts.files, &mut findings)?;
    }
    let eligible = findings.iter().all(|f| f.status != OdxStatus::Fail);
    Ok(OdxReport {
        path: host_files
            .first()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        eligible,
        controller: opts.controller,
        host_files: host_files.iter().map(|p| p.display().to_string()).collect(),
        volumes: volumes.iter().map(|v| v.number).collect(),
        findings,
    })
}

/// [`odx_check`] of an opened [`Disk`](crate::Disk): every file of its chain on the host.
pub fn odx_check_disk(disk: &crate::Disk, opts: &OdxOptions) -> Result<OdxReport> {
    let paths: Vec<PathBuf> = disk
        .chain()
        .iter()
        .filter_map(|d| d.path().map(Path::to_path_buf))
        .collect();
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    odx_check(&refs, disk, opts)
}

fn host_findings(path: &Path, out: &mut Vec<OdxFinding>) -> Result<()> {
    let f = std::fs::File::open(path)
        .map_err(|e| Error::io(e, "opening the image file").in_file(path))?;
    let subject = path.display().to_string();
    let find = |rule, status, message: String| OdxFinding {
        rule,
        subject: subject.clone(),
        volume: None,
        status,
        message,
    };
    let fs = hostfile::host_fs(&f).map_err(|e| Error::io(e, "statfs").in_file(path))?;
    out.push(find(
        OdxRule::HostFilesystem,
        OdxStatus::Info,
        match fs {
            Some(fs) => format!(
                "the image file lives on {} (statfs magic {:#x}); ODX needs the Windows host \
                 that uses the disk to keep it on an ODX-capable NTFS volume",
                fs.name.unwrap_or("an unknown file system"),
                fs.magic
            ),
            None => "the host file system type is not known on this platform".into(),
        },
    ));
    let h = hostfile::holes(&f).map_err(|e| Error::io(e, "SEEK_HOLE").in_file(path))?;
    let alloc = h
        .allocated_bytes
        .map_or_else(String::new, |a| format!(", {a} bytes allocated"));
    out.push(if h.is_sparse() {
        find(
            OdxRule::HostFileSparse,
            OdxStatus::Fail,
            format!(
                "the image file is sparse: {} of its {} bytes are holes{alloc}; a copy that \
                 writes every byte (cp --sparse=never, or a plain copy to the Windows host) \
                 is not",
                h.hole_bytes, h.length
            ),
        )
    } else {
        find(
            OdxRule::HostFileSparse,
            OdxStatus::Pass,
            format!("the image file has no holes ({} bytes{alloc})", h.length),
        )
    });
    let flags =
        hostfile::inode_flags(&f).map_err(|e| Error::io(e, "FS_IOC_GETFLAGS").in_file(path))?;
    for (rule, bit, what) in [
        (
            OdxRule::HostFileCompressed,
            hostfile::FS_COMPR_FL,
            "compressed",
        ),
        (
            OdxRule::HostFileEncrypted,
            hostfile::FS_ENCRYPT_FL,
            "encrypted",
        ),
    ] {
        out.push(match flags {
            Some(fl) if fl & bit != 0 => find(
                rule,
                OdxStatus::Fail,
                format!("the host file system keeps the image file {what} (inode flags {fl:#x})"),
            ),
            Some(fl) => find(
                rule,
                OdxStatus::Pass,
                format!("not {what} by the host file system (inode flags {fl:#x})"),
            ),
            None => find(
                rule,
                OdxStatus::Pass,
                format!("not {what}: the host file system keeps no inode flags for it"),
            ),
        });
    }
    Ok(())
}

fn controller_finding(c: Controller) -> OdxFinding {
    let (status, message) = match c {
        Controller::Scsi => (
            OdxStatus::Pass,
            "attached to a virtual SCSI controller, which passes offload requests on",
        ),
        Controller::Ide => (
            OdxStatus::Fail,
            "attached to a virtual IDE controller, which offers no offloaded transfers \
             (the boot disk of a generation 1 VM is on IDE)",
        ),
    };
    OdxFinding {
        rule: OdxRule::ControllerIde,
        subject: "controller".into(),
        volume: None,
        status,
        message: message.into(),
    }
}

fn select_volumes<'l>(layout: &'l GuestLayout, opts: &OdxOptions) -> Result<Vec<&'l Volume>> {
    match opts.volume {
        None => Ok(layout.volumes.iter().collect()),
        Some(n) => match layout.volume(n) {
            Some(v) => Ok(vec![v]),
            None => Err(Error::invalid_argument(format!(
                "the disk has no volume {n} (its volumes: {})",
                volume_list(layout)
            ))),
        },
    }
}

fn volume_list(layout: &GuestLayout) -> String {
    if layout.volumes.is_empty() {
        return "none".into();
    }
    layout
        .volumes
        .iter()
        .map(|v| format!("{} {}", v.number, v.kind))
        .collect::<Vec<_>>()
        .join(", ")
}

fn volume_subject(v: &Volume) -> String {
    format!("volume {}", v.number)
}

/// The kind of system partition `v` is, by its partition type: the EFI system partition,
/// the Microsoft reserved partition, Windows recovery, BIOS boot.
fn system_partition(v: &Volume) -> Option<&'static str> {
    let p = v.partition.as_ref()?;
    if let Some(t) = p.type_guid {
        return match t.to_string().as_str() {
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93b" => Some("EFI system"),
            "e3c9e316-0b5c-4db8-817d-f92df00215ae" => Some("Microsoft reserved"),
            "de94bba4-06d1-4d40-a16a-bfd50179d6ac" => Some("Windows recovery"),
            "21686148-6449-6e6f-744e-656564454649" => Some("BIOS boot"),
            _ => None,
        };
    }
    match p.mbr_type? {
        0xEF => Some("EFI system"),
        0x27 => Some("Windows recovery"),
        _ => None,
    }
}

fn volume_findings(v: &Volume, out: &mut Vec<OdxFinding>) {
    let find = |rule, status, message: String| OdxFinding {
        rule,
        subject: volume_subject(v),
        volume: Some(v.number),
        status,
        message,
    };
    if v.kind == VolumeKind::BitLocker {
        out.push(find(
            OdxRule::GuestVolumeBitlocker,
            OdxStatus::Fail,
            "the volume is BitLocker-protected (-FVE-FS- boot sector); its file system cannot \
             be read without the key and offloaded transfers do not apply"
                .into(),
        ));
        return;
    }
    out.push(find(
        OdxRule::GuestVolumeBitlocker,
        OdxStatus::Pass,
        "not BitLocker-protected".into(),
    ));
    out.push(if v.kind == VolumeKind::Ntfs {
        find(OdxRule::GuestVolumeNotNtfs, OdxStatus::Pass, "NTFS".into())
    } else {
        find(
            OdxRule::GuestVolumeNotNtfs,
            OdxStatus::Fail,
            format!("the volume holds {}, not NTFS", v.kind),
        )
    });
}

/// The volume `--file` paths refer to: the chosen one; without a choice the only volume,
/// or the only NTFS volume that is not a system partition (Windows recovery is NTFS too).
fn file_volume<'l>(
    layout: &'l GuestLayout,
    chosen: &[&'l Volume],
    opts: &OdxOptions,
) -> Result<&'l Volume> {
    if opts.volume.is_some() {
        if let Some(v) = chosen.first() {
            return Ok(v);
        }
    }
    if let [v] = layout.volumes.as_slice() {
        return Ok(v);
    }
    let ntfs: Vec<&Volume> = layout
        .volumes
        .iter()
        .filter(|v| v.kind == VolumeKind::Ntfs && system_partition(v).is_none())
        .collect();
    if let [v] = ntfs.as_slice() {
        return Ok(v);
    }
    Err(Error::invalid_argument(format!(
        "guest files need a volume: pass --volume N (the disk's volumes: {})",
        volume_list(layout)
    )))
}

fn file_findings(
    disk: &dyn VirtualDisk,
    v: &Volume,
    files: &[String],
    out: &mut Vec<OdxFinding>,
) -> Result<()> {
    let not_examined = |why: String, out: &mut Vec<OdxFinding>| {
        for f in files {
            out.push(OdxFinding {
                rule: OdxRule::GuestFileNotExamined,
                subject: format!("volume {}: {f}", v.number),
                volume: Some(v.number),
                status: OdxStatus::Fail,
                message: why.clone(),
            });
        }
    };
    if v.kind != VolumeKind::Ntfs {
        not_examined(
            format!(
                "the volume holds {}, not NTFS; the file cannot be examined",
                v.kind
            ),
            out,
        );
        return Ok(());
    }
    let vol = match NtfsVolume::open(v.reader(disk)?) {
        Ok(vol) => vol,
        Err(e) if e.kind() == crate::ErrorKind::Corrupt => {
            out.push(OdxFinding {
                rule: OdxRule::GuestVolumeUnreadable,
                subject: volume_subject(v),
                volume: Some(v.number),
                status: OdxStatus::Fail,
                message: e.message().to_string(),
            });
            not_examined("the NTFS volume cannot be read".into(), out);
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for f in files {
        let subject = format!("volume {}: {f}", v.number);
        let find = |rule, status, message: String| OdxFinding {
            rule,
            subject: subject.clone(),
            volume: Some(v.number),
            status,
            message,
        };
        match vol.lookup(f) {
            Ok(Lookup::File(facts)) => {
                out.push(find(
                    OdxRule::GuestFileNotFound,
                    OdxStatus::Pass,
                    format!("found (MFT record {})", facts.record),
                ));
                for (rule, bad, message) in file_rules(&facts) {
                    out.push(find(
                        rule,
                        if bad {
                            OdxStatus::Fail
                        } else {
                            OdxStatus::Pass
                        },
                        message,
                    ));
                }
            }
            Ok(Lookup::NotFound(why)) => out.push(find(
                OdxRule::GuestFileNotFound,
                OdxStatus::Fail,
                format!("not found: {why}"),
            )),
            Ok(Lookup::Directory) => out.push(find(
                OdxRule::GuestFileNotFound,
                OdxStatus::Fail,
                "a directory, not a file".into(),
            )),
            Err(e) if e.kind() == crate::ErrorKind::Corrupt => out.push(find(
                OdxRule::GuestVolumeUnreadable,
                OdxStatus::Fail,
                e.message().to_string(),
            )),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The file rules with (failed?, message) for one file's facts.
fn file_rules(f: &FileFacts) -> Vec<(OdxRule, bool, String)> {
    use ntfs_file::*;
    let si = f.attributes;
    let dflags = f.data.map_or(0, |d| d.flags);
    let flag_rule = |rule, si_bit: u32, attr_bits: u16, what: &str| {
        let (a, b) = (si & si_bit != 0, dflags & attr_bits != 0);
        let msg = match (a, b) {
            (false, false) => format!("not {what}"),
            (true, true) => format!(
                "{what}: $STANDARD_INFORMATION has {si_bit:#x} and the $DATA attribute \
                 header flag {attr_bits:#x} is set"
            ),
            (true, false) => format!("{what}: $STANDARD_INFORMATION has {si_bit:#x}"),
            (false, true) => format!("{what}: the $DATA attribute header flag is set"),
        };
        (rule, a || b, msg)
    };
    let mut out = vec![
        flag_rule(
            OdxRule::GuestFileSparse,
            FILE_ATTRIBUTE_SPARSE_FILE,
            ATTR_FLAG_SPARSE,
            "sparse",
        ),
        flag_rule(
            OdxRule::GuestFileCompressed,
            FILE_ATTRIBUTE_COMPRESSED,
            ATTR_FLAG_COMPRESSED,
            "compressed",
        ),
        flag_rule(
            OdxRule::GuestFileEncrypted,
            FILE_ATTRIBUTE_ENCRYPTED,
            ATTR_FLAG_ENCRYPTED,
            "encrypted (EFS)",
        ),
    ];
    out.push(match f.data {
        Some(d) if d.resident => (
            OdxRule::GuestFileResident,
            true,
            format!(
                "the data ({} bytes) is resident in the MFT record: no clusters to offload",
                d.length
            ),
        ),
        Some(d) => (
            OdxRule::GuestFileResident,
            false,
            format!("non-resident data ({} bytes in clusters)", d.length),
        ),
        None => (
            OdxRule::GuestFileResident,
            true,
            "the file has no unnamed $DATA attribute".into(),
        ),
    });
    let reparse_si = si & FILE_ATTRIBUTE_REPARSE_POINT != 0;
    out.push(match (f.reparse_tag, reparse_si) {
        (Some(IO_REPARSE_TAG_DEDUP), _) => (
            OdxRule::GuestFileReparsePoint,
            true,
            format!(
                "a deduplicated file (reparse tag {IO_REPARSE_TAG_DEDUP:#010x}, \
                 IO_REPARSE_TAG_DEDUP)"
            ),
        ),
        (Some(tag), _) => (
            OdxRule::GuestFileReparsePoint,
            true,
            format!("a reparse point (tag {tag:#010x})"),
        ),
        (None, true) => (
            OdxRule::GuestFileReparsePoint,
            true,
            format!(
                "a reparse point ($STANDARD_INFORMATION has {FILE_ATTRIBUTE_REPARSE_POINT:#x})"
            ),
        ),
        (None, false) => (
            OdxRule::GuestFileReparsePoint,
            false,
            "not a reparse point".into(),
        ),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::ntfs_file::DataAttribute;

    fn facts(attributes: u32, flags: u16, resident: bool, tag: Option<u32>) -> FileFacts {
        FileFacts {
            record: 64,
            attributes,
            data: Some(DataAttribute {
                resident,
                flags,
                length: 100,
            }),
            reparse_tag: tag,
        }
    }

    fn failed(f: &FileFacts) -> Vec<&'static str> {
        file_rules(f)
            .into_iter()
            .filter(|r| r.1)
            .map(|r| r.0.as_str())
            .collect()
    }

    #[test]
    fn file_rule_table() {
        let empty: Vec<&str> = Vec::new();
        assert_eq!(failed(&facts(0x20, 0, false, None)), empty);
        assert_eq!(
            failed(&facts(0x200, 0, false, None)),
            vec!["guest_file_sparse"]
        );
        assert_eq!(
            failed(&facts(0, 0x8000, false, None)),
            vec!["guest_file_sparse"]
        );
        assert_eq!(
            failed(&facts(0x800, 0x1, false, None)),
            vec!["guest_file_compressed"]
        );
        assert_eq!(
            failed(&facts(0x4000, 0x4000, false, None)),
            vec!["guest_file_encrypted"]
        );
        assert_eq!(
            failed(&facts(0, 0, true, None)),
            vec!["guest_file_resident"]
        );
        assert_eq!(
            failed(&facts(0x400, 0, false, Some(0x8000_0013))),
            vec!["guest_file_reparse_point"]
        );
        assert_eq!(
            failed(&facts(0x400, 0, false, None)),
            vec!["guest_file_reparse_point"]
        );
        let r = file_rules(&facts(0, 0, false, Some(0x8000_0013)));
        assert!(r[4].2.contains("deduplicated"), "{}", r[4].2);
    }

    #[test]
    fn rules_serialize_as_their_ids() {
        for r in OdxRule::ALL {
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.as_str())
            );
        }
        assert_eq!("IDE".parse::<Controller>().unwrap(), Controller::Ide);
        assert!("sata".parse::<Controller>().is_err());
    }

    #[test]
    fn empty_disk_and_bad_volume() {
        let d = crate::guest::testdisk::MemDisk {
            bytes: vec![0u8; 1 << 20],
            sector: 512,
        };
        let r = odx_check(&[], &d, &OdxOptions::default()).unwrap();
        assert!(!r.eligible);
        let rules: Vec<_> = r
            .findings
            .iter()
            .map(|f| (f.rule.as_str(), f.status.as_str()))
            .collect();
        assert_eq!(
            rules,
            vec![
                ("controller_ide", "pass"),
                ("guest_volume_not_ntfs", "fail")
            ]
        );
        let opts = OdxOptions {
            volume: Some(2),
            ..Default::default()
        };
        let e = odx_check(&[], &d, &opts).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
    }
}
