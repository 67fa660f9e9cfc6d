//! Tests of the planning module.
