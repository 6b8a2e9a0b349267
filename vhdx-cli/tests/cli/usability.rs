//! Issue #7: `vhdx compare` against `qemu-img compare`, batch `compact`/`check` with
//! `--jobs`, `--quiet`, the JSON of every reporting command, exit statuses of bad arguments,
//! and the generated completions and manual pages.

use super::*;

/// `qemu-img compare A B`'s exit status and the offset it names ("Content mismatch at offset
/// N!").
fn qemu_compare(a: &Path, b: &Path, strict: bool) -> (i32, Option<u64>) {
    let mut args = vec!["compare"];
    if strict {
        args.push("-s");
    }
    args.extend([s(a), s(b)]);
    let o = Command::new("qemu-img").args(&args).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let offset = text
        .split("Content mismatch at offset ")
        .nth(1)
        .and_then(|t| t.split('!').next())
        .map(|n| n.parse().unwrap());
    (code(&o), offset)
}

/// Our exit status and `first_difference`, from the JSON.
fn our_compare(a: &Path, b: &Path, extra: &[&str]) -> (i32, Option<u64>) {
    let mut args = vec!["compare", "--json", s(a), s(b)];
    args.extend(extra);
    let o = vhdx(&args);
    let j = json(&o);
    assert_eq!(j["identical"], code(&o) == 0, "{}", stdout(&o));
    (code(&o), j["first_difference"].as_u64())
}

#[test]
fn compare_agrees_with_qemu_img() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = sample_vhdx(d, 64 * MIB);
    let raw = d.join("a.raw");
    qemu_img(&["convert", "-O", "raw", s(&a), s(&raw)]);
    let b = d.join("b.vhdx");
    fs::copy(&a, &b).unwrap();
    qemu_io(&b, &["write -P 0x33 10000000 1"]);
    let vhd = d.join("a.vhd");
    qemu_img(&[
        "convert",
        "-O",
        "vpc",
        "-o",
        "subformat=dynamic,force_size=on",
        s(&raw),
        s(&vhd),
    ]);
    // Larger: the extra part holds data once, zeros written explicitly once.
    let big = d.join("big.vhdx");
    qemu_img(&["convert", "-O", "vhdx", s(&raw), s(&big)]);
    assert_eq!(code(&vhdx(&["resize", s(&big), "80M"])), 0);
    let big_data = d.join("big-data.vhdx");
    fs::copy(&big, &big_data).unwrap();
    qemu_io(&big, &["write -z 70M 4k"]);
    qemu_io(&big_data, &["write -P 5 71303680 4k"]);
    let pairs = [
        (&a, &raw),
        (&raw, &a),
        (&a, &vhd),
        (&a, &b),
        (&b, &raw),
        (&vhd, &b),
        (&a, &big),
        (&big, &a),
        (&a, &big_data),
        (&big_data, &raw),
    ];
    for (x, y) in pairs {
        assert_eq!(
            our_compare(x, y, &[]),
            qemu_compare(x, y, false),
            "{} {}",
            x.display(),
            y.display()
        );
    }
    assert_eq!(our_compare(&a, &big, &["--strict"]), (1, None));
    assert_eq!(qemu_compare(&a, &big, true).0, 1);
    assert_eq!(our_compare(&a, &raw, &["--strict"]), (0, None));

    // The human form.
    let o = vhdx(&["compare", s(&a), s(&b)]);
    assert_eq!(code(&o), 1);
    assert!(
        stdout(&o).contains("content mismatch at offset 9999872 (0x989600"),
        "{}",
        stdout(&o)
    );
    let o = vhdx(&["compare", s(&a), s(&big)]);
    assert_eq!(code(&o), 0);
    let out = stdout(&o);
    assert!(
        out.contains("sizes differ") && out.contains("identical: "),
        "{out}"
    );
    // --quiet: the exit status only.
    let o = vhdx(&["--quiet", "compare", s(&a), s(&b)]);
    assert_eq!((code(&o), o.stdout.len(), o.stderr.len()), (1, 0, 0));
    // An unusable side is exit 2, never "different".
    let o = vhdx(&["compare", s(&a), s(&d.join("missing.vhdx"))]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).starts_with("vhdx: error: ") && stderr(&o).contains("missing.vhdx"));
    let notes = d.join("notes.txt");
    fs::write(&notes, vec![b'x'; 4096]).unwrap();
    assert_eq!(code(&vhdx(&["compare", s(&a), s(&notes)])), 2);
    // --input-format raw reads files of any name as raw images.
    let copy = d.join("notes-copy.txt");
    fs::copy(&notes, &copy).unwrap();
    assert_eq!(
        our_compare(&notes, &copy, &["--input-format", "raw"]),
        (0, None)
    );
}

