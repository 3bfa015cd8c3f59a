//! `kemibox check SCRIPT`, like `kamailio -c`.

use std::path::Path;
use std::process::ExitCode;

use kemibox_sandbox::{Runtime, Tenant, TenantSpec};

/// `lua`: the variables, defines and Lua modules to check it with.
pub fn run(path: &Path, entry: &str, lua: &crate::script_env::LuaArgs) -> anyhow::Result<ExitCode> {
    crate::init_logging("warn", crate::LogFormat::Plain);
    let source = crate::read_script(path)?;
    let runtime = Runtime::new(None)?;
    let mut spec = TenantSpec::new("check".parse()?, crate::script_name(path), source);
    spec.entry = Some(entry.to_string());
    lua.apply(&mut spec)?;
    match crate::block_on(Tenant::load(&runtime, spec))? {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(failure) => {
            println!("{failure}");
            Ok(ExitCode::from(1))
        }
    }
}
