//! The JSON API over the ledger: `GET /api/requests`, `/api/requests/<id>`, `/api/usage`
//! (names and fields as in DESIGN.md). Parsing and rendering are pure; the query itself
//! runs on the ledger's query thread.

use std::time::Duration;

use serde_json::{json, Value};

use super::query::{Answer, Query};
use super::row::parse_iso;
use super::store::{Group, RequestFilter, UsageLine, UsageQuery};
use super::Ledger;
use crate::http::error::ErrorReply;
use crate::stats::now_ms;

/// The prefix every ledger route shares.
pub const PREFIX: &str = "/api/";
/// `limit` when none is given, and the most allowed.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;
/// `/api/usage` without `from`: the last 30 days.
const DEFAULT_RANGE_MS: u64 = 30 * 24 * 3600 * 1000;
/// How long a worker waits for the query thread before answering 504.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers a ledger route: the status and the JSON body.
pub async fn answer(ledger: &Ledger, path: &str, query: &str) -> Result<Vec<u8>, ErrorReply> {
    let q = parse(path, query, now_ms())?;
    let pending = ledger.ask(q).map_err(|why| ErrorReply::new(503, why))?;
    let answer = pending.wait(QUERY_TIMEOUT).await.map_err(|why| {
        let status = if why.contains("within") { 504 } else { 503 };
        ErrorReply::new(status, why)
    })?;
    render(answer)
}

