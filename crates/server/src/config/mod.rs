//! The server's configuration: defaults ← TOML file ← `WSHUB_*` env ← flags,
//! validated before any port is bound.
//!
//! Every key is declared once (`config_section!` in `sections.rs`): its type,
//! default and doc. Reading reports every problem in one run, each named the
//! way the user wrote the key, with the closest real key for a typo.

mod issues;
mod keys;
mod proxy;
mod sections;
mod validate;
pub(crate) mod value;

use std::path::Path;

use figment::providers::{Env, Format, Toml};
use figment::{Figment, Provider};

pub use issues::{ConfigError, ConfigIssue, Origin};
pub use keys::{KeyDoc, Section, env_var};
pub use proxy::{ProxyHookSection, ProxyRoomHookSection, ProxySection};
pub use sections::{
    AdminListen, AdminSection, ApiSection, AuthConfig, AuthMode, BrokerKind, BrokerSection, Config,
    HttpSection, HubSection, JwtAlgorithm, LimitsConfig, LogConfig, LogFormat,
    NamespacePermissions, NatsSection, Permission, PermissionsConfig, RedisSection, RoomStoreKind,
    RoomStoreSection, SlowConsumer, TransportSection,
};
pub use validate::Prepared;

use issues::Issues;

impl Config {
    /// Builds the figment: `file` ← `WSHUB_*` env (nested keys with `__`,
    /// e.g. `WSHUB_HUB__SLOW_CONSUMER`). Defaults are the declarations'; the
    /// CLI merges its flags on top.
    pub fn figment(file: Option<&Path>) -> Figment {
        let mut figment = Figment::new();
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment.merge(Env::prefixed("WSHUB_").split("__"))
    }

    /// Reads every key from `figment` and validates the result; the error
    /// lists every problem.
    pub fn load(figment: &Figment) -> Result<Self, ConfigError> {
        Self::load_with_warnings(figment).map(|(config, _)| config)
    }

    /// Like [`load`](Self::load), also returning the warnings: unknown
    /// `WSHUB_*` variables are ignored with a warning (Kubernetes' service
    /// links), while unknown keys in the file or flags stay errors.
    pub fn load_with_warnings(figment: &Figment) -> Result<(Self, Vec<String>), ConfigError> {
        Self::load_prepared(figment).map(|(config, _, warnings)| (config, warnings))
    }

    /// Like [`load_with_warnings`](Self::load_with_warnings), also
    /// returning what the checks built, for
    /// [`Server::bind_prepared`](crate::serve::Server::bind_prepared).
    pub fn load_prepared(figment: &Figment) -> Result<(Self, Prepared, Vec<String>), ConfigError> {
        // A file that is missing or not TOML cannot be read key by key.
        if let Err(err) = figment.data() {
            return Err(ConfigError::unreadable(&err));
        }
        let mut issues = Issues::default();
        let keys = Self::key_docs();
        issues::unknown_keys(figment, &keys, sections::dynamic_key, &mut issues);
        let config = <Self as Section>::extract(figment, "", &mut issues);
        let prepared = config.check(&mut issues);
        let warnings = issues.warnings().to_vec();
        issues.finish(Some(figment))?;
        Ok((config, prepared, warnings))
    }

    /// Checks the values that parse but cannot work, reporting all of them.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.prepare().map(drop)
    }

    /// [`validate`](Self::validate), returning what the checks built.
    pub fn prepare(&self) -> Result<Prepared, ConfigError> {
        let mut issues = Issues::default();
        let prepared = self.check(&mut issues);
        issues.finish(None)?;
        Ok(prepared)
    }

    /// Every key, in declaration order.
    pub fn key_docs() -> Vec<KeyDoc> {
        let mut keys = Vec::new();
        <Self as Section>::keys("", &mut keys);
        keys
    }

    /// The effective configuration as TOML that `--config` accepts
    /// (secrets left out).
    pub fn to_toml(&self) -> String {
        let mut table = toml::Table::new();
        <Self as Section>::render(self, &mut table);
        toml::to_string_pretty(&table).unwrap_or_default()
    }
}

/// Every key with its default and a one-line comment, as TOML that
/// `--config` accepts (`wshub config default`). Unset keys and secrets are
/// commented out.
pub fn default_toml() -> String {
    let mut out = String::from(
        "# wshub configuration: every key with its default (`wshub config default`).\n\
         # Layers: these defaults <- this file (--config) <- WSHUB_* environment <- flags.\n",
    );
    let mut section = String::new();
    for doc in Config::key_docs() {
        let (table, name) = doc.key.rsplit_once('.').unwrap_or(("", &doc.key));
        if table != section {
            out.push_str(&format!("\n[{table}]\n"));
            section = table.to_owned();
        }
        out.push_str(&format!(
            "# {} ({}; env {})\n",
            doc.doc,
            doc.ty,
            doc.env_var()
        ));
        match (&doc.default, doc.secret) {
            (Some(value), false) => out.push_str(&format!("{name} = {value}\n")),
            _ => out.push_str(&format!("# {name} = ...\n")),
        }
    }
    out.push_str("\n# Rules and features per namespace (rooms `chat:*`), for example:\n");
    out.push_str("# [permissions.namespaces.chat]\n");
    for key in sections::NAMESPACE_KEYS {
        out.push_str(&format!(
            "# {} ({})\n# {} = {}\n",
            key.doc, key.ty, key.key, key.example
        ));
    }
    out
}

