//! Every check, written once.
//!
//! The keys a tenant may give and the top level defaults (`limits`,
//! `rate_limited_reply`, `relay_to`, `auto_reload`) are merged first
//! ([`merge`]): each merged value keeps the [`Origin`] it came from, the
//! tenant's own key or the top level's. The checks then run on the merged
//! value, so a top-level default and a tenant's override meet the same
//! code, and the error points at whichever key gave the refused value.
//! The command line goes through the same checks with the options as
//! origins.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use kemibox_kemi::{RelayTo, TenantId};
use kemibox_proxy::{LimitedReply, Listen, RateLimit};
use kemibox_sandbox::Limits;
use toml::Spanned;

use super::locate::{Key, Origin, Problem};
use super::schema::{self, SpannedList, TenantSettings};

/// A check's result: the value made usable, or the problem.
pub type Checked<T> = Result<T, Problem>;

/// A value and where it came from.
#[derive(Debug, Clone)]
pub struct Given<T> {
    pub value: T,
    pub at: Origin,
}

impl<T> Given<T> {
    /// A value not given anywhere.
    pub fn builtin(value: T) -> Given<T> {
        Given {
            value,
            at: Origin::Builtin,
        }
    }

    /// A value given by a command-line option.
    pub fn flag(value: T, flag: &'static str) -> Given<T> {
        Given {
            value,
            at: Origin::Flag(flag),
        }
    }
}

/// Which part of the file a key is in: the top level or a `[[tenant]]`.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    Top,
    /// The entry's id as written (it may itself be refused).
    Tenant(&'a str),
}

impl Scope<'_> {
    /// Where the value of `key` (relative to this scope) sits.
    pub fn at<T>(self, key: &str, value: &Spanned<T>) -> Origin {
        let (path, tenant) = match self {
            Scope::Top => (key.to_string(), None),
            Scope::Tenant(id) => (format!("tenant.{key}"), Some(id.to_string())),
        };
        Origin::Key(Key {
            span: value.span(),
            path,
            tenant,
        })
    }

    /// `value` with its origin.
    pub fn given<T: Clone>(self, key: &str, value: &Spanned<T>) -> Given<T> {
        Given {
            value: value.get_ref().clone(),
            at: self.at(key, value),
        }
    }

    /// What starts a message about this scope: "" or "tenant a: ".
    pub fn label(self) -> String {
        match self {
            Scope::Top => String::new(),
            Scope::Tenant(id) => format!("tenant {id}: "),
        }
    }
}

/// Which scope an origin is in, for the start of a message.
fn label(at: &Origin) -> String {
    match at {
        Origin::Key(Key {
            tenant: Some(id), ..
        }) => format!("tenant {id}: "),
        _ => String::new(),
    }
}

/// A tenant's settings with each value from its own entry, else the top
/// level, else the built-in default.
pub struct Merged<'a> {
    pub fuel: Given<u64>,
    pub memory: Given<u64>,
    pub deadline_ms: Given<u64>,
    pub rate: Option<Given<u32>>,
    pub burst: Option<Given<u32>>,
    pub recreations: Given<u32>,
    pub reply: Option<(Scope<'a>, &'a schema::LimitedReply)>,
    pub relay_to: Option<(Scope<'a>, &'a SpannedList)>,
    pub auto_reload: bool,
}