#[test]
fn compare_chains_with_parent_options() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = sample_vhdx(d, 64 * MIB);
    let child = d.join("child.avhdx");
    let o = vhdx(&["create", s(&child), "--parent", s(&base)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(our_compare(&child, &base, &[]), (0, None));
    let o = vhdx(&["trim", s(&child), "9M", "4K"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(our_compare(&child, &base, &[]), (1, Some(9 * MIB)));
    // The parent moved: --parent for A, --parent-b for B.
    let moved = d.join("moved");
    fs::create_dir(&moved).unwrap();
    let new_base = moved.join("base.vhdx");
    fs::rename(&base, &new_base).unwrap();
    assert_eq!(code(&vhdx(&["compare", s(&child), s(&new_base)])), 2);
    let o = vhdx(&["compare", s(&new_base), s(&child)]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).trim_end().ends_with("(B's parents: --parent-b)"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        our_compare(
            &child,
            &child,
            &["--parent", s(&new_base), "--parent-b", s(&new_base)]
        ),
        (0, None)
    );
    assert_eq!(
        our_compare(&new_base, &child, &["--parent-b", s(&new_base)]),
        (1, Some(9 * MIB))
    );
}

#[test]
fn batch_compact_reports_every_file_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let orig = qemu_dynamic(d, "orig.vhdx", "vhdx");
    let files: Vec<PathBuf> = (0..5)
        .map(|i| {
            let p = d.join(format!("d{i}.vhdx"));
            fs::copy(&orig, &p).unwrap();
            p
        })
        .collect();
    let missing = d.join("missing.vhdx");
    let mut args = vec!["compact", "--jobs", "3"];
    args.extend(files[..2].iter().map(|p| s(p)));
    args.push(s(&missing));
    args.extend(files[2..4].iter().map(|p| s(p)));
    let o = vhdx(&args);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("missing.vhdx"), "{err}");
    let out = stdout(&o);
    let named: Vec<&str> = out.lines().map(|l| l.split(':').next().unwrap()).collect();
    let want: Vec<&str> = files[..4].iter().map(|p| s(p)).collect();
    assert_eq!(named, want, "{out}");
    for p in &files[..4] {
        assert_eq!(qemu_compare(p, &orig, false), (0, None));
        assert!(file_len(p) < file_len(&orig), "{}", p.display());
    }
    // JSON: one array, in order; all good files: exit 0. The default --jobs applies.
    let o = vhdx(&[
        "compact",
        "--json",
        "--dry-run",
        "--mode",
        "full",
        s(&files[4]),
        s(&orig),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let arr = json(&o);
    let paths: Vec<&str> = arr
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, [s(&files[4]), s(&orig)]);
    for bad in ["0", "-1", "x", "257"] {
        let o = vhdx(&["compact", "--jobs", bad, s(&orig)]);
        assert_eq!(code(&o), 2, "--jobs {bad}");
    }
}

#[test]
fn batch_check_exit_status_is_the_worst() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = sample_vhdx(d, 64 * MIB);
    let bad = d.join("bad.vhdx");
    let mut bytes = fs::read(&good).unwrap();
    let bat = bat_offset(&bytes) as usize;
    bytes[bat + 8..bat + 16].copy_from_slice(&((1u64 << 40) | 6).to_le_bytes());
    fs::write(&bad, &bytes).unwrap();
    let missing = d.join("missing.vhdx");

    let o = vhdx(&["check", "-j", "2", s(&good), s(&bad)]);
    assert_eq!(code(&o), 1);
    let out = stdout(&o);
    assert!(out.starts_with(&format!("{}: ok", s(&good))), "{out}");
    assert!(out.contains(&format!("{}: corrupt", s(&bad))), "{out}");

    let o = vhdx(&["check", "--json", s(&bad), s(&missing), s(&good)]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("missing.vhdx"));
    let arr = json(&o);
    let got: Vec<(&str, &str)> = arr
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["path"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(got, [(s(&bad), "corrupt"), (s(&good), "ok")]);
    // One file: the object, as before batches.
    let o = vhdx(&["check", "--json", s(&good)]);
    assert_eq!(json(&o)["status"], "ok");
}

#[test]
fn quiet_hides_reports_but_not_json_or_errors() {
    let dir = tempfile::tempdir().unwrap();
    let img = sample_vhdx(dir.path(), 64 * MIB);
    for args in [
        vec!["-q", "info", s(&img)],
        vec!["map", "--quiet", s(&img)],
        vec!["check", s(&img), "-q"],
        vec!["compact", "-q", "--dry-run", s(&img)],
    ] {
        let o = vhdx(&args);
        assert_eq!(
            (code(&o), stdout(&o), stderr(&o)),
            (0, String::new(), String::new())
        );
    }
    let o = vhdx(&["-q", "info", "--json", s(&img)]);
    assert_eq!(json(&o)["format"], "vhdx");
    let o = vhdx(&["-q", "info", s(&dir.path().join("missing.vhdx"))]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).starts_with("vhdx: error: "));
}

/// The keys of a JSON object.
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
    k.sort();
    k
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// Every reporting command prints JSON with the fields docs/json.md lists (at least those).
#[test]
fn json_of_every_reporting_command() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let img = sample_vhdx(d, 64 * MIB);
    let has = |v: &Value, names: &[&str]| {
        let k = keys(v);
        for n in names {
            assert!(k.contains(&n.to_string()), "{n} missing from {k:?}");
        }
    };
    let run_json = |args: &[&str]| {
        let mut a = args.to_vec();
        a.push("--json");
        let o = vhdx(&a);
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
        json(&o)
    };
    let info_fields = [
        "path",
        "format",
        "disk_type",
        "virtual_size",
        "block_size",
        "logical_sector_size",
        "physical_sector_size",
        "file_size",
        "host_allocated_bytes",
        "block_stats",
        "block_stats_note",
        "disk_id",
        "vhdx",
        "vhd",
        "parent",
        "chain",
        "chain_usage",
        "chain_usage_note",
        "warnings",
    ];
    has(&run_json(&["info", s(&img)]), &info_fields);
    let created = d.join("new.vhdx");
    has(
        &run_json(&["create", s(&created), "--size", "16M"]),
        &info_fields,
    );
    assert_eq!(
        keys(&run_json(&["check", s(&img)])),
        sorted(&["path", "status", "corrupt", "repairs", "findings"])
    );
    let map = run_json(&["map", s(&img)]);
    assert_eq!(
        keys(&map[0]),
        sorted(&["start", "length", "depth", "present", "zero", "data", "offset"])
    );
    let conv = d.join("c.vhd");
    let stats = run_json(&["convert", s(&img), s(&conv)]);
    let convert_fields = [
        "format",
        "disk_type",
        "block_size",
        "size",
        "source_size",
        "bytes_written",
        "bytes_skipped",
        "file_length",
    ];
    has(&stats, &convert_fields);
    let cmp = run_json(&["compare", s(&img), s(&conv)]);
    assert_eq!(
        keys(&cmp),
        sorted(&[
            "a",
            "b",
            "identical",
            "first_difference",
            "size_a",
            "size_b",
            "size_mismatch",
            "bytes_compared",
            "bytes_skipped",
            "seconds",
        ])
    );
    has(
        &run_json(&["trim", s(&conv), "0", "1M"]),
        &[
            "path",
            "offset",
            "length",
            "virtual_size",
            "file_len_before",
            "file_len_after",
            "host_bytes_before",
            "host_bytes_after",
        ],
    );
    let compact = run_json(&["compact", s(&conv)]);
    has(
        &compact[0],
        &[
            "path",
            "output",
            "mode",
            "dry_run",
            "file_len_before",
            "file_len_after",
            "host_bytes_before",
            "host_bytes_after",
            "bytes_reclaimed",
            "blocks_moved",
            "bytes_moved",
            "zero_blocks_released",
            "seconds",
            "parent_data_bytes",
            "note",
        ],
    );
    has(
        &run_json(&["resize", s(&conv), "128M"]),
        &[
            "path",
            "format",
            "disk_type",
            "size_before",
            "size_after",
            "minimum_size",
            "file_len_before",
            "file_len_after",
            "block_table_grown",
            "blocks_moved",
            "bytes_moved",
            "seconds",
            "note",
        ],
    );
    let child = d.join("child.avhdx");
    assert_eq!(code(&vhdx(&["create", s(&child), "--parent", s(&img)])), 0);
    let flat = d.join("flat.vhdx");
    has(
        &run_json(&["flatten", s(&child), s(&flat)]),
        &convert_fields,
    );
    has(
        &run_json(&["set-parent", s(&child), s(&img)]),
        &[
            "path",
            "parent",
            "format",
            "relative_path",
            "absolute_path",
            "parent_id",
            "previous_ids",
            "id_mismatch_ignored",
            "previous_locators",
            "note",
        ],
    );
    has(
        &run_json(&["merge", s(&child)]),
        &[
            "child",
            "ancestor",
            "format",
            "merged",
            "size",
            "bytes_merged",
            "bytes_written",
            "bytes_zeroed",
            "bytes_skipped",
            "linkage_id_name",
            "linkage_id_before",
            "linkage_id_after",
            "resumed",
            "deleted",
            "invalidated",
            "seconds",
        ],
    );
}

