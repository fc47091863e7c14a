//! The pricing table's JSON format, read exactly: every price becomes integer
//! picodollars from its shortest decimal form (`3.75`, `0.08`; any price written with up
//! to 15 significant digits reads back as written), a price finer than a picodollar is
//! refused rather than rounded, and every mistake is reported with the path of the field
//! it is in.
//!
//! ```json
//! {"models":{"claude-sonnet-4-5":{"input":3,"output":15,"cacheWrite5m":3.75,
//!  "cacheWrite1h":6,"cacheRead":0.3,"longContext":{"above":200000,"input":6,
//!  "output":22.5,"cacheWrite5m":7.5,"cacheWrite1h":12,"cacheRead":0.6}}},
//!  "webSearchPerThousand":10}
//! ```
//!
//! Prices are USD per million tokens; `webSearchPerThousand` is USD per 1 000 searches.
//! Every price of a model (and of its `longContext` tier) is required: a table that
//! left one out would have nexus guess it. `source` and `date` say where the prices
//! came from. Unknown fields are refused, so a misspelt one is not silently ignored.

use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Value};

use super::{LongContext, ModelPrices, Rates};

/// Decimal places a price per million tokens may have: one picodollar per token.
const PER_MTOK_DECIMALS: u32 = 6;
/// Decimal places a price per thousand searches may have: one picodollar per search.
const PER_THOUSAND_DECIMALS: u32 = 9;
/// The most a price may be, in USD per million tokens (or per thousand searches): far
/// above any real price, low enough that no cost can overflow.
const MAX_PRICE: u64 = 1_000_000;

/// What a pricing table adds: its models, and the web-search price if it has one.
#[derive(Debug, Default)]
pub(super) struct Table {
    pub models: HashMap<String, ModelPrices>,
    /// Picodollars per web search.
    pub web_search: Option<u64>,
}

/// A mistake in a pricing table: the field's path (`models."claude-x".input`) and what
/// is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableError {
    /// Where the mistake is, from the top of the document.
    pub field: String,
    /// What was expected there, and what was found.
    pub problem: String,
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "{}: {}", self.field, self.problem)
        }
    }
}

fn error(field: &str, problem: impl Into<String>) -> TableError {
    TableError {
        field: field.to_string(),
        problem: problem.into(),
    }
}

/// Reads a pricing table. `require_web_search`: the built-in table must price it; a file
/// that extends it need not.
pub(super) fn parse(text: &str, require_web_search: bool) -> Result<Table, TableError> {
    let top: Value =
        serde_json::from_str(text).map_err(|e| error("", format!("not valid JSON ({e})")))?;
    let top = top
        .as_object()
        .ok_or_else(|| error("", format!("not a JSON object, found {}", short(&top))))?;
    let mut table = Table::default();
    let mut models = None;
    for (key, value) in top {
        match key.as_str() {
            "models" => models = Some(object(value, key)?),
            "webSearchPerThousand" => {
                table.web_search = Some(price(value, key, PER_THOUSAND_DECIMALS)?);
            }
            "source" | "date" => {
                if !value.is_string() {
                    return Err(error(
                        key,
                        format!("expected a string, found {}", short(value)),
                    ));
                }
            }
            _ => {
                return Err(unknown(
                    key,
                    "",
                    "models, webSearchPerThousand, source, date",
                ))
            }
        }
    }
    let Some(models) = models else {
        return Err(error(
            "models",
            "missing: the table needs a \"models\" object",
        ));
    };
    for (name, value) in models {
        let path = format!("models.{}", quoted(name));
        if name.is_empty() {
            return Err(error(&path, "a model name cannot be empty"));
        }
        table.models.insert(name.clone(), model(value, &path)?);
    }
    if require_web_search && table.web_search.is_none() {
        return Err(error("webSearchPerThousand", "missing"));
    }
    Ok(table)
}

const RATE_FIELDS: &str = "input, output, cacheWrite5m, cacheWrite1h, cacheRead";

fn model(value: &Value, path: &str) -> Result<ModelPrices, TableError> {
    let fields = object(value, path)?;
    let mut long_context = None;
    for (key, value) in fields {
        if key == "longContext" {
            long_context = Some(tier(value, &format!("{path}.longContext"))?);
        } else if !is_rate(key) {
            return Err(unknown(key, path, &format!("{RATE_FIELDS}, longContext")));
        }
    }
    Ok(ModelPrices {
        base: rates(fields, path)?,
        long_context,
    })
}