/// Merge a tenant's own settings (`None` for the default tenant) over the
/// top level's. A tenant without its own rate takes the top-level rate
/// and burst; one with its own rate bursts to that rate unless it gives
/// its own `burst`.
pub fn merge<'a>(
    top: TenantSettings<'a>,
    own: Option<(Scope<'a>, TenantSettings<'a>)>,
) -> Merged<'a> {
    let own_limits = own.map(|(scope, o)| (scope, o.limits));
    let pick_u64 = |key, get, default| {
        pick(top.limits, own_limits, key, get).unwrap_or_else(|| Given::builtin(default))
    };
    let pick_u32 = |key, get| pick(top.limits, own_limits, key, get);
    let defaults = Limits::default();
    let own_rate = own.and_then(|(scope, o)| {
        o.limits
            .invocations_per_second
            .as_ref()
            .map(|v| scope.given("limits.invocations_per_second", v))
    });
    let (rate, burst) = match own_rate {
        Some(rate) => {
            let burst = own.and_then(|(scope, o)| {
                o.limits
                    .burst
                    .as_ref()
                    .map(|v| scope.given("limits.burst", v))
            });
            (Some(rate), burst)
        }
        None => (
            pick_u32("limits.invocations_per_second", |l| {
                &l.invocations_per_second
            }),
            pick_u32("limits.burst", |l| &l.burst),
        ),
    };
    Merged {
        fuel: pick_u64("limits.fuel", |l| &l.fuel, defaults.fuel),
        memory: pick_u64("limits.memory", |l| &l.memory, defaults.memory),
        deadline_ms: pick_u64(
            "limits.deadline_ms",
            |l| &l.deadline_ms,
            defaults.deadline_ms,
        ),
        rate,
        burst,
        recreations: pick_u32("limits.recreations_per_second", |l| {
            &l.recreations_per_second
        })
        .unwrap_or_else(|| Given::builtin(kemibox_sandbox::DEFAULT_RECREATIONS_PER_SECOND)),
        reply: own
            .and_then(|(scope, o)| o.rate_limited_reply.map(|r| (scope, r)))
            .or_else(|| top.rate_limited_reply.map(|r| (Scope::Top, r))),
        relay_to: own
            .and_then(|(scope, o)| o.relay_to.map(|r| (scope, r)))
            .or_else(|| top.relay_to.map(|r| (Scope::Top, r))),
        auto_reload: own
            .and_then(|(_, o)| o.auto_reload)
            .or(top.auto_reload)
            .unwrap_or(false),
    }
}

/// A `[limits]` key from the tenant's table, else the top level's.
fn pick<'a, T: Clone>(
    top: &'a schema::LimitsTable,
    own: Option<(Scope<'a>, &'a schema::LimitsTable)>,
    key: &str,
    get: fn(&schema::LimitsTable) -> &Option<Spanned<T>>,
) -> Option<Given<T>> {
    own.and_then(|(scope, o)| get(o).as_ref().map(|v| scope.given(key, v)))
        .or_else(|| get(top).as_ref().map(|v| Scope::Top.given(key, v)))
}

/// A merged tenant's settings, checked.
pub struct Quotas {
    pub limits: Limits,
    pub rate: Option<RateLimit>,
    pub relay_to: Option<RelayTo>,
    pub recreations_per_second: u32,
    pub auto_reload: bool,
}

/// Check every merged value.
pub fn quotas(merged: &Merged<'_>) -> Checked<Quotas> {
    let reply = match merged.reply {
        Some((scope, r)) => limited_reply(scope, r)?,
        None => LimitedReply::default(),
    };
    Ok(Quotas {
        limits: limits(&merged.fuel, &merged.memory, &merged.deadline_ms)?,
        rate: rate(merged.rate.as_ref(), merged.burst.as_ref())?.map(|(per_second, burst)| {
            RateLimit {
                per_second,
                burst,
                reply,
            }
        }),
        relay_to: merged.relay_to.map(relay_to).transpose()?,
        recreations_per_second: recreations(&merged.recreations)?,
        auto_reload: merged.auto_reload,
    })
}

/// The sandbox's limits; each value is checked by the sandbox's own rule
/// beside the defaults of the others, so a refusal names the one key.
pub fn limits(fuel: &Given<u64>, memory: &Given<u64>, deadline_ms: &Given<u64>) -> Checked<Limits> {
    let defaults = Limits::default();
    let one = |given: &Given<u64>, limits: Limits, default: u64| {
        limits.validate().map_err(|e| {
            Problem::new(
                given.at.clone(),
                format!("{}limits: {e}", label(&given.at)),
                format!("raise it, or remove it for the default ({default})"),
            )
        })
    };
    one(
        fuel,
        Limits {
            fuel: fuel.value,
            ..defaults
        },
        defaults.fuel,
    )?;
    one(
        memory,
        Limits {
            memory: memory.value,
            ..defaults
        },
        defaults.memory,
    )?;
    one(
        deadline_ms,
        Limits {
            deadline_ms: deadline_ms.value,
            ..defaults
        },
        defaults.deadline_ms,
    )?;
    Ok(Limits {
        fuel: fuel.value,
        memory: memory.value,
        deadline_ms: deadline_ms.value,
    })
}

