//! Fault injection for tests: per-route rules, deterministic under a seed, off by default.
//!
//! A rule names a route, a fault and how often it fires. Decisions are drawn from one seeded RNG
//! in request order, so a single-threaded test sees the same faults on every run. Rules can be
//! changed while the server runs ([`Faults::set`]); stalls are released with
//! [`Faults::release_stalls`].

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::{Rng, SeedableRng, rngs::StdRng};

/// The routes a fault can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `clientlogin`, `/rc/v1/app/login`.
    Login,
    /// `clientcreate`.
    ClientCreate,
    /// `clientregister`.
    ClientRegister,
    /// `clientreset`.
    ClientReset,
    /// The paged query (`GET /application`, `GET /app/v1/<Source>`).
    Query,
    /// The push (`POST /application`, `POST /app/v1/<Source>`).
    Push,
    /// `search`.
    Search,
    /// `bulk_data`.
    BulkData,
    /// Bulk file downloads under `/data/`.
    BulkFile,
    /// Blob downloads under `/blobs/`.
    Blob,
    /// Every route.
    Any,
}

impl Route {
    /// The name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Login => "login",
            Route::ClientCreate => "clientcreate",
            Route::ClientRegister => "clientregister",
            Route::ClientReset => "clientreset",
            Route::Query => "query",
            Route::Push => "push",
            Route::Search => "search",
            Route::BulkData => "bulk_data",
            Route::BulkFile => "bulk_file",
            Route::Blob => "blob",
            Route::Any => "any",
        }
    }

    /// Every concrete route (not [`Route::Any`]).
    pub const ALL: [Route; 10] = [
        Route::Login,
        Route::ClientCreate,
        Route::ClientRegister,
        Route::ClientReset,
        Route::Query,
        Route::Push,
        Route::Search,
        Route::BulkData,
        Route::BulkFile,
        Route::Blob,
    ];
}

impl FromStr for Route {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Route::ALL
            .into_iter()
            .chain([Route::Any])
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown route `{s}` (one of login, clientcreate, clientregister, clientreset, query, push, search, bulk_data, bulk_file, blob, any)"))
    }
}

/// What goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The answer is delayed by this long.
    Latency(Duration),
    /// `500 Internal Server Error` before the request is handled (nothing changes).
    Http500,
    /// The request is handled, the head and half the body are sent, then the connection closes.
    DropMidBody,
    /// The request waits until [`Faults::release_stalls`] or this long, then is handled.
    Stall(Duration),
    /// The request is handled and a complete HTTP answer carries the first half of the body.
    TruncatedJson,
    /// The request is handled and the body is replaced by text that is not JSON.
    MalformedJson,
    /// A query is answered with the pending page again, its acknowledgement ignored (as if the
    /// network duplicated a response).
    DuplicatePage,
    /// The request is handled (a push is applied), then the connection closes without an answer.
    ApplyThenDrop,
}

impl FaultKind {
    /// Names used on the command line.
    pub const NAMES: &'static str =
        "latency=MS, http500, drop_mid_body, stall=MS, truncated_json, malformed_json, duplicate_page, apply_then_drop";
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, arg) = match s.split_once('=') {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        let ms = |arg: Option<&str>| -> Result<Duration, String> {
            let a = arg.ok_or_else(|| format!("`{name}` needs =MILLISECONDS"))?;
            a.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|e| format!("`{s}`: {e}"))
        };
        Ok(match name {
            "latency" => FaultKind::Latency(ms(arg)?),
            "http500" => FaultKind::Http500,
            "drop_mid_body" => FaultKind::DropMidBody,
            "stall" => FaultKind::Stall(ms(arg)?),
            "truncated_json" => FaultKind::TruncatedJson,
            "malformed_json" => FaultKind::MalformedJson,
            "duplicate_page" => FaultKind::DuplicatePage,
            "apply_then_drop" => FaultKind::ApplyThenDrop,
            _ => return Err(format!("unknown fault `{name}` (one of {})", FaultKind::NAMES)),
        })
    }
}

/// One rule: on `route`, after skipping the first `skip` matching requests, inject `kind` with
/// `probability`, at most `times` times.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    /// Target route.
    pub route: Route,
    /// The fault.
    pub kind: FaultKind,
    /// Chance per matching request, 0.0–1.0.
    pub probability: f64,
    /// Matching requests to let through first.
    pub skip: u32,
    /// Maximum number of injections; `None` for unlimited.
    pub times: Option<u32>,
}

impl FaultRule {
    /// A rule that always fires on `route`.
    pub fn always(route: Route, kind: FaultKind) -> Self {
        Self {
            route,
            kind,
            probability: 1.0,
            skip: 0,
            times: None,
        }
    }

    /// Fires once, on the `(skip + 1)`-th matching request.
    pub fn once_after(route: Route, kind: FaultKind, skip: u32) -> Self {
        Self {
            route,
            kind,
            probability: 1.0,
            skip,
            times: Some(1),
        }
    }
}

