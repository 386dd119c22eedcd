//! How each type of configuration value is read from any layer (TOML, a
//! `WSHUB_*` variable, a flag) and written back, with a reason a person can
//! act on when it cannot be read.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::value::Value;

/// A type a configuration key can have.
pub trait ConfigValue: Sized {
    /// How the README and `config default` name the type.
    const TYPE: &'static str;
    /// Reads a value; the error quotes it and says what would do.
    fn parse(value: &Value) -> Result<Self, String>;
    /// The value as TOML (`None`: unset, written as a comment).
    fn render(&self) -> Option<toml::Value>;
}

/// The value as the user wrote it, for quoting in an error.
pub(crate) fn quote(value: &Value) -> String {
    match value {
        Value::String(_, text) => format!("{text:?}"),
        Value::Char(_, c) => format!("{c:?}"),
        Value::Bool(_, b) => b.to_string(),
        Value::Num(_, num) => num
            .to_i128()
            .map(|n| n.to_string())
            .or_else(|| num.to_f64().map(|f| f.to_string()))
            .unwrap_or_else(|| "a number".into()),
        Value::Empty(..) => "an empty value".into(),
        Value::Dict(..) => "a table".into(),
        Value::Array(..) => "a list".into(),
    }
}

fn text(value: &Value) -> Option<&str> {
    match value {
        Value::String(_, text) => Some(text),
        _ => None,
    }
}

fn whole_number(value: &Value) -> Option<u128> {
    match value {
        // TOML integers arrive signed.
        Value::Num(_, num) => num
            .to_u128()
            .or_else(|| num.to_i128().and_then(|n| u128::try_from(n).ok())),
        Value::String(_, text) => text.trim().replace('_', "").parse().ok(),
        _ => None,
    }
}

macro_rules! unsigned {
    ($($ty:ty),*) => {$(
        impl ConfigValue for $ty {
            const TYPE: &'static str = "integer";

            fn parse(value: &Value) -> Result<Self, String> {
                whole_number(value)
                    .and_then(|n| <$ty>::try_from(n).ok())
                    .ok_or_else(|| format!(
                        "{} is not a whole number from 0 to {}; for example 1024",
                        quote(value),
                        <$ty>::MAX
                    ))
            }

            fn render(&self) -> Option<toml::Value> {
                Some(i64::try_from(*self).map_or_else(
                    |_| toml::Value::String(self.to_string()),
                    toml::Value::Integer,
                ))
            }
        }
    )*};
}

unsigned!(usize, u32, u64);

impl ConfigValue for bool {
    const TYPE: &'static str = "boolean";

    fn parse(value: &Value) -> Result<Self, String> {
        match value {
            Value::Bool(_, b) => Ok(*b),
            Value::String(_, t) if t.eq_ignore_ascii_case("true") => Ok(true),
            Value::String(_, t) if t.eq_ignore_ascii_case("false") => Ok(false),
            other => Err(format!("{} is not true or false", quote(other))),
        }
    }

    fn render(&self) -> Option<toml::Value> {
        Some(toml::Value::Boolean(*self))
    }
}

impl ConfigValue for String {
    const TYPE: &'static str = "string";

    fn parse(value: &Value) -> Result<Self, String> {
        match value {
            Value::String(_, text) => Ok(text.clone()),
            // An env value like `8080` arrives as a number.
            Value::Num(..) | Value::Bool(..) => Ok(quote(value)),
            other => Err(format!("{} is not a string", quote(other))),
        }
    }

    fn render(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.clone()))
    }
}

impl ConfigValue for PathBuf {
    const TYPE: &'static str = "path";

    fn parse(value: &Value) -> Result<Self, String> {
        text(value)
            .filter(|t| !t.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| format!("{} is not a file path", quote(value)))
    }

    fn render(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.display().to_string()))
    }
}

impl<T: ConfigValue> ConfigValue for Option<T> {
    const TYPE: &'static str = T::TYPE;

    fn parse(value: &Value) -> Result<Self, String> {
        match value {
            Value::Empty(..) => Ok(None),
            Value::String(_, t) if t.is_empty() => Ok(None),
            other => T::parse(other).map(Some),
        }
    }

    fn render(&self) -> Option<toml::Value> {
        self.as_ref().and_then(T::render)
    }
}

impl ConfigValue for Duration {
    const TYPE: &'static str = "duration";

    fn parse(value: &Value) -> Result<Self, String> {
        let parsed = match value {
            Value::String(_, t) => humantime::parse_duration(t.trim()).ok(),
            _ => None,
        };
        parsed.ok_or_else(|| {
            format!(
                "{} is not a duration; write it with a unit, e.g. \"30s\", \"500ms\" or \"1m 30s\"",
                quote(value)
            )
        })
    }

    fn render(&self) -> Option<toml::Value> {
        Some(toml::Value::String(
            humantime::format_duration(*self).to_string(),
        ))
    }
}

impl ConfigValue for SocketAddr {
    const TYPE: &'static str = "address";

    fn parse(value: &Value) -> Result<Self, String> {
        let written = text(value).unwrap_or("");
        written.trim().parse().map_err(|_| {
            let hint = if written.contains(':') && !written.starts_with('[') {
                "; hostnames such as localhost:9000 are refused, write the IP address (127.0.0.1:9000)"
            } else {
                ""
            };
            format!(
                "{} is not an IP address and port; expected host:port such as 127.0.0.1:8080 or [::1]:8080{hint}",
                quote(value)
            )
        })
    }

    fn render(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.to_string()))
    }
}

impl ConfigValue for Vec<String> {
    const TYPE: &'static str = "list of strings";

    /// A TOML array, or (from the environment) a comma-separated string.
    fn parse(value: &Value) -> Result<Self, String> {
        match value {
            Value::Array(_, items) => items
                .iter()
                .map(|item| {
                    text(item)
                        .map(str::to_owned)
                        .ok_or_else(|| format!("list item {} is not a string", quote(item)))
                })
                .collect(),
            Value::String(_, t) => Ok(t
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect()),
            other => Err(format!(
                "{} is not a list; write [\"a\", \"b\"] in TOML or a,b in the environment",
                quote(other)
            )),
        }
    }

    fn render(&self) -> Option<toml::Value> {
        Some(toml::Value::Array(
            self.iter().cloned().map(toml::Value::String).collect(),
        ))
    }
}

/// Declares a config enum: its variants, their spellings, and their docs.
macro_rules! config_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[doc = $doc:literal])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $( $(#[doc = $doc])* $variant, )+
        }

        impl $name {
            /// The value as written in a config.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $text, )+
                }
            }
        }

        impl $crate::config::value::ConfigValue for $name {
            const TYPE: &'static str = concat!("one of", $(" ", $text),+);

            fn parse(value: &figment::value::Value) -> Result<Self, String> {
                let written = match value {
                    figment::value::Value::String(_, text) => text.as_str(),
                    _ => "",
                };
                $( if written.eq_ignore_ascii_case($text) { return Ok(Self::$variant); } )+
                Err(format!(
                    "{} is not one of: {}",
                    $crate::config::value::quote(value),
                    [$($text),+].join(", ")
                ))
            }

            fn render(&self) -> Option<toml::Value> {
                Some(toml::Value::String(self.as_str().to_owned()))
            }
        }
    };
}

pub(crate) use config_enum;