/// The rate and burst (`None`: no limit).
pub fn rate(rate: Option<&Given<u32>>, burst: Option<&Given<u32>>) -> Checked<Option<(u32, u32)>> {
    match (rate, burst) {
        (Some(r), _) if r.value == 0 => Err(Problem::new(
            r.at.clone(),
            format!(
                "{}limits: invocations_per_second = 0 would refuse every request",
                label(&r.at)
            ),
            "give at least 1, or remove it for no limit",
        )),
        (Some(_), Some(b)) if b.value == 0 => Err(Problem::new(
            b.at.clone(),
            format!("{}limits: burst = 0 must be at least 1", label(&b.at)),
            "give at least 1, or remove it to burst to invocations_per_second",
        )),
        (Some(r), b) => Ok(Some((r.value, b.map_or(r.value, |b| b.value)))),
        (None, Some(b)) => Err(Problem::new(
            b.at.clone(),
            format!(
                "{}limits: burst without invocations_per_second",
                label(&b.at)
            ),
            "add invocations_per_second, or remove burst",
        )),
        (None, None) => Ok(None),
    }
}

/// The re-creation budget.
pub fn recreations(given: &Given<u32>) -> Checked<u32> {
    if given.value == 0 {
        return Err(Problem::new(
            given.at.clone(),
            format!(
                "{}limits: recreations_per_second = 0 would never replace a trapped instance",
                label(&given.at)
            ),
            "give at least 1 (the default is 1)",
        ));
    }
    Ok(given.value)
}

/// A reply's status: a final error (300-699). `key` is the reply's key
/// (`error_reply`), `example` a fitting code.
pub fn final_status(
    scope: Scope<'_>,
    key: &str,
    code: &Spanned<u16>,
    example: u16,
) -> Checked<u16> {
    let c = *code.get_ref();
    if !(300..=699).contains(&c) {
        return Err(Problem::new(
            scope.at(&format!("{key}.code"), code),
            format!(
                "{}{key}.code = {c} must be a final error status (300-699)",
                scope.label()
            ),
            format!("give a code from 300 to 699, e.g. {example}"),
        ));
    }
    Ok(c)
}

/// `rate_limited_reply`.
pub fn limited_reply(scope: Scope<'_>, r: &schema::LimitedReply) -> Checked<LimitedReply> {
    Ok(LimitedReply {
        code: final_status(scope, "rate_limited_reply", &r.code, 503)?,
        reason: r.reason.clone(),
        retry_after: r.retry_after,
    })
}

/// `error_reply` and `unmatched_reply`.
pub fn reply(key: &str, r: &schema::Reply, example: u16) -> Checked<(u16, String)> {
    Ok((
        final_status(Scope::Top, key, &r.code, example)?,
        r.reason.clone(),
    ))
}

