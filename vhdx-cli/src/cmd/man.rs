//! `vhdx man [--dir DIR]` (hidden): manual pages in roff, generated from the argument
//! definitions. Without `--dir`, `vhdx(1)` on standard output; with it, `vhdx.1` and one
//! `vhdx-COMMAND.1` per subcommand written into DIR (what a package installs under
//! `/usr/share/man/man1`).

use super::CliError;
use crate::EXIT_OK;
use clap::CommandFactory;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Arguments of `vhdx man`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write vhdx.1 and a page per subcommand into this folder instead of printing vhdx.1.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Runs `vhdx man`.
pub fn run(args: &ManArgs) -> Result<u8, CliError> {
    let mut cmd = crate::Cli::command();
    // Global options (--quiet) then appear on every subcommand's page too.
    cmd.build();
    let Some(dir) = &args.dir else {
        let stdout = io::stdout();
        let mut out = stdout.lock();
        clap_mangen::Man::new(cmd).render(&mut out)?;
        out.flush()?;
        return Ok(EXIT_OK);
    };
    write_page(dir, "vhdx", cmd.clone())?;
    let pages = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help");
    for sub in pages {
        let name = format!("vhdx-{}", sub.get_name());
        let page = sub
            .clone()
            .bin_name(format!("vhdx {}", sub.get_name()))
            .display_name(&name);
        write_page(dir, &name, page)?;
    }
    Ok(EXIT_OK)
}

/// Writes the page of `cmd` as `DIR/NAME.1`.
fn write_page(dir: &Path, name: &str, cmd: clap::Command) -> Result<(), CliError> {
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut page)?;
    std::fs::write(&path, page)
        .map_err(|e| CliError::unusable(format!("{}: cannot write: {e}", path.display())))
}
