//! How an invocation ended, and what it did.

use std::time::Duration;

use kemibox_kemi::{Event, Message};
use serde::Serialize;

/// Every way a route invocation can end.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// The function returned (or called `KSR.x.exit()`/`KSR.x.drop()`):
    /// `ret` is the KEMI integer.
    Ok { ret: i32 },
    /// An uncaught Lua error.
    LuaError {
        message: String,
        line: Option<u32>,
        traceback: String,
    },
    /// The fuel budget ran out.
    OutOfFuel,
    /// The wall-clock deadline passed.
    Deadline,
    /// The Lua memory limit or the instance's hard memory cap was hit.
    OutOfMemory { message: String },
    /// The script does not define the function.
    NotFound { message: String },
    /// The guest trapped for another reason (a defect, reported as such).
    Trap { message: String },
    /// Not run: the tenant keeps trapping and has spent its instance
    /// re-creation budget for now (see [`crate::Pool`]).
    Throttled,
}

impl Outcome {
    /// The label used in logs, metrics and `kemibox route` output.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Ok { .. } => "ok",
            Outcome::LuaError { .. } => "lua-error",
            Outcome::OutOfFuel => "out-of-fuel",
            Outcome::Deadline => "deadline",
            Outcome::OutOfMemory { .. } => "out-of-memory",
            Outcome::NotFound { .. } => "not-found",
            Outcome::Trap { .. } => "trap",
            Outcome::Throttled => "throttled",
        }
    }

    /// The outcome as `kemibox_invocations_total` counts it.
    pub fn metric(&self) -> kemibox_metrics::InvocationOutcome {
        use kemibox_metrics::InvocationOutcome as M;
        match self {
            Outcome::Ok { .. } => M::Ok,
            Outcome::LuaError { .. } => M::LuaError,
            Outcome::OutOfFuel => M::OutOfFuel,
            Outcome::Deadline => M::Deadline,
            Outcome::OutOfMemory { .. } => M::OutOfMemory,
            Outcome::NotFound { .. } => M::NotFound,
            Outcome::Trap { .. } => M::Trap,
            Outcome::Throttled => M::Throttled,
        }
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok { .. })
    }
}

/// The result of one invocation: who ran what, how it ended, what it cost,
/// what it asked for, and the message with its pending edits.
#[derive(Debug)]
pub struct Invocation {
    pub tenant: kemibox_kemi::TenantId,
    pub function: String,
    pub outcome: Outcome,
    pub fuel_used: u64,
    pub elapsed: Duration,
    pub events: Vec<Event>,
    pub message: Option<Message>,
}

impl Invocation {
    /// `script.lua:12` when the failure has a line.
    pub fn location(&self, script: &str) -> Option<String> {
        match &self.outcome {
            Outcome::LuaError { line: Some(l), .. } => Some(format!("{script}:{l}")),
            _ => None,
        }
    }
}
