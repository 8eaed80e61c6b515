//! Criterion settings shared by the benches (included with `#[path]`).

use std::time::Duration;

use criterion::Criterion;

/// Short runs, for a machine shared with other work: 1 s warm-up, 3 s of
/// measurement, `sample_size` samples.
pub(crate) fn short(sample_size: usize) -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(sample_size)
}
