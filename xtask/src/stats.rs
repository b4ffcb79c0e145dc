//! The benches' shared statistics: percentiles and the distribution every
//! result file reports.

/// The `p`th percentile (0-100) by nearest rank; NaN (JSON `null`) for no samples.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[rank.min(s.len() - 1)]
}

/// p50, p90, p99 and the maximum of a set of gaps.
pub fn distribution(gaps: &[f64]) -> serde_json::Value {
    serde_json::json!({
        "n": gaps.len(),
        "p50": percentile(gaps, 50.0),
        "p90": percentile(gaps, 90.0),
        "p99": percentile(gaps, 99.0),
        "max": gaps.iter().copied().fold(f64::NAN, f64::max),
    })
}
