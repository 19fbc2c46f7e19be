-- Why a job failed, so that only builds the template failed count toward a preset's backoff
-- and hard limit (SPEC §4 counts "failed builds"): 'build' = the backend failed the build;
-- 'reaped' = the reaper failed it (its worker was lost, or no worker took it in time);
-- 'unrunnable' = the job could not be run at all (its build row is missing, say).
-- NULL on jobs that did not fail (the reaper also marks the cancellations it ends).
ALTER TABLE provisioner_jobs
    ADD COLUMN failure_kind text NULL
        CHECK (failure_kind IN ('build', 'reaped', 'unrunnable'));

-- Earlier failures: the reaper's are known by the error texts it wrote.
UPDATE provisioner_jobs
   SET failure_kind = CASE
         WHEN error LIKE 'the provisioner stopped sending heartbeats%'
           OR error LIKE 'no provisioner acquired the job within%' THEN 'reaped'
         ELSE 'build'
       END
 WHERE status = 'failed';
