//! The workspace agent's lifecycle: which state an agent may report next.

/// The states an agent reports while its build's workspace starts and stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentState {
    Created,
    Starting,
    Ready,
    StartError,
    ShuttingDown,
    Off,
}

impl AgentState {
    pub const ALL: &'static [AgentState] = &[
        Self::Created,
        Self::Starting,
        Self::Ready,
        Self::StartError,
        Self::ShuttingDown,
        Self::Off,
    ];
}

/// Whether an agent in `from` may report `to`. Start: created → starting → ready or
/// start_error (an agent that skips `starting` may report ready or start_error at once;
/// a failed start may be retried); stop: any started state → shutting_down → off, which
/// is final (a new start build has new agents). Reporting the current state is allowed
/// and changes nothing (a retried report).
pub fn transition_allowed(from: AgentState, to: AgentState) -> bool {
    use AgentState::{Created, Off, Ready, ShuttingDown, StartError, Starting};
    from == to
        || matches!(
            (from, to),
            (Created, Starting | Ready | StartError | ShuttingDown)
                | (Starting, Ready | StartError | ShuttingDown)
                | (StartError, Starting | Ready | ShuttingDown)
                | (Ready, ShuttingDown)
                | (ShuttingDown, Off)
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use AgentState::*;

    #[test]
    fn state_machine() {
        for &state in AgentState::ALL {
            assert!(transition_allowed(state, state), "{state:?} again is a retried report");
        }
        assert!(transition_allowed(Created, Starting));
        assert!(transition_allowed(Starting, Ready));
        assert!(transition_allowed(StartError, Starting));
        assert!(transition_allowed(Ready, ShuttingDown));
        assert!(transition_allowed(ShuttingDown, Off));
        assert!(!transition_allowed(Ready, Starting));
        assert!(!transition_allowed(Off, Starting));
        assert!(!transition_allowed(Created, Off));
        assert!(!transition_allowed(ShuttingDown, Ready));
    }
}