/// The README's configuration table, generated from the declarations.
pub fn readme_table() -> String {
    let mut out = String::from(
        "| key | environment | flag | type | default | what it does |\n|---|---|---|---|---|---|\n",
    );
    for doc in Config::key_docs() {
        let default = match &doc.default {
            _ if doc.secret => "unset (never printed)".to_owned(),
            Some(toml::Value::String(text)) if text.is_empty() => "`\"\"`".to_owned(),
            Some(value) => format!("`{value}`"),
            None => "unset".to_owned(),
        };
        let flag = if crate::cli::ConfigArgs::flag_keys().contains(&doc.key.as_str()) {
            format!("`{}`", crate::cli::flag_of(&doc.key))
        } else {
            String::new()
        };
        out.push_str(&format!(
            "| `{}` | `{}` | {flag} | {} | {} | {} |\n",
            doc.key,
            doc.env_var(),
            doc.ty,
            default.replace('|', "\\|"),
            doc.doc.replace('|', "\\|"),
        ));
    }
    for key in sections::NAMESPACE_KEYS {
        out.push_str(&format!(
            "| `permissions.namespaces.<name>.{}` | `WSHUB_PERMISSIONS__NAMESPACES__<NAME>__{}` | | {} | {} | {} |\n",
            key.key,
            key.key.to_uppercase(),
            key.ty,
            key.default,
            key.doc,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    /// The README's table is generated from the declarations; a stale one
    /// is rewritten and fails the test, so a new key cannot go undocumented
    /// (rust-analyzer's `ensure_file_contents`).
    #[test]
    fn readme_config_table_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
        let readme = std::fs::read_to_string(&path).expect("README.md");
        let start_marker = "<!-- config-table:start";
        let end_marker = "<!-- config-table:end -->";
        let start = readme.find(start_marker).expect("start marker");
        let body_start = start + readme[start..].find("-->").expect("marker end") + 4;
        let end = readme.find(end_marker).expect("end marker");
        let current = &readme[body_start..end];
        let wanted = super::readme_table();
        for doc in super::Config::key_docs() {
            assert!(
                super::default_toml().contains(&format!("env {})", doc.env_var())),
                "`config default` lacks {}",
                doc.key
            );
        }
        if current != wanted {
            let updated = format!("{}{wanted}{}", &readme[..body_start], &readme[end..]);
            std::fs::write(&path, updated).expect("rewrite README.md");
            panic!("README.md's config table was stale and has been rewritten; commit it");
        }
    }
}

#[cfg(test)]
mod inherited_rules {
    use super::{AuthMode, Config, NamespacePermissions, Permission};
    use wshub_hub::{NamespaceRules, Rule};

    /// A rule left out of a namespace is the unlisted namespaces' rule; a
    /// rule written is kept.
    #[test]
    fn a_rule_not_written_follows_the_auth_mode() {
        let mut config = Config::default();
        config.permissions.namespaces.insert(
            "chat".into(),
            NamespacePermissions {
                join: None,
                publish: Some(Permission::Nobody),
                ..NamespacePermissions::new(Permission::Nobody, Permission::Nobody)
            },
        );
        let open = config.access_policy();
        assert_eq!(open.namespaces["chat"].join, Rule::Anyone);
        assert_eq!(open.namespaces["chat"].publish, Rule::Nobody);
        config.auth.mode = AuthMode::Jwt;
        let closed = config.access_policy();
        assert_eq!(closed.namespaces["chat"].join, NamespaceRules::CLOSED.join);
        assert_eq!(closed.namespaces["chat"].publish, Rule::Nobody);
    }
}

#[cfg(test)]
mod namespace_keys {
    use figment::Figment;
    use figment::providers::{Format, Toml};

    use super::Config;
    use super::sections::NAMESPACE_KEYS;

    /// The one declaration and the typed reading agree: every declared key,
    /// written with its example value, is read and printed back.
    #[test]
    fn every_declared_namespace_key_is_read_and_printed_back() {
        let mut toml = String::from("[permissions.namespaces.chat]\n");
        for key in NAMESPACE_KEYS {
            toml.push_str(&format!("{} = {}\n", key.key, key.example));
        }
        let config = Config::load(&Figment::from(Toml::string(&toml))).unwrap();
        let printed = config.to_toml();
        for key in NAMESPACE_KEYS {
            assert!(
                printed.contains(&format!("{} = {}", key.key, key.example)),
                "{} not read back:\n{printed}",
                key.key
            );
        }
    }
}
