//! `vhdx completions SHELL` (hidden): the shell completion script for bash, zsh, fish,
//! elvish or PowerShell, generated from the argument definitions, on standard output. For
//! packagers: `vhdx completions bash > /usr/share/bash-completion/completions/vhdx`.

use super::CliError;
use crate::EXIT_OK;
use clap::CommandFactory;
use std::io::{self, Write};

/// Arguments of `vhdx completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_name = "SHELL", value_enum)]
    pub shell: clap_complete::Shell,
}

/// Runs `vhdx completions`.
pub fn run(args: &CompletionsArgs) -> Result<u8, CliError> {
    let mut cmd = crate::Cli::command();
    let stdout = io::stdout();
    let mut out = stdout.lock();
    clap_complete::generate(args.shell, &mut cmd, "vhdx", &mut out);
    out.flush()?;
    Ok(EXIT_OK)
}
