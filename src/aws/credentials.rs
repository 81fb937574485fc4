//! The credentials the direct SQS client signs with: fetched from the AWS
//! chain's provider, kept until shortly before they expire, and dropped as
//! soon as SQS refuses them as expired or unknown.
//!
//! The provider may call IMDS, STS or a credential process, any of which can
//! hang; every fetch is bounded ([`FETCH_TIMEOUT`]), only one runs at a time,
//! and a caller waits for it no longer than its own call's deadline. The
//! fetch runs in a task of its own, so a caller that gives up does not cancel
//! it for the others.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use tokio::sync::watch;
use tokio::time::Instant;

use super::error::SqsError;
use crate::http1::error_chain;

/// Longest wait for the provider: a fetch that takes longer is a failure
/// (worth retrying), not a hang.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Credentials are renewed this long before they expire, as the SDK does.
const MARGIN: Duration = Duration::from_secs(300);

/// What one fetch gave: credentials, or why none.
type Fetched = Result<Credentials, String>;

/// See the module documentation.
pub struct CredentialCache {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` when the AWS chain found no way to get credentials.
    provider: Option<SharedCredentialsProvider>,
    fetch_timeout: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    current: Option<Credentials>,
    /// The fetch in flight; its outcome is published here for every caller
    /// that waits for it.
    fetching: Option<watch::Receiver<Option<Fetched>>>,
    /// The credentials SQS refused last.
    refused: Option<Credentials>,
    /// The latest fetch handed back exactly the refused credentials: asking
    /// the provider again will not bring better ones.
    reissued_refused: bool,
}

impl CredentialCache {
    pub fn new(provider: Option<SharedCredentialsProvider>) -> CredentialCache {
        Self::with_fetch_timeout(provider, FETCH_TIMEOUT)
    }

    fn with_fetch_timeout(
        provider: Option<SharedCredentialsProvider>,
        fetch_timeout: Duration,
    ) -> CredentialCache {
        CredentialCache {
            inner: Arc::new(Inner {
                provider,
                fetch_timeout,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Credentials to sign with, waiting for a fetch no later than `deadline`.
    /// Credentials close to expiry are still handed out while the fetch that
    /// renews them runs.
    pub async fn get(&self, deadline: Instant) -> Result<Credentials, SqsError> {
        let Some(provider) = &self.inner.provider else {
            return Err(SqsError::transient(
                "no AWS credentials: configure them (environment, profile, instance or task role)",
            ));
        };
        let mut outcome = {
            let mut state = self.inner.lock();
            let now = SystemTime::now();
            if let Some(c) = usable(&state.current, now + MARGIN) {
                return Ok(c);
            }
            let outcome = match &state.fetching {
                Some(running) => running.clone(),
                None => {
                    let started = self.inner.start_fetch(provider.clone());
                    state.fetching = Some(started.clone());
                    started
                }
            };
            if let Some(c) = usable(&state.current, now) {
                return Ok(c);
            }
            outcome
        };
        let waited = tokio::time::timeout_at(deadline, outcome.wait_for(Option::is_some))
            .await
            .map(|published| published.map(|p| p.clone()));
        let fetched: Fetched = match waited {
            Ok(Ok(published)) => published.unwrap_or_else(|| Err("no outcome".into())),
            Ok(Err(_)) => {
                // The fetching task ended without publishing (it panicked):
                // let the next caller start another.
                let mut state = self.inner.lock();
                if state
                    .fetching
                    .as_ref()
                    .is_some_and(|f| f.same_channel(&outcome))
                {
                    state.fetching = None;
                }
                Err("the credential fetch ended without an answer".into())
            }
            Err(_) => {
                Err("the credential provider is still answering at the call's deadline".into())
            }
        };
        fetched.map_err(|why| SqsError::transient(format!("cannot get AWS credentials: {why}")))
    }

    /// SQS refused `used` as expired or unknown: they are dropped, so the
    /// next call fetches anew. Whether that fetch may bring credentials SQS
    /// accepts: not when the provider already handed the refused ones back,
    /// unless they expire (then it renews them eventually).
    pub fn refused(&self, used: &Credentials) -> bool {
        if self.inner.provider.is_none() {
            return false;
        }
        let mut state = self.inner.lock();
        if state.current.as_ref().is_some_and(|c| same_keys(c, used)) {
            state.current = None;
        }
        let refused_again =
            state.reissued_refused && state.refused.as_ref().is_some_and(|r| same_keys(r, used));
        state.refused = Some(used.clone());
        used.expiry().is_some() || !refused_again
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic (each update is one
        // assignment), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts one fetch in a task of its own; its outcome is published
    /// through the returned receiver and stored for later callers.
    fn start_fetch(
        self: &Arc<Self>,
        provider: SharedCredentialsProvider,
    ) -> watch::Receiver<Option<Fetched>> {
        let (publish, outcome) = watch::channel(None);
        let inner = self.clone();
        tokio::spawn(async move {
            let fetched =
                match tokio::time::timeout(inner.fetch_timeout, provider.provide_credentials())
                    .await
                {
                    Ok(Ok(c)) => Ok(c),
                    Ok(Err(e)) => Err(error_chain(&e)),
                    Err(_) => Err(format!(
                        "the credential provider gave no answer within {:?}",
                        inner.fetch_timeout
                    )),
                };
            {
                let mut state = inner.lock();
                if let Ok(c) = &fetched {
                    state.reissued_refused =
                        state.refused.as_ref().is_some_and(|r| same_keys(r, c));
                    state.current = Some(c.clone());
                }
                state.fetching = None;
            }
            publish.send_replace(Some(fetched));
        });
        outcome
    }
}

/// The credentials, when they are valid until at least `until`.
fn usable(current: &Option<Credentials>, until: SystemTime) -> Option<Credentials> {
    let c = current.as_ref()?;
    match c.expiry() {
        Some(expiry) if expiry <= until => None,
        _ => Some(c.clone()),
    }
}

/// The same keys (the provider's name and the expiry aside).
fn same_keys(a: &Credentials, b: &Credentials) -> bool {
    a.access_key_id() == b.access_key_id()
        && a.secret_access_key() == b.secret_access_key()
        && a.session_token() == b.session_token()
}

/// Credential providers for tests: one that counts its calls, one that
/// never answers.
#[cfg(test)]
pub mod testing {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use aws_credential_types::provider::{future, ProvideCredentials, SharedCredentialsProvider};
    use aws_credential_types::Credentials;

    use super::CredentialCache;

    /// Counts its calls; the n-th call gives key `AK{n}` (or always `AK0`
    /// when `same`), valid for `lifetime` (forever when `None`).
    #[derive(Debug)]
    pub struct Counting {
        pub calls: Arc<AtomicUsize>,
        pub lifetime: Option<Duration>,
        pub same: bool,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let n = if self.same { 0 } else { n };
            let expiry = self.lifetime.map(|l| SystemTime::now() + l);
            future::ProvideCredentials::ready(Ok(Credentials::new(
                format!("AK{n}"),
                "secret",
                None,
                expiry,
                "test",
            )))
        }
    }

    pub fn counting(lifetime: Option<Duration>, same: bool) -> (CredentialCache, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let provider = Counting {
            calls: calls.clone(),
            lifetime,
            same,
        };
        let cache = CredentialCache::new(Some(SharedCredentialsProvider::new(provider)));
        (cache, calls)
    }

    /// Never answers, like an IMDS endpoint that accepts the connection and
    /// then says nothing; counts its calls.
    #[derive(Debug)]
    pub struct Hanging(pub Arc<AtomicUsize>);

    impl ProvideCredentials for Hanging {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            self.0.fetch_add(1, Ordering::SeqCst);
            future::ProvideCredentials::new(std::future::pending())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_credential_types::provider::future;

    use super::testing::{counting, Hanging};
    use super::*;

    /// `d` is `expected`, give or take the timer's millisecond.
    fn within(d: Duration, expected: Duration) -> bool {
        d >= expected && d <= expected + Duration::from_millis(5)
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[tokio::test]
    async fn credentials_are_reused_until_close_to_expiry() {
        let (long, calls) = counting(Some(Duration::from_secs(3600)), false);
        for _ in 0..5 {
            assert_eq!(long.get(far()).await.unwrap().access_key_id(), "AK0");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn credentials_close_to_expiry_are_renewed_without_waiting() {
        let (short, calls) = counting(Some(Duration::from_secs(60)), false);
        assert_eq!(short.get(far()).await.unwrap().access_key_id(), "AK0");
        // Within the margin but still valid: handed out while a fetch runs.
        assert_eq!(short.get(far()).await.unwrap().access_key_id(), "AK0");
        tokio::task::yield_now().await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(short.get(far()).await.unwrap().access_key_id(), "AK1");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_provider_fails_the_fetch_after_the_timeout() {
        let calls = Arc::new(AtomicUsize::new(0));
        let cache =
            CredentialCache::new(Some(SharedCredentialsProvider::new(Hanging(calls.clone()))));
        let started = Instant::now();
        let e = cache.get(far()).await.unwrap_err();
        assert!(!e.permanent, "{e}");
        assert!(e.message.contains("no answer within 5s"), "{e}");
        assert!(
            within(started.elapsed(), FETCH_TIMEOUT),
            "{:?}",
            started.elapsed()
        );
        // The next call tries again rather than waiting on the hung fetch.
        let e = cache.get(far()).await.unwrap_err();
        assert!(e.message.contains("no answer within"), "{e}");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn callers_share_one_fetch_and_leave_at_their_own_deadline() {
        let calls = Arc::new(AtomicUsize::new(0));
        let cache = Arc::new(CredentialCache::new(Some(SharedCredentialsProvider::new(
            Hanging(calls.clone()),
        ))));
        let started = Instant::now();
        let mut waiting = Vec::new();
        for deadline_ms in [1_000, 2_000, 60_000, 60_000] {
            let cache = cache.clone();
            waiting.push(tokio::spawn(async move {
                let deadline = started + Duration::from_millis(deadline_ms);
                let result = cache.get(deadline).await;
                (deadline_ms, result.is_err(), started.elapsed())
            }));
        }
        for w in waiting {
            let (deadline_ms, failed, waited) = w.await.unwrap();
            assert!(failed);
            let expected = Duration::from_millis(deadline_ms).min(FETCH_TIMEOUT);
            assert!(
                within(waited, expected),
                "caller with a {deadline_ms} ms deadline waited {waited:?}"
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one fetch for all callers");
    }

    #[tokio::test]
    async fn refused_credentials_are_fetched_anew() {
        let (cache, calls) = counting(Some(Duration::from_secs(3600)), false);
        let first = cache.get(far()).await.unwrap();
        assert_eq!(first.access_key_id(), "AK0");
        assert!(cache.refused(&first), "a fetch may bring other credentials");
        let second = cache.get(far()).await.unwrap();
        assert_eq!(second.access_key_id(), "AK1");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // A refusal of credentials already replaced keeps the new ones.
        assert!(cache.refused(&first));
        assert_eq!(cache.get(far()).await.unwrap().access_key_id(), "AK1");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn static_credentials_refused_again_after_a_fetch_stay_refused() {
        let (cache, calls) = counting(None, true);
        let used = cache.get(far()).await.unwrap();
        assert!(
            cache.refused(&used),
            "first refusal: the provider may change"
        );
        let again = cache.get(far()).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(same_keys(&used, &again));
        assert!(
            !cache.refused(&again),
            "the provider gave the same keys back"
        );
    }

    #[tokio::test]
    async fn no_provider_means_no_credentials() {
        let cache = CredentialCache::new(None);
        let e = cache.get(far()).await.unwrap_err();
        assert!(e.message.contains("no AWS credentials"), "{e}");
        let c = Credentials::new("a", "b", None, None, "t");
        assert!(!cache.refused(&c));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_provider_is_waited_for_within_the_timeout() {
        #[derive(Debug)]
        struct Slow;
        impl ProvideCredentials for Slow {
            fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
            where
                Self: 'a,
            {
                future::ProvideCredentials::new(async {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    Ok(Credentials::new("AKSLOW", "s", None, None, "t"))
                })
            }
        }
        let cache = CredentialCache::with_fetch_timeout(
            Some(SharedCredentialsProvider::new(Slow)),
            Duration::from_secs(3),
        );
        assert_eq!(cache.get(far()).await.unwrap().access_key_id(), "AKSLOW");
    }
}
