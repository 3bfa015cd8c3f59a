//! A tenant's own Lua modules: the `.lua` files under its `lua_path`
//! directories, read when its script is loaded or reloaded (never while
//! it runs) and handed to the sandbox with the script
//! (docs/modules/lua-libraries.md).
//!
//! `lib/utils.lua` is module `utils`, `lib/callng/sigfunc.lua` is
//! `callng.sigfunc`, `lib/callng/init.lua` is `callng` (as Lua's
//! `?.lua;?/init.lua`). The first directory holding a name wins, and in one
//! directory `X.lua` wins over `X/init.lua`. What is read is bounded: a
//! tenant cannot make the proxy read a tree without end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use kemibox_sandbox::LuaModule;

/// Most modules a tenant may have: each is compiled in every instance.
pub const MAX_MODULES: usize = 256;
/// Largest module file.
pub const MAX_MODULE_BYTES: u64 = 1 << 20;
/// Most bytes of modules in all, which every instance holds compiled.
pub const MAX_TOTAL_BYTES: u64 = 4 << 20;
/// Deepest directory nesting looked into (`a.b.c.d.e.f.g.h`).
const MAX_DEPTH: usize = 8;

/// Read the modules under `dirs`. Errors name the file or directory and the
/// bound it passed.
pub fn read(dirs: &[PathBuf]) -> anyhow::Result<Vec<LuaModule>> {
    let mut found: BTreeMap<String, (bool, PathBuf)> = BTreeMap::new();
    let mut files = 0usize;
    for dir in dirs {
        let mut here = Vec::new();
        walk(dir, dir, 0, &mut here)?;
        files += here.len();
        if files > MAX_MODULES {
            bail!(
                "lua_path {}: more than {MAX_MODULES} Lua modules; keep only the tenant's modules there",
                dir.display()
            );
        }
        // (name, from init.lua) for each file: X.lua before X/init.lua.
        let mut local: BTreeMap<String, (bool, PathBuf)> = BTreeMap::new();
        for (name, init, path) in here {
            match local.get(&name) {
                Some((false, _)) => {}
                _ if init && local.contains_key(&name) => {}
                _ => {
                    local.insert(name, (init, path));
                }
            }
        }
        for (name, entry) in local {
            found.entry(name).or_insert(entry);
        }
    }
    let mut total = 0u64;
    let mut modules = Vec::with_capacity(found.len());
    for (name, (_, path)) in found {
        let size = std::fs::metadata(&path)
            .with_context(|| format!("cannot read Lua module {}", path.display()))?
            .len();
        if size > MAX_MODULE_BYTES {
            bail!(
                "Lua module {} is {size} bytes, over the limit of {MAX_MODULE_BYTES}",
                path.display()
            );
        }
        total += size;
        if total > MAX_TOTAL_BYTES {
            bail!(
                "the tenant's Lua modules pass {MAX_TOTAL_BYTES} bytes in all at {}",
                path.display()
            );
        }
        let source = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read Lua module {}", path.display()))?;
        modules.push(LuaModule {
            name,
            file: path.display().to_string(),
            source,
        });
    }
    Ok(modules)
}

/// The module files under `dirs`, every one [`read`] would look at (also
/// those another directory shadows), for the `auto_reload` watch: a
/// change to any of them reloads the tenant. A directory that cannot be
/// read (or passes the bounds) is left out: [`read`] reports it at the
/// reload.
pub fn files(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in dirs {
        let mut here = Vec::new();
        if walk(dir, dir, 0, &mut here).is_ok() {
            out.extend(here.into_iter().map(|(_, _, path)| path));
        }
    }
    out
}

