//! `raintree targets`: the originator's targets per level, from view position 0.

use raintree_proto::tree;
use raintree_proto::wire::Strategy;

/// Options of `raintree targets`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Network size N.
    #[arg(long)]
    nodes: u64,
    /// Tree strategy: reference or exact.
    #[arg(long, default_value = "reference")]
    strategy: Strategy,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

/// Prints the plan as JSON (`[{"level", "range", "targets"}]`) or as a table.
pub fn run(a: &Args) -> Result<(), String> {
    let rows = tree::originator_plan(a.strategy, a.nodes);
    if a.json {
        println!(
            "{}",
            serde_json::to_string(&rows).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    println!(
        "{} strategy, N = {}, max level L = {} (offsets into the view; 0 = self, not sent)",
        a.strategy,
        a.nodes,
        tree::max_level(a.nodes)
    );
    println!(
        "{:>5} {:>12} {:>12} {:>12}",
        "level", "range", "target 1", "target 2"
    );
    for r in rows {
        println!(
            "{:>5} {:>12} {:>12} {:>12}",
            r.level, r.range, r.targets[0], r.targets[1]
        );
    }
    Ok(())
}
