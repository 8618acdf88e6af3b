//! Medians and rates.

/// Median of `v` (the mean of the two middle values for an even count); `None` when empty
/// or when a value is NaN.
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() || v.iter().any(|x| x.is_nan()) {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let mid = s.len() / 2;
    Some(if s.len() % 2 == 1 {
        s[mid]
    } else {
        (s[mid - 1] + s[mid]) / 2.0
    })
}

/// Tokens per second of `n_tokens` processed in `ns` nanoseconds (0 when nothing was
/// timed).
pub fn tokens_per_second(n_tokens: usize, ns: u64) -> f64 {
    if ns == 0 {
        return 0.0;
    }
    n_tokens as f64 / (ns as f64 * 1e-9)
}

/// Index of the first position where `a` and `b` differ (a length mismatch differs at the
/// shorter length); `None` when equal.
pub fn first_difference<T: PartialEq>(a: &[T], b: &[T]) -> Option<usize> {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => Some(i),
        None if a.len() != b.len() => Some(a.len().min(b.len())),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.5]), Some(7.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn rates_are_tokens_over_seconds() {
        assert_eq!(tokens_per_second(128, 2_000_000_000), 64.0);
        assert_eq!(tokens_per_second(64, 0), 0.0);
        assert!((tokens_per_second(3, 1_500_000_000) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn first_difference_finds_the_index_or_the_length_gap() {
        assert_eq!(first_difference(&[1, 2, 3], &[1, 2, 3]), None);
        assert_eq!(first_difference(&[1, 2, 3], &[1, 5, 3]), Some(1));
        assert_eq!(first_difference(&[1, 2], &[1, 2, 3]), Some(2));
        assert_eq!(first_difference::<u32>(&[], &[]), None);
    }
}
