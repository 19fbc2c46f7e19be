//! The TEXT + CHECK enums of the schema as Rust enums. Each maps to exactly the strings of
//! its CHECK constraint (`tests/store/db_migrations.rs` compares them), reads and writes as
//! diesel `Text`, and (de)serializes with serde as the same string.

use std::fmt;
use std::io::Write;
use std::str::FromStr;

use diesel::deserialize::{self, FromSql};
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::Text;

/// A string that is not one of an enum's values (a row written by a newer version, or bad
/// input at the edge).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct UnknownVariant {
    pub kind: &'static str,
    pub value: String,
}

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash,
            diesel::AsExpression, diesel::FromSqlRow, serde::Serialize, serde::Deserialize,
            utoipa::ToSchema,
        )]
        #[diesel(sql_type = Text)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every value, in the order of the CHECK constraint.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            /// The value as stored in the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownVariant;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(UnknownVariant { kind: stringify!($name), value: s.to_owned() }),
                }
            }
        }

        impl ToSql<Text, Pg> for $name {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
                out.write_all(self.as_str().as_bytes())?;
                Ok(IsNull::No)
            }
        }

        impl FromSql<Text, Pg> for $name {
            fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
                Ok(std::str::from_utf8(bytes.as_bytes())?.parse()?)
            }
        }
    };
}

text_enum! {
    /// `users.status`.
    UserStatus {
        Active = "active",
        Suspended = "suspended",
        Dormant = "dormant",
    }
}

text_enum! {
    /// `users.role`: the site-wide role.
    UserRole {
        Owner = "owner",
        TemplateAdmin = "template-admin",
        Member = "member",
    }
}

text_enum! {
    /// `template_versions.provisioner`: which backend builds workspaces of the version.
    ProvisionerKind {
        Simulated = "simulated",
        Terraform = "terraform",
    }
}

text_enum! {
    /// `presets.prebuild_status`.
    PrebuildStatus {
        Healthy = "healthy",
        HardLimited = "hard_limited",
        ValidationFailed = "validation_failed",
    }
}

text_enum! {
    /// `workspaces.automatic_updates`.
    AutomaticUpdates {
        Never = "never",
        Always = "always",
    }
}

text_enum! {
    /// `workspace_builds.transition` and `provisioner_jobs.transition`.
    Transition {
        Start = "start",
        Stop = "stop",
        Delete = "delete",
    }
}

text_enum! {
    /// `provisioner_jobs.status`: pending → running → succeeded | failed, and
    /// pending | running → canceling → canceled.
    JobStatus {
        Pending = "pending",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Canceling = "canceling",
        Canceled = "canceled",
    }
}

text_enum! {
    /// `provisioner_jobs.failure_kind`: who failed a job. Only `Build` is a failed build in
    /// rules §4's sense (prebuild backoff and hard limit).
    FailureKind {
        /// The backend failed the build (the template's doing).
        Build = "build",
        /// The reaper failed it: its worker was lost, or no worker took it in time.
        Reaped = "reaped",
        /// It could not be run at all (its build is missing).
        Unrunnable = "unrunnable",
    }
}

text_enum! {
    /// `workspace_agents.lifecycle_state`.
    AgentLifecycle {
        Created = "created",
        Starting = "starting",
        Ready = "ready",
        StartError = "start_error",
        ShuttingDown = "shutting_down",
        Off = "off",
    }
}

text_enum! {
    /// `workspace_builds.reason`. The column only requires `[a-z_]+`, so a new reason needs
    /// a variant here but no migration.
    BuildReason {
        /// A person asked (API, CLI).
        Initiator = "initiator",
        Autostart = "autostart",
        Autostop = "autostop",
        Failedstop = "failedstop",
        Dormancy = "dormancy",
        Autodelete = "autodelete",
        /// The prebuild reconciler created or deleted a pool instance.
        Prebuild = "prebuild",
        /// The start build that follows claiming a prebuild.
        Claim = "claim",
    }
}

text_enum! {
    /// `notifications.status`: where a message is in its delivery.
    DeliveryStatus {
        Pending = "pending",
        Sent = "sent",
        TemporaryFailure = "temporary_failure",
        PermanentFailure = "permanent_failure",
        Inhibited = "inhibited",
    }
}

text_enum! {
    /// `notification_attempts.method`: how a message is delivered.
    DeliveryMethod {
        Webhook = "webhook",
        Smtp = "smtp",
    }
}

text_enum! {
    /// `notification_attempts.outcome`: what one send by one method came to.
    AttemptOutcome {
        Sent = "sent",
        TemporaryFailure = "temporary_failure",
        PermanentFailure = "permanent_failure",
        Inhibited = "inhibited",
    }
}

impl JobStatus {
    /// True once the job can no longer change (succeeded, failed, canceled).
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Canceled)
    }
}
