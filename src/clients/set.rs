//! The clients of one version of the file, found by key; a new version keeps each
//! client's state (spend, requests in flight) by name, so a reload changes limits, never
//! what was spent.

use std::collections::HashMap;
use std::sync::Arc;

use super::client::{micro_dollars, Client, ClientState};
use super::file::{digest, ClientSpec, KeyDigest};
use super::spend::{FleetSpend, BUCKET_MS};
use super::window::{Window, ROLLING_MS};
use crate::ledger::store::{FleetLines, SpendLine, FLEET_BUCKET_MS};

// A fleet's shared buckets are the rolling window's own.
const _: () = assert!(BUCKET_MS == FLEET_BUCKET_MS);

/// Every named client, by the digest of its key.
#[derive(Debug, Default)]
pub struct ClientSet {
    by_key: HashMap<KeyDigest, Arc<Client>>,
    /// In the file's order.
    in_order: Vec<Arc<Client>>,
}

impl ClientSet {
    /// The set for `specs`; a client whose name `previous` has keeps its state.
    pub fn new(specs: Vec<ClientSpec>, previous: &ClientSet) -> ClientSet {
        let mut set = ClientSet::default();
        for spec in specs {
            let state = previous
                .named(&spec.name)
                .map_or_else(Arc::<ClientState>::default, |c| Arc::clone(&c.state));
            let client = Arc::new(Client { spec, state });
            set.by_key.insert(client.spec.key, Arc::clone(&client));
            set.in_order.push(client);
        }
        set
    }

    /// The client whose key is `presented`, if any.
    pub fn by_key(&self, presented: &str) -> Option<&Arc<Client>> {
        if self.by_key.is_empty() {
            return None;
        }
        self.by_key.get(&digest(presented))
    }

    pub fn named(&self, name: &str) -> Option<&Arc<Client>> {
        self.in_order.iter().find(|c| &**c.name() == name)
    }

    /// Every client, in the file's order.
    pub fn all(&self) -> &[Arc<Client>] {
        &self.in_order
    }

    pub fn is_empty(&self) -> bool {
        self.in_order.is_empty()
    }

    /// Counts spend read back from the ledger (see [`open_windows`]) to the clients of
    /// those names; a name no longer in the file is skipped.
    pub fn restore(&self, lines: &[SpendLine]) {
        for line in lines {
            if let Some(client) = self.named(&line.client) {
                client
                    .state
                    .add_past_spend(line.bucket_ms, line.tokens, micro_dollars(line.cost));
            }
        }
    }

    /// Replaces what the rest of a fleet spent, as read from the shared ledger at `now_ms`
    /// (see [`FleetLines`]); a client the lines do not name spent nothing elsewhere.
    pub fn set_fleet_spend(&self, lines: &FleetLines, now_ms: u64) {
        let mut by_client: HashMap<&str, [FleetSpend; 2]> = HashMap::new();
        let calendar: Vec<_> = [Window::Day, Window::Week, Window::Month]
            .into_iter()
            .map(|w| w.calendar(now_ms).expect("a calendar window"))
            .collect();
        for day in &lines.days {
            let [usd, tokens] = by_client.entry(&day.client).or_default();
            for (i, c) in calendar.iter().enumerate() {
                if (c.start_ms..c.end_ms).contains(&day.bucket_ms) {
                    usd.calendar[i] += micro_dollars(day.cost);
                    tokens.calendar[i] += day.tokens;
                }
            }
        }
        for bucket in &lines.buckets {
            let [usd, tokens] = by_client.entry(&bucket.client).or_default();
            let number = bucket.bucket_ms / BUCKET_MS;
            usd.rolling.push((number, micro_dollars(bucket.cost)));
            tokens.rolling.push((number, bucket.tokens));
        }
        let nothing = Default::default();
        for client in &self.in_order {
            let [usd, tokens] = by_client.get(&**client.name()).unwrap_or(&nothing);
            client.state.set_fleet_spend(usd, tokens, now_ms);
        }
    }
}