fn tier(value: &Value, path: &str) -> Result<LongContext, TableError> {
    let fields = object(value, path)?;
    for key in fields.keys() {
        if key != "above" && !is_rate(key) {
            return Err(unknown(key, path, &format!("above, {RATE_FIELDS}")));
        }
    }
    let above_path = format!("{path}.above");
    let above = match fields.get("above") {
        None => return Err(error(&above_path, "missing")),
        Some(v) => v.as_u64().ok_or_else(|| {
            error(
                &above_path,
                format!("expected a whole number of tokens, found {}", short(v)),
            )
        })?,
    };
    Ok(LongContext {
        above,
        rates: rates(fields, path)?,
    })
}

fn is_rate(key: &str) -> bool {
    matches!(
        key,
        "input" | "output" | "cacheWrite5m" | "cacheWrite1h" | "cacheRead"
    )
}

fn rates(fields: &Map<String, Value>, path: &str) -> Result<Rates, TableError> {
    let get = |name: &str| {
        let field = format!("{path}.{name}");
        match fields.get(name) {
            None => Err(error(&field, "missing")),
            Some(v) => price(v, &field, PER_MTOK_DECIMALS),
        }
    };
    Ok(Rates {
        input: get("input")?,
        output: get("output")?,
        cache_write_5m: get("cacheWrite5m")?,
        cache_write_1h: get("cacheWrite1h")?,
        cache_read: get("cacheRead")?,
    })
}

/// A price as integer picodollars per unit: the number times 10^`decimals`, which must
/// come out whole (no rounding, ever).
fn price(value: &Value, field: &str, decimals: u32) -> Result<u64, TableError> {
    let text = match value {
        Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(whole), _) => whole.to_string(),
            // Rust prints an f64 as the shortest decimal that reads back as it.
            (None, Some(f)) if f >= 0.0 => format!("{f}"),
            _ => String::new(),
        },
        _ => String::new(),
    };
    decimal(&text, decimals).ok_or_else(|| {
        error(
            field,
            format!(
                "expected a price in USD from 0 to {MAX_PRICE} with at most {decimals} \
                 decimals, found {}",
                short(value)
            ),
        )
    })
}

/// `text` (a JSON number, as written) times 10^`scale`, if that is a whole number from 0
/// to [`MAX_PRICE`] × 10^`scale`.
fn decimal(text: &str, scale: u32) -> Option<u64> {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], text[at + 1..].parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((_, "")) => return None,
        Some(parts) => parts,
        None => (mantissa, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return None; // also refuses a minus sign
    }
    // value = digits × 10^(exponent + scale − fraction length)
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    let mut shift = i64::from(exponent) + i64::from(scale) - fraction.len() as i64;
    if digits.is_empty() {
        return Some(0);
    }
    let mut digits = digits.to_string();
    while shift < 0 {
        // Only trailing zeros may be dropped: anything else is finer than a picodollar.
        digits = digits.strip_suffix('0')?.to_string();
        shift += 1;
    }
    let limit = u128::from(MAX_PRICE) * 10u128.pow(scale);
    if digits.len() as i64 + shift > 40 {
        return None;
    }
    let value = digits.parse::<u128>().ok()? * 10u128.pow(u32::try_from(shift).ok()?);
    (value <= limit)
        .then(|| u64::try_from(value).ok())
        .flatten()
}

/// `value` as an object, or an error naming `path`.
fn object<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, TableError> {
    value
        .as_object()
        .ok_or_else(|| error(path, format!("expected an object, found {}", short(value))))
}