/// Usage errors (a missing argument, an unknown flag or value) exit 2 with clap's message,
/// for every subcommand; `--help` exits 0.
#[test]
fn bad_arguments_exit_2_on_every_subcommand() {
    let subcommands = [
        "info",
        "check",
        "map",
        "convert",
        "create",
        "trim",
        "compact",
        "merge",
        "flatten",
        "set-parent",
        "resize",
        "compare",
    ];
    for sub in subcommands {
        let o = vhdx(&[sub]);
        assert_eq!(code(&o), 2, "{sub} without arguments");
        assert!(stderr(&o).contains("Usage:"), "{sub}: {}", stderr(&o));
        let o = vhdx(&[sub, "x", "--no-such-flag"]);
        assert_eq!(code(&o), 2, "{sub} --no-such-flag");
        let o = vhdx(&[sub, "--help"]);
        assert_eq!(code(&o), 0, "{sub} --help");
        assert!(
            stdout(&o).contains("--quiet"),
            "{sub}: the global flag is listed"
        );
    }
    let o = vhdx(&["--help"]);
    assert!(stdout(&o).contains("Exit status: 0 success"));
    // The packagers' commands are hidden from the help.
    assert!(!stdout(&o).contains("completions") && !stdout(&o).contains("\n  man"));
}

