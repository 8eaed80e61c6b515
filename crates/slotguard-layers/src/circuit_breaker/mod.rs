//! Per-node or global circuit breaker (being written).
