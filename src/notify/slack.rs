//! Slack: which settings a domain's messages use, the message text, and the webhook payload.
//!
//! The text follows the seed: the user's latest message when it changed since the domain's
//! previous request, then Claude's reply (20 lines at most) and one line per tool call. A
//! reply of tool calls only has no `🤖 Claude:` prefix; an error is sent as an error.

use serde_json::{json, Value};

use super::redact::redact;
use super::tools::tool_lines;
use crate::config::SlackConfig;
use crate::credentials::file::SlackOverride;
use crate::request_id::RequestId;
use crate::usage::{RequestKind, ToolCall};

/// Lines of user or assistant text shown before `... (truncated)`.
pub const MAX_LINES: usize = 20;
/// Characters shown of one text however few its lines (Slack's own limit is 40 000).
pub const MAX_CHARS: usize = 3000;
/// The seed's defaults.
pub const DEFAULT_USERNAME: &str = "Claude Nexus Proxy";
pub const DEFAULT_ICON: &str = ":robot_face:";
const TRUNCATED: &str = "\n... (truncated)";

/// The settings one message is posted with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackSettings<'a> {
    pub webhook_url: &'a str,
    pub channel: Option<&'a str>,
    pub username: &'a str,
    pub icon_emoji: &'a str,
}

/// Whether a domain's requests go to Slack: the domain's `slack` block wins over
/// `SLACK_*` (`enabled: false` turns it off for that domain; a block with its own
/// webhook is on unless it says otherwise), and some webhook must be set.
pub fn enabled(domain: Option<&SlackOverride>, global: &SlackConfig) -> bool {
    let on = match domain {
        Some(SlackOverride {
            enabled: Some(on), ..
        }) => *on,
        Some(SlackOverride {
            webhook_url: Some(_),
            ..
        }) => true,
        _ => global.enabled,
    };
    on && (domain.is_some_and(|d| d.webhook_url.is_some()) || global.webhook_url.is_some())
}

/// The settings for a domain's messages, field by field: the domain's, else `SLACK_*`,
/// else the defaults. `None` when Slack is off for the domain.
pub fn settings<'a>(
    domain: Option<&'a SlackOverride>,
    global: &'a SlackConfig,
) -> Option<SlackSettings<'a>> {
    if !enabled(domain, global) {
        return None;
    }
    let pick = |own: Option<&'a Option<String>>, fallback: &'a Option<String>| {
        own.and_then(Option::as_deref).or(fallback.as_deref())
    };
    Some(SlackSettings {
        webhook_url: pick(domain.map(|d| &d.webhook_url), &global.webhook_url)?,
        channel: pick(domain.map(|d| &d.channel), &global.channel),
        username: pick(domain.map(|d| &d.username), &global.username).unwrap_or(DEFAULT_USERNAME),
        icon_emoji: pick(domain.map(|d| &d.icon_emoji), &global.icon_emoji).unwrap_or(DEFAULT_ICON),
    })
}

/// Whether a request of this kind gets a message: query evaluations (one system prompt,
/// Claude Code's small side requests) do not.
pub fn wanted(kind: RequestKind) -> bool {
    kind != RequestKind::QueryEvaluation
}

/// What one message is made of.
#[derive(Debug, Clone, Copy, Default)]
pub struct Content<'a> {
    /// The user's last message, only when it differs from the domain's previous one.
    pub user: Option<&'a str>,
    /// Claude's text.
    pub text: &'a str,
    /// The tool calls kept in detail, and how many there were in all.
    pub tools: &'a [ToolCall],
    pub tool_calls: u32,
    /// Set when the request failed: what went wrong.
    pub error: Option<&'a str>,
}

