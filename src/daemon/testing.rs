//! Stand-ins for the pipeline's two outside parties, for unit tests with
//! paused time: SQS's batch calls, and the application.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::deliver::{Dispatcher, Held};
use super::message::{Incoming, Template};
use super::room::Room;
use super::settle::{BatchCalls, Kind, Settler, SettlerTask, Terms};
use crate::admin::metrics::Metrics;
use crate::app::{Answer, Answered, Application, Failure, Request};
use crate::aws::sqs_json::{BatchEntry, BatchFailure};
use crate::aws::SqsError;
use crate::config::SuccessCodes;

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

pub struct Rig {
    pub dispatcher: Dispatcher,
    pub sqs: Arc<FakeSqs>,
    pub room: Arc<Room>,
    pub task: SettlerTask,
}

/// A dispatcher with its settler, over a scripted application and SQS.
pub fn rig(app: Arc<FakeApp>) -> Rig {
    let sqs = FakeSqs::ok();
    let metrics = Arc::new(Metrics::new());
    let (settler, task) = Settler::spawn(
        sqs.clone(),
        Terms {
            lease_s: 30,
            linger: Duration::from_millis(20),
            max_calls: 16,
        },
        metrics.clone(),
    );
    let gate = Arc::new(crate::daemon::gate::Gate::new(
        Arc::new(crate::admin::health::Health::default()),
        metrics.clone(),
    ));
    gate.open();
    Rig {
        dispatcher: Dispatcher {
            http: app,
            template: Template::new("http://127.0.0.1:9", "/work", "application/json", "q"),
            success_codes: SuccessCodes::Only200,
            retry: crate::daemon::policy::Retry::fixed(7),
            retention: Duration::from_secs(60),
            settler,
            metrics,
            clock: Arc::new(crate::time::SystemClock),
            connections: Arc::new(Semaphore::new(10)),
            gate,
            hold_limit: Duration::from_secs(300),
            dead_letters: None,
        },
        sqs,
        room: Room::new(10),
        task,
    }
}

impl Rig {
    /// A received message, held by the settler, with its place in the room.
    pub async fn held(&self, id: &str, group: Option<&str>) -> Held {
        let now = Instant::now();
        let key = self.dispatcher.settler.hold(
            id,
            format!("rh-{id}"),
            now,
            now + Duration::from_secs(29),
        );
        assert_eq!(self.room.take(1, Duration::ZERO).await, 1);
        Held {
            msg: Incoming {
                id: id.to_string(),
                key,
                group_id: group.map(str::to_string),
                received: Some(now),
                ..Incoming::default()
            },
            place: self.room.place(),
            start_at: None,
        }
    }

    /// What SQS was told, per receipt handle, once the linger has passed.
    pub async fn settled(&self) -> Vec<(String, Option<u32>)> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.sqs.entries()
    }
}
