//! (being built)

use std::sync::Arc;

/// The planning module.
pub fn module(_ctx: &crate::module::Context<'_>) -> anyhow::Result<Arc<dyn crate::module::Module>> {
    Ok(Arc::new(PlanningModule))
}

struct PlanningModule;

impl crate::module::Module for PlanningModule {
    fn name(&self) -> &'static str {
        "planning"
    }
}