/// A `relay_to` list. Its message names no tenant (the location line
/// does), as it always read.
pub fn relay_to((scope, list): (Scope<'_>, &SpannedList)) -> Checked<RelayTo> {
    let mut rules = Vec::new();
    for (i, entry) in list.get_ref().iter().enumerate() {
        let rule = entry.get_ref().parse().map_err(|why| {
            Problem::new(
                scope.at(&format!("relay_to[{i}]"), entry),
                format!("relay_to: {why}"),
                "give a network (\"10.0.0.0/8\"), an address (\"10.1.2.3\"), an address and port (\"127.0.0.1:5080\") or a host name (\"sip.example.com\")",
            )
        })?;
        rules.push(rule);
    }
    Ok(RelayTo { rules })
}

/// One `listen` entry.
pub fn listen_entry(scope: Scope<'_>, i: usize, entry: &Spanned<String>) -> Checked<Listen> {
    entry.get_ref().parse().map_err(|e| {
        Problem::new(
            scope.at(&format!("listen[{i}]"), entry),
            format!("{}listen: {e}", scope.label()),
            "give udp:IP:PORT or tcp:IP:PORT, e.g. \"udp:127.0.0.1:5060\"",
        )
    })
}

/// The top-level `listen`: every entry usable, at least one.
pub fn listen(list: &SpannedList) -> Checked<Vec<Listen>> {
    if list.get_ref().is_empty() {
        return Err(Problem::new(
            Scope::Top.at("listen", list),
            "listen is empty",
            "give at least one udp:IP:PORT or tcp:IP:PORT, or remove it for udp:127.0.0.1:5060",
        ));
    }
    list.get_ref()
        .iter()
        .enumerate()
        .map(|(i, e)| listen_entry(Scope::Top, i, e))
        .collect()
}

/// An `IP:PORT` to serve HTTP on (`metrics.listen`, `admin.listen`),
/// refused at `at`.
pub fn socket_addr(key: &str, value: &str, at: Origin, example: &str) -> Checked<SocketAddr> {
    value.parse().map_err(|e| {
        Problem::new(
            at,
            format!("{key} = {value:?}: {e}"),
            format!("expected IP:PORT, e.g. \"{example}\""),
        )
    })
}

/// `[metrics]`: where to serve `GET /metrics`. A bad address is pointed at
/// by the `[metrics]` header, the line its message has always named.
pub fn metrics(table: &Spanned<schema::MetricsTable>) -> Checked<Option<SocketAddr>> {
    let at = Scope::Top.at("metrics.listen", table);
    (table.get_ref().listen.as_deref())
        .map(|l| socket_addr("metrics.listen", l, at, "127.0.0.1:9090"))
        .transpose()
}

/// A bearer token (`admin.token`, a tenant's `admin_token`): not empty.
pub fn token(scope: Scope<'_>, key: &str, value: &Spanned<String>) -> Checked<String> {
    if value.get_ref().trim().is_empty() {
        return Err(Problem::new(
            scope.at(key, value),
            format!("{}{key} is empty", scope.label()),
            "give a long random one (e.g. from `openssl rand -hex 32`), or remove it",
        ));
    }
    Ok(value.get_ref().clone())
}

/// The admin API: an address, and a token unless only this host can
/// connect.
pub fn admin(table: &schema::AdminTable) -> Checked<Option<super::AdminSettings>> {
    let token = table
        .token
        .as_ref()
        .map(|t| token(Scope::Top, "admin.token", t))
        .transpose()?;
    let Some(listen) = &table.listen else {
        return match &table.token {
            Some(t) => Err(Problem::new(
                Scope::Top.at("admin.token", t),
                "[admin] has a token but no listen",
                "add listen = \"127.0.0.1:9091\" (IP:PORT) under [admin] to serve the admin API, or remove the token",
            )),
            None => Ok(None),
        };
    };
    let at = Scope::Top.at("admin.listen", listen);
    let addr = socket_addr("admin.listen", listen.get_ref(), at, "127.0.0.1:9091")?;
    if token.is_none() && !addr.ip().is_loopback() {
        return Err(Problem::new(
            Scope::Top.at("admin.listen", listen),
            format!(
                "admin.listen = {:?} is not a loopback address and [admin] has no token, so anyone who can reach it could reload scripts",
                listen.get_ref()
            ),
            "add token = \"...\" under [admin] (e.g. from `openssl rand -hex 32`), or listen on 127.0.0.1",
        ));
    }
    Ok(Some(super::AdminSettings {
        listen: addr,
        token,
    }))
}

/// `[registrar]`, each key not given from Kamailio's defaults.
pub fn registrar(table: &schema::RegistrarTable) -> Checked<super::Registrar> {
    let d = super::Registrar::default();
    let value =
        |v: &Option<Spanned<u32>>, default: u32| v.as_ref().map_or(default, |v| *v.get_ref());
    let r = super::Registrar {
        default_expires: value(&table.default_expires, d.default_expires),
        min_expires: value(&table.min_expires, d.min_expires),
        max_expires: value(&table.max_expires, d.max_expires),
        max_contacts: table.max_contacts.unwrap_or(d.max_contacts),
    };
    if let Some(v) = table.default_expires.as_ref().filter(|v| *v.get_ref() == 0) {
        return Err(Problem::new(
            Scope::Top.at("registrar.default_expires", v),
            "registrar: default_expires = 0 would expire every binding at once",
            format!(
                "give at least 1 second, or remove it for {}",
                d.default_expires
            ),
        ));
    }
    // Point at whichever of the two the file gives (the defaults agree).
    let given = (table
        .min_expires
        .as_ref()
        .map(|v| ("registrar.min_expires", v)))
    .or(table
        .max_expires
        .as_ref()
        .map(|v| ("registrar.max_expires", v)));
    if let Some((key, v)) = given
        && r.max_expires != 0
        && r.min_expires > r.max_expires
    {
        return Err(Problem::new(
            Scope::Top.at(key, v),
            format!(
                "registrar: min_expires = {} is above max_expires = {}",
                r.min_expires, r.max_expires
            ),
            "make min_expires at most max_expires (max_expires = 0: no maximum)",
        ));
    }
    Ok(r)
}

/// `[auth]`.
pub fn auth(table: &schema::AuthTable) -> Checked<super::Auth> {
    let d = super::Auth::default();
    if let Some(v) = table.nonce_expire.as_ref().filter(|v| *v.get_ref() == 0) {
        return Err(Problem::new(
            Scope::Top.at("auth.nonce_expire", v),
            "auth.nonce_expire = 0 would make every nonce stale at once",
            format!(
                "give at least 1 (seconds), or remove it for {}",
                d.nonce_expire
            ),
        ));
    }
    let auth = super::Auth {
        nonce_expire: table
            .nonce_expire
            .as_ref()
            .map_or(d.nonce_expire, |v| *v.get_ref()),
        secret: table.secret.as_ref().map(|s| s.get_ref().clone()),
    };
    if let (Err(e), Some(s)) = (auth.secret_bytes(), &table.secret) {
        return Err(Problem::new(
            Scope::Top.at("auth.secret", s),
            format!("auth.{e}"),
            "give 64 hex digits, e.g. from `openssl rand -hex 32`, or remove it for a random one at start",
        ));
    }
    Ok(auth)
}

/// A tenant's id.
pub fn tenant_id(id: &Spanned<String>, seen: &[TenantId]) -> Checked<TenantId> {
    let scope = Scope::Tenant(id.get_ref());
    let parsed: TenantId = id.get_ref().parse().map_err(|e| {
        Problem::new(
            scope.at("id", id),
            format!("{e}"),
            "rename it, e.g. \"acme-1\"",
        )
    })?;
    if seen.contains(&parsed) {
        return Err(Problem::new(
            scope.at("id", id),
            format!("tenant id {:?} is used twice", id.get_ref()),
            "give each tenant its own id",
        ));
    }
    Ok(parsed)
}

/// The sockets a tenant owns: each one of the top-level `listen`.
pub fn tenant_listen(
    scope: Scope<'_>,
    entries: &[Spanned<String>],
    top: &[Listen],
) -> Checked<Vec<Listen>> {
    let mut owned = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let l = listen_entry(scope, i, entry)?;
        if !top.contains(&l) {
            return Err(Problem::new(
                scope.at(&format!("listen[{i}]"), entry),
                format!("{}listen {l} is not in the top-level listen", scope.label()),
                "add it to the top-level listen, or remove it here",
            ));
        }
        owned.push(l);
    }
    Ok(owned)
}

