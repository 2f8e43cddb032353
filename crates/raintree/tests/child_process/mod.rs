//! Runs one test of the current test binary in a process of its own and reads back what it
//! printed: a WAN run replays its seed exactly only in a fresh process (a crash drops a host's
//! tasks in an order that follows tokio's process-wide task ids), as `examples/wan.rs` runs it.

use std::process::{Child, Command, Stdio};

/// Starts the test `test` of this binary alone, with `var` set to `value`.
pub fn spawn(test: &str, var: &str, value: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env(var, value)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("test binary runs")
}

/// Waits for `child` and returns what follows `tag` on the line that carries it.
pub fn tagged_line(child: Child, tag: &str) -> String {
    let out = child.wait_with_output().expect("child finishes");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    stdout
        .lines()
        // libtest prints the test's name on the same line, ahead of its output.
        .find_map(|l| l.split_once(tag).map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no {tag:?} line in {stdout}"))
        .to_string()
}
