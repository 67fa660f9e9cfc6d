//! Tests of the queues module.
