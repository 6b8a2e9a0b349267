//! Fuzz target: VHDX metadata and parent locators, VHD dynamic headers and parent locators.
//! The bases are the differencing children of testdata/chain (`vhdx512/child.vhdx`,
//! `vhd/child.vhd`), so every patch lands in a file that has locators to parse.
//!
//! Input: `[mode][rest…]`.
//! - mode bit 1 set: `rest` is a VHDX parent locator item, parsed directly.
//! - otherwise `rest` is a patch list aimed at the VHDX metadata region (mode bit 0 clear)
//!   or at the VHD's first bytes up to the end of its locator data (bit 0 set); the image is
//!   opened from memory, asked for info and a check, and its locators are turned into host
//!   paths. With mode bit 2 set the patched child is also written to a folder under /dev/shm
//!   beside its real parent, with a decoy parent one folder up, and opened from there with
//!   the strict parent policy: a parent outside the child's folder must never be opened,
//!   and with the default policy an opened parent must have passed the linkage check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use vhdx_core::chain::{host_path_from_windows, is_inside, without_cur_dir};
use vhdx_core::storage::{MemStorage, Overlay, Storage};
use vhdx_core::{Disk, Image, OpenOptions, ParentPolicy, VirtualDisk};
use vhdx_fuzz::{apply_patches, embedded};

struct Base {
    child: Arc<dyn Storage>,
    window: (u64, u64),
    dir: PathBuf,
    ext: &'static str,
}

fn bases() -> &'static [Base; 2] {
    static B: OnceLock<[Base; 2]> = OnceLock::new();
    B.get_or_init(|| {
        let root = PathBuf::from(format!("/dev/shm/vhdx-fuzz-{}", std::process::id()));
        let make = |child_gz: &[u8], parent_gz: &[u8], ext: &'static str| {
            let child = embedded(child_gz);
            let parent = embedded(parent_gz);
            let dir = root.join(format!("{ext}/in"));
            std::fs::create_dir_all(&dir).expect("fuzz folder");
            std::fs::write(dir.join(format!("base.{ext}")), &parent).expect("parent");
            // A decoy: the same parent one folder up, where only a locator leaving the
            // child's folder leads.
            std::fs::write(root.join(format!("{ext}/base.{ext}")), &parent).expect("decoy");
            let child: Arc<dyn Storage> = Arc::new(MemStorage::new(child));
            let d = Disk::from_storage(child.clone(), "base").expect("base opens");
            let window = match d.image() {
                Image::Vhdx(v) => (v.regions().metadata.offset, v.regions().metadata.length),
                Image::Vhd(v) => {
                    let end = v.sparse().map_or(4096, |s| {
                        s.header
                            .parent_locators
                            .iter()
                            .map(|l| l.platform_data_offset.get() + l.data_space_bytes())
                            .max()
                            .unwrap_or(0)
                            .max(s.header_offset + 1024)
                    });
                    (0, end)
                }
                Image::Raw(_) => unreachable!(),
            };
            Base {
                child,
                window,
                dir,
                ext,
            }
        };
        [
            make(
                include_bytes!("../../testdata/chain/vhdx512/child.vhdx.gz"),
                include_bytes!("../../testdata/chain/vhdx512/base.vhdx.gz"),
                "vhdx",
            ),
            make(
                include_bytes!("../../testdata/chain/vhd/child.vhd.gz"),
                include_bytes!("../../testdata/chain/vhd/base.vhd.gz"),
                "vhd",
            ),
        ]
    })
}

fn canonical_inside(dir: &Path, p: &Path) -> bool {
    match (std::fs::canonicalize(dir), std::fs::canonicalize(p)) {
        (Ok(d), Ok(p)) => p.starts_with(d),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 2 != 0 {
        let _ = vhdx_core::vhdx::metadata::parse_parent_locator(rest, 0);
        return;
    }
    let base = &bases()[usize::from(mode & 1)];
    let Ok(mut ov) = Overlay::new(base.child.clone()) else {
        return;
    };
    apply_patches(&mut ov, rest, base.window.0, base.window.1);
    let ov: Arc<dyn Storage> = Arc::new(ov);
    if let Ok(disk) = Disk::from_storage(ov.clone(), "fuzz") {
        let _ = disk.info(false);
        let _ = disk.check();
        if let Some(req) = disk.image().file().parent_request() {
            for l in &req.locators {
                if let Some(p) = host_path_from_windows(&l.value) {
                    let p = without_cur_dir(&Path::new("/x/y").join(p));
                    let _ = is_inside(Path::new("/x/y"), &p);
                }
            }
        }
        let mut b = vec![0u8; 4096];
        let _ = disk.read_at(&mut b, 0);
    }
    if mode & 4 == 0 {
        return;
    }
    let Ok(len) = ov.len() else { return };
    let mut bytes = vec![0u8; len as usize];
    if ov.read_exact_at(&mut bytes, 0).is_err() {
        return;
    }
    let child = base.dir.join(format!("child.{}", base.ext));
    if std::fs::write(&child, &bytes).is_err() {
        return;
    }
    for policy in [ParentPolicy::Strict, ParentPolicy::Default] {
        let opts = OpenOptions {
            policy,
            require_parent: false,
            ..OpenOptions::default()
        };
        let Ok(disk) = Disk::open_with(&child, &opts) else {
            continue;
        };
        if let Some(p) = disk.parent().and_then(|p| p.path().map(Path::to_path_buf)) {
            if policy == ParentPolicy::Strict {
                assert!(
                    canonical_inside(&base.dir, &p),
                    "the strict policy followed {} out of {}",
                    p.display(),
                    base.dir.display()
                );
            }
            let status = disk.parent_info().map(|i| i.status.clone());
            assert_eq!(
                status.as_deref(),
                Some("ok"),
                "a parent was followed unchecked"
            );
        }
    }
});
