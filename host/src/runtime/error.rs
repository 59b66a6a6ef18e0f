//! What can go wrong when oubli loads or calls a plugin, split into what the queue retries
//! and what it does not.

use thiserror::Error;

/// An error from loading or calling a connector plugin. Every message is written for the
/// DPO who reads it on a failed task.
#[derive(Debug, Error, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", content = "message", rename_all = "kebab-case")]
pub enum RuntimeError {
    /// The system could not be reached or is busy. Retryable.
    #[error("system unavailable: {0}")]
    Unavailable(String),
    /// The call ran past its wall-clock deadline. Retryable.
    #[error("the plugin ran past its deadline of {0} ms and was stopped")]
    Timeout(u64),
    /// The plugin trapped (a panic, an invalid operation). Fatal.
    #[error("the plugin crashed: {0}")]
    Trap(String),
    /// The plugin tried to use more memory than its cap. Fatal.
    #[error("the plugin tried to use more than its memory cap of {0} MiB and was stopped")]
    OutOfMemory(u64),
    /// The plugin used a capability the system does not grant, or the system refused
    /// oubli's credentials. Fatal.
    #[error("denied: {0}")]
    Denied(String),
    /// The system's configuration or the plugin file is wrong. Fatal.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The plugin reported a failure that retrying will not fix. Fatal.
    #[error("the plugin failed: {0}")]
    Failed(String),
}

impl RuntimeError {
    /// Whether the queue should try the call again later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RuntimeError::Unavailable(_) | RuntimeError::Timeout(_)
        )
    }

    /// The same error with every form of the system's secrets removed from its message
    /// (a plugin's message, or the stderr of a crash).
    pub fn redacted(self, secrets: &super::system::SecretForms) -> Self {
        if secrets.is_empty() {
            return self;
        }
        let clean = |m: String| secrets.scrub_text(&m);
        match self {
            RuntimeError::Unavailable(m) => RuntimeError::Unavailable(clean(m)),
            RuntimeError::Trap(m) => RuntimeError::Trap(clean(m)),
            RuntimeError::Denied(m) => RuntimeError::Denied(clean(m)),
            RuntimeError::InvalidConfig(m) => RuntimeError::InvalidConfig(clean(m)),
            RuntimeError::Failed(m) => RuntimeError::Failed(clean(m)),
            bounded @ (RuntimeError::Timeout(_) | RuntimeError::OutOfMemory(_)) => bounded,
        }
    }

    /// A stable machine name for the kind of error.
    pub fn kind(&self) -> &'static str {
        match self {
            RuntimeError::Unavailable(_) => "unavailable",
            RuntimeError::Timeout(_) => "timeout",
            RuntimeError::Trap(_) => "trap",
            RuntimeError::OutOfMemory(_) => "out-of-memory",
            RuntimeError::Denied(_) => "denied",
            RuntimeError::InvalidConfig(_) => "invalid-config",
            RuntimeError::Failed(_) => "failed",
        }
    }
}

impl From<super::types::GuestError> for RuntimeError {
    fn from(error: super::types::GuestError) -> Self {
        use super::types::GuestError as Guest;
        match error {
            Guest::Unavailable(m) => RuntimeError::Unavailable(m),
            Guest::Denied(m) => RuntimeError::Denied(m),
            Guest::InvalidConfig(m) => RuntimeError::InvalidConfig(m),
            Guest::Failed(m) => RuntimeError::Failed(m),
        }
    }
}
