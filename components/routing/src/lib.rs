//! The routing policy component: the logic lives in `edgegate-routing`
//! (logic/); this crate only exports it through the edgegate:policy world.

edgegate_policy_sdk::export_logic!(edgegate_routing::Routing);
