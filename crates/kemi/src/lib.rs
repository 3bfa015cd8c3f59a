//! The KSR world on the host side.
//!
//! `wit/` defines one interface per KEMI module; this crate binds them
//! ([`bindings`]), implements each in a file of its own under [`modules`]
//! (as Kamailio keeps one folder per module), and keeps the per-message and
//! per-instance state they work on ([`Ctx`]). The API table ([`api`]) is
//! generated from the same WIT files.

pub mod api;
mod ctx;
pub mod dialog_profiles;
mod digest;
mod modules;
mod nonce;
mod pv_format;
pub mod pv_name;
mod relay_to;
mod route_type;
mod services;
mod tenant_id;
mod tenant_state;
#[cfg(test)]
mod testing;
pub mod uac;

pub use ctx::{
    AppendedBranch, CallbackKind, Ctx, Event, FrTimers, Level, Message, Myself, PvValue,
    TmFunction, TmInfo, Transport,
};
pub use modules::parse_socket;
pub use modules::{
    ALWAYS_GRANTED, Acc, AccCaptured, AccCompletion, AccExtra, AccSettings, AddressDump, Ipops,
    MODULES, Permissions, Pike, PikeSettings, Subnet, Verdict, add_to_linker, parse_extra,
};
pub use nonce::Nonces;
pub use relay_to::{RelayRule, RelayTo};
pub use route_type::{ActionKind, REFUSED, RouteType};
pub use services::{RegistrarSettings, Services};
pub use tenant_id::{InvalidTenantId, TenantId};
pub use tenant_state::TenantState;

/// The htable engine (`KSR.htable`, `$sht`): tables, their declaration and
/// what they owe the database, for the configuration and the admin API.
pub mod htable {
    pub use crate::modules::htable_engine::*;
}

/// The dialog module (`KSR.dialog`, `$dlg`): a tenant's dialogs, the
/// proxy's hooks into them, and their timer.
pub mod dialog {
    pub use crate::modules::dialog_table::*;
    pub use crate::modules::{DialogState, dialog_backup as backup, dialog_upkeep as upkeep};
}

/// The dispatcher (`KSR.dispatcher`): sets, their destinations' states,
/// the probe driver, for the configuration, the admin API and metrics.
pub mod dispatcher {
    pub use crate::modules::ds_health::{ProbingMode, ReplyCodes, Thresholds};
    pub use crate::modules::ds_list::{Attrs, DestSpec, ListError, flags, parse};
    pub use crate::modules::ds_probe::{spawn, start_round};
    pub use crate::modules::ds_sets::{
        Destination, Dispatcher, Latency, MAX_PROBES_IN_FLIGHT, Set, Sets, Settings, Table,
    };
    pub use crate::modules::{
        AVP_ATTRS, AVP_CNT, AVP_DSTID, AVP_GRP, AVP_SOCK, AVP_URI, ds_parse_state as parse_state,
    };
}

/// Host bindings generated from `wit/` (world `ksr`).
pub mod bindings {
    wasmtime::component::bindgen!({
        world: "ksr",
        path: "../../wit",
        imports: { default: async },
        exports: { default: async },
    });
}