impl FromStr for FaultRule {
    type Err = String;
    /// `ROUTE:FAULT[@PROBABILITY][+SKIP][xTIMES]`, e.g. `query:http500@0.3`, `push:apply_then_drop+2x1`,
    /// `any:latency=50`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (route, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("`{s}`: expected ROUTE:FAULT"))?;
        let route: Route = route.parse()?;
        let (rest, times) = match rest.rsplit_once('x') {
            Some((r, t)) if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) => {
                (r, Some(t.parse::<u32>().map_err(|e| format!("`{s}`: {e}"))?))
            }
            _ => (rest, None),
        };
        let (rest, skip) = match rest.split_once('+') {
            Some((r, k)) => (r, k.parse::<u32>().map_err(|e| format!("`{s}`: skip: {e}"))?),
            None => (rest, 0),
        };
        let (kind, probability) = match rest.split_once('@') {
            Some((k, p)) => (k, p.parse::<f64>().map_err(|e| format!("`{s}`: probability: {e}"))?),
            None => (rest, 1.0),
        };
        if !(0.0..=1.0).contains(&probability) {
            return Err(format!("`{s}`: probability must be within 0..1"));
        }
        Ok(FaultRule {
            route,
            kind: kind.parse()?,
            probability,
            skip,
            times,
        })
    }
}

struct RuleState {
    rule: FaultRule,
    seen: u32,
    fired: u32,
}

struct Inner {
    rules: Vec<RuleState>,
    rng: StdRng,
    injected: u64,
}

/// The live fault plan of a server. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Faults {
    inner: Arc<Mutex<Inner>>,
    release: Arc<tokio::sync::Notify>,
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("rules", &self.inner.lock().rules.len())
            .finish()
    }
}

impl Faults {
    /// A plan with `rules`, deciding with an RNG seeded by `seed`.
    pub fn new(rules: Vec<FaultRule>, seed: u64) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                rules: rules
                    .into_iter()
                    .map(|rule| RuleState {
                        rule,
                        seen: 0,
                        fired: 0,
                    })
                    .collect(),
                rng: StdRng::seed_from_u64(seed),
                injected: 0,
            })),
            release: Arc::new(tokio::sync::Notify::new()),
            generation: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    /// No faults.
    pub fn none() -> Self {
        Self::new(Vec::new(), 0)
    }

    /// Replaces the rules (counters restart; the RNG continues).
    pub fn set(&self, rules: Vec<FaultRule>) {
        self.inner.lock().rules = rules
            .into_iter()
            .map(|rule| RuleState {
                rule,
                seen: 0,
                fired: 0,
            })
            .collect();
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.set(Vec::new());
    }

    /// Lets every stalled request continue.
    pub fn release_stalls(&self) {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.release.notify_waiters();
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> u64 {
        self.inner.lock().injected
    }

    /// Decides the faults for one request on `route` (every matching rule may fire).
    pub(crate) fn decide(&self, route: Route) -> Vec<FaultKind> {
        let mut inner = self.inner.lock();
        let Inner { rules, rng, injected } = &mut *inner;
        let mut out = Vec::new();
        for st in rules.iter_mut() {
            if st.rule.route != route && st.rule.route != Route::Any {
                continue;
            }
            st.seen += 1;
            if st.seen <= st.rule.skip || st.rule.times.is_some_and(|t| st.fired >= t) {
                continue;
            }
            if st.rule.probability >= 1.0 || rng.random_bool(st.rule.probability.max(0.0)) {
                st.fired += 1;
                *injected += 1;
                out.push(st.rule.kind);
            }
        }
        out
    }

    /// Waits until released or `max` passed.
    pub(crate) async fn stall(&self, max: Duration) {
        let start_gen = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let notified = self.release.notified();
        if self.generation.load(std::sync::atomic::Ordering::SeqCst) != start_gen {
            return;
        }
        let _ = tokio::time::timeout(max, notified).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_from_the_command_line_form() {
        let r: FaultRule = "push:apply_then_drop+2x1".parse().expect("parses");
        assert_eq!(
            r,
            FaultRule {
                route: Route::Push,
                kind: FaultKind::ApplyThenDrop,
                probability: 1.0,
                skip: 2,
                times: Some(1)
            }
        );
        let r: FaultRule = "query:http500@0.25".parse().expect("parses");
        assert_eq!(r.probability, 0.25);
        let r: FaultRule = "any:latency=50".parse().expect("parses");
        assert_eq!(r.kind, FaultKind::Latency(Duration::from_millis(50)));
        assert!("query:nope".parse::<FaultRule>().is_err());
        assert!("nowhere:http500".parse::<FaultRule>().is_err());
        assert!("query:http500@2".parse::<FaultRule>().is_err());
    }

    #[test]
    fn decisions_are_deterministic_under_a_seed() {
        let draw = |seed| {
            let f = Faults::new(vec!["query:http500@0.5".parse().expect("rule")], seed);
            (0..64).map(|_| !f.decide(Route::Query).is_empty()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn skip_and_times_bound_a_rule() {
        let f = Faults::new(vec![FaultRule::once_after(Route::Push, FaultKind::Http500, 2)], 1);
        let fired: Vec<bool> = (0..5).map(|_| !f.decide(Route::Push).is_empty()).collect();
        assert_eq!(fired, [false, false, true, false, false]);
        assert!(f.decide(Route::Query).is_empty());
        assert_eq!(f.injected(), 1);
    }
}
