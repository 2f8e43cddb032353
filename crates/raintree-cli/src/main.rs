//! The `raintree` binary: one clap subcommand per module `cmd_*`.

mod cmd_scale_table;
mod cmd_sim;
mod cmd_targets;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// RainTree gossip: simulator, tree inspection and (later) real nodes.
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Targets(a) => cmd_targets::run(&a),
        Command::Sim(a) => cmd_sim::run(&a),
        Command::ScaleTable(a) => cmd_scale_table::run(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raintree: {e}");
            ExitCode::FAILURE
        }
    }
}
