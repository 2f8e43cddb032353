//! Times a target over a directory of inputs, slowest first:
//! `cargo run --release --example time_inputs -- <target> <dir>`.

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (target, dir) = (&args[1], &args[2]);
    let run = raintree_fuzz::TARGETS
        .iter()
        .find(|(n, _)| n == target)
        .expect("a target name")
        .1;
    let mut times = Vec::new();
    let mut total = 0.0;
    for e in std::fs::read_dir(dir).expect("a directory") {
        let p = e.expect("entry").path();
        let data = std::fs::read(&p).expect("readable");
        let t = Instant::now();
        run(&data);
        let s = t.elapsed().as_secs_f64();
        total += s;
        times.push((s, data.len(), p));
    }
    times.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!(
        "{} inputs, {:.3} s, {:.0} inputs/s",
        times.len(),
        total,
        times.len() as f64 / total
    );
    for (s, len, p) in times.iter().take(8) {
        println!("{:>10.6} s {:>6} bytes {}", s, len, p.display());
    }
}
