//! The kemibox Lua guest: Lua 5.4 (through mlua) compiled to a wasm component.
//!
//! The host loads one tenant's routing script into an instance of this
//! component and calls its route functions by name. Everything the script can
//! reach outside Lua is a typed KSR import defined in `wit/`; the guest only
//! builds the `KSR` table from those imports ([`ksr`]) and a sandboxed Lua
//! standard library around it ([`sandbox`]).

mod args;
mod cjson;
mod ksr;
mod run;
mod sandbox;

wit_bindgen::generate!({
    world: "ksr",
    path: "../wit",
});

use exports::kemibox::ksr::script::{Guest, LoadError, LoadOptions, RouteError};

struct Component;

impl Guest for Component {
    fn load(source: String, options: LoadOptions) -> Result<(), LoadError> {
        run::load(&source, &options)
    }

    fn functions() -> Vec<String> {
        run::functions()
    }

    fn invoke(name: String) -> Result<i32, RouteError> {
        run::invoke(&name)
    }

    fn reachable() -> Vec<String> {
        run::reachable()
    }
}

/// The component's exports: wit-bindgen's generated ABI glue, which must be
/// unsafe (raw canonical-ABI pointers and `export_name` symbols).
#[allow(unsafe_code, reason = "wit-bindgen's export glue")]
mod abi {
    use super::{Component, export};

    export!(Component with_types_in crate);
}
