//! The redaction policy component: the logic lives in `edgegate-redaction`
//! (logic/); this crate only exports it through the edgegate:policy world.

edgegate_policy_sdk::export_logic!(edgegate_redaction::Redaction);