/// A tenant's domains, lower case.
pub fn domains(scope: Scope<'_>, entries: &[Spanned<String>]) -> Checked<Vec<String>> {
    let mut out = Vec::new();
    for (i, d) in entries.iter().enumerate() {
        let name = d.get_ref().trim();
        let bare = name.strip_prefix("*.").unwrap_or(name);
        if bare.is_empty() || bare.contains(['*', ' ', ':', '/', '@']) {
            return Err(Problem::new(
                scope.at(&format!("domains[{i}]"), d),
                format!(
                    "{}domain {:?} is not a host name",
                    scope.label(),
                    d.get_ref()
                ),
                "give a host name, e.g. \"example.com\" or \"*.example.com\"",
            ));
        }
        out.push(name.to_ascii_lowercase());
    }
    Ok(out)
}

/// A tenant's granted modules (default: all).
pub fn modules(scope: Scope<'_>, list: Option<&[Spanned<String>]>) -> Checked<Vec<String>> {
    let Some(list) = list else {
        return Ok(kemibox_kemi::MODULES
            .iter()
            .map(|m| m.to_string())
            .collect());
    };
    let mut out = Vec::new();
    for (i, m) in list.iter().enumerate() {
        if !kemibox_kemi::MODULES.contains(&m.get_ref().as_str()) {
            return Err(Problem::new(
                scope.at(&format!("modules[{i}]"), m),
                format!("{}unknown module {:?}", scope.label(), m.get_ref()),
                format!("use one of {}", kemibox_kemi::MODULES.join(", ")),
            ));
        }
        out.push(m.get_ref().clone());
    }
    Ok(out)
}