/// The span of the ledger that holds spend still counted at `now_ms`: from the start of
/// the earliest window open then (the month's or the week's, or five hours and a bucket
/// back) to `now_ms`.
pub fn open_windows(now_ms: u64) -> (u64, u64) {
    let calendar_start = |w: Window| w.calendar(now_ms).map_or(now_ms, |c| c.start_ms);
    let from = calendar_start(Window::Month)
        .min(calendar_start(Window::Week))
        .min(now_ms.saturating_sub(ROLLING_MS + BUCKET_MS));
    (from, now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::file::parse_clients;

    /// 2026-12-09T15:30:00Z.
    const NOW: u64 = 1_796_830_200_000;

    fn set(json: &str, previous: &ClientSet) -> ClientSet {
        ClientSet::new(parse_clients(json).unwrap(), previous)
    }

    #[test]
    fn clients_are_found_by_plain_or_hashed_key() {
        let sha_of_test = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let s = set(
            &format!(
                r#"{{"clients":[{{"name":"a","key":"nx-a"}},{{"name":"b","keySha256":"{sha_of_test}"}}]}}"#
            ),
            &ClientSet::default(),
        );
        assert_eq!(s.by_key("nx-a").map(|c| &**c.name()), Some("a"));
        assert_eq!(s.by_key("test").map(|c| &**c.name()), Some("b"));
        assert!(s.by_key("nx-b").is_none());
        assert_eq!(s.all().len(), 2);
        assert!(ClientSet::default().by_key("nx-a").is_none());
    }

    #[test]
    fn a_reload_keeps_spend_by_name_and_takes_new_keys_and_limits() {
        let before = set(
            r#"{"clients":[{"name":"a","key":"old"}]}"#,
            &ClientSet::default(),
        );
        let a = before.by_key("old").unwrap();
        a.state.add_spend(NOW, 7, 0);
        let after = set(
            r#"{"clients":[{"name":"a","key":"new","budget":{"tokens":{"day":5}}},
                           {"name":"b","key":"b"}]}"#,
            &before,
        );
        assert!(after.by_key("old").is_none(), "the old key is gone");
        let a2 = after.by_key("new").unwrap();
        assert!(Arc::ptr_eq(&a.state, &a2.state), "same spend");
        assert!(
            a2.admit("d", None, NOW + 1).is_err(),
            "7 tokens of a new 5-token budget"
        );
        assert!(!Arc::ptr_eq(&after.named("b").unwrap().state, &a.state));
    }

    #[test]
    fn the_fleets_spend_counts_in_its_windows_and_each_read_replaces_the_last() {
        let s = set(
            r#"{"clients":[{"name":"a","key":"a","budget":{"usd":{"day":1},"tokens":{"5h":100}}},
                           {"name":"b","key":"b","budget":{"tokens":{"month":1000}}}]}"#,
            &ClientSet::default(),
        );
        let today = NOW - NOW % crate::ledger::store::FLEET_DAY_MS;
        let line = |client: &str, bucket_ms, tokens, micros: u128| SpendLine {
            client: client.into(),
            bucket_ms,
            tokens,
            cost: Some(crate::cost::Usd(micros * 1_000_000)),
        };
        let lines = FleetLines {
            buckets: vec![
                line("a", NOW - NOW % BUCKET_MS, 90, 0),
                line("gone", NOW, 5, 0),
            ],
            days: vec![
                line("a", today, 90, 999_000),
                // Last week, this month: counts for b's month only.
                line("b", today - 7 * crate::ledger::store::FLEET_DAY_MS, 999, 0),
            ],
        };
        s.set_fleet_spend(&lines, NOW);
        let a = s.named("a").unwrap();
        a.state.add_spend(NOW, 10, 1_000);
        assert!(a.admit("d", None, NOW).is_err(), "90 + 10 tokens of 100");
        let b = s.named("b").unwrap();
        b.state.add_spend(NOW, 1, 0);
        assert!(b.admit("d", None, NOW).is_err(), "999 + 1 tokens of 1000");
        // The next read no longer holds a's bucket: its tokens no longer count.
        s.set_fleet_spend(&FleetLines::default(), NOW);
        assert!(a.admit("d", None, NOW).is_ok());
        assert!(b.admit("d", None, NOW).is_ok());
    }

    #[test]
    fn spend_read_back_from_the_ledger_counts_in_its_windows() {
        let s = set(
            r#"{"clients":[{"name":"a","key":"a","budget":{"usd":{"day":1},"tokens":{"5h":100}}}]}"#,
            &ClientSet::default(),
        );
        let (from, to) = open_windows(NOW);
        assert_eq!(
            from,
            crate::ledger::row::parse_iso("2026-12-01").unwrap(),
            "the month's"
        );
        assert_eq!(to, NOW);
        let line = |client: &str, at: u64, tokens, picos| SpendLine {
            client: client.into(),
            bucket_ms: at - at % BUCKET_MS,
            tokens,
            cost: Some(crate::cost::Usd(picos)),
        };
        s.restore(&[
            // Yesterday: its tokens count for the month, not for today or the last 5 hours.
            line("a", NOW - 24 * 3_600_000, 500, 2_000_000_000_000),
            line("a", NOW - 60_000, 60, 600_000_000_000),
            line("gone", NOW - 60_000, 1_000, 0),
        ]);
        let a = s.named("a").unwrap();
        let json = a.to_json(NOW);
        let spent = |kind: &str| {
            json["budgets"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["kind"] == kind)
                .unwrap()["spent"]
                .clone()
        };
        assert_eq!(spent("usd"), 0.6);
        assert_eq!(spent("tokens"), 60);
        assert!(a.admit("d", None, NOW).is_ok());
    }
}