#[test]
fn completions_and_manual_pages_come_from_the_definitions() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let o = vhdx(&["completions", shell]);
        assert_eq!(code(&o), 0, "{shell}");
        let script = stdout(&o);
        assert!(
            script.contains("compare") && script.contains("jobs"),
            "{shell}"
        );
    }
    assert_eq!(code(&vhdx(&["completions", "tcsh"])), 2);
    let o = vhdx(&["man"]);
    assert_eq!(code(&o), 0);
    let page = stdout(&o);
    assert!(page.contains(".TH vhdx 1"), "{page}");
    assert!(
        page.contains("compare") && page.contains("Exit status"),
        "{page}"
    );
    let dir = tempfile::tempdir().unwrap();
    let o = vhdx(&["man", "--dir", s(dir.path())]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let mut pages: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    for want in [
        "vhdx.1",
        "vhdx-compare.1",
        "vhdx-compact.1",
        "vhdx-set-parent.1",
    ] {
        assert!(pages.contains(&want.to_string()), "{pages:?}");
    }
    assert!(!pages
        .iter()
        .any(|p| p.contains("help") || p.contains("man")));
    let compact = fs::read_to_string(dir.path().join("vhdx-compact.1")).unwrap();
    assert!(
        compact.contains("vhdx compact") && compact.contains("jobs"),
        "{compact}"
    );
}

/// Progress lines are drawn only on a terminal (here a pseudo-terminal made by util-linux
/// `script`), never into a pipe, and not with --quiet.
#[test]
fn progress_only_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        assert!(!in_ci(), "script (util-linux) is missing under CI");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = sample_vhdx(dir.path(), 64 * MIB);
    let raw = dir.path().join("a.raw");
    qemu_img(&["convert", "-O", "raw", s(&a), s(&raw)]);
    let on_tty = |extra: &str| {
        let cmd = format!("{BIN} {extra} compare {} {}", s(&a), s(&raw));
        let o = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .output()
            .unwrap();
        assert_eq!(code(&o), 0, "{}", stdout(&o));
        stdout(&o)
    };
    let shown = on_tty("");
    assert!(
        shown.contains("\rcomparing 100% [########################] 64 MiB of 64 MiB"),
        "{shown:?}"
    );
    assert!(shown.contains("identical: "), "{shown:?}");
    assert_eq!(on_tty("--quiet"), "");
    let piped = vhdx(&["compare", s(&a), s(&raw)]);
    assert_eq!(stderr(&piped), "");

    // A batch run at once shares one line, erased before each result is printed.
    let copies: Vec<PathBuf> = (0..3)
        .map(|i| {
            let p = dir.path().join(format!("c{i}.vhdx"));
            fs::copy(&a, &p).unwrap();
            p
        })
        .collect();
    let names: Vec<&str> = copies.iter().map(|p| s(p)).collect();
    let cmd = format!("{BIN} compact --jobs 2 {}", names.join(" "));
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    let shown = stdout(&o);
    assert_eq!(code(&o), 0, "{shown:?}");
    assert!(shown.contains("\rcompacting (0/3 files)"), "{shown:?}");
    for name in names {
        assert!(
            shown.contains(&format!("\r\x1b[K{name}: full: "))
                || shown.contains(&format!("\n{name}: full: ")),
            "{shown:?}"
        );
    }
}