/// At most one tenant with neither `listen` nor `domains`: `first` is the
/// catch-all seen before, `id` the entry being checked.
pub fn one_catch_all(first: Option<&TenantId>, id: &Spanned<String>) -> Checked<()> {
    match first {
        Some(other) => Err(Problem::new(
            Scope::Tenant(id.get_ref()).at("id", id),
            format!(
                "tenants {:?} and {:?} both have neither listen nor domains, so both would take every request no other tenant takes",
                other.as_str(),
                id.get_ref()
            ),
            "give one of them listen or domains",
        )),
        None => Ok(()),
    }
}

/// A tenant's `admin_token`: not empty, its own, and with an admin API to
/// use it on. `seen` holds the tokens already given.
pub fn tenant_token(
    scope: Scope<'_>,
    value: &Spanned<String>,
    admin: bool,
    seen: &[String],
) -> Checked<String> {
    if !admin {
        return Err(Problem::new(
            scope.at("admin_token", value),
            format!("{}admin_token without an admin API", scope.label()),
            "add [admin] with listen = \"127.0.0.1:9091\", or remove admin_token",
        ));
    }
    let t = token(scope, "admin_token", value)?;
    if seen.contains(&t) {
        return Err(Problem::new(
            scope.at("admin_token", value),
            format!(
                "{}admin_token is also another tenant's or the [admin] token",
                scope.label()
            ),
            "give each its own",
        ));
    }
    Ok(t)
}

/// A top-level `script` beside `[[tenant]]`.
pub fn script_beside_tenants(script: &Spanned<PathBuf>) -> Problem {
    Problem::new(
        Scope::Top.at("script", script),
        "script: with [[tenant]] entries each tenant names its own script",
        "move this one into a [[tenant]]",
    )
}

/// A tenant's Lua settings, merged and checked (docs/modules/lua-libraries.md).
pub struct LuaSettings {
    pub env: BTreeMap<String, String>,
    pub defines: BTreeMap<String, String>,
    pub lua_path: Vec<PathBuf>,
}

