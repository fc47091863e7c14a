//! The clients file (`CLIENTS_FILE`): named clients, their keys, what they may use and
//! their budgets. Every field but `name` and a key is optional:
//! `{"clients":[{"name":"alice","key":"nx-…"|"keySha256":"<hex>","domains":["*"],
//! "models":["claude-sonnet-*"],"maxConcurrent":4,"budget":{"usd":{"5h":2,"day":5},
//! "tokens":{"day":2000000}}}]}`.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::pattern::Pattern;
use super::window::Window;

/// A key's SHA-256: keys are held and compared only as digests.
pub type KeyDigest = [u8; 32];

/// The SHA-256 of a presented key.
pub fn digest(key: &str) -> KeyDigest {
    let d = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// What a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Dollars, counted in micro-dollars.
    Usd,
    /// Input + output + cache creation + cache read tokens.
    Tokens,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Usd => "usd",
            Kind::Tokens => "tokens",
        }
    }
}

/// One limit: so much of `kind` per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub kind: Kind,
    pub window: Window,
    /// Micro-dollars or tokens.
    pub limit: u64,
}

/// One named client as the file describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSpec {
    pub name: Arc<str>,
    pub key: KeyDigest,
    /// Empty: every domain.
    pub domains: Vec<Pattern>,
    /// Empty: every model.
    pub models: Vec<Pattern>,
    pub max_concurrent: Option<u32>,
    pub budgets: Vec<Budget>,
}

/// The fields a client may have.
const FIELDS: [&str; 7] = [
    "name",
    "key",
    "keySha256",
    "domains",
    "models",
    "maxConcurrent",
    "budget",
];

/// Parses the file; the error names the client and the field at fault.
pub fn parse_clients(text: &str) -> Result<Vec<ClientSpec>, String> {
    let root: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let list = match root.get("clients") {
        Some(Value::Array(list)) => list,
        _ => return Err("field \"clients\" must be an array of clients".into()),
    };
    let mut names = HashSet::new();
    let mut keys = HashSet::new();
    let mut clients = Vec::with_capacity(list.len());
    for (i, value) in list.iter().enumerate() {
        let client = parse_client(value).map_err(|e| format!("clients[{i}]: {e}"))?;
        if !names.insert(client.name.clone()) {
            return Err(format!(
                "clients[{i}]: name \"{}\" is used twice",
                client.name
            ));
        }
        if !keys.insert(client.key) {
            return Err(format!(
                "clients[{i}] (\"{}\"): its key is another client's too",
                client.name
            ));
        }
        clients.push(client);
    }
    Ok(clients)
}

fn parse_client(value: &Value) -> Result<ClientSpec, String> {
    let Value::Object(obj) = value else {
        return Err("not an object".into());
    };
    if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!("unknown field \"{unknown}\""));
    }
    let name =
        match obj.get("name") {
            Some(Value::String(n)) if valid_name(n) => Arc::<str>::from(n.as_str()),
            _ => return Err(
                "field \"name\" must be 1 to 64 of A-Z a-z 0-9 . _ - @ (it names the client in \
                 logs and metrics)"
                    .into(),
            ),
        };
    let at = |field: &str| format!("\"{name}\": field \"{field}\"");
    let key = match (obj.get("key"), obj.get("keySha256")) {
        (Some(Value::String(k)), None) if !k.trim().is_empty() => digest(k.trim()),
        (None, Some(Value::String(hex))) => {
            parse_hex(hex).ok_or_else(|| format!("{} must be 64 hex digits", at("keySha256")))?
        }
        _ => {
            return Err(format!(
                "\"{name}\": exactly one of \"key\" (a non-empty string) and \"keySha256\" is \
                 needed"
            ))
        }
    };
    let patterns = |field: &str| -> Result<Vec<Pattern>, String> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(list)) => list
                .iter()
                .map(|v| match v {
                    Value::String(s) if !s.trim().is_empty() => Ok(Pattern::new(s.trim())),
                    _ => Err(format!("{} must hold non-empty strings", at(field))),
                })
                .collect(),
            Some(_) => Err(format!("{} must be an array of patterns", at(field))),
        }
    };
    let max_concurrent = match obj.get("maxConcurrent") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|n| (1..=u64::from(u32::MAX)).contains(n))
                .ok_or_else(|| format!("{} must be a whole number from 1", at("maxConcurrent")))?
                as u32,
        ),
    };
    let budgets = match obj.get("budget") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(budget)) => {
            parse_budgets(budget).map_err(|e| format!("{}{e}", at("budget")))?
        }
        Some(_) => return Err(format!("{} must be an object", at("budget"))),
    };
    Ok(ClientSpec {
        domains: patterns("domains")?,
        models: patterns("models")?,
        name,
        key,
        max_concurrent,
        budgets,
    })
}

