// The job statuses in the server's order (torc_core.status.JobStatus labels). No DOM here:
// every module, and the DAG's test page, can import it.

export const STATUSES = ['uninitialized', 'blocked', 'ready', 'pending', 'running', 'completed',
  'failed', 'canceled', 'terminated', 'disabled', 'pending_failed'];
/** Statuses a job does not leave without a reset: they count as done for progress and ETA. */
export const DONE = new Set(['completed', 'failed', 'canceled', 'terminated', 'disabled']);
