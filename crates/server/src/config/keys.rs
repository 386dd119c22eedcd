//! Each configuration key is declared once, in a `config_section!` block:
//! its name, type, default and one-line doc. From that one declaration come
//! the struct field, its default, its extraction from the figment (with a
//! precise error), its line in `print-config` and `config default`, and its
//! row in the README's table.

use figment::Figment;

use super::issues::Issues;
use super::value::ConfigValue;

/// One key, as documented.
#[derive(Debug, Clone)]
pub struct KeyDoc {
    /// The dotted key, e.g. `hub.slow_consumer`.
    pub key: String,
    /// The value's type, e.g. `duration`.
    pub ty: &'static str,
    /// The default, as TOML (`None`: unset).
    pub default: Option<toml::Value>,
    /// One line on what it does.
    pub doc: String,
    /// Never printed (secrets).
    pub secret: bool,
}

impl KeyDoc {
    /// The environment variable that sets it, e.g. `WSHUB_HUB__SLOW_CONSUMER`.
    pub fn env_var(&self) -> String {
        env_var(&self.key)
    }
}

/// `hub.slow_consumer` → `WSHUB_HUB__SLOW_CONSUMER`.
pub fn env_var(key: &str) -> String {
    format!("WSHUB_{}", key.replace('.', "__").to_ascii_uppercase())
}

pub(crate) fn join_key(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}

pub(crate) fn doc_line(lines: &[&str]) -> String {
    lines
        .iter()
        .map(|line| line.trim())
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads one key from the merged layers; a missing key keeps `fallback`.
pub(crate) fn extract<T: ConfigValue>(
    figment: &Figment,
    key: &str,
    fallback: T,
    issues: &mut Issues,
) -> T {
    match figment.find_value(key) {
        Ok(value) => match T::parse(&value) {
            Ok(parsed) => parsed,
            Err(reason) => {
                issues.push(key, reason);
                fallback
            }
        },
        Err(_) => fallback,
    }
}

/// What every section (and the whole config) can do.
pub trait Section: Default {
    /// Appends the docs of every key, in declaration order.
    fn keys(prefix: &str, out: &mut Vec<KeyDoc>);
    /// Reads every key under `prefix`, recording every problem.
    fn extract(figment: &Figment, prefix: &str, issues: &mut Issues) -> Self;
    /// Writes the values (secrets left out) into `table`.
    fn render(&self, table: &mut toml::Table);
}

/// Declares a config section: its keys (name, type, default, docs; `@secret`
/// for values never printed) and the sections nested in it.
macro_rules! config_section {
    (
        $(#[doc = $sdoc:literal])*
        pub struct $name:ident {
            $(
                $(#[doc = $doc:literal])*
                $(@$secret:ident)? $field:ident : $ty:ty = $default:expr,
            )*
        }
        $( sections {
            $( $(#[doc = $ndoc:literal])* $nested:ident : $nty:ty, )*
        } )?
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Clone, PartialEq)]
        pub struct $name {
            $( $(#[doc = $doc])* pub $field: $ty, )*
            $($( $(#[doc = $ndoc])* pub $nested: $nty, )*)?
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    $( $field: $default, )*
                    $($( $nested: <$nty>::default(), )*)?
                }
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut out = f.debug_struct(stringify!($name));
                $(
                    let secret = !<[&str]>::is_empty(&[$(stringify!($secret)),*]);
                    if secret {
                        out.field(stringify!($field), &"<redacted>");
                    } else {
                        out.field(stringify!($field), &self.$field);
                    }
                )*
                $($( out.field(stringify!($nested), &self.$nested); )*)?
                out.finish()
            }
        }

        impl $crate::config::keys::Section for $name {
            fn keys(prefix: &str, out: &mut Vec<$crate::config::keys::KeyDoc>) {
                let defaults = Self::default();
                $(
                    out.push($crate::config::keys::KeyDoc {
                        key: $crate::config::keys::join_key(prefix, stringify!($field)),
                        ty: <$ty as $crate::config::value::ConfigValue>::TYPE,
                        default: $crate::config::value::ConfigValue::render(&defaults.$field),
                        doc: $crate::config::keys::doc_line(&[$($doc),*]),
                        secret: !<[&str]>::is_empty(&[$(stringify!($secret)),*]),
                    });
                )*
                $($(
                    <$nty as $crate::config::keys::Section>::keys(
                        &$crate::config::keys::join_key(prefix, stringify!($nested)),
                        out,
                    );
                )*)?
            }

            fn extract(
                figment: &figment::Figment,
                prefix: &str,
                issues: &mut $crate::config::issues::Issues,
            ) -> Self {
                let defaults = Self::default();
                Self {
                    $(
                        $field: $crate::config::keys::extract(
                            figment,
                            &$crate::config::keys::join_key(prefix, stringify!($field)),
                            defaults.$field,
                            issues,
                        ),
                    )*
                    $($(
                        $nested: <$nty as $crate::config::keys::Section>::extract(
                            figment,
                            &$crate::config::keys::join_key(prefix, stringify!($nested)),
                            issues,
                        ),
                    )*)?
                }
            }

            fn render(&self, table: &mut toml::Table) {
                $(
                    let secret = !<[&str]>::is_empty(&[$(stringify!($secret)),*]);
                    if !secret {
                        if let Some(value) = $crate::config::value::ConfigValue::render(&self.$field) {
                            table.insert(stringify!($field).to_owned(), value);
                        }
                    }
                )*
                $($(
                    let mut nested = toml::Table::new();
                    $crate::config::keys::Section::render(&self.$nested, &mut nested);
                    table.insert(stringify!($nested).to_owned(), toml::Value::Table(nested));
                )*)?
            }
        }
    };
}

pub(crate) use config_section;