/// The message text, masked; `None` when there is nothing to say.
pub fn message(content: &Content<'_>) -> Option<String> {
    let mut parts = Vec::with_capacity(2);
    if let Some(user) = content.user.map(str::trim).filter(|u| !u.is_empty()) {
        parts.push(format!("👤 User: {}", truncate(user)));
    }
    if let Some(error) = content.error {
        parts.push(format!("❌ Error: {error}"));
    } else {
        let mut reply = String::new();
        let text = content.text.trim();
        if !text.is_empty() {
            reply.push_str("🤖 Claude: ");
            reply.push_str(&truncate(text));
        }
        for line in tool_lines(content.tools, content.tool_calls) {
            if !reply.is_empty() {
                reply.push('\n');
            }
            reply.push_str(&line);
        }
        if !reply.is_empty() {
            parts.push(reply);
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some(redact(&parts.join("\n\n")).into_owned())
}

/// At most [`MAX_LINES`] lines and [`MAX_CHARS`] characters, marked when cut.
pub fn truncate(text: &str) -> String {
    let mut cut = false;
    let mut end = text.len();
    if let Some((at, _)) = text.match_indices('\n').nth(MAX_LINES - 1) {
        end = at;
        cut = true;
    }
    if let Some((at, _)) = text[..end].char_indices().nth(MAX_CHARS) {
        end = at;
        cut = true;
    }
    let mut out = text[..end].to_string();
    if cut {
        out.push_str(TRUNCATED);
    }
    out
}

/// The incoming-webhook payload: `text` with a last line of context (the request id, and
/// the named client's name when the request had one), `username`, `icon_emoji`, and
/// `channel` when one is set.
pub fn payload(
    text: &str,
    request_id: &RequestId,
    client: Option<&str>,
    settings: &SlackSettings<'_>,
) -> Vec<u8> {
    let context = match client {
        Some(name) => format!("_request {request_id} · client {name}_"),
        None => format!("_request {request_id}_"),
    };
    let mut body = json!({
        "text": format!("{text}\n{context}"),
        "username": settings.username,
        "icon_emoji": settings.icon_emoji,
    });
    if let Some(channel) = settings.channel {
        body["channel"] = Value::String(channel.to_string());
    }
    serde_json::to_vec(&body).expect("a JSON value always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(url: Option<&str>, enabled: bool) -> SlackConfig {
        SlackConfig {
            webhook_url: url.map(Into::into),
            channel: Some("#global".into()),
            username: None,
            icon_emoji: None,
            enabled,
        }
    }

    fn domain(url: Option<&str>, enabled: Option<bool>) -> SlackOverride {
        SlackOverride {
            webhook_url: url.map(Into::into),
            channel: Some("#team".into()),
            username: Some("Team Bot".into()),
            icon_emoji: None,
            enabled,
        }
    }

    fn tool(name: &str, input: &str) -> ToolCall {
        ToolCall {
            name: name.into(),
            input: input.into(),
        }
    }

    #[test]
    fn the_domain_block_wins_field_by_field() {
        let g = global(Some("https://hooks.slack.com/services/G"), true);
        let d = domain(Some("https://hooks.slack.com/services/D"), None);
        assert_eq!(
            settings(Some(&d), &g),
            Some(SlackSettings {
                webhook_url: "https://hooks.slack.com/services/D",
                channel: Some("#team"),
                username: "Team Bot",
                icon_emoji: ":robot_face:",
            })
        );
        assert_eq!(
            settings(None, &g),
            Some(SlackSettings {
                webhook_url: "https://hooks.slack.com/services/G",
                channel: Some("#global"),
                username: "Claude Nexus Proxy",
                icon_emoji: ":robot_face:",
            })
        );
        // A block with only a channel uses the global webhook.
        let channel_only = domain(None, None);
        assert_eq!(
            settings(Some(&channel_only), &g).map(|s| s.webhook_url),
            Some("https://hooks.slack.com/services/G")
        );
    }

    #[test]
    fn enabled_false_and_missing_webhooks_turn_it_off() {
        let g = global(Some("https://g"), true);
        assert!(!enabled(Some(&domain(Some("https://d"), Some(false))), &g));
        assert!(!enabled(Some(&domain(None, Some(false))), &g));
        assert!(!enabled(None, &global(None, true)), "no webhook anywhere");
        assert!(
            !enabled(None, &global(Some("https://g"), false)),
            "SLACK_ENABLED=false"
        );
        assert!(
            enabled(Some(&domain(Some("https://d"), None)), &global(None, false)),
            "a domain's own webhook is on unless it says otherwise"
        );
        assert!(!enabled(
            Some(&domain(None, None)),
            &global(Some("https://g"), false)
        ));
        assert!(enabled(
            Some(&domain(None, Some(true))),
            &global(Some("https://g"), false)
        ));
    }

    #[test]
    fn golden_text_reply_with_a_changed_user_message() {
        let text = message(&Content {
            user: Some("What does main.rs do?"),
            text: "It starts the workers.\nThen it waits for a signal.",
            ..Content::default()
        });
        assert_eq!(
            text.as_deref(),
            Some(
                "👤 User: What does main.rs do?\n\n\
                 🤖 Claude: It starts the workers.\nThen it waits for a signal."
            )
        );
    }

    #[test]
    fn golden_unchanged_user_message_shows_only_claude() {
        let text = message(&Content {
            user: None,
            text: "  Done.  ",
            ..Content::default()
        });
        assert_eq!(text.as_deref(), Some("🤖 Claude: Done."));
    }

    #[test]
    fn golden_tool_only_reply_has_no_claude_prefix() {
        let tools = [
            tool(
                "Read",
                r#"{"file_path":"/repo/src/main.rs","offset":1,"limit":40}"#,
            ),
            tool(
                "Edit",
                r#"{"file_path":"/repo/src/proxy.rs","old_string":"a\nb","new_string":"c"}"#,
            ),
            tool(
                "Write",
                r#"{"file_path":"/repo/docs/notes.md","content":"x\ny\n"}"#,
            ),
            tool(
                "MultiEdit",
                r#"{"file_path":"/repo/src/lib.rs","edits":[{"old_string":"a","new_string":"b"},{"old_string":"c","new_string":"d"},{"old_string":"e","new_string":"f"}]}"#,
            ),
            tool(
                "TodoWrite",
                r#"{"todos":[{"content":"t1","status":"completed","id":"1"},{"content":"t2","status":"pending","id":"2"}]}"#,
            ),
            tool(
                "WebFetch",
                r#"{"url":"https://example.com","prompt":"summarise"}"#,
            ),
        ];
        let text = message(&Content {
            tools: &tools,
            tool_calls: 6,
            ..Content::default()
        });
        assert_eq!(
            text.as_deref(),
            Some(
                "🔧 Read - src/main.rs (lines 1-40)\n\
                 🔧 Edit - src/proxy.rs (2 → 1 line)\n\
                 🔧 Write - docs/notes.md (2 lines)\n\
                 🔧 MultiEdit - src/lib.rs (3 edits)\n\
                 🔧 TodoWrite - 1 pending, 1 completed\n\
                 🔧 WebFetch - {\"url\":\"https://example.com\",\"prompt\":\"summarise\"}"
            )
        );
    }

    #[test]
    fn golden_text_and_tools() {
        let tools = [tool("Bash", r#"{"command":"ls"}"#)];
        let text = message(&Content {
            user: Some("list files"),
            text: "Listing them.",
            tools: &tools,
            tool_calls: 1,
            ..Content::default()
        });
        assert_eq!(
            text.as_deref(),
            Some("👤 User: list files\n\n🤖 Claude: Listing them.\n🔧 Bash - {\"command\":\"ls\"}")
        );
    }

    #[test]
    fn golden_reply_over_twenty_lines_is_truncated() {
        let long: Vec<String> = (1..=25).map(|i| format!("line {i}")).collect();
        let text = message(&Content {
            text: &long.join("\n"),
            ..Content::default()
        })
        .unwrap();
        let expected: Vec<String> = (1..=20).map(|i| format!("line {i}")).collect();
        assert_eq!(
            text,
            format!("🤖 Claude: {}\n... (truncated)", expected.join("\n"))
        );
        // Exactly twenty lines is not cut.
        let twenty = expected.join("\n");
        assert_eq!(truncate(&twenty), twenty);
        // Nor is one very long line left whole.
        let wide = "w".repeat(MAX_CHARS + 10);
        assert_eq!(
            truncate(&wide),
            format!("{}\n... (truncated)", &wide[..MAX_CHARS])
        );
    }

    #[test]
    fn golden_query_evaluation_gets_no_message() {
        assert!(!wanted(RequestKind::QueryEvaluation));
        assert!(wanted(RequestKind::Inference));
        assert!(wanted(RequestKind::Neither));
        assert!(wanted(RequestKind::Unclassified));
    }

    #[test]
    fn golden_upstream_error() {
        let text = message(&Content {
            user: Some("hello"),
            text: "partial",
            error: Some("overloaded_error (HTTP 529)"),
            ..Content::default()
        });
        assert_eq!(
            text.as_deref(),
            Some("👤 User: hello\n\n❌ Error: overloaded_error (HTTP 529)")
        );
    }

    #[test]
    fn nothing_to_say_is_no_message_and_secrets_are_masked() {
        assert_eq!(message(&Content::default()), None);
        let text = message(&Content {
            user: Some("my key is sk-ant-api03-Secret0123456789abcdefXYZ"),
            text: "ok",
            ..Content::default()
        })
        .unwrap();
        assert!(!text.contains("Secret0123"), "{text}");
        assert!(text.contains("****9abcdefXYZ"), "{text}");
    }

    #[test]
    fn payload_fields() {
        let id = crate::request_id::RequestIds::new().next();
        let s = SlackSettings {
            webhook_url: "https://x",
            channel: Some("#c"),
            username: "U",
            icon_emoji: ":e:",
        };
        let v: Value = serde_json::from_slice(&payload("hi", &id, None, &s)).unwrap();
        assert_eq!(v["text"], format!("hi\n_request {id}_"));
        assert_eq!(
            (
                v["channel"].as_str(),
                v["username"].as_str(),
                v["icon_emoji"].as_str()
            ),
            (Some("#c"), Some("U"), Some(":e:"))
        );
        let no_channel = SlackSettings { channel: None, ..s };
        let v: Value = serde_json::from_slice(&payload("hi", &id, None, &no_channel)).unwrap();
        assert!(v.get("channel").is_none());
        let named: Value = serde_json::from_slice(&payload("hi", &id, Some("alice"), &s)).unwrap();
        assert_eq!(named["text"], format!("hi\n_request {id} · client alice_"));
    }
}