/// The human form of every command that changes or maps a disk: one summary naming the file,
/// sizes with binary suffixes, exit 0 (`info`, `check`, `compact` and `compare` have their
/// own tests).
#[test]
fn human_output_of_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let img = d.join("d.vhdx");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vhdx",
        "-o",
        "block_size=1M",
        s(&img),
        "64M",
    ]);
    qemu_io(&img, &["write -P 1 1M 64k"]);
    let run = |args: &[&str]| {
        let o = vhdx(args);
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o), "", "{args:?}");
        stdout(&o)
    };
    let map = run(&["map", s(&img)]);
    assert!(map.starts_with("Offset"), "{map}");
    assert!(
        map.contains("0x100000           0x100000           data"),
        "{map}"
    );
    let child = d.join("c.avhdx");
    let created = run(&["create", s(&child), "--parent", s(&img)]);
    assert!(
        created.starts_with(&format!("created {}\n", s(&child))),
        "{created}"
    );
    let trimmed = run(&["trim", s(&child), "1M", "4K"]);
    assert!(
        trimmed.starts_with(&format!(
            "trimmed {}: 4 KiB at offset 1 MiB (0x100000+0x1000) now reads as zeros",
            s(&child)
        )),
        "{trimmed}"
    );
    let vhd = d.join("d.vhd");
    let converted = run(&["convert", s(&img), s(&vhd)]);
    assert!(
        converted.starts_with(&format!(
            "wrote {}: dynamic VHD (2 MiB blocks), 64 MiB virtual; 64 KiB of data written",
            s(&vhd)
        )),
        "{converted}"
    );
    let flat = d.join("f.vhdx");
    let flattened = run(&["flatten", s(&child), s(&flat)]);
    assert!(flattened.contains("60 KiB of data written"), "{flattened}");
    let relinked = run(&["set-parent", s(&child), s(&img)]);
    assert!(
        relinked.starts_with(&format!("{}: parent set to {}", s(&child), s(&img))),
        "{relinked}"
    );
    let resized = run(&["resize", s(&vhd), "128M"]);
    assert!(
        resized.starts_with(&format!("resized {}: 64 MiB → 128 MiB", s(&vhd))),
        "{resized}"
    );
    let merged = run(&["merge", s(&child)]);
    assert!(
        merged.starts_with(&format!("merged {} into {} (1 disk)", s(&child), s(&img))),
        "{merged}"
    );
    assert!(merged.contains("new DataWriteGuid"), "{merged}");
}

/// Random pairs against the oracle: a qemu-made VHDX and a copy changed by a few random
/// writes (data, zeros, single bytes, at any offset), some of them grown, compared both ways
/// by `vhdx compare` and `qemu-img compare`: the same verdict and the same offset.
#[test]
fn compare_random_pairs_like_qemu_img() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut seed: u64 = 0x5eed_c0de;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let base = sample_vhdx(d, 32 * MIB);
    let mut verdicts = [0; 2];
    for case in 0..12 {
        let other = d.join(format!("case{case}.vhdx"));
        fs::copy(&base, &other).unwrap();
        let mut writes = Vec::new();
        for _ in 0..next(3) {
            let at = next(32 * MIB - 70_000);
            let len = 1 + next(65_536);
            writes.push(match next(3) {
                0 => format!("write -P {} {at} {len}", 1 + next(250)),
                1 => format!("write -z {} {}", at / 512 * 512, len.div_ceil(512) * 512),
                _ => format!("write -P 0x22 {at} 1"),
            });
        }
        let cmds: Vec<&str> = writes.iter().map(String::as_str).collect();
        if !cmds.is_empty() {
            qemu_io(&other, &cmds);
        }
        if next(4) == 0 {
            assert_eq!(code(&vhdx(&["resize", s(&other), "40M"])), 0);
            if next(2) == 0 {
                qemu_io(&other, &["write -P 9 36M 4k"]);
            }
        }
        for (x, y) in [(&base, &other), (&other, &base)] {
            let ours = our_compare(x, y, &[]);
            assert_eq!(ours, qemu_compare(x, y, false), "case {case}: {writes:?}");
            verdicts[ours.0 as usize] += 1;
        }
    }
    // Both verdicts were exercised.
    assert!(verdicts[0] >= 2 && verdicts[1] >= 8, "{verdicts:?}");
}
