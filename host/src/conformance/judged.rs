//! A backend-test session as judged: what the report (`shmem-report`'s
//! `backend` module) is made of. Data only.

use shmem_judge::check::CheckResult;
use shmem_judge::verdict::Judgement;

/// One judged session.
pub struct SessionVerdict {
    pub backend: String,
    pub session: String,
    pub checks: Vec<CheckResult>,
    pub judgement: Judgement,
}
