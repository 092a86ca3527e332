//! `health`: a read-only view of upstream health, fed by the gateway.

use crate::bindings::health::{CircuitState, EndpointHealth as WitEndpoint, Host};
use crate::host::{Capability, HostState};
pub use edgegate_policy_core::Circuit;

/// Health of one endpoint as the gateway sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointHealth {
    /// `host:port`.
    pub address: String,
    /// Whether the gateway would send traffic to it now.
    pub healthy: bool,
    /// Circuit breaker state (the one type the host and the policies share).
    pub circuit: Circuit,
    /// Requests in flight.
    pub in_flight: u32,
    /// EWMA latency in microseconds.
    pub ewma_latency_us: u64,
    /// EWMA error ratio in parts per million.
    pub error_rate_ppm: u32,
}

/// Where the health view comes from (the gateway's upstream pools).
pub trait HealthSource: Send + Sync {
    /// Endpoints of cluster `name`, empty when unknown.
    fn upstream(&self, name: &str) -> Vec<EndpointHealth>;
    /// All cluster names.
    fn upstreams(&self) -> Vec<String>;
}

/// A health source that knows nothing (tools and tests).
pub struct NoHealth;

impl HealthSource for NoHealth {
    fn upstream(&self, _name: &str) -> Vec<EndpointHealth> {
        Vec::new()
    }
    fn upstreams(&self) -> Vec<String> {
        Vec::new()
    }
}

impl Host for HostState {
    fn upstream(&mut self, name: String) -> wasmtime::Result<Vec<WitEndpoint>> {
        self.require(Capability::Health)?;
        Ok(self
            .services
            .health
            .upstream(&name)
            .into_iter()
            .map(|e| WitEndpoint {
                address: e.address,
                healthy: e.healthy,
                circuit: match e.circuit {
                    Circuit::Open => CircuitState::Open,
                    Circuit::HalfOpen => CircuitState::HalfOpen,
                    Circuit::Closed => CircuitState::Closed,
                },
                in_flight: e.in_flight,
                ewma_latency_us: e.ewma_latency_us,
                error_rate_ppm: e.error_rate_ppm,
            })
            .collect())
    }

    fn upstreams(&mut self) -> wasmtime::Result<Vec<String>> {
        self.require(Capability::Health)?;
        Ok(self.services.health.upstreams())
    }
}
