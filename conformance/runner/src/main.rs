//! `ventanilla-conformance run …`, which `ventanilla conformance run …` executes: one row per
//! case, then `conformance: N passed, M failed`; exits 1 on any failure.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "ventanilla conformance",
    about = "The conformance suite of docs/as4.md §7 (cases in conformance/cases)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the implemented cases; one row per case, then `conformance: N passed, M failed`;
    /// exits 1 on any failure.
    Run {
        /// The access point on the other side: `self` (Ventanilla instances and a scripted
        /// partner), `phase4` (4.4.1, Java), `python-as4` (the PyPI package), or a partner's
        /// https:// endpoint (with --config and --partner).
        #[arg(long, default_value = "self")]
        peer: String,
        /// Run one case (e.g. 7, 55a), whatever its status.
        #[arg(long)]
        case: Option<String>,
        /// Also list the cases that are not run, with the reason.
        #[arg(long)]
        all: bool,
        /// The checkout holding conformance/, pmodes/ and samples/.
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        #[arg(long, default_value = "target/conformance")]
        work: PathBuf,
        /// With --peer URL: this access point's config file (party, keys, P-Modes, trust).
        #[arg(long)]
        config: Option<PathBuf>,
        /// With --peer URL: the partner's party id (its P-Mode link is used).
        #[arg(long)]
        partner: Option<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Command::Run { peer, case, all, repo, work, config, partner } = Cli::parse().command;
    // The table says what went wrong; the access points' own logs would only repeat the
    // failures the cases provoke on purpose (RUST_LOG still overrides).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let options = ventanilla_conformance::runner::RunOptions { repo, work, peer, case, all, config, partner };
    let (_, summary) = ventanilla_conformance::runner::run(&options).await.map_err(|e| anyhow::anyhow!(e))?;
    if summary.failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
