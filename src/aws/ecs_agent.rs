//! The ECS container agent's task scale-in protection endpoint
//! (`$ECS_AGENT_URI/task-protection/v1/state`): one bounded PUT that turns
//! protection on for some minutes, or off. The agent calls ECS's
//! UpdateTaskProtection with the task role's credentials; sqsd signs
//! nothing here. When to call it is the pipeline's business
//! (`daemon::protection`).

use std::time::Duration;

/// The environment variable ECS sets in every container of a task.
pub const ECS_AGENT_URI: &str = "ECS_AGENT_URI";

/// Longest one PUT may take, connection included.
const PUT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most of the agent's answer read, for its error message.
const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// What to ask of the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protection {
    /// Protected for this many minutes from now (1 to 2880).
    On {
        minutes: u32,
    },
    Off,
}

impl Protection {
    /// The JSON body of the PUT.
    pub fn body(self) -> String {
        match self {
            Protection::On { minutes } => {
                format!("{{\"ProtectionEnabled\":true,\"ExpiresInMinutes\":{minutes}}}")
            }
            Protection::Off => "{\"ProtectionEnabled\":false}".to_string(),
        }
    }
}

/// Why the agent did not set the protection.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot reach the ECS agent: {0}")]
    Unreachable(String),
    #[error("the ECS agent answered {status}: {answer}")]
    Status { status: u16, answer: String },
    #[error("the ECS agent reported a failure: {0}")]
    Failure(String),
}

/// A client of one task's agent endpoint.
#[derive(Clone, Debug)]
pub struct EcsAgent {
    http: reqwest::Client,
    state_url: String,
}

impl EcsAgent {
    /// The agent named by `ECS_AGENT_URI` in `env`: `None` when it is not
    /// set, an error when it is not an http(s) URL.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Option<Result<EcsAgent, String>> {
        let uri = env(ECS_AGENT_URI)?;
        let uri = uri.trim();
        if uri.is_empty() {
            return None;
        }
        Some(EcsAgent::new(uri))
    }

    /// A client of the agent at `uri` (`http://169.254.170.2/api/<task>`).
    pub fn new(uri: &str) -> Result<EcsAgent, String> {
        let parsed =
            reqwest::Url::parse(uri).map_err(|e| format!("{ECS_AGENT_URI} is not a URL ({e})"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("{ECS_AGENT_URI} must be an http:// URL"));
        }
        let http = reqwest::Client::builder()
            .timeout(PUT_TIMEOUT)
            .connect_timeout(PUT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            // The agent is on the task's own link-local address: never
            // through an HTTP proxy from the environment.
            .no_proxy()
            .pool_max_idle_per_host(1)
            .build()
            .map_err(|e| format!("cannot build the ECS agent client: {e}"))?;
        Ok(EcsAgent {
            http,
            state_url: format!("{}/task-protection/v1/state", uri.trim_end_matches('/')),
        })
    }

    /// Where the PUTs go.
    pub fn state_url(&self) -> &str {
        &self.state_url
    }

    /// Asks the agent for `protection`; done within [`PUT_TIMEOUT`].
    pub async fn put(&self, protection: Protection) -> Result<(), AgentError> {
        let call = async {
            let mut response = self
                .http
                .put(&self.state_url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(protection.body())
                .send()
                .await
                .map_err(|e| AgentError::Unreachable(e.without_url().to_string()))?;
            let status = response.status().as_u16();
            let mut answer = Vec::new();
            while answer.len() < MAX_ANSWER_BYTES {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        let room = MAX_ANSWER_BYTES - answer.len();
                        answer.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    }
                    // An answer cut short still has its status.
                    Ok(None) | Err(_) => break,
                }
            }
            if answer.len() >= MAX_ANSWER_BYTES {
                // Too long to judge: the agent's answers are small.
                return Err(AgentError::Unreachable(format!(
                    "answer of {status} longer than {MAX_ANSWER_BYTES} bytes"
                )));
            }
            judge(status, &answer)
        };
        tokio::time::timeout(PUT_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| Err(AgentError::Unreachable("no answer within 5s".into())))
    }
}

/// Whether an answer means the protection was set. The agent answers 200
/// with `{"failure": {...}}` when ECS refused (a task outside a service, a
/// missing permission), so a 2xx alone is not enough.
fn judge(status: u16, answer: &[u8]) -> Result<(), AgentError> {
    let text = || {
        String::from_utf8_lossy(answer)
            .replace(char::is_control, " ")
            .chars()
            .take(300)
            .collect::<String>()
    };
    if !(200..300).contains(&status) {
        return Err(AgentError::Status {
            status,
            answer: text(),
        });
    }
    let parsed = serde_json::from_slice::<serde_json::Value>(answer).ok();
    match parsed
        .as_ref()
        .and_then(|v| v.get("failure").or(v.get("error")))
    {
        Some(failure) if !failure.is_null() => {
            let reason = failure
                .get("Reason")
                .and_then(|r| r.as_str())
                .map(str::to_string)
                .unwrap_or_else(text);
            Err(AgentError::Failure(
                reason
                    .replace(char::is_control, " ")
                    .chars()
                    .take(300)
                    .collect(),
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_the_agents_json() {
        let on: serde_json::Value =
            serde_json::from_str(&Protection::On { minutes: 60 }.body()).unwrap();
        assert_eq!(
            on,
            serde_json::json!({"ProtectionEnabled": true, "ExpiresInMinutes": 60})
        );
        let off: serde_json::Value = serde_json::from_str(&Protection::Off.body()).unwrap();
        assert_eq!(off, serde_json::json!({"ProtectionEnabled": false}));
    }

    #[test]
    fn the_endpoint_comes_from_ecs_agent_uri() {
        let env = |v: &'static str| move |n: &str| (n == ECS_AGENT_URI).then(|| v.to_string());
        let agent = EcsAgent::from_env(&env("http://169.254.170.2/api/abc/"))
            .unwrap()
            .unwrap();
        assert_eq!(
            agent.state_url(),
            "http://169.254.170.2/api/abc/task-protection/v1/state"
        );
        assert!(EcsAgent::from_env(&|_| None).is_none());
        assert!(EcsAgent::from_env(&env("  ")).is_none());
        assert!(EcsAgent::from_env(&env("ftp://x/y")).unwrap().is_err());
        assert!(EcsAgent::from_env(&env("not a url")).unwrap().is_err());
    }

    #[test]
    fn a_failure_in_a_200_answer_is_a_failure() {
        assert!(judge(200, br#"{"protection":{"ProtectionEnabled":true}}"#).is_ok());
        assert!(judge(200, b"").is_ok());
        let refused = br#"{"failure":{"Arn":"arn:aws:ecs:x","Reason":"TASK_NOT_VALID"}}"#;
        match judge(200, refused) {
            Err(AgentError::Failure(r)) => assert_eq!(r, "TASK_NOT_VALID"),
            other => panic!("{other:?}"),
        }
        match judge(500, b"boom\n") {
            Err(AgentError::Status { status, answer }) => {
                assert_eq!((status, answer.as_str()), (500, "boom "))
            }
            other => panic!("{other:?}"),
        }
    }
}
