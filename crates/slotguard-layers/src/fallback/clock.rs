//! Time as nanoseconds since a base instant, so entries keep it in atomics.
//! On tokio's clock: paused-time tests move it.

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    base: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            base: Instant::now(),
        }
    }

    /// Nanoseconds since the base; at least 1, so 0 can mean "never".
    pub(crate) fn nanos(&self, at: Instant) -> u64 {
        let n = at.saturating_duration_since(self.base).as_nanos();
        u64::try_from(n).unwrap_or(u64::MAX).max(1)
    }

    pub(crate) fn now(&self) -> u64 {
        self.nanos(Instant::now())
    }
}
