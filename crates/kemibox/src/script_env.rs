//! What `kemibox check` and `kemibox route` give a script besides its
//! source: the tenant's variables (`os.getenv`, `KSR.kx.get_env`), defines
//! (`KSR.kx.ifdef`) and Lua modules (`require`), from a config file's
//! tenant and/or options, so a script is checked as it would run.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use kemibox_kemi::TenantState;
use kemibox_sandbox::TenantSpec;

#[derive(clap::Args, Debug, Default)]
pub struct LuaArgs {
    /// Take env, defines and lua_path from this config file's tenant
    /// (docs/config.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Which `[[tenant]]` of --config (needed when it has several).
    #[arg(long, requires = "config")]
    tenant: Option<String>,
    /// A variable for `os.getenv` / `KSR.kx.get_env`, `NAME=VALUE`;
    /// repeat for several (over --config's).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// A define for `KSR.kx.ifdef`, `NAME` or `NAME=VALUE`; repeat for
    /// several (added to --config's).
    #[arg(long = "define", value_name = "NAME[=VALUE]")]
    defines: Vec<String>,
    /// A directory of Lua modules for `require`; repeat for several
    /// (searched after --config's lua_path).
    #[arg(long = "lua-path", value_name = "DIR")]
    lua_path: Vec<PathBuf>,
}

impl LuaArgs {
    /// Give `spec` the tenant's variables, defines and Lua modules.
    pub fn apply(&self, spec: &mut TenantSpec) -> anyhow::Result<()> {
        let mut state = TenantState::default();
        let mut lua_path = Vec::new();
        if let Some(path) = &self.config {
            let settings = crate::config::load(path)?;
            let tenant = match &self.tenant {
                Some(id) => settings
                    .tenants
                    .into_iter()
                    .find(|t| t.id.as_str() == id)
                    .with_context(|| format!("{}: no tenant {id:?}", path.display()))?,
                None if settings.tenants.len() == 1 => {
                    settings.tenants.into_iter().next().context("no tenant")?
                }
                None => bail!(
                    "{} has several tenants: say which with --tenant ID",
                    path.display()
                ),
            };
            (state.env, state.defines) = (tenant.env, tenant.defines);
            lua_path = tenant.lua_path;
        }
        for entry in &self.env {
            match entry.split_once('=') {
                Some((name, value)) if !name.is_empty() => {
                    state.env.insert(name.to_string(), value.to_string());
                }
                _ => bail!("--env {entry:?}: give NAME=VALUE"),
            }
        }
        for entry in &self.defines {
            let (name, value) = entry.split_once('=').unwrap_or((entry, ""));
            if name.is_empty() {
                bail!("--define {entry:?}: give NAME or NAME=VALUE");
            }
            state.defines.insert(name.to_string(), value.to_string());
        }
        lua_path.extend(self.lua_path.iter().cloned());
        spec.lua_modules = crate::lua_modules::read(&lua_path)?.into();
        spec.state = Arc::new(state);
        Ok(())
    }
}
