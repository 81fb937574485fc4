//! Stand-ins for the pipeline's two outside parties, for unit tests with
//! paused time: SQS's batch calls, and the application.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::settle::{BatchCalls, Kind};
use crate::app::{Answer, Answered, Application, Failure, Request};
use crate::aws::sqs_json::{BatchEntry, BatchFailure};
use crate::aws::SqsError;

/// One batch call as SQS saw it.
#[derive(Clone, Debug)]
pub struct Call {
    pub at: Instant,
    pub kind: Kind,
    /// Receipt handle and visibility of each entry.
    pub entries: Vec<(String, Option<u32>)>,
}

type SqsAnswer = dyn Fn(&Call, usize) -> Result<Vec<BatchFailure>, SqsError> + Send + Sync;

/// SQS's two batch calls, answering as a test scripts them.
pub struct FakeSqs {
    calls: Mutex<Vec<Call>>,
    answer: Box<SqsAnswer>,
    pub latency: Duration,
}

impl FakeSqs {
    /// Answers call number `n` (from 1) as `answer` says, after `latency`.
    pub fn new(
        latency: Duration,
        answer: impl Fn(&Call, usize) -> Result<Vec<BatchFailure>, SqsError> + Send + Sync + 'static,
    ) -> Arc<FakeSqs> {
        Arc::new(FakeSqs {
            calls: Mutex::new(Vec::new()),
            answer: Box::new(answer),
            latency,
        })
    }

    /// Accepts everything after 15 ms.
    pub fn ok() -> Arc<FakeSqs> {
        FakeSqs::new(Duration::from_millis(15), |_, _| Ok(Vec::new()))
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Every entry sent so far, in order: receipt handle and visibility.
    pub fn entries(&self) -> Vec<(String, Option<u32>)> {
        self.calls().into_iter().flat_map(|c| c.entries).collect()
    }
}

impl BatchCalls for FakeSqs {
    fn batch<'a>(
        &'a self,
        kind: Kind,
        entries: &'a [BatchEntry<'a>],
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Vec<BatchFailure>, SqsError>> + Send + 'a>,
    > {
        Box::pin(async move {
            let call = Call {
                at: Instant::now(),
                kind,
                entries: entries
                    .iter()
                    .map(|e| (e.receipt_handle.to_string(), e.visibility_timeout))
                    .collect(),
            };
            let n = match self.calls.lock() {
                Ok(mut calls) => {
                    calls.push(call.clone());
                    calls.len()
                }
                Err(_) => 0,
            };
            tokio::time::sleep(self.latency).await;
            (self.answer)(&call, n)
        })
    }
}

/// One POST as the application saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub target: String,
    pub msgid: String,
}

type AppAnswer = dyn Fn(&Seen) -> (Duration, Result<Answer, Failure>) + Send + Sync;

/// The application, answering as a test scripts it (after a delay).
pub struct FakeApp {
    seen: Mutex<Vec<Seen>>,
    answer: Box<AppAnswer>,
}

impl FakeApp {
    pub fn new(
        answer: impl Fn(&Seen) -> (Duration, Result<Answer, Failure>) + Send + Sync + 'static,
    ) -> Arc<FakeApp> {
        Arc::new(FakeApp {
            seen: Mutex::new(Vec::new()),
            answer: Box::new(answer),
        })
    }

    /// Answers every POST with `status` after `delay`.
    pub fn status(status: u16, delay: Duration) -> Arc<FakeApp> {
        FakeApp::new(move |_| (delay, Ok(answer(status))))
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// An answer with `status` and no `Retry-After`.
pub fn answer(status: u16) -> Answer {
    Answer {
        status,
        retry_after: None,
    }
}

impl Application for FakeApp {
    fn post(&self, request: Request) -> Answered<'_> {
        let seen = Seen {
            at: Instant::now(),
            target: request.target.to_string(),
            msgid: request
                .headers
                .get("x-aws-sqsd-msgid")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
        };
        let (delay, result) = (self.answer)(&seen);
        if let Ok(mut all) = self.seen.lock() {
            all.push(seen);
        }
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            result
        })
    }
}
