//! The platform events a job's states give rise to. They live with the events (which know the
//! job), not with the job (which knows no events), so the modules form no cycle.

use super::{CloudEvent, PlatformEvent, StepUsage};
use crate::job::Job;
use crate::job::transitions::millis;

impl Job {
    /// `flowgrid.job.submitted`, produced by `app`.
    pub fn submitted_event(&self, app: &str) -> CloudEvent<PlatformEvent> {
        let data = PlatformEvent::JobSubmitted {
            job_id: self.id.to_string(),
            agent_id: self.agent_id,
            trigger: self.trigger.clone(),
        };
        CloudEvent::new(app, &self.tenant_id, self.created_at, data)
    }

    /// `flowgrid.job.started` of the claim the job is under (one per claim), produced by `app`;
    /// `None` when it is not claimed.
    pub fn started_event(&self, app: &str) -> Option<CloudEvent<PlatformEvent>> {
        if !self.is_owned() || self.attempts == 0 {
            return None;
        }
        let data = PlatformEvent::JobStarted {
            job_id: self.id.to_string(),
            agent_id: self.agent_id,
            attempt: self.attempts,
        };
        Some(CloudEvent::new(app, &self.tenant_id, self.updated_at, data))
    }

    /// `flowgrid.job.finished` (status, duration from submission, what each step used),
    /// produced by `app`; `None` while the job is not finished. Its id is the job's, so the
    /// one terminal state gives one event however often it is derived.
    pub fn finished_event(&self, app: &str) -> Option<CloudEvent<PlatformEvent>> {
        let finished_at = self.finished_at.filter(|_| self.status.is_terminal())?;
        let steps = self
            .steps
            .iter()
            .map(|r| StepUsage {
                step_id: r.id.clone(),
                kind: r.kind.clone(),
                status: r.status,
                attempts: r.attempts,
                duration_ms: r.duration_ms,
                tokens: r
                    .llm
                    .as_ref()
                    .map(|c| c.tokens)
                    .or(r.tokens.map(Into::into)),
                cost_micro_usd: r.llm.as_ref().and_then(|c| c.cost_micro_usd),
                provider: r.llm.as_ref().map(|c| c.provider.clone()),
                model: r.llm.as_ref().map(|c| c.model.clone()),
            })
            .collect();
        let data = PlatformEvent::JobFinished {
            job_id: self.id.to_string(),
            agent_id: self.agent_id,
            status: self.status,
            duration_ms: millis(self.created_at, finished_at).unwrap_or(0),
            steps,
        };
        Some(CloudEvent::new(app, &self.tenant_id, finished_at, data))
    }
}
