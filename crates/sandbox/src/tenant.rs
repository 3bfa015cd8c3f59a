//! A tenant's script, linked and validated once, instantiated many times.

use std::fmt;
use std::sync::Arc;

use kemibox_kemi::{Myself, Services, TenantId};
use wasmtime::component::InstancePre;

use crate::instance::Instance;
use crate::store::StoreData;
use crate::{Limits, Outcome, Runtime};

/// Everything needed to run one tenant's script.
#[derive(Debug, Clone)]
pub struct TenantSpec {
    /// The tenant: on every log line and metric, and the key of its stored
    /// data.
    pub id: TenantId,
    /// The script's name in messages (`route.lua`), usually its file name.
    pub script_name: String,
    pub source: String,
    pub limits: Limits,
    /// KSR modules the script may use; the rest are `nil` in `KSR`.
    pub modules: Vec<String>,
    /// Function the script must define to be accepted.
    pub entry: Option<String>,
    pub myself: Arc<Myself>,
    /// The stores the registrar and auth modules use (default: in memory).
    pub services: Arc<Services>,
    /// Where the script may relay (`None`: anywhere); `t_relay` returns
    /// -1 for a refused destination and the proxy does not send there.
    pub relay_to: Option<Arc<kemibox_kemi::RelayTo>>,
    /// Instances the pool may re-create per second (and at once) to
    /// replace ones a trap ended; past it the tenant's invocations are
    /// [`Outcome::Throttled`] until the budget refills, so a tenant that
    /// traps on every message cannot spend the host's CPU on re-creation.
    pub recreations_per_second: u32,
    /// The tenant's module state (htable, pike, ...), shared by all its
    /// instances and kept across reloads. Its `env` is also what the
    /// guest's `os.getenv` reads.
    pub state: Arc<kemibox_kemi::TenantState>,
    /// The tenant's own Lua modules (`lua_path`), read by the host when the
    /// script is loaded or reloaded; the guest compiles them at load and
    /// runs one on its first `require`.
    pub lua_modules: Arc<[LuaModule]>,
}

/// One of a tenant's Lua modules, as read from its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LuaModule {
    /// The name `require` takes (`callng.sigfunc`).
    pub name: String,
    /// The file it was read from, as messages name it.
    pub file: String,
    pub source: String,
}

/// [`TenantSpec::recreations_per_second`] when not configured: one a
/// second, since each trap may have burnt a whole fuel budget (about 3 ms
/// of a core at the default) and more than that measurably slowed other
/// tenants' calls (docs/isolation.md).
pub const DEFAULT_RECREATIONS_PER_SECOND: u32 = 1;

impl TenantSpec {
    /// A spec with default limits, every module granted, and
    /// `ksr_request_route` required.
    pub fn new(
        id: TenantId,
        script_name: impl Into<String>,
        source: impl Into<String>,
    ) -> TenantSpec {
        TenantSpec::with_services(id, script_name, source, Services::in_memory())
    }

    /// [`TenantSpec::new`] with the stores given: what a proxy's tenants
    /// share, sparing the in-memory ones `new` makes (a thousand tenants
    /// would otherwise make a thousand in-memory databases at start).
    pub fn with_services(
        id: TenantId,
        script_name: impl Into<String>,
        source: impl Into<String>,
        services: Arc<Services>,
    ) -> TenantSpec {
        TenantSpec {
            id,
            script_name: script_name.into(),
            source: source.into(),
            limits: Limits::default(),
            modules: kemibox_kemi::MODULES
                .iter()
                .map(|m| m.to_string())
                .collect(),
            entry: Some("ksr_request_route".into()),
            myself: Arc::new(Myself::default()),
            services,
            relay_to: None,
            recreations_per_second: DEFAULT_RECREATIONS_PER_SECOND,
            state: Arc::default(),
            lua_modules: Arc::new([]),
        }
    }
}

/// A validated tenant script: instances come from `pre` with the script
/// loaded.
pub struct Tenant {
    pub spec: TenantSpec,
    /// 1 for the script the pool started with, one more per reload.
    pub version: u64,
    pub(crate) pre: InstancePre<StoreData>,
    pub(crate) runtime: Runtime,
    /// Global functions the script defined when it loaded.
    functions: std::sync::OnceLock<Vec<String>>,
}

/// Why a script was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadFailure {
    pub tenant: TenantId,
    pub script: String,
    pub line: Option<u32>,
    pub message: String,
}

impl fmt::Display for LoadFailure {
    /// `script.lua:LINE: message`, as `kemibox check` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.script, line, self.message),
            None => write!(f, "{}: {}", self.script, self.message),
        }
    }
}

impl std::error::Error for LoadFailure {}

impl LoadFailure {
    pub(crate) fn new(
        spec: &TenantSpec,
        line: Option<u32>,
        message: impl Into<String>,
    ) -> LoadFailure {
        LoadFailure {
            tenant: spec.id.clone(),
            script: spec.script_name.clone(),
            line,
            message: message.into(),
        }
    }

    pub(crate) fn from_outcome(spec: &TenantSpec, outcome: &Outcome) -> LoadFailure {
        let (line, message) = match outcome {
            Outcome::LuaError { message, line, .. } => (*line, message.clone()),
            Outcome::OutOfFuel => (None, "the top-level chunk ran out of fuel".into()),
            Outcome::Deadline => (None, "the top-level chunk passed its deadline".into()),
            Outcome::OutOfMemory { message } => {
                (None, format!("out of memory while loading: {message}"))
            }
            Outcome::NotFound { message } | Outcome::Trap { message } => (None, message.clone()),
            Outcome::Ok { .. } => (None, "loaded".into()),
            Outcome::Throttled => (None, "throttled".into()),
        };
        LoadFailure::new(spec, line, message)
    }
}

impl Tenant {
    /// True when the script defined global function `name` when it loaded.
    /// Optional routes (`ksr_reply_route`, `ksr_onsend_route`) run only
    /// then: a function the script assigns later is not looked for, which
    /// spares an invocation per message for scripts without them.
    pub fn defines(&self, name: &str) -> bool {
        self.functions
            .get()
            .is_some_and(|f| f.iter().any(|n| n == name))
    }

    /// Link and validate `spec`: the script must load in a scratch instance
    /// and define the entry function. Returns the tenant and that instance,
    /// ready for use.
    pub async fn load(
        runtime: &Runtime,
        spec: TenantSpec,
    ) -> Result<(Arc<Tenant>, Instance), LoadFailure> {
        Tenant::load_version(runtime, spec, 1).await
    }

    /// [`Tenant::load`] numbered `version`.
    pub(crate) async fn load_version(
        runtime: &Runtime,
        spec: TenantSpec,
        version: u64,
    ) -> Result<(Arc<Tenant>, Instance), LoadFailure> {
        spec.limits
            .validate()
            .map_err(|e| LoadFailure::new(&spec, None, e))?;
        let pre = runtime
            .linked(&spec.modules)
            .map_err(|e| LoadFailure::new(&spec, None, format!("linking: {e:#}")))?;
        let tenant = Arc::new(Tenant {
            spec,
            version,
            pre,
            runtime: runtime.clone(),
            functions: Default::default(),
        });
        let mut instance = Instance::new(tenant.clone()).await?;
        let listed = instance.functions().await;
        let functions = tenant.functions.get_or_init(|| listed);
        if let Some(entry) = &tenant.spec.entry
            && !functions.iter().any(|f| f == entry)
        {
            return Err(LoadFailure::new(
                &tenant.spec,
                None,
                format!("the script does not define function {entry}()"),
            ));
        }
        Ok((tenant, instance))
    }
}