/// `env` merged per variable (the tenant's value wins over the top
/// level's), `defines` and `lua_path` the tenant's list when it gives one,
/// else the top level's; `lua_path` entries relative to `base` (the config
/// file's folder) and existing directories.
pub fn lua_settings(
    top: TenantSettings<'_>,
    own: Option<(Scope<'_>, TenantSettings<'_>)>,
    base: &Path,
) -> Checked<LuaSettings> {
    let mut env = BTreeMap::new();
    for (scope, table) in [(Scope::Top, top.env)]
        .into_iter()
        .chain(own.map(|(scope, o)| (scope, o.env)))
    {
        let Some(table) = table else { continue };
        for (name, value) in table.get_ref() {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(Problem::new(
                    scope.at("env", table),
                    format!("{}env: {name:?} is not a variable name", scope.label()),
                    "name variables without '=' (REGION = \"eu-1\")",
                ));
            }
            env.insert(name.clone(), value.clone());
        }
    }
    let pick = |get: fn(TenantSettings<'_>) -> Option<&SpannedList>| {
        own.and_then(|(scope, o)| get(o).map(|l| (scope, l)))
            .or_else(|| get(top).map(|l| (Scope::Top, l)))
    };
    let mut defines = BTreeMap::new();
    if let Some((scope, list)) = pick(|s| s.defines) {
        for (i, entry) in list.get_ref().iter().enumerate() {
            let (name, value) = entry
                .get_ref()
                .split_once('=')
                .unwrap_or((entry.get_ref(), ""));
            let identifier = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !identifier {
                return Err(Problem::new(
                    scope.at(&format!("defines[{i}]"), entry),
                    format!(
                        "{}defines[{i}] = {:?} is not NAME or NAME=VALUE",
                        scope.label(),
                        entry.get_ref()
                    ),
                    "give a name of letters, digits and _ (\"WITH_AUTH\", \"MAX_CALLS=20\")",
                ));
            }
            defines.insert(name.to_string(), value.to_string());
        }
    }
    let mut lua_path = Vec::new();
    if let Some((scope, list)) = pick(|s| s.lua_path) {
        for (i, entry) in list.get_ref().iter().enumerate() {
            let dir = super::resolve(base, Path::new(entry.get_ref()));
            if !dir.is_dir() {
                return Err(Problem::new(
                    scope.at(&format!("lua_path[{i}]"), entry),
                    format!(
                        "{}lua_path[{i}] = {:?}: {} is not a directory",
                        scope.label(),
                        entry.get_ref(),
                        dir.display()
                    ),
                    "give a directory holding the tenant's Lua modules, relative to this file",
                ));
            }
            lua_path.push(dir);
        }
    }
    Ok(LuaSettings {
        env,
        defines,
        lua_path,
    })
}

/// The most items a table may be configured to hold.
const MAX_HTABLE_ITEMS: i64 = 10_000_000;
/// The longest autoexpire accepted: ten years, in seconds.
const MAX_AUTOEXPIRE: i64 = 315_360_000;

