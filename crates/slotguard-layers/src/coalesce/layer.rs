//! [`CoalesceLayer`].

use std::fmt;
use std::sync::Arc;

use tower::Layer;

use super::flights::ReadFlights;
use super::Coalesce;

/// Single-flight for identical in-flight reads. See the
/// [module docs](super).
///
/// Every service this layer makes (and every clone of the layer) shares one
/// table of flights, so clones of a stack coalesce with each other.
#[derive(Clone)]
pub struct CoalesceLayer {
    pub(crate) flights: Arc<ReadFlights>,
}

impl CoalesceLayer {
    /// A layer with an empty table.
    pub fn new() -> Self {
        Self {
            flights: Arc::new(ReadFlights::new()),
        }
    }

    /// Reads that made an inner call (led a flight), since creation.
    pub fn led_total(&self) -> u64 {
        self.flights.totals().0
    }

    /// Reads that shared another read's call instead of making their own.
    pub fn joined_total(&self) -> u64 {
        self.flights.totals().1
    }

    /// Flights in progress now.
    pub fn in_flight(&self) -> usize {
        self.flights.in_flight()
    }
}

impl Default for CoalesceLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for CoalesceLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoalesceLayer")
            .field("flights", &self.flights)
            .finish()
    }
}

impl<S> Layer<S> for CoalesceLayer {
    type Service = Coalesce<S>;

    fn layer(&self, inner: S) -> Coalesce<S> {
        Coalesce {
            inner,
            flights: self.flights.clone(),
        }
    }
}