/// Collect `(module name, is init.lua, path)` under `dir` (relative to
/// `root`). Hidden entries, symbolic links to directories and names that
/// `require` cannot spell (a dot inside a file's stem) are skipped.
fn walk(
    root: &Path,
    dir: &Path,
    depth: usize,
    out: &mut Vec<(String, bool, PathBuf)>,
) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read lua_path {}", dir.display()))?;
    let mut entries: Vec<_> = entries
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot read lua_path {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let kind = entry
            .file_type()
            .with_context(|| format!("cannot read {}", path.display()))?;
        if kind.is_dir() {
            if depth + 1 < MAX_DEPTH && !name.contains('.') {
                walk(root, &path, depth + 1, out)?;
            }
            continue;
        }
        let Some(stem) = name.strip_suffix(".lua") else {
            continue;
        };
        if stem.is_empty() || stem.contains('.') || !path.is_file() {
            continue;
        }
        if out.len() > MAX_MODULES {
            bail!(
                "lua_path {}: more than {MAX_MODULES} Lua modules; keep only the tenant's modules there",
                root.display()
            );
        }
        let rel = path.strip_prefix(root).unwrap_or(&path);
        let mut parts: Vec<&str> = rel
            .parent()
            .into_iter()
            .flat_map(|p| p.iter())
            .filter_map(|c| c.to_str())
            .collect();
        let init = stem == "init" && !parts.is_empty();
        if !init {
            parts.push(stem);
        }
        out.push((parts.join("."), init, path.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("kemibox-lua-modules-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (path, text) in files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    fn names(modules: &[LuaModule]) -> Vec<(&str, &str)> {
        modules
            .iter()
            .map(|m| (m.name.as_str(), m.source.as_str()))
            .collect()
    }

    #[test]
    fn files_become_dotted_names_and_init_names_its_directory() {
        let dir = tree(
            "names",
            &[
                ("utils.lua", "u"),
                ("callng/sigfunc.lua", "s"),
                ("callng/init.lua", "c"),
                ("both.lua", "file"),
                ("both/init.lua", "init"),
                ("notes.txt", "x"),
                (".hidden.lua", "h"),
                ("a.b.lua", "unreachable"),
            ],
        );
        let modules = read(std::slice::from_ref(&dir)).unwrap();
        assert_eq!(
            names(&modules),
            vec![
                ("both", "file"),
                ("callng", "c"),
                ("callng.sigfunc", "s"),
                ("utils", "u")
            ]
        );
        assert!(modules[3].file.ends_with("utils.lua"), "{:?}", modules[3]);
    }

    #[test]
    fn the_watched_files_are_those_read_and_those_shadowed() {
        let a = tree("watch-a", &[("utils.lua", "a"), ("x/init.lua", "x")]);
        let b = tree("watch-b", &[("utils.lua", "b"), ("notes.txt", "n")]);
        let missing = a.join("nowhere");
        let files = files(&[a.clone(), missing, b.clone()]);
        assert_eq!(
            files,
            [
                a.join("utils.lua"),
                a.join("x/init.lua"),
                b.join("utils.lua")
            ]
        );
    }

    #[test]
    fn the_first_directory_wins() {
        let a = tree("first-a", &[("utils.lua", "a")]);
        let b = tree("first-b", &[("utils.lua", "b"), ("more.lua", "m")]);
        let modules = read(&[a, b]).unwrap();
        assert_eq!(names(&modules), vec![("more", "m"), ("utils", "a")]);
    }

    #[test]
    fn bounds_are_errors_naming_the_file() {
        let big = "x".repeat(MAX_MODULE_BYTES as usize + 1);
        let dir = tree("big", &[("big.lua", &big)]);
        let err = read(&[dir]).unwrap_err().to_string();
        assert!(
            err.contains("big.lua") && err.contains("over the limit"),
            "{err}"
        );

        let many: Vec<(String, &str)> = (0..=MAX_MODULES)
            .map(|i| (format!("m{i}.lua"), "return 1"))
            .collect();
        let refs: Vec<(&str, &str)> = many.iter().map(|(p, t)| (p.as_str(), *t)).collect();
        let dir = tree("many", &refs);
        let err = read(&[dir]).unwrap_err().to_string();
        assert!(err.contains(&format!("more than {MAX_MODULES}")), "{err}");

        let missing = std::env::temp_dir().join("kemibox-lua-modules-none-such");
        let err = format!("{:#}", read(&[missing]).unwrap_err());
        assert!(err.contains("cannot read lua_path"), "{err}");
    }
}
