//! Data subject requests: their kinds, their lifecycle and their deadlines.
//!
//! ```text
//! received ──forward──▶ awaiting_controller ──approve──▶ approved ──▶ running ──▶ completed
//!    │                        │  └──reject──▶ rejected                     └──▶ failed ──retry──▶ running
//!    └────── cancel (before running) ──▶ cancelled
//! ```

pub mod intake;
pub mod lifecycle;
pub mod rows;

use chrono::{DateTime, Months, Utc};
use serde::{Deserialize, Serialize};

/// What the subject asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Art. 15: a copy of the subject's data.
    Access,
    /// Art. 16: correct the subject's data.
    Rectification,
    /// Art. 17: erase the subject's data.
    Erasure,
    /// Art. 21: stop using the subject's data for a purpose (marketing). Nothing is
    /// erased: once approved, the subject goes on the controller's suppression list.
    Objection,
}

/// Where a request is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Received,
    AwaitingController,
    Approved,
    Running,
    Completed,
    Failed,
    Rejected,
    Cancelled,
}

/// Something that moves a request from one status to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Forward,
    Approve,
    Reject,
    Cancel,
    Start,
    Complete,
    Fail,
    Retry,
}

macro_rules! str_enum {
    ($ty:ty { $($variant:ident => $text:literal),* $(,)? }) => {
        impl $ty {
            /// The name stored in the database and used in the API.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),* }
            }
        }
        impl std::str::FromStr for $ty {
            type Err = String;
            fn from_str(text: &str) -> Result<Self, String> {
                match text {
                    $($text => Ok(Self::$variant),)*
                    other => Err(format!("unknown value {other:?}")),
                }
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

str_enum!(Kind { Access => "access", Rectification => "rectification", Erasure => "erasure", Objection => "objection" });
str_enum!(Status {
    Received => "received",
    AwaitingController => "awaiting_controller",
    Approved => "approved",
    Running => "running",
    Completed => "completed",
    Failed => "failed",
    Rejected => "rejected",
    Cancelled => "cancelled",
});

impl Status {
    /// Whether nothing more will happen to the request.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Completed | Status::Rejected | Status::Cancelled
        )
    }

    /// The status after `transition`, or why it is not allowed.
    ///
    /// # Errors
    /// A sentence for the 409 answer when the transition is illegal from this status.
    pub fn apply(self, transition: Transition) -> Result<Status, String> {
        use Status::*;
        use Transition::*;
        let next = match (self, transition) {
            (Received, Forward) => Some(AwaitingController),
            (AwaitingController, Approve) => Some(Approved),
            (AwaitingController, Reject) => Some(Rejected),
            (Received | AwaitingController | Approved, Cancel) => Some(Cancelled),
            (Approved, Start) => Some(Running),
            (Running, Complete) => Some(Completed),
            (Running, Fail) => Some(Failed),
            (Failed, Retry) => Some(Running),
            _ => None,
        };
        next.ok_or_else(|| {
            let why = match (self, transition) {
                (Running | Completed | Failed, Cancel) => {
                    "it has already started running in the connected systems"
                }
                (Rejected | Cancelled, _) => "it is closed",
                (Completed, _) => "it is completed",
                (_, Approve | Reject) => {
                    "only a request awaiting the controller's decision can be approved or rejected"
                }
                (_, Retry) => "only a failed request can be retried",
                _ => "this step does not follow from its current status",
            };
            format!(
                "cannot {} a request that is {}: {why}",
                transition.verb(),
                self.as_str().replace('_', " ")
            )
        })
    }
}

impl Transition {
    /// The verb of the step, for messages.
    pub fn verb(self) -> &'static str {
        match self {
            Transition::Forward => "forward",
            Transition::Approve => "approve",
            Transition::Reject => "reject",
            Transition::Cancel => "cancel",
            Transition::Start => "start",
            Transition::Complete => "complete",
            Transition::Fail => "fail",
            Transition::Retry => "retry",
        }
    }
}

/// The longest extension of the deadline, in months (Art. 12(3)).
pub const MAX_EXTENSION_MONTHS: u32 = 2;

/// The deadline of a request received at `received`, extended by `extended_months`: one
/// calendar month, plus the extension (Art. 12(3)). A month past the 31st ends on the
/// last day of the shorter month.
pub fn due_at(received: DateTime<Utc>, extended_months: u32) -> DateTime<Utc> {
    received
        .checked_add_months(Months::new(1 + extended_months))
        .unwrap_or(received)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_deadline_is_one_calendar_month_plus_the_extension() {
        let jan31 = Utc.with_ymd_and_hms(2026, 1, 31, 9, 0, 0).unwrap();
        assert_eq!(
            due_at(jan31, 0),
            Utc.with_ymd_and_hms(2026, 2, 28, 9, 0, 0).unwrap()
        );
        assert_eq!(
            due_at(jan31, 2),
            Utc.with_ymd_and_hms(2026, 4, 30, 9, 0, 0).unwrap()
        );
        let mar15 = Utc.with_ymd_and_hms(2026, 3, 15, 0, 0, 0).unwrap();
        assert_eq!(
            due_at(mar15, 1),
            Utc.with_ymd_and_hms(2026, 5, 15, 0, 0, 0).unwrap()
        );
    }

    #[test]
    fn only_the_lifecycle_transitions_are_allowed() {
        assert_eq!(
            Status::Received.apply(Transition::Forward),
            Ok(Status::AwaitingController)
        );
        assert_eq!(
            Status::AwaitingController.apply(Transition::Approve),
            Ok(Status::Approved)
        );
        assert_eq!(
            Status::Approved.apply(Transition::Cancel),
            Ok(Status::Cancelled)
        );
        assert_eq!(Status::Failed.apply(Transition::Retry), Ok(Status::Running));
        let error = Status::Cancelled.apply(Transition::Approve).unwrap_err();
        assert!(
            error.contains("cannot approve a request that is cancelled"),
            "{error}"
        );
        let error = Status::Running.apply(Transition::Cancel).unwrap_err();
        assert!(error.contains("already started"), "{error}");
        assert!(Status::Completed.apply(Transition::Retry).is_err());
    }
}