/// `{"usd":{"day":5,…},"tokens":{"5h":2000000,…}}`; the error follows `field "budget"`.
fn parse_budgets(budget: &Map<String, Value>) -> Result<Vec<Budget>, String> {
    let mut budgets = Vec::new();
    for (kind_name, windows) in budget {
        let kind = match kind_name.as_str() {
            "usd" => Kind::Usd,
            "tokens" => Kind::Tokens,
            other => return Err(format!(": unknown kind \"{other}\" (usd or tokens)")),
        };
        let Value::Object(windows) = windows else {
            return Err(format!(".{kind_name} must be an object of windows"));
        };
        for (window_name, limit) in windows {
            let window = Window::parse(window_name).ok_or_else(|| {
                format!(".{kind_name}: unknown window \"{window_name}\" (5h, day, week or month)")
            })?;
            let limit = match kind {
                Kind::Usd => limit
                    .as_f64()
                    .filter(|usd| usd.is_finite() && *usd > 0.0)
                    .map(|usd| (usd * 1e6).round() as u64),
                Kind::Tokens => limit.as_u64().filter(|n| *n > 0),
            }
            .ok_or_else(|| {
                format!(
                    ".{kind_name}.{window_name} must be a number above 0{}",
                    if kind == Kind::Tokens {
                        " (whole tokens)"
                    } else {
                        " (dollars)"
                    }
                )
            })?;
            budgets.push(Budget {
                kind,
                window,
                limit,
            });
        }
    }
    Ok(budgets)
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

fn parse_hex(hex: &str) -> Option<KeyDigest> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks(2)) {
        let digit = |c: u8| (c as char).to_digit(16);
        *byte = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_client_and_a_minimal_one() {
        let sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let clients = parse_clients(&format!(
            r#"{{"clients":[
                {{"name":"alice","key":" nx-alice ","domains":["*.example.com"],
                  "models":["claude-sonnet-*"],"maxConcurrent":4,
                  "budget":{{"usd":{{"5h":2,"day":5.5}},"tokens":{{"month":2000000}}}}}},
                {{"name":"ci-bot","keySha256":"{sha}"}}]}}"#
        ))
        .unwrap();
        let alice = &clients[0];
        assert_eq!(&*alice.name, "alice");
        assert_eq!(
            alice.key,
            digest("nx-alice"),
            "the key, trimmed, as its digest"
        );
        assert_eq!(alice.domains, [Pattern::new("*.example.com")]);
        assert_eq!(alice.models, [Pattern::new("claude-sonnet-*")]);
        assert_eq!(alice.max_concurrent, Some(4));
        let has = |kind, window, limit| {
            alice.budgets.contains(&Budget {
                kind,
                window,
                limit,
            })
        };
        assert!(has(Kind::Usd, Window::FiveHours, 2_000_000));
        assert!(has(Kind::Usd, Window::Day, 5_500_000));
        assert!(has(Kind::Tokens, Window::Month, 2_000_000));
        assert_eq!(alice.budgets.len(), 3);
        let bot = &clients[1];
        assert_eq!(bot.key, digest("test"), "sha256(\"test\")");
        assert!(bot.domains.is_empty() && bot.models.is_empty() && bot.budgets.is_empty());
        assert_eq!(bot.max_concurrent, None);
    }

    #[test]
    fn errors_name_the_client_and_the_field() {
        let err = |text: &str| parse_clients(text).unwrap_err();
        assert!(err("[]").contains("\"clients\""));
        assert!(err(r#"{"clients":[{"key":"k"}]}"#).contains("\"name\""));
        assert!(err(r#"{"clients":[{"name":"a b","key":"k"}]}"#).contains("\"name\""));
        let e = err(r#"{"clients":[{"name":"a"}]}"#);
        assert!(e.contains("\"a\"") && e.contains("keySha256"), "{e}");
        assert!(
            err(r#"{"clients":[{"name":"a","key":"k","keySha256":"00"}]}"#).contains("exactly one")
        );
        assert!(err(r#"{"clients":[{"name":"a","keySha256":"xyz"}]}"#).contains("64 hex"));
        let e = err(r#"{"clients":[{"name":"a","key":"k","maxConcurent":2}]}"#);
        assert!(e.contains("unknown field \"maxConcurent\""), "{e}");
        let e = err(r#"{"clients":[{"name":"a","key":"k","budget":{"usd":{"year":5}}}]}"#);
        assert!(
            e.contains("field \"budget\"") && e.contains("\"year\""),
            "{e}"
        );
        let e = err(r#"{"clients":[{"name":"a","key":"k","budget":{"tokens":{"day":1.5}}}]}"#);
        assert!(e.contains("tokens.day"), "{e}");
        assert!(
            err(r#"{"clients":[{"name":"a","key":"k","maxConcurrent":0}]}"#)
                .contains("maxConcurrent")
        );
        assert!(
            err(r#"{"clients":[{"name":"a","key":"k","models":"claude-*"}]}"#)
                .contains("\"models\"")
        );
        let e = err(r#"{"clients":[{"name":"a","key":"k"},{"name":"a","key":"j"}]}"#);
        assert!(e.contains("used twice"), "{e}");
        let e = err(r#"{"clients":[{"name":"a","key":"k"},{"name":"b","key":"k"}]}"#);
        assert!(e.contains("another client's"), "{e}");
    }
}