/// The query a ledger route asks. `now` (ms) anchors `/api/usage`'s default range.
pub fn parse(path: &str, query: &str, now: u64) -> Result<Query, ErrorReply> {
    let params = params(query);
    let get = |name: &str| {
        params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let bad = |what: String| ErrorReply::new(400, what);
    let time = |name: &str| match get(name) {
        None => Ok(None),
        Some(v) => parse_iso(&v)
            .map(Some)
            .ok_or_else(|| bad(format!("{name} must be an ISO 8601 time, not {v:?}"))),
    };
    let grouping = |name: &str| match get(name) {
        None => Ok(None),
        Some(v) => Group::parse(&v).map(Some).ok_or_else(|| {
            bad(format!(
                "{name} must be hour, day, model, domain, client or credential, not {v:?}"
            ))
        }),
    };
    match path {
        "/api/requests" => {
            let limit = match get("limit") {
                None => DEFAULT_LIMIT,
                Some(v) => match v.parse::<u32>() {
                    Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                    _ => return Err(bad(format!("limit must be 1 to {MAX_LIMIT}, not {v:?}"))),
                },
            };
            let status = match get("status") {
                None => None,
                Some(v) => Some(
                    v.parse::<u16>()
                        .map_err(|_| bad(format!("status must be a number, not {v:?}")))?,
                ),
            };
            Ok(Query::Requests(RequestFilter {
                limit,
                domain: get("domain"),
                client: get("client"),
                model: get("model"),
                status,
                from_ms: time("from")?,
                to_ms: time("to")?,
            }))
        }
        "/api/usage" => {
            let to = time("to")?.unwrap_or(now + 1);
            let from = time("from")?.unwrap_or(to.saturating_sub(DEFAULT_RANGE_MS));
            let group = grouping("group")?.unwrap_or(Group::Day);
            let split = grouping("split")?;
            if let Some(s) = split.filter(|&s| s.is_time() || s == group) {
                return Err(bad(format!(
                    "split must be model, domain, client or credential, and not the group \
                     itself (group {group:?}, split {s:?})"
                )));
            }
            Ok(Query::Usage(UsageQuery {
                from_ms: from,
                to_ms: to,
                group,
                split,
            }))
        }
        _ => match path.strip_prefix("/api/requests/") {
            Some(id) if !id.is_empty() && !id.contains('/') => Ok(Query::Request(decode(id))),
            _ => Err(ErrorReply::new(404, format!("no route for {path}"))),
        },
    }
}

/// The JSON body of an answer; a request id that is not stored is a 404.
pub fn render(answer: Answer) -> Result<Vec<u8>, ErrorReply> {
    let value = match answer {
        Answer::Requests(rows) => json!({
            "requests": rows.iter().map(|r| Value::Object(r.to_json())).collect::<Vec<_>>()
        }),
        Answer::Request(None) => {
            return Err(ErrorReply::new(
                404,
                "no request with this id in the ledger",
            ))
        }
        Answer::Request(Some(found)) => {
            let (row, bodies) = *found;
            let mut object = row.to_json();
            if let Some((request, response)) = bodies {
                object.insert("requestBody".into(), request.into());
                object.insert("responseBody".into(), response.into());
            }
            Value::Object(object)
        }
        Answer::Usage(lines) => json!({
            "usage": lines.iter().map(usage_json).collect::<Vec<_>>()
        }),
    };
    Ok(serde_json::to_vec(&value).expect("a JSON value always serializes"))
}

/// One `/api/usage` line; `split` only when the query asked for one.
fn usage_json(line: &UsageLine) -> Value {
    let mut v = json!({
        "key": line.key,
        "requestCount": line.requests,
        "inputTokens": line.input_tokens,
        "outputTokens": line.output_tokens,
        "cacheCreationInputTokens": line.cache_creation_input_tokens,
        "cacheReadInputTokens": line.cache_read_input_tokens,
        "costUsd": super::row::usd_json(line.cost),
    });
    if let Some(split) = &line.split {
        v["split"] = split.as_str().into();
    }
    v
}

/// `a=1&b=x%20y` → pairs, percent- and `+`-decoded.
fn params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Percent-decoding (lossy UTF-8); `+` is a space.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_603_409_987;

    #[test]
    fn requests_filters() {
        let q = parse(
            "/api/requests",
            "limit=5&domain=a.example.com&model=claude%2Dx&status=200&client=",
            NOW,
        )
        .unwrap();
        assert_eq!(
            q,
            Query::Requests(RequestFilter {
                limit: 5,
                domain: Some("a.example.com".into()),
                client: None,
                model: Some("claude-x".into()),
                status: Some(200),
                from_ms: None,
                to_ms: None,
            })
        );
        let Query::Requests(f) = parse("/api/requests", "", NOW).unwrap() else {
            panic!()
        };
        assert_eq!(f.limit, 100);
        for bad in ["limit=0", "limit=1001", "limit=x", "status=ok"] {
            assert_eq!(
                parse("/api/requests", bad, NOW).unwrap_err().status,
                400,
                "{bad}"
            );
        }
    }

    #[test]
    fn one_request_and_unknown_routes() {
        assert_eq!(
            parse("/api/requests/abc-1", "", NOW).unwrap(),
            Query::Request("abc-1".into())
        );
        assert_eq!(parse("/api/requests/a/b", "", NOW).unwrap_err().status, 404);
        assert_eq!(parse("/api/other", "", NOW).unwrap_err().status, 404);
    }

    #[test]
    fn usage_range_and_group() {
        let q = parse(
            "/api/usage",
            "from=2026-11-25T00%3A00%3A00Z&to=2026-11-26&group=model",
            NOW,
        )
        .unwrap();
        assert_eq!(
            q,
            Query::Usage(UsageQuery {
                from_ms: 1_795_564_800_000,
                to_ms: 1_795_651_200_000,
                group: Group::Model,
                split: None,
            })
        );
        let Query::Usage(d) = parse("/api/usage", "", NOW).unwrap() else {
            panic!()
        };
        assert_eq!(
            (d.group, d.to_ms - d.from_ms),
            (Group::Day, DEFAULT_RANGE_MS)
        );
        assert_eq!(
            parse("/api/usage", "group=week", NOW).unwrap_err().status,
            400
        );
        assert_eq!(
            parse("/api/usage", "from=monday", NOW).unwrap_err().status,
            400
        );
    }

    #[test]
    fn requests_in_a_time_range() {
        let Query::Requests(f) = parse(
            "/api/requests",
            "from=2026-11-25&to=2026-11-26T00%3A00%3A00Z&domain=a",
            NOW,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            (f.from_ms, f.to_ms, f.domain.as_deref()),
            (Some(1_795_564_800_000), Some(1_795_651_200_000), Some("a"))
        );
        let Query::Requests(open) = parse("/api/requests", "to=2026-11-26", NOW).unwrap() else {
            panic!()
        };
        assert_eq!((open.from_ms, open.to_ms), (None, Some(1_795_651_200_000)));
        assert_eq!(
            parse("/api/requests", "from=last+week", NOW)
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn usage_split_within_each_group() {
        let Query::Usage(q) = parse("/api/usage", "group=day&split=model", NOW).unwrap() else {
            panic!()
        };
        assert_eq!((q.group, q.split), (Group::Day, Some(Group::Model)));
        let Query::Usage(q) = parse("/api/usage", "split=client", NOW).unwrap() else {
            panic!()
        };
        assert_eq!((q.group, q.split), (Group::Day, Some(Group::Client)));
        // A split by time, or by what is already the group, says nothing more.
        for bad in [
            "split=day",
            "split=hour",
            "group=model&split=model",
            "split=week",
        ] {
            assert_eq!(
                parse("/api/usage", bad, NOW).unwrap_err().status,
                400,
                "{bad}"
            );
        }
    }

    #[test]
    fn usage_lines_carry_the_split_only_when_asked() {
        let line = UsageLine {
            key: "2026-11-25".into(),
            requests: 2,
            input_tokens: 10,
            cost: Some(crate::cost::Usd(500_000_000_000)),
            ..UsageLine::default()
        };
        let split = UsageLine {
            split: Some("claude-x".into()),
            ..line.clone()
        };
        let body = render(Answer::Usage(vec![line, split])).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v["usage"][0],
            json!({"key": "2026-11-25", "requestCount": 2, "inputTokens": 10,
                "outputTokens": 0, "cacheCreationInputTokens": 0, "cacheReadInputTokens": 0,
                "costUsd": 0.5})
        );
        assert_eq!(v["usage"][1]["split"], "claude-x");
        assert_eq!(v["usage"][1]["key"], "2026-11-25");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(decode("a%20b+c%zz%4"), "a b c%zz%4");
        assert_eq!(decode("%E2%9C%93"), "✓");
    }
}
