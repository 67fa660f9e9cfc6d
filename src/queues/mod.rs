//! (being built)

use std::sync::Arc;

/// The queues module.
pub fn module(_ctx: &crate::module::Context<'_>) -> anyhow::Result<Arc<dyn crate::module::Module>> {
    Ok(Arc::new(QueuesModule))
}

struct QueuesModule;

impl crate::module::Module for QueuesModule {
    fn name(&self) -> &'static str {
        "queues"
    }
}
