//! The `raintree` binary: one clap subcommand per module `cmd_*`.

mod admin;
mod cmd_keygen;
mod cmd_node;
mod cmd_scale_table;
mod cmd_sim;
mod cmd_targets;
mod localnet;
mod metrics_text;
mod node_config;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// RainTree gossip: real nodes, a LocalNet on one machine, a simulator, tree inspection.
#[derive(Parser, Debug)]
#[command(name = "raintree", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Every subcommand of the binary.
#[derive(Subcommand, Debug)]
enum Command {
    /// Print the originator's targets per level (view position 0).
    Targets(cmd_targets::Args),
    /// Simulate broadcasts over a network of up to hundreds of thousands of nodes.
    Sim(cmd_sim::Args),
    /// Sends, ACKs, hops and coverage for N = 27 .. 177,147, both strategies.
    ScaleTable(cmd_scale_table::Args),
    /// Print a fresh Ed25519 identity (secret key, public key, address) as JSON.
    Keygen,
    /// Run one node from a TOML config file until SIGINT, SIGTERM or POST /shutdown.
    Node {
        /// The config file (see docs/NODE.md for every field and its default).
        #[arg(long)]
        config: std::path::PathBuf,
    },
    /// Start N node processes on 127.0.0.1, broadcast, and report coverage and cost.
    Localnet(localnet::LocalnetArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Targets(a) => cmd_targets::run(&a),
        Command::Sim(a) => cmd_sim::run(&a),
        Command::ScaleTable(a) => cmd_scale_table::run(&a),
        Command::Keygen => {
            cmd_keygen::run();
            Ok(())
        }
        Command::Node { config } => {
            init_tracing("info");
            runtime().and_then(|rt| rt.block_on(cmd_node::run(&config)))
        }
        Command::Localnet(a) => {
            // The report is the output; progress logs only when RUST_LOG asks for them.
            init_tracing("warn");
            runtime().and_then(|rt| rt.block_on(localnet::run(a)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raintree: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (else `default`).
fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A multi-threaded runtime; `RAINTREE_WORKER_THREADS` caps its workers, which the LocalNet
/// sets so hundreds of node processes do not each start one thread per core.
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = std::env::var("RAINTREE_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
    {
        b.worker_threads(n);
    }
    b.enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}
