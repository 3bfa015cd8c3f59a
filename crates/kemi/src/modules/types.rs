//! `types`: shared value types only, no functions.
impl crate::bindings::kemibox::ksr::types::Host for crate::Ctx {}
