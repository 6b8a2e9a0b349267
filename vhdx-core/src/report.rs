//! Findings: diagnostics that are not errors. Opening an image records tolerated problems
//! (a damaged header copy, a bad VHD checksum) as findings; `check` returns a [`Report`] of
//! them. An [`crate::Error`] means "cannot go on"; a finding means "go on, but know this".

use serde::Serialize;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing, nothing wrong (for example a valid dirty log awaiting replay).
    Info,
    /// Unusual or wasteful but not corrupt (leaked space, one damaged redundant copy).
    Warning,
    /// The image is corrupt: some data or structure cannot be trusted.
    Corrupt,
}

/// One diagnostic about an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How serious it is.
    pub severity: Severity,
    /// The on-disk structure concerned (for example "VHDX header 1").
    pub structure: String,
    /// The file offset concerned, when there is one.
    pub offset: Option<u64>,
    /// What is wrong, in words.
    pub message: String,
}

impl Finding {
    /// A finding with every field given.
    pub fn new(
        severity: Severity,
        structure: impl Into<String>,
        offset: Option<u64>,
        message: impl Into<String>,
    ) -> Self {
        Finding {
            severity,
            structure: structure.into(),
            offset,
            message: message.into(),
        }
    }

    /// A finding built from an error that was tolerated or that a check ran into.
    pub fn from_error(severity: Severity, e: &crate::Error) -> Self {
        Finding {
            severity,
            structure: e.structure_name().unwrap_or("image").to_string(),
            offset: e.file_offset(),
            message: {
                let mut m = e.message().to_string();
                match (e.expected_value(), e.found_value()) {
                    (Some(x), Some(y)) => m.push_str(&format!(" (expected {x}, found {y})")),
                    (Some(x), None) => m.push_str(&format!(" (expected {x})")),
                    (None, Some(y)) => m.push_str(&format!(" (found {y})")),
                    (None, None) => {}
                }
                m
            },
        }
    }
}

/// The result of checking an image: every finding, most serious first once sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// All findings in the order they were made.
    pub findings: Vec<Finding>,
}

/// Findings kept per structure. Beyond it, one summary finding per structure counts the rest
/// (with the most serious severity among them), so a crafted file with millions of bad
/// entries gives a report of bounded size, not millions of lines (docs/limits.md).
pub const MAX_FINDINGS_PER_STRUCTURE: usize = 100;

/// How a summary finding's message starts (its count follows).
const MORE: &str = "and ";
const MORE_TAIL: &str = " more findings of this structure, not listed";

impl Report {
    /// Adds a finding (counted in a summary once its structure has
    /// [`MAX_FINDINGS_PER_STRUCTURE`] findings).
    pub fn push(&mut self, f: Finding) {
        let is_summary = |g: &Finding| {
            g.offset.is_none() && g.message.starts_with(MORE) && g.message.ends_with(MORE_TAIL)
        };
        let same = self
            .findings
            .iter()
            .filter(|g| g.structure == f.structure && !is_summary(g))
            .count();
        if same < MAX_FINDINGS_PER_STRUCTURE {
            self.findings.push(f);
            return;
        }
        if let Some(s) = self
            .findings
            .iter_mut()
            .find(|g| g.structure == f.structure && is_summary(g))
        {
            let n: u64 = s.message[MORE.len()..s.message.len() - MORE_TAIL.len()]
                .parse()
                .unwrap_or(0);
            s.message = format!("{MORE}{}{MORE_TAIL}", n + 1);
            s.severity = s.severity.max(f.severity);
            return;
        }
        self.findings.push(Finding {
            severity: f.severity,
            structure: f.structure,
            offset: None,
            message: format!("{MORE}1{MORE_TAIL}"),
        });
    }

    /// Adds a finding from its parts.
    pub fn add(
        &mut self,
        severity: Severity,
        structure: impl Into<String>,
        offset: Option<u64>,
        message: impl Into<String>,
    ) {
        self.push(Finding::new(severity, structure, offset, message));
    }

    /// The most serious severity found, if any.
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }

    /// Whether any finding says the image is corrupt.
    pub fn is_corrupt(&self) -> bool {
        self.worst() == Some(Severity::Corrupt)
    }
}

/// The outcome of `vhdx check` as both fronts print it (CLI `--json`, Python
/// `Disk.check()`): the report with its verdict, findings most serious first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckSummary {
    /// The image checked, when it came from a file.
    pub path: Option<String>,
    /// `"ok"`, `"warnings"` or `"corrupt"`.
    pub status: &'static str,
    /// Whether corruption was found.
    pub corrupt: bool,
    /// Repairs made before the check, in words (empty unless a repair was asked for).
    pub repairs: Vec<String>,
    /// Every finding, most serious first.
    pub findings: Vec<Finding>,
}

impl CheckSummary {
    /// Summarizes `report` for the image at `path`.
    pub fn new(path: Option<String>, report: Report) -> Self {
        let mut findings = report.findings;
        findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
        let worst = findings.iter().map(|f| f.severity).max();
        CheckSummary {
            path,
            status: match worst {
                Some(Severity::Corrupt) => "corrupt",
                Some(Severity::Warning) => "warnings",
                _ => "ok",
            },
            corrupt: worst == Some(Severity::Corrupt),
            repairs: Vec::new(),
            findings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_per_structure_are_bounded() {
        let mut r = Report::default();
        for i in 0..10_000u64 {
            let sev = if i == 5000 {
                Severity::Corrupt
            } else {
                Severity::Info
            };
            r.add(sev, "VHD BAT entry", Some(i), format!("entry {i}"));
        }
        r.add(Severity::Warning, "VHD footer", Some(0), "x");
        assert_eq!(r.findings.len(), MAX_FINDINGS_PER_STRUCTURE + 2);
        let s = &r.findings[MAX_FINDINGS_PER_STRUCTURE];
        assert_eq!(
            s.message,
            "and 9900 more findings of this structure, not listed"
        );
        assert_eq!(s.severity, Severity::Corrupt);
        assert!(r.is_corrupt());
    }
}
