//! One module per subcommand, plus what they share: the chain-opening options every command
//! that opens a differencing chain takes, and the error type that carries an exit status.

pub mod check;
pub mod compact;
pub mod compare;
pub mod completions;
pub mod convert;
pub mod create;
pub mod flatten;
pub mod info;
pub mod man;
pub mod map;
pub mod merge;
pub mod odx_check;
pub mod resize;
pub mod set_parent;
pub mod trim;

use crate::EXIT_UNUSABLE;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use vhdx_core::{Disk, OpenOptions, ParentPolicy};

/// A failure that ends a command: the message printed after `vhdx: error:` and the exit
/// status.
#[derive(Debug)]
pub struct CliError {
    /// Exit status.
    pub code: u8,
    message: String,
    broken_pipe: bool,
}

impl CliError {
    /// A failure with exit status 2 (the input could not be used).
    pub fn unusable(message: impl Into<String>) -> Self {
        CliError {
            code: EXIT_UNUSABLE,
            message: message.into(),
            broken_pipe: false,
        }
    }

    /// Whether the failure is only a closed standard output (`vhdx map x | head`).
    pub fn is_broken_pipe(&self) -> bool {
        self.broken_pipe
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<vhdx_core::Error> for CliError {
    fn from(e: vhdx_core::Error) -> Self {
        CliError::unusable(e.to_string())
    }
}

impl From<io::Error> for CliError {
    fn from(e: io::Error) -> Self {
        CliError {
            code: EXIT_UNUSABLE,
            broken_pipe: e.kind() == io::ErrorKind::BrokenPipe,
            message: format!("writing the output: {e}"),
        }
    }
}

/// `--parents`: which locator paths may be followed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicyArg {
    /// Every locator, in the format's order.
    #[default]
    Default,
    /// Only relative locators inside the child's folder tree, and `--parent` paths.
    Strict,
}

/// Options of every command that opens a differencing chain.
#[derive(Debug, Clone, clap::Args)]
pub struct ChainArgs {
    /// Parent image for the next level of the chain (repeatable, nearest first); replaces
    /// the locators stored in the child.
    #[arg(long = "parent", value_name = "PATH")]
    pub parents: Vec<PathBuf>,

    /// Which parent paths may be followed: `strict` allows only relative paths inside the
    /// child's folder tree and paths given with --parent.
    #[arg(long = "parents", value_enum, default_value_t, value_name = "POLICY")]
    pub policy: PolicyArg,

    /// Open a parent even when its identity does not match what the child recorded.
    #[arg(long)]
    pub ignore_id_mismatch: bool,
}

impl ChainArgs {
    /// Open options for these arguments; `require_parent` false lets a differencing disk
    /// open without its parent (for `info` and `check`).
    pub fn open_options(&self, require_parent: bool) -> OpenOptions {
        OpenOptions {
            parents: self.parents.clone(),
            policy: match self.policy {
                PolicyArg::Default => ParentPolicy::Default,
                PolicyArg::Strict => ParentPolicy::Strict,
            },
            verify_linkage: !self.ignore_id_mismatch,
            require_parent,
            ..OpenOptions::default()
        }
    }

    /// Opens `path` with its chain.
    pub fn open(&self, path: &Path, require_parent: bool) -> Result<Disk, CliError> {
        Ok(Disk::open_with(path, &self.open_options(require_parent))?)
    }
}
