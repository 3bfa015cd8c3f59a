//! Per-invocation limits.

use std::time::Duration;

use serde::Deserialize;

/// What one route invocation may use. Configured per tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wasm fuel per invocation (deterministic CPU budget). The Lua loop
    /// burns about 17 G fuel/s, so the default 10 M is about 0.6 ms of pure
    /// Lua, some 550 times a typical route (10-50 k). It is also what a
    /// runaway script costs the host per invocation before it is stopped,
    /// which other tenants feel on a small machine (docs/isolation.md).
    pub fuel: u64,
    /// Hard cap on the instance's linear memory, in bytes.
    pub memory: u64,
    /// Wall-clock deadline per invocation, in milliseconds (also covers
    /// time spent waiting on I/O in KSR functions).
    pub deadline_ms: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            fuel: 10_000_000,
            memory: 32 << 20,
            deadline_ms: 500,
        }
    }
}

/// Minimum fuel for loading a script (see [`Limits::load_fuel`]).
pub const LOAD_FUEL: u64 = 50_000_000;

/// Linear memory the guest needs before the Lua heap: the 1 MiB shadow
/// stack, data and Rust's own allocations.
const GUEST_BASE: u64 = 3 << 20;

impl Limits {
    /// Fuel for loading the script: creating the Lua state and the sandbox
    /// costs about 2.5 M by itself, and the script's top level runs too, so
    /// loading gets at least [`LOAD_FUEL`] whatever the route budget.
    pub fn load_fuel(&self) -> u64 {
        self.fuel.max(LOAD_FUEL)
    }

    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    /// The Lua allocator limit: half of what the cap leaves after the
    /// guest's own needs, so most exhaustion is a catchable Lua "not enough
    /// memory" error and the instance survives; only what slips past it
    /// reaches the hard cap (a trap, and a fresh instance).
    pub fn lua_memory(&self) -> u64 {
        self.memory.saturating_sub(GUEST_BASE) / 2
    }

    /// Refuse limits that cannot work, with the reason.
    pub fn validate(&self) -> Result<(), String> {
        if self.fuel < 100_000 {
            return Err(format!(
                "fuel = {} is too small: a script needs at least 100000",
                self.fuel
            ));
        }
        if self.memory < GUEST_BASE + (1 << 20) {
            return Err(format!(
                "memory = {} is too small: the guest needs at least {} bytes",
                self.memory,
                GUEST_BASE + (1 << 20)
            ));
        }
        if self.deadline_ms == 0 {
            return Err("deadline_ms must be at least 1".into());
        }
        Ok(())
    }
}
