//! Reading Prometheus text exposition: what the node's own `/stats` and the dashboard check need.

use std::collections::HashMap;

/// Sums Prometheus text samples by metric name, ignoring labels.
pub fn sum_by_name(text: &str) -> HashMap<String, f64> {
    let mut out: HashMap<String, f64> = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        if let Ok(v) = value.parse::<f64>() {
            *out.entry(name.to_string()).or_default() += v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_across_labels() {
        let text = "# HELP x\nraintree_a_total{kind=\"g\"} 2\nraintree_a_total{kind=\"h\"} 3\nraintree_b 1.5\n# EOF\n";
        let m = sum_by_name(text);
        assert_eq!(m["raintree_a_total"], 5.0);
        assert_eq!(m["raintree_b"], 1.5);
    }
}