/// A value as the error message shows it: its JSON, cut to 40 characters.
fn short(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(40) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

fn unknown(key: &str, path: &str, known: &str) -> TableError {
    let field = match path {
        "" => quoted(key),
        _ => format!("{path}.{}", quoted(key)),
    };
    error(&field, format!("unknown field (known: {known})"))
}

/// A key as it appears in a path: bare when it is a plain name, quoted otherwise.
fn quoted(key: &str) -> String {
    if !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_read_exactly() {
        assert_eq!(decimal("3", 6), Some(3_000_000));
        assert_eq!(decimal("0.3", 6), Some(300_000));
        assert_eq!(decimal("0.30", 6), Some(300_000));
        assert_eq!(decimal("22.5", 6), Some(22_500_000));
        assert_eq!(decimal("0.000001", 6), Some(1));
        assert_eq!(decimal("0.0000010", 6), Some(1));
        assert_eq!(decimal("1.5e1", 6), Some(15_000_000));
        assert_eq!(decimal("25E-1", 6), Some(2_500_000));
        assert_eq!(decimal("0", 6), Some(0));
        assert_eq!(decimal("0.0", 6), Some(0));
        assert_eq!(decimal("0e-30", 6), Some(0));
        assert_eq!(decimal("1e+2", 6), Some(100_000_000));
        assert_eq!(decimal("10", 9), Some(10_000_000_000));
        assert_eq!(decimal("1000000", 6), Some(1_000_000_000_000));
        // Finer than a picodollar, negative, too large, or not a number.
        for bad in [
            "0.0000001",
            "1e-7",
            "-1",
            "1000001",
            "1e300",
            "\"3\"",
            "null",
            "",
            ".5",
            "1.",
            "[1]",
        ] {
            assert_eq!(decimal(bad, 6), None, "{bad}");
        }
        assert_eq!(decimal("1.", 6), None);
    }

    fn parse_err(text: &str) -> String {
        parse(text, false).unwrap_err().to_string()
    }

    #[test]
    fn mistakes_name_their_field() {
        let good = r#""input":3,"output":15,"cacheWrite5m":3.75,"cacheWrite1h":6,"cacheRead":0.3"#;
        let model = |body: &str| format!(r#"{{"models":{{"claude-x":{{{body}}}}}}}"#);
        assert_eq!(
            parse_err(&model(&good.replace("\"input\":3", "\"input\":\"3\""))),
            "models.claude-x.input: expected a price in USD from 0 to 1000000 with at most 6 \
             decimals, found \"3\""
        );
        assert_eq!(
            parse_err(&model(&good.replace(",\"cacheRead\":0.3", ""))),
            "models.claude-x.cacheRead: missing"
        );
        assert!(parse_err(&model(&format!("{good},\"cacheWrite5M\":1")))
            .starts_with("models.claude-x.cacheWrite5M: unknown field"));
        assert_eq!(
            parse_err(&model(&format!(
                "{good},\"longContext\":{{{}}}",
                good.replace("\"output\":15", "\"output\":-1")
            ))),
            "models.claude-x.longContext.above: missing"
        );
        assert!(parse_err(&model(&format!(
            "{good},\"longContext\":{{\"above\":1,{}}}",
            good.replace("\"output\":15", "\"output\":-1")
        )))
        .starts_with("models.claude-x.longContext.output: expected a price"));
        assert!(parse_err(&model(&format!(
            "{good},\"longContext\":{{\"above\":2.5,{good}}}"
        )))
        .starts_with("models.claude-x.longContext.above: expected a whole number"));
        assert_eq!(
            parse_err(r#"{"models":{"a b":[]}}"#),
            "models.\"a b\": expected an object, found []"
        );
        assert_eq!(
            parse_err(r#"{"modles":{}}"#),
            "modles: unknown field (known: models, webSearchPerThousand, source, date)"
        );
        assert_eq!(
            parse_err(r#"{"webSearchPerThousand":10}"#),
            "models: missing: the table needs a \"models\" object"
        );
        assert_eq!(parse_err("[1]"), "not a JSON object, found [1]");
        assert!(parse_err("{\"models\":{}").starts_with("not valid JSON (EOF"));
        assert_eq!(
            parse_err(r#"{"models":{},"date":5}"#),
            "date: expected a string, found 5"
        );
        assert!(
            parse_err(&model(&good.replace("\"input\":3", "\"input\":1e-7")))
                .ends_with("at most 6 decimals, found 1e-7")
        );
        assert!(parse_err(r#"{"models":{},"webSearchPerThousand":"ten"}"#)
            .starts_with("webSearchPerThousand: expected a price"));
        assert_eq!(
            parse(r#"{"models":{}}"#, true).unwrap_err().to_string(),
            "webSearchPerThousand: missing"
        );
        assert!(
            parse_err(&format!(r#"{{"models":{{"":{{{good}}}}}}}"#)).contains("cannot be empty")
        );
    }

    #[test]
    fn a_good_table_reads_whole() {
        let t = parse(
            r#"{"source":"s","date":"d","webSearchPerThousand":12.5,"models":{
               "m":{"input":1,"output":2,"cacheWrite5m":3,"cacheWrite1h":4,"cacheRead":0.000005,
               "longContext":{"above":7,"input":10,"output":20,"cacheWrite5m":30,"cacheWrite1h":40,"cacheRead":50}}}}"#,
            true,
        )
        .unwrap();
        assert_eq!(t.web_search, Some(12_500_000_000));
        let m = &t.models["m"];
        assert_eq!(
            m.base,
            Rates {
                input: 1_000_000,
                output: 2_000_000,
                cache_write_5m: 3_000_000,
                cache_write_1h: 4_000_000,
                cache_read: 5
            }
        );
        let lc = m.long_context.unwrap();
        assert_eq!((lc.above, lc.rates.cache_read), (7, 50_000_000));
    }
}