/// The `[[htable]]` entries of one scope, checked: a name (unique in the
/// scope, no `=>`, blanks or parentheses), each option in its range,
/// `dbmode = 1` only with a `dbtable`, and `backend = "redis"` only with
/// a `[database] redis` (`redis`) and without `dbtable`/`dbmode` (Redis
/// is its storage).
pub fn htables(
    scope: Scope<'_>,
    entries: &[schema::HtableEntry],
    redis: bool,
) -> Checked<Vec<kemibox_kemi::htable::TableSpec>> {
    use kemibox_kemi::htable::{TableBackend, TableSpec};
    let mut out: Vec<TableSpec> = Vec::new();
    for e in entries {
        let name = e.name.get_ref();
        let bad_name = name.is_empty()
            || name.len() > 64
            || name.contains("=>")
            || name
                .chars()
                .any(|c| c.is_whitespace() || matches!(c, '(' | ')' | '$'));
        if bad_name {
            return Err(Problem::new(
                scope.at("htable.name", &e.name),
                format!("{}htable: name {name:?} cannot name a table", scope.label()),
                "give 1 to 64 characters without blanks, `=>`, `$` or parentheses, e.g. \"ipban\"",
            ));
        }
        if out.iter().any(|t| &t.name == name) {
            return Err(Problem::new(
                scope.at("htable.name", &e.name),
                format!("{}htable: {name:?} is declared twice", scope.label()),
                "keep one [[htable]] entry per name",
            ));
        }
        let range = |key: &str, v: &Spanned<i64>, min: i64, max: i64, what: &str| {
            let n = *v.get_ref();
            if (min..=max).contains(&n) {
                Ok(n)
            } else {
                Err(Problem::new(
                    scope.at(&format!("htable.{key}"), v),
                    format!(
                        "{}htable {name}: {key} = {n} is out of range ({min} to {max})",
                        scope.label()
                    ),
                    format!("give {what}"),
                ))
            }
        };
        let mut spec = TableSpec::new(name.clone());
        if let Some(v) = &e.size {
            spec.size = range(
                "size",
                v,
                2,
                31,
                "2 to 31 (2^size slots; above 14 counts as 14)",
            )? as u32;
            spec.max_items = TableSpec::default_max_items(spec.size);
        }
        if let Some(v) = &e.max_items {
            spec.max_items = range(
                "max_items",
                v,
                1,
                MAX_HTABLE_ITEMS,
                "the most items the table may hold, e.g. 10000",
            )? as usize;
        }
        if let Some(v) = &e.autoexpire {
            spec.autoexpire =
                range("autoexpire", v, 0, MAX_AUTOEXPIRE, "seconds, 0 for never")? as u64;
        }
        if let Some(v) = &e.initval {
            spec.initval = Some(range(
                "initval",
                v,
                i64::from(i32::MIN),
                i64::from(i32::MAX),
                "a 32-bit integer",
            )? as i32);
        }
        if let Some(v) = &e.updateexpire {
            spec.updateexpire = range(
                "updateexpire",
                v,
                0,
                1,
                "1 (updates restart the expiry) or 0",
            )? == 1;
        }
        if let Some(v) = &e.dbtable {
            let t = v.get_ref();
            if t.is_empty()
                || t.len() > 64
                || !t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(Problem::new(
                    scope.at("htable.dbtable", v),
                    format!(
                        "{}htable {name}: dbtable {t:?} is not a table name",
                        scope.label()
                    ),
                    "give 1 to 64 letters, digits or underscores, e.g. \"ipban\"",
                ));
            }
            spec.dbtable = Some(t.clone());
        }
        if let Some(v) = &e.dbmode {
            spec.dbmode = range("dbmode", v, 0, 1, "1 (write changes back to dbtable) or 0")? == 1;
            if spec.dbmode && spec.dbtable.is_none() {
                return Err(Problem::new(
                    scope.at("htable.dbmode", v),
                    format!(
                        "{}htable {name}: dbmode = 1 without a dbtable",
                        scope.label()
                    ),
                    "add dbtable = \"NAME\", or remove dbmode",
                ));
            }
        }
        if let Some(v) = &e.backend {
            spec.backend = match v.get_ref().as_str() {
                "memory" => TableBackend::Memory,
                "redis" => TableBackend::Redis,
                other => {
                    return Err(Problem::new(
                        scope.at("htable.backend", v),
                        format!(
                            "{}htable {name}: backend {other:?} is not one",
                            scope.label()
                        ),
                        "give \"memory\" (the default) or \"redis\"",
                    ));
                }
            };
            if spec.backend == TableBackend::Redis {
                if !redis {
                    return Err(Problem::new(
                        scope.at("htable.backend", v),
                        format!(
                            "{}htable {name}: backend = \"redis\" without a Redis server",
                            scope.label()
                        ),
                        "add redis = \"redis://HOST:6379/\" to [database], or remove backend",
                    ));
                }
                let stored = |key: &str, origin: Origin| {
                    Problem::new(
                        origin,
                        format!(
                            "{}htable {name}: {key} with backend = \"redis\": Redis is the table's storage",
                            scope.label()
                        ),
                        format!("remove {key}, or the backend"),
                    )
                };
                if let Some(v) = &e.dbtable {
                    return Err(stored("dbtable", scope.at("htable.dbtable", v)));
                }
                if let Some(v) = &e.dbmode {
                    return Err(stored("dbmode", scope.at("htable.dbmode", v)));
                }
            }
        }
        out.push(spec);
    }
    Ok(out)
}

/// A tenant's tables: the top level's, each replaced by the tenant's own
/// of the same name, then the tenant's others.
pub fn merge_htables(
    top: &[kemibox_kemi::htable::TableSpec],
    own: Vec<kemibox_kemi::htable::TableSpec>,
) -> Vec<kemibox_kemi::htable::TableSpec> {
    let mut out: Vec<_> = top
        .iter()
        .filter(|t| !own.iter().any(|o| o.name == t.name))
        .cloned()
        .collect();
    out.extend(own);
    out
}
